"""Gene import from JSONL or CSV files.

One gene per line. JSONL:

    {"domain": "turbofan", "name": "inspect-when-hot",
     "codons": [{"feature": "s11", "op": ">", "threshold": 47.6}],
     "action": "inspect", "params": {}, "purpose": "avoid unplanned failure",
     "synapses": [{"target": "overhaul-when-worn", "kind": "follows", "weight": 0.5}]}

CSV has the same columns (`domain,name,codons,action,params,purpose`) with codons written
`feature op threshold; ...` and params as a JSON object (or empty).

Every line is validated on its own: a bad line is reported with its number and reason and
the rest are imported. Validation covers the format (`gd.genome.checks`) and the values
against the domain pack (`gd.motors.domains.gene_check`: a known domain, its features,
operators and actions, the parameter types it reads), so a gene that could never be
evaluated is refused here rather than stored as native. Lines are stored in batches, one
LMDB transaction per batch, so an interrupted import leaves whole batches, never half a
gene. The importing node is the genes' origin and author: each gene is signed with its
key. Re-importing an unchanged gene changes nothing; a changed gene (same domain and
name) becomes its next version.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gd.genome.errors import ValidationError
from gd.genome.gene import Gene, GeneStatus, gene_id_for
from gd.genome.identity import NodeKey
from gd.genome.synapse import Synapse
from gd.node.app.sign_pool import (
    LineJob,
    LineResult,
    SignedLine,
    SignPool,
    StoredVersion,
)
from gd.node.clock import hlc_now
from gd.node.store.cortex import Cortex, CortexError
from gd.node.store.gene_records import GeneVersion

if TYPE_CHECKING:
    from gd.node.app.import_lines import GeneSpec

# Lines a transaction. Larger transactions share B-tree pages and commits: on the 2-core
# machine, sign + ingest of 100k genes went 15.5k -> 16.8k -> 18.3k -> 19.0k genes/s at
# 1,000 / 2,000 / 3,000 / 5,000 (bench/cortex.py), CPU per gene 82 -> 70 µs. 5,000 lines
# are ~10 MB held and ~0.2 s of one write transaction; an interrupted import keeps every
# whole batch, and importing the file again skips what is stored.
DEFAULT_BATCH = 5000
# Below this file size `genes import` signs in its own process: starting a pool of
# workers (~0.5 s) costs more than it saves for ~1,000 lines.
POOL_MIN_BYTES = 256 * 1024


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    synapses: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.added + self.updated + self.unchanged + len(self.rejected)

    def to_plain(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "synapses": self.synapses,
                "rejected": [{"line": n, "reason": r} for n, r in self.rejected]}


def build_gene(spec: GeneSpec, key: NodeKey, existing: Gene | None, hlc: int,
               next_version: int | None = None) -> Gene | None:
    """The gene this line means: a new gene, its next version, or None if unchanged."""
    if existing is None:
        return Gene.create(key, domain=spec.domain, name=spec.name, codons=spec.codons,
                           action=spec.action, params=spec.params, purpose=spec.purpose,
                           hlc=hlc, gene_id=spec.gene_id)
    if (existing.codons == spec.codons and existing.action == spec.action
            and dict(existing.params) == spec.params and existing.purpose == spec.purpose):
        return None
    if existing.origin != key.peer_id:
        raise ValidationError("name", f"gene {existing.id} belongs to another origin")
    return existing.edited(key, hlc=hlc, version=next_version, codons=spec.codons,
                           action=spec.action, params=spec.params, purpose=spec.purpose)


class _Known:
    """The Cortex's genes as the import's lines look them up: one read transaction per
    batch instead of one per line (a new gene is one `get`). Released before each batch
    is written, so the next batch's look-ups see it."""

    def __init__(self, cortex: Cortex) -> None:
        self._cortex = cortex
        self._txn: Any = None

    def get(self, gene_id: str) -> Gene | None:
        if self._txn is None:
            self._txn = self._cortex.env.begin()
        return self._cortex.get_gene_in(self._txn, gene_id)

    def release(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None


def _signing_processes(path: Path, workers: int | None) -> int:
    """How many processes sign: `workers` if given; else one per core for a file big
    enough to repay starting them (~0.5 s), and none (sign here) below that."""
    if workers is not None:
        return max(1, workers)
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = max(1, os.cpu_count() or 1)
    try:
        big = path.stat().st_size >= POOL_MIN_BYTES
    except OSError:
        big = False  # the reader reports the unreadable file
    return cores if cores > 1 and big else 1


def import_genes(
    cortex: Cortex,
    key: NodeKey,
    path: Path,
    *,
    batch_size: int = DEFAULT_BATCH,
    status: GeneStatus = GeneStatus.NATIVE,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> ImportReport:
    """Import a file; `progress(lines_done)` is called after each batch.

    With more than one worker (by default for big files) the lines are parsed, checked
    and signed as new genes by a `SignPool` of processes a window ahead of this thread,
    which decides new or known in line order and writes each batch in one transaction
    while the workers sign the next. A known gene's edit is built and signed here."""
    # Here, not at the top: the line checks load the domain packs (numpy), which a CLI
    # command that only names `DEFAULT_BATCH` or hands the import to the daemon never
    # needs (~0.1 s of every command's start).
    from gd.node.app.import_lines import GeneSpec, iter_raw, parse_line

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    processes = _signing_processes(path, workers)
    report = ImportReport()
    pending_synapses: list[tuple[GeneSpec, str]] = []
    batch: list[tuple[GeneVersion, bool, GeneSpec | None]] = []
    in_batch: set[str] = set()
    lines = 0

    known = _Known(cortex)

    def flush() -> None:
        known.release()  # the next look-up sees this batch
        if batch:
            cortex.put_genes([version for version, _, _ in batch])
            for version, is_new, spec in batch:
                if is_new:
                    report.added += 1
                else:
                    report.updated += 1
                if spec is not None:
                    pending_synapses.append((spec, version.id))
        batch.clear()
        in_batch.clear()
        if progress:
            progress(lines)

    def take(number: int, text: bytes, stamp: int, signed: SignedLine | None) -> None:
        spec = None if signed is not None else parse_line(number, text)
        if isinstance(spec, tuple):
            report.rejected.append(spec)
            return
        if signed is not None:
            gene_id = signed.id
        else:
            assert spec is not None
            gene_id = spec.gene_id or gene_id_for(key.peer_id, spec.domain, spec.name)
        if gene_id in in_batch:
            flush()  # a later line edits a gene of this batch: store the earlier first
        existing = known.get(gene_id)
        in_batch.add(gene_id)
        if existing is None and signed is not None:
            wants = parse_line(number, text) if signed.has_synapses else None
            batch.append((StoredVersion(gene_id, 1, signed.domain, signed.origin,
                                        signed.wire_bytes, signed.version_hash, status),
                          True, wants if isinstance(wants, GeneSpec) else None))
            return
        if spec is None:  # signed as new by a worker, but the gene is known: edit it here
            spec = parse_line(number, text)
            assert isinstance(spec, GeneSpec)  # the worker accepted the same text
        try:
            gene = build_gene(spec, key, existing, stamp,
                              cortex.next_version(gene_id) if existing else None)
        except ValidationError as exc:
            report.rejected.append((spec.line, str(exc)))
            return
        if gene is None:  # only an existing gene is unchanged
            assert existing is not None
            report.unchanged += 1
            if spec.synapses:
                pending_synapses.append((spec, existing.id))
            return
        if status != GeneStatus.NATIVE:
            gene = gene.with_local(status=status)
        batch.append((gene, existing is None, spec if spec.synapses else None))

    def stream(pool: SignPool | None) -> Iterator[tuple[int, bytes | str, int,
                                                         LineResult | None]]:
        """Every record in file order with its stamp and, with a pool, its worker's
        result (refused-before-parsing records carry None)."""
        if pool is None:
            for number, item in iter_raw(path):
                yield number, item, hlc_now(), None
            return
        held: deque[tuple[int, bytes | str, int]] = deque()  # read, not yet taken

        def jobs() -> Iterator[LineJob]:
            for number, item in iter_raw(path):
                stamp = hlc_now()
                held.append((number, item, stamp))
                if isinstance(item, bytes):
                    yield number, item, stamp

        for result in pool.results(jobs()):
            number, item, stamp = held.popleft()
            while isinstance(item, str):
                yield number, item, stamp, None
                number, item, stamp = held.popleft()
            yield number, item, stamp, result
        while held:
            yield (*held.popleft(), None)

    def run(pool: SignPool | None) -> None:
        nonlocal lines
        for number, item, stamp, result in stream(pool):
            lines += 1
            if isinstance(item, str):
                report.rejected.append((number, item))
            elif result is None or isinstance(result, SignedLine):
                take(number, item, stamp, result)
            else:  # the worker refused the line (a SignedLine is a tuple too: test it first)
                report.rejected.append(result)
            if len(in_batch) >= batch_size:
                flush()

    try:
        if processes > 1:
            # A worker lost mid-import (killed, out of memory) costs speed, not lines:
            # the pool signs the rest here, with the same stamps (`SignPool`).
            with SignPool(key, processes) as pool:
                run(pool)
        else:
            run(None)
        flush()
    finally:
        known.release()
    for spec, gene_id in pending_synapses:
        for i, raw in enumerate(spec.synapses):
            try:
                target = raw.get("target")
                if not isinstance(target, str):
                    raise ValidationError(f"synapses[{i}].target", "is required")
                target_id = target if cortex.get_gene(target) else gene_id_for(
                    key.peer_id, spec.domain, target)
                cortex.add_synapse(Synapse(gene_id, target_id, raw.get("kind", "follows"),
                                           raw.get("weight", 1.0)))
                report.synapses += 1
            except (ValidationError, CortexError) as exc:
                report.rejected.append((spec.line, f"synapses[{i}]: {exc}"))
    report.rejected.sort()
    return report
