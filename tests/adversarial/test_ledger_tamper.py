"""Someone who can write a node's disk rewrites its ledger; `gd-node ledger verify` must
say so (issue 11, item 7).

The attacks use the product's own pieces (`Ledger`, `LedgerEntry`) on the LMDB file of a
home made by `gd-node init`, exactly as a modified binary could:

* drop entry 0, relink the rest and sign a fresh head with a brand-new key: every link
  and author signature still holds, only the head's signer gives it away;
* the same rewrite with every head deleted: nothing signs the new order at all;
* poison the idempotency index: a key naming no entry of its own silently censors every
  later statement under that key (it is answered "duplicate" or "conflict").
"""

from __future__ import annotations

import json
from pathlib import Path

import lmdb
import pytest
from click.testing import CliRunner, Result
from gd_testkit import key_from_int

from gd.cli.main import cli
from gd.genome import canonical
from gd.genome.identity import NodeKey
from gd.ledger.entry import EntryKind, LedgerEntry
from gd.node.home import Home
from gd.node.services.recorder import LedgerRecorder
from gd.node.store.cortex import Cortex
from gd.node.store.ledger_store import ALARMS_DB, KEYS_DB, MAX_DBS, SUBDATABASES, Ledger

STATEMENTS = 6
REGION_LOG_ID = "region:eu"


def init_home(root: Path, voters: tuple[str, ...] = ()) -> tuple[Home, NodeKey]:
    home = Home(root / ("member" if voters else "solo"))
    result = CliRunner().invoke(cli, ["init", "--home", str(home.root), "--org", "org1",
                                      "--region", "eu", "--seed", (1).to_bytes(32, "big").hex()])
    assert result.exit_code == 0, result.output
    if voters:
        text = home.config_path.read_text()
        home.config_path.write_text(text.replace(
            "voters = []", "voters = [" + ", ".join(f'"{v}"' for v in voters) + "]"))
    return home, NodeKey.load(home.key_path)


def statements(author: NodeKey, n: int = STATEMENTS) -> list[LedgerEntry]:
    return [LedgerEntry.create(author, EntryKind.DECISION, 100 + i,
                               canonical.sha256(f"decision-{i}".encode()), {"i": i})
            for i in range(n)]


def verify(home: Home, *extra: str) -> tuple[Result, dict]:
    result = CliRunner().invoke(cli, ["ledger", "verify", "--home", str(home.root), "--json",
                                      *extra])
    assert "Traceback" not in result.output
    return result, json.loads(result.stdout) if result.stdout.strip() else {}


def rewrite(home: Home, *, drop: int, head_key: NodeKey | None, log_id: str) -> None:
    """Empty the ledger tables and append the statements again without entry `drop`:
    a consistent chain (links, tree, index, metadata), headed by `head_key` if given."""
    env = lmdb.open(str(home.cortex_path), max_dbs=MAX_DBS)
    try:
        ledger = Ledger(env)
        kept = [e.unsequenced() for e in ledger.entries() if e.index != drop]
        with env.begin(write=True) as txn:
            for name in SUBDATABASES:
                if name != ALARMS_DB:
                    txn.drop(env.open_db(name, txn=txn), delete=False)
        ledger.append_batch(kept, head_key=head_key, timestamp=1, log_id=log_id)
        assert ledger.size == len(kept)
    finally:
        env.close()


@pytest.fixture
def solo(tmp_path: Path) -> Home:
    """A region of one: its recorder appends and signs heads with the node's own key."""
    home, key = init_home(tmp_path)
    with Cortex.open(home.cortex_path) as cortex:
        recorder = LedgerRecorder(cortex.env, key)
        for i in range(STATEMENTS):
            assert recorder.append("decision", canonical.sha256(bytes([i])), {"i": i}).ok
    return home


