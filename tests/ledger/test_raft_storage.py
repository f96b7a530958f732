"""Raft storage: memory and LMDB agree, survive restarts, and refuse corrupt state."""

from __future__ import annotations

import struct

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gd.ledger.raft import RaftNode
from gd.ledger.raft_records import (
    ConfState,
    Entry,
    HardState,
    RaftLocalError,
    RaftRemoteError,
    Snapshot,
)
from gd.ledger.raft_storage import MemoryRaftStorage
from gd.node.store.raft_lmdb import RAFT_ENTRIES_DB, LmdbRaftStorage


@pytest.fixture
def env(tmp_path):
    environment = lmdb.open(str(tmp_path / "db"), max_dbs=16, map_size=64 << 20)
    yield environment
    environment.close()


def entries(first: int, last: int, term: int) -> list[Entry]:
    return [Entry(term, i, data=f"{term}:{i}".encode(), client_id="c", request_id=i)
            for i in range(first, last + 1)]


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_save_truncates_conflicting_suffix_and_snapshot_replaces_log(kind, env):
    store = MemoryRaftStorage() if kind == "memory" else LmdbRaftStorage(env)
    store.save(HardState(2, "a", 3), entries(1, 5, 2))
    store.save(HardState(3, None, 4), entries(4, 6, 3))  # 4, 5 replaced
    state = store.load()
    assert [(e.index, e.term) for e in state.entries] == [
        (1, 2), (2, 2), (3, 2), (4, 3), (5, 3), (6, 3)]
    assert state.hard_state == HardState(3, None, 4)
    store.compact(Snapshot(4, 3, ConfState(frozenset({"a"})), (), b"s4"))
    assert [e.index for e in store.load().entries] == [5, 6]
    assert store.load().snapshot.data == b"s4"
    store.save(None, [], Snapshot(10, 4, ConfState(frozenset({"a"})), (), b"s10"))
    state = store.load()
    assert state.entries == () and state.snapshot.index == 10
    assert state.hard_state == HardState(3, None, 4)  # unchanged by a None hard state
    store.save(HardState(4, None, 11), entries(11, 12, 4))
    assert [e.index for e in store.load().entries] == [11, 12]
    with pytest.raises(RaftLocalError):
        store.bootstrap(["a"])  # not empty


def test_lmdb_state_survives_reopen_and_a_node_resumes_from_it(tmp_path):
    path = str(tmp_path / "db")
    env = lmdb.open(path, max_dbs=16, map_size=64 << 20)
    store = LmdbRaftStorage(env)
    store.bootstrap(["solo"])
    node = RaftNode("solo", store.load())
    applied: list[bytes] = []

    def drain(n: RaftNode) -> None:
        while n.has_ready():
            ready = n.ready()
            store.save(ready.hard_state, ready.entries, ready.snapshot)
            applied.extend(e.data for e in ready.committed_entries if e.client_id)
            n.advance(ready)

    drain(node)
    node.campaign()  # a region of one voter elects itself at once
    drain(node)
    assert node.is_leader
    for i in range(1, 4):
        node.propose(f"e{i}".encode(), "me", i)
    drain(node)
    assert applied == [b"e1", b"e2", b"e3"]
    env.close()

    env = lmdb.open(path, max_dbs=16, map_size=64 << 20)
    store = LmdbRaftStorage(env)
    state = store.load()
    assert state.hard_state.commit == node.log.committed and state.hard_state.vote == "solo"
    restarted = RaftNode("solo", state)
    applied.clear()
    drain(restarted)
    assert applied == [b"e1", b"e2", b"e3"]  # re-handed from the (empty) snapshot
    assert restarted.lookup("me", 2).index == node.lookup("me", 2).index
    env.close()


def test_corrupt_stored_entry_is_reported_not_crashed(env):
    store = LmdbRaftStorage(env)
    store.save(HardState(1, None, 0), entries(1, 3, 1))
    table = env.open_db(RAFT_ENTRIES_DB)  # outside the write txn: LMDB has one writer
    with env.begin(write=True) as txn:
        txn.put(struct.pack(">Q", 2), b"\xc1garbage", db=table)
    with pytest.raises(RaftRemoteError, match="corrupt"):
        store.load()


def test_memory_crash_keeps_exactly_the_durable_state():
    store = MemoryRaftStorage()
    store.save(HardState(1, "a", 0), entries(1, 2, 1))
    assert store.crash() == store.load()
    assert [e.index for e in store.crash().entries] == [1, 2]


operations = st.lists(st.tuples(
    st.sampled_from(["append", "snapshot", "compact"]),
    st.integers(min_value=1, max_value=30),
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=1, max_value=9),
), max_size=12)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_lmdb_and_memory_storage_agree_on_any_history(tmp_path_factory, ops):
    env = lmdb.open(str(tmp_path_factory.mktemp("db")), max_dbs=16, map_size=32 << 20)
    try:
        stores = [MemoryRaftStorage(), LmdbRaftStorage(env)]
        for op, index, count, term in ops:
            state = stores[0].load()
            base = state.snapshot.index
            last = base + len(state.entries)
            for store in stores:
                if op == "append":
                    first = min(max(index, base + 1), last + 1)
                    store.save(HardState(term, None, 0), entries(first, first + count, term))
                elif op == "snapshot":
                    store.save(None, [], Snapshot(base + index, term, ConfState(), (), b"s"))
                elif base < index <= last:
                    store.compact(Snapshot(index, term, ConfState(), (), b"c"))
            assert stores[0].load() == stores[1].load()
    finally:
        env.close()
