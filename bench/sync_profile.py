"""Where a cold sync's time per gene goes, without the network (issue 15, item 1).

The daemon's whole per-batch path, in one process and one thread of control: the
sender reads its feed and answers a pull (`answer_pull`: feed read, sovereignty policy,
encode, zstd), the frame is encoded and decoded as on a stream, and the receiver opens
it (`PullRound.open`: decompress, decode), verifies it (across cores,
`gd.node.services.verify_pool`), runs its own acceptance check and applies the batch and
its checkpoint in one LMDB transaction (`SyncStore.apply_batch`). Only libp2p (Noise,
yamux, the event loop) is missing, so the figure is what the apply path costs a node.

Reports the wall time, the process CPU time per gene and the verify worker processes'
(on a shared machine wall time says little, CPU time what a quiet one would do), and
with `--profile` the top functions by cumulative and own time (cProfile sees the
caller's thread; the verify workers' time shows as the wait on their futures).

    .venv/bin/python bench/sync_profile.py [--genes 20000] [--seed 1] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import random
import resource
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync import make_genes

from gd.genome import NodeKey
from gd.node.gc_tuning import batch_gc
from gd.node.services import sync_group
from gd.node.services.sync_group import MAX_GROUP_BATCHES, GroupCommit
from gd.node.services.verify_pool import VerifyPool
from gd.node.services.verify_procs import ProcessVerifyPool
from gd.node.store.cortex import Cortex
from gd.node.store.sync_store import SyncStore
from gd.protocol.sync import SyncReceiver, SyncSender
from gd.protocol.sync_round import PullRound, answer_pull
from gd.protocol.wire import decode_body, encode_body


def pull_all(src: Cortex, dst: Cortex, sender_id: str, zstd: bool, *,
             group: int = MAX_GROUP_BATCHES, tune_gc: bool = True,
             threads: bool = False, serve_cpu: list[float] | None = None) -> int:
    """One whole pull round from `src` into `dst`, frames encoded and decoded as on a
    stream, verified batches committed `group` at a time (`GroupCommit`, as the
    daemon's puller does; 1 = one transaction per batch), checked in processes as the
    daemon does (`threads`: the older thread pool). Returns the genes applied; adds the
    CPU seconds the serving side took (`answer_pull`) to `serve_cpu[0]`."""
    theirs, ours = SyncStore(src), SyncStore(dst)
    sending = SyncSender("receiver", theirs.read_feed, lambda r, g: True)
    pool: VerifyPool | ProcessVerifyPool = VerifyPool() if threads else ProcessVerifyPool()
    committer = GroupCommit(ours, time.monotonic, max_batches=group)
    payload = 0
    gc_ctx = batch_gc if tune_gc else nullcontext

    def applier(sender: str, genes: Any, upto: int) -> None:
        committer.stage(sender, genes, upto, payload)

    receiver = SyncReceiver(sender_id, applier, check=pool)
    round_ = PullRound(receiver, zstd=zstd)
    applied = 0
    try:
        pending = [round_.start()]
        while pending:
            pull = decode_body(encode_body(pending.pop(0)))
            served = time.process_time()
            with gc_ctx():  # as the daemon's sender does (`sync_serve.answer_batch`)
                frame, _, _ = answer_pull(sending, pull, lambda: src.last_seq, zstd)
            if serve_cpu is not None:
                serve_cpu[0] += time.process_time() - served
            with gc_ctx():
                opened = round_.open(decode_body(encode_body(frame)))
            if opened.ahead is not None:
                pending.append(opened.ahead)
            payload = opened.payload
            with gc_ctx():
                step = round_.apply(opened)
            if round_.done or committer.due():
                applied += sum(s.applied for _, s in committer.commit())
            if step.send is not None:
                pending.append(step.send)
    finally:
        pool.close()
    return applied


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plain", action="store_true", help="no zstd")
    parser.add_argument("--profile", action="store_true", help="print a cProfile")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--group", type=int, default=MAX_GROUP_BATCHES,
                        help="batches per LMDB transaction (1: one per batch)")
    parser.add_argument("--threads", action="store_true",
                        help="verify on the thread pool (the path before ADR 0038)")
    parser.add_argument("--no-batch-gc", action="store_true",
                        help="keep the collector's default thresholds in batch work")
    args = parser.parse_args()
    if args.genes < 1:
        parser.error("--genes must be at least 1")
    if args.group < 1:
        parser.error("--group must be at least 1")
    if args.no_batch_gc:  # measure the collector's share: batch work at default thresholds
        sync_group.batch_gc = nullcontext  # type: ignore[assignment]
    root = Path(tempfile.mkdtemp(prefix="gdprof", dir="/tmp"))
    try:
        key = NodeKey.from_seed(b"\x01" * 32)
        with Cortex.open(root / "a", map_size=4 << 30) as src, \
                Cortex.open(root / "b", map_size=4 << 30) as dst:
            genes = make_genes(key, args.genes, random.Random(args.seed))
            for i in range(0, len(genes), 5000):
                src.put_genes(genes[i:i + 5000])
            del genes
            gc.collect()
            gc.freeze()  # as the daemon does after start-up (gd.node.gc_tuning)
            prof = cProfile.Profile() if args.profile else None
            kids = _children_cpu()
            cpu, wall = time.process_time(), time.perf_counter()
            if prof is not None:
                prof.enable()
            serve_cpu = [0.0]
            n = pull_all(src, dst, key.peer_id, not args.plain, group=args.group,
                         tune_gc=not args.no_batch_gc, threads=args.threads,
                         serve_cpu=serve_cpu)
            if prof is not None:
                prof.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            kids = _children_cpu() - kids  # the verify workers, reaped by pool.close()
        if n != args.genes:
            raise SystemExit(f"applied {n} of {args.genes} genes")
        print(f"{n} genes: wall {wall:.2f} s ({1e6 * wall / n:.0f} us/gene, "
              f"{n / wall:.0f} genes/s), process CPU {1e6 * cpu / n:.0f} us/gene "
              f"(serving {1e6 * serve_cpu[0] / n:.0f}, receiving "
              f"{1e6 * (cpu - serve_cpu[0]) / n:.0f}), "
              f"worker processes {1e6 * kids / n:.0f} us/gene")
        if prof is not None:
            for order in ("cumulative", "tottime"):
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats(order).print_stats(args.top)
                print(out.getvalue())
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
