"""Coverage-guided fuzzing (atheris) of every decoder that reads a peer's bytes.

    python tests/fuzz/fuzz_wire.py -atheris_runs=20000 -seed=1

The first input byte picks a target, the rest is its input, either raw or as mutations
of a valid encoding (so the fuzzer starts deep inside the formats). Each target may raise
only its documented "the peer's fault" error; anything else escapes, and atheris reports
it with the input that caused it (exit code non-zero). tests/fuzz/test_fuzz_wire.py runs
this script for a bounded number of iterations.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from gd.genome.identity import NodeKey
    from gd.ledger.ledger_frames import RaftFrame
    from gd.ledger.raft_messages import AppendEntries, RaftMessage, VoteRequest
    from gd.ledger.raft_records import Entry, RaftRemoteError
    from gd.protocol.errors import RemoteProtocolError
    from gd.protocol.handshake import Handshake, HandshakeOffer, Hello, Verdict
    from gd.protocol.reconcile import Reconciler
    from gd.protocol.reconcile_messages import ReconcileMessage, ReconcileProtocolError
    from gd.protocol.sync_frames import ReconcileStep
    from gd.protocol.sync_messages import ChangeBatch, ChangesRequest, SyncProtocolError
    from gd.protocol.wire import FrameDecoder, decode_body, encode_frame

# Small frames keep each run fast; the size limit itself is part of what is fuzzed.
MAX_FRAME = 64 * 1024
KEY = NodeKey.from_seed(b"\x01" * 32)
PEER = NodeKey.from_seed(b"\x02" * 32)
OFFER = HandshakeOffer(org="Acme", region="eu-west", capabilities=("relay-v2",),
                       domains=("turbofan",), ledger_size=0, ledger_root=b"\x00" * 32)
ITEMS = [(1000 + i, bytes([i]) * 32) for i in range(20)]


def _hello() -> bytes:
    return encode_frame(Hello(
        versions=("gd/1",), capabilities=("sync",), org="Acme", region="eu-west",
        nonce=b"n" * 16, timestamp_ms=1, ledger_size=0, ledger_root=b"\x00" * 32,
        domains=("turbofan",), signature=b"s" * 64))


SEEDS: list[bytes] = [
    encode_frame(Verdict(ok=False, reason="version-mismatch", detail="none in common")),
    _hello(),
    ChangesRequest(since=7, max_genes=16).encode(),
    ChangeBatch(since=7, upto=9, more=False, genes=({"id": "g1", "v": 1},)).encode(),
    Reconciler.initiator(ITEMS).initiate().encode(),
    encode_frame(ReconcileStep(Reconciler.initiator(ITEMS).initiate())),
    VoteRequest(frm="node-a", to="node-b", term=3, last_index=5, last_term=2).encode(),
    # A Raft message as one frame (/gd/raft/2.0.0): the registry's nested-record checks.
    encode_frame(RaftFrame(AppendEntries("node-a", "node-b", 3, prev_index=4, prev_term=2,
                                         entries=(Entry(3, 5, data=b"x", client_id="c",
                                                        request_id=1),), commit=4))),
]


def frames(data: bytes, chunk: int) -> None:
    dec = FrameDecoder(max_frame_size=MAX_FRAME)
    try:
        for i in range(0, len(data), chunk):
            dec.feed(data[i:i + chunk])
            list(dec)
        dec.close()
    except RemoteProtocolError:
        return


def body(data: bytes) -> None:
    try:
        decode_body(data)
    except RemoteProtocolError:
        return


def handshake(data: bytes) -> None:
    # Documented: garbage becomes a Rejected outcome, never an exception.
    hs = Handshake(KEY, OFFER, PEER.peer_id, now_ms=1, nonce=b"\x00" * 16)
    hs.receive_data(data)


def sync(data: bytes) -> None:
    for cls in (ChangesRequest, ChangeBatch):
        try:
            cls.decode(data)
        except SyncProtocolError:
            continue


def reconcile(data: bytes) -> None:
    try:
        Reconciler.responder(ITEMS).receive(ReconcileMessage.decode(data))
    except ReconcileProtocolError:
        return


def raft(data: bytes) -> None:
    try:
        RaftMessage.decode(data)
    except RaftRemoteError:
        return


TARGETS = (frames, body, handshake, sync, reconcile, raft)


def mutate(seed: bytes, fdp: atheris.FuzzedDataProvider) -> bytes:
    out = bytearray(seed)
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        if not out:
            break
        out[fdp.ConsumeIntInRange(0, len(out) - 1)] = fdp.ConsumeInt(1) & 0xFF
    if fdp.ConsumeBool():
        out = out[:fdp.ConsumeIntInRange(0, len(out))]
    return bytes(out)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = TARGETS[fdp.ConsumeIntInRange(0, len(TARGETS) - 1)]
    if fdp.ConsumeBool():
        payload = mutate(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)], fdp)
    else:
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    if target is frames:
        frames(payload, 1 + len(data) % 64)
    else:
        target(payload)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