@pytest.fixture
def member(tmp_path: Path) -> Home:
    """A region member (voters 1, 2, 3): its log was ordered and headed by voter 2."""
    voters = tuple(key_from_int(n).peer_id for n in (1, 2, 3))
    home, _ = init_home(tmp_path, voters)
    with Cortex.open(home.cortex_path) as cortex:
        Ledger(cortex.env).append_batch(statements(key_from_int(7)), head_key=key_from_int(2),
                                        timestamp=1, log_id=REGION_LOG_ID)
    return home


def test_untampered_ledgers_verify_against_their_pinned_signers(solo: Home,
                                                                member: Home) -> None:
    for home, pinned_by in ((solo, "this node"), (member, "[ledger] voters")):
        result, report = verify(home)
        assert result.exit_code == 0, result.output
        assert report["ok"] and report["checked"] == STATEMENTS
        assert report["pinned_by"].startswith(pinned_by)


@pytest.mark.parametrize("fixture", ["solo", "member"])
def test_a_relinked_log_headed_by_a_new_key_fails_verify(fixture: str,
                                                         request: pytest.FixtureRequest) -> None:
    home: Home = request.getfixturevalue(fixture)
    log_id = REGION_LOG_ID if fixture == "member" else "local"
    attacker = key_from_int(666)
    rewrite(home, drop=0, head_key=attacker, log_id=log_id)
    result, report = verify(home)
    assert result.exit_code == 1
    assert report["ok"] is False and report["first_bad_index"] == 0
    assert attacker.peer_id in report["reason"] and "not by a pinned voter" in report["reason"]
    # Pinning the attacker explicitly is the only way it passes: the check is the pin.
    result, _ = verify(home, "--voter", attacker.peer_id)
    assert result.exit_code == 0


@pytest.mark.parametrize("fixture", ["solo", "member"])
def test_a_relinked_log_without_any_head_fails_verify(fixture: str,
                                                      request: pytest.FixtureRequest) -> None:
    home: Home = request.getfixturevalue(fixture)
    rewrite(home, drop=0, head_key=None, log_id="local")
    result, report = verify(home)
    assert result.exit_code == 1
    assert report["ok"] is False and "no signed tree head" in report["reason"]


def test_a_stray_idempotency_key_is_caught_and_would_censor_a_statement(solo: Home) -> None:
    key = NodeKey.load(solo.key_path)
    env = lmdb.open(str(solo.cortex_path), max_dbs=MAX_DBS)
    try:
        ledger = Ledger(env)
        victim = ledger.entry(2)
        keys = env.open_db(KEYS_DB)
        with env.begin(write=True) as txn:
            holder = txn.get(victim.author.encode() + b"\x00" + victim.idempotency_key.encode(),
                             db=keys)
            txn.put(key.peer_id.encode() + b"\x00" + b"tomorrows-recall", holder, db=keys)
    finally:
        env.close()
    result, report = verify(solo)
    assert result.exit_code == 1
    assert "idempotency index holds 7 keys for 6 entries" in report["reason"]
    assert "tomorrows-recall" in report["reason"]
    # What the poisoned key does: tomorrow's statement is never appended.
    with Cortex.open(solo.cortex_path) as cortex:
        recorder = LedgerRecorder(cortex.env, key)
        receipt = recorder.append("decision", canonical.sha256(b"recall"), {"i": 99},
                                  idempotency_key="tomorrows-recall")
        assert receipt.status != "appended" and recorder.ledger.size == STATEMENTS


def test_an_idempotency_key_with_a_forged_statement_hash_is_caught(solo: Home) -> None:
    env = lmdb.open(str(solo.cortex_path), max_dbs=MAX_DBS)
    try:
        victim = Ledger(env).entry(4)
        keys = env.open_db(KEYS_DB)
        slot = victim.author.encode() + b"\x00" + victim.idempotency_key.encode()
        with env.begin(write=True) as txn:
            value = bytearray(txn.get(slot, db=keys))
            value[8:40] = canonical.sha256(b"another statement")
            txn.put(slot, bytes(value), db=keys)
    finally:
        env.close()
    result, report = verify(solo)
    assert result.exit_code == 1
    assert report["first_bad_index"] == 4
    assert "idempotency index does not point at this entry" in report["reason"]
