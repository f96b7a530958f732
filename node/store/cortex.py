"""The Cortex: the node's LMDB store of genes, synapses, experiences and decisions.

One LMDB environment, named sub-databases (DESIGN.md), in four modules:
`cortex_env.py` opens the environment, checks its schema and runs write transactions;
`cortex_genes.py` holds genes, their indexes and the change feed (with the Cortex's
invariants; the layout of their records is `gene_records.py`); `cortex_records.py`
synapses, experiences and decisions; this module puts them together as `Cortex`, with
its statistics and backup restore. Keys are built by `lmdb_tables.py`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from gd.node.home import make_private, private_dir
from gd.node.store.cortex_env import CortexError
from gd.node.store.cortex_records import CortexRecords
from gd.node.store.gene_records import CHANGE_SEQ_KEY
from gd.node.store.lmdb_tables import SEP, get_u64


@dataclass(frozen=True)
class CortexStats:
    """Counts and sizes for `gd-node status` (one read snapshot)."""

    genes: int
    versions: int
    synapses: int
    experiences: int
    decisions: int
    changes: int
    last_seq: int
    size_bytes: int
    by_status: dict[str, int]
    by_domain: dict[str, int]


class Cortex(CortexRecords):
    """An open LMDB Cortex. Use `Cortex.open(path)`; close with `.close()` or `with`."""

    def stats(self) -> CortexStats:
        d = self._dbs
        with self.env.begin() as txn:
            def count(name: str) -> int:
                return int(txn.stat(d[name])["entries"])

            by_status: dict[str, int] = {}
            for key, _ in txn.cursor(db=d["idx_status"]):
                name = key.split(SEP, 1)[0].decode()
                by_status[name] = by_status.get(name, 0) + 1
            by_domain: dict[str, int] = {}
            for key, _ in txn.cursor(db=d["idx_domain"]):
                name = key.split(SEP, 1)[0].decode()
                by_domain[name] = by_domain.get(name, 0) + 1
            info = self.env.info()
            stat = self.env.stat()
            size = (info["last_pgno"] + 1) * stat["psize"]
            return CortexStats(
                genes=count("genes"), versions=count("gene_versions"),
                synapses=count("synapses"), experiences=count("experiences"),
                decisions=count("decisions"), changes=count("changes"),
                last_seq=get_u64(txn, d["meta"], CHANGE_SEQ_KEY), size_bytes=size,
                by_status=by_status, by_domain=by_domain,
            )


def restore(source: str | Path, target: str | Path) -> Path:
    """Replace the Cortex at `target` with the backup at `source`.

    The caller must ensure no daemon holds `target`. The backup is opened and checked
    first (schema, readable genes); the current Cortex is moved aside to
    `<target>.pre-restore-N`, never deleted, so a mistaken restore can be undone.
    """
    source, target = Path(source), Path(target)
    with Cortex.open(source, readonly=True) as backup:
        problems = backup.check_indexes()
        if problems:
            raise CortexError(f"backup at {source} is inconsistent: {problems[0]}")
        staging = target.with_name(target.name + ".restoring")
        if staging.exists():
            for child in staging.iterdir():
                child.unlink()
            staging.rmdir()
        staging.mkdir(parents=True)
        private_dir(staging)
        backup.env.copy(str(staging), compact=True)
        make_private(staging)
    aside = None
    if target.exists():
        n = 1
        while target.with_name(f"{target.name}.pre-restore-{n}").exists():
            n += 1
        aside = target.with_name(f"{target.name}.pre-restore-{n}")
        target.rename(aside)
        make_private(aside)
    staging.rename(target)
    with contextlib.suppress(OSError):
        _fsync_dir(target.parent)
    return aside or target


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
