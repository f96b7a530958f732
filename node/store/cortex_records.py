"""The Cortex's other records: synapses (the gene graph), experiences and decisions.

Each lives beside the genes in the same environment; an experience bumps its gene's
counters in the same transaction that records it.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from gd.genome.decision import Decision
from gd.genome.experience import Experience
from gd.genome.gene import Gene
from gd.genome.synapse import Synapse, SynapseKind
from gd.node.store.cortex_env import UnknownGene, must_get
from gd.node.store.cortex_genes import CortexGenes
from gd.node.store.gene_records import Head, head_record
from gd.node.store.lmdb_tables import SEP, U64, Txn, join_key, prefix_keys

# A k-hop query stops after visiting this many genes: a hub gene must not make one query
# walk the whole graph.
MAX_NEIGHBOURHOOD = 10_000
_F64 = struct.Struct(">d")


class CortexRecords(CortexGenes):
    """Synapses, experiences and decisions (the rest of `Cortex`)."""

    # -- synapses ----------------------------------------------------------------
    def add_synapse(self, synapse: Synapse) -> None:
        """Add or re-weight an edge; both genes must exist."""

        def run(txn: Txn) -> None:
            for end in (synapse.source, synapse.target):
                if txn.get(end.encode(), db=self._dbs["genes"]) is None:
                    raise UnknownGene(f"no gene {end!r} in this Cortex")
            weight = _F64.pack(synapse.weight)
            kind = str(synapse.kind)
            txn.put(join_key(synapse.source, kind, synapse.target), weight,
                    db=self._dbs["synapses"])
            txn.put(join_key(synapse.target, kind, synapse.source), weight,
                    db=self._dbs["synapses_rev"])

        self.write(run)

    def synapses_of(self, gene_id: str, *, incoming: bool = False) -> list[Synapse]:
        db = self._dbs["synapses_rev" if incoming else "synapses"]
        prefix = gene_id.encode() + SEP
        out = []
        with self.env.begin() as txn:
            for key in prefix_keys(txn, db, prefix):
                _, kind, other = key.decode().split("\x00")
                weight = _F64.unpack(must_get(txn, db, key, "synapse"))[0]
                src, dst = (other, gene_id) if incoming else (gene_id, other)
                out.append(Synapse(src, dst, SynapseKind(kind), weight))
        return out

    def neighbourhood(self, gene_id: str, k: int, *, kinds: Iterable[str] | None = None,
                      direction: str = "both") -> dict[str, int]:
        """Genes within `k` synapse hops of `gene_id` → their hop distance (BFS).

        `direction` is "out", "in" or "both"; `kinds` restricts the edge types. Stops after
        `MAX_NEIGHBOURHOOD` genes."""
        if k < 0:
            raise ValueError("k must be >= 0")
        if direction not in ("out", "in", "both"):
            raise ValueError("direction must be out, in or both")
        wanted = {str(SynapseKind(x)) for x in kinds} if kinds is not None else None
        dbs = []
        if direction in ("out", "both"):
            dbs.append(self._dbs["synapses"])
        if direction in ("in", "both"):
            dbs.append(self._dbs["synapses_rev"])
        seen: dict[str, int] = {gene_id: 0}
        queue = deque([gene_id])
        with self.env.begin() as txn:
            while queue and len(seen) <= MAX_NEIGHBOURHOOD:
                current = queue.popleft()
                hops = seen[current]
                if hops == k:
                    continue
                prefix = current.encode() + SEP
                for db in dbs:
                    for key in prefix_keys(txn, db, prefix):
                        _, kind, other = key.decode().split("\x00")
                        if (wanted is None or kind in wanted) and other not in seen:
                            seen[other] = hops + 1
                            queue.append(other)
        del seen[gene_id]
        return seen

    # -- experiences -------------------------------------------------------------
    def add_experience(self, exp: Experience) -> str:
        """Record an outcome and bump the gene's success/failure counters, atomically.
        Recording the same experience twice changes nothing (content-addressed)."""

        self.add_experiences([exp])
        return exp.id

    def add_experiences(self, exps: Iterable[Experience]) -> int:
        """Record many outcomes in ONE transaction (a history import): all or none, each
        gene's counters bumped once per new experience. Returns how many were new."""

        batch = list(exps)  # `run` may run again after the map grows

        def run(txn: Txn) -> int:
            genes: dict[str, Gene] = {}
            numbers: dict[str, int] = {}  # each gene's index number, kept in its head
            added = 0
            for exp in batch:
                key = join_key(exp.gene_id, exp.id)
                if txn.get(key, db=self._dbs["experiences"]) is not None:
                    continue
                gene = genes.get(exp.gene_id)
                if gene is None:
                    raw = txn.get(exp.gene_id.encode(), db=self._dbs["genes"])
                    if raw is None:
                        raise UnknownGene(f"no gene {exp.gene_id!r} in this Cortex")
                    gene = self._load(txn, exp.gene_id.encode(), raw)
                    numbers[exp.gene_id] = Head.decode(raw).iseq
                txn.put(key, exp.encode(), db=self._dbs["experiences"])
                genes[exp.gene_id] = gene.with_local(
                    successes=gene.successes + int(exp.success),
                    failures=gene.failures + int(not exp.success))
                added += 1
            for gene_id, gene in genes.items():
                txn.put(gene_id.encode(), head_record(gene, numbers[gene_id]),
                        db=self._dbs["genes"])
            return added

        return self.write(run)

    def experience_count(self) -> int:
        """How many experiences the Cortex holds (LMDB keeps the count: O(1)); a cheap
        marker that the record changed, for callers that cache what they read of it."""
        with self.env.begin() as txn:
            return int(txn.stat(self._dbs["experiences"])["entries"])

    def genes_with_history(self, gene_ids: Iterable[str]) -> set[str]:
        """Which of `gene_ids` have at least one decision or experience here, in one read
        transaction: a received batch asks this once, instead of reading each gene's
        decisions and experiences (most received genes have none; issue 15)."""
        found: set[str] = set()
        with self.env.begin() as txn:
            decided = txn.cursor(db=self._dbs["idx_decision_gene"])
            experienced = txn.cursor(db=self._dbs["experiences"])
            for gene_id in gene_ids:
                prefix = gene_id.encode() + SEP
                for cur in (decided, experienced):
                    if cur.set_range(prefix) and cur.key().startswith(prefix):
                        found.add(gene_id)
                        break
        return found

    def experiences_for(self, gene_id: str) -> list[Experience]:
        prefix = gene_id.encode() + SEP
        db = self._dbs["experiences"]
        with self.env.begin() as txn:
            return [Experience.decode(must_get(txn, db, key, "experience"))
                    for key in prefix_keys(txn, db, prefix)]

    # -- decisions ---------------------------------------------------------------
    def put_decision(self, decision: Decision) -> str:
        return self.put_decisions([decision])[0]

    def put_decisions(self, decisions: Iterable[Decision],
                      also: Callable[[Txn], object] | None = None) -> list[str]:
        """Store decisions in ONE transaction: a batch evaluation is kept whole or not.
        `also` writes more in that transaction (the HTTP API's audit record of the
        call: the decision and who asked for it commit together, with one fsync)."""
        batch = list(decisions)

        def run(txn: Txn) -> list[str]:
            for decision in batch:
                txn.put(decision.id.encode(), decision.encode(), db=self._dbs["decisions"])
                txn.put(join_key(decision.gene_id, U64.pack(decision.decided_at), decision.id),
                        b"", db=self._dbs["idx_decision_gene"])
            if also is not None:
                also(txn)
            return [d.id for d in batch]

        return self.write(run)

    def get_decision(self, decision_id: str) -> Decision | None:
        with self.env.begin() as txn:
            raw = txn.get(decision_id.encode(), db=self._dbs["decisions"])
        return Decision.decode(raw) if raw is not None else None

    def decisions(self, gene_id: str | None = None) -> Iterator[Decision]:
        with self.env.begin() as txn:
            if gene_id is None:
                for _, raw in txn.cursor(db=self._dbs["decisions"]):
                    yield Decision.decode(raw)
                return
            prefix = gene_id.encode() + SEP
            for key in prefix_keys(txn, self._dbs["idx_decision_gene"], prefix):
                decision_id = key[len(prefix) + 9:]
                yield Decision.decode(
                    must_get(txn, self._dbs["decisions"], decision_id, "decision"))
