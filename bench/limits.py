"""The machine's own ceilings for issue 15's rows, measured in the same run (`make bench`
runs this first; `bench/goals.py` sets each row beside its ceiling).

Every row of issue 15 carries signature work it may not skip: a received gene is
verified once by its receiver, a ledger statement once by every voter that holds it, an
imported gene is signed once. This measures that work alone, with nothing else running:
pynacl's Ed25519 verify and sign, on one process and on one process per core at once
(forked workers, so no GIL is shared), over the real messages (a ~1.5 KB gene body of
`bench/sync.py`, a ledger statement of `bench/ledger_net.py`). What a row cannot beat on
this machine while it keeps those checks is then plain arithmetic (`bench/goals.py`):
e.g. three voters on one machine verify every statement three times, so they commit at
most a third of the all-core verify rate.

Medians of `--trials` runs; on a shared machine the all-core figure swings most (two
vCPUs do not always give twice one).

    python bench/limits.py [--seconds 1.0] [--trials 3]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report
from ledger_net import key, signed
from sync import make_genes

from gd.genome import NodeKey
from gd.genome.identity import verify
from gd.node.services.verify_pool import default_workers


@functools.cache
def _messages() -> dict[str, tuple[str, bytes, bytes, NodeKey]]:
    """kind -> (signer peer id, message, signature, signer key): one real gene body and
    one real ledger statement, as the nodes check them (built once per process)."""
    gene_key = NodeKey.from_seed(bytes(range(32)))
    gene = make_genes(gene_key, 1, random.Random(1))[0]
    statement = signed(1, "limits", 1)[0]
    return {"gene": (gene.author, gene.signing_bytes, gene.signature, gene_key),
            "statement": (statement.author, statement.statement_bytes(),
                          statement.signature, key(1))}


def _run(op: str, kind: str, n: int) -> float:
    """Seconds for `n` operations of `op` on a message of `kind` (in this process)."""
    author, message, signature, signer = _messages()[kind]
    start = time.perf_counter()
    if op == "verify":
        for _ in range(n):
            verify(author, message, signature)
    else:
        for _ in range(n):
            signer.sign(message)
    return time.perf_counter() - start


def _calibrate(op: str, kind: str, seconds: float) -> int:
    """How many operations take about `seconds` on one core."""
    took = _run(op, kind, 200)
    return max(200, int(200 * seconds / max(took, 1e-6)))


def rate(op: str, kind: str, workers: int, n: int, pool: ProcessPoolExecutor | None) -> float:
    """Operations per second: `workers` processes doing `n` each at once (1 = inline).
    Wall time of the slowest, so a worker that started late only lowers the figure."""
    if workers == 1 or pool is None:
        return n / _run(op, kind, n)
    start = time.perf_counter()
    list(pool.map(_run, [op] * workers, [kind] * workers, [n] * workers))
    return workers * n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="Length of one timed run per worker (default 1.0).")
    parser.add_argument("--trials", type=int, default=3, help="Runs per figure (median).")
    args = parser.parse_args()
    if args.seconds <= 0 or args.trials < 1:
        parser.error("--seconds must be positive and --trials at least 1")
    n_cores = default_workers()  # the cores this process may run on
    rows = []
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(n_cores, mp_context=ctx) as pool:
        list(pool.map(_run, ["verify"] * n_cores, ["gene"] * n_cores, [50] * n_cores))  # warm
        for op, kind in (("verify", "gene"), ("verify", "statement"), ("sign", "gene")):
            n = _calibrate(op, kind, args.seconds)
            one = statistics.median(rate(op, kind, 1, n, None) for _ in range(args.trials))
            every = statistics.median(rate(op, kind, n_cores, n, pool)
                                      for _ in range(args.trials))
            rows.append({"operation": f"{op} {kind}", "one_core_per_s": round(one),
                         "all_cores_per_s": round(every), "cores": n_cores,
                         "scaling": round(every / one, 2)})
    report("limits", rows, {"seconds": args.seconds, "trials": args.trials})
    return 0


if __name__ == "__main__":
    sys.exit(main())
