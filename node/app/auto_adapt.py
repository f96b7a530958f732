"""Automatic adaptation: a veto, or a gene received from a peer, queues one M_M job.

Issue 14, item 3: "a veto in the daemon (or a gene received from a peer) queues an
adaptation job (durable, resumable) whose winners land `adaptation_pending` with
lineage — a person still approves". The job itself is the API's durable `adapt` job
(node/api/jobs.py calls `decisions.adapt_gene`, which stores winners pending, their
parent the adapted gene, and only those that beat it on held-out states). This module
decides *whether* to queue one, through a `JobQueue` the daemon injects (the app room
does not import the API), and keeps the book of what it queued in the Cortex's
`auto_adapt` sub-database:

* **once per gene version**: a version auto-adapted before (whatever came of it) is not
  queued again; a person can always run `gd-node adapt` or POST an adapt job by hand.
  A `needs-evidence` verdict is not a veto and queues nothing; only band `vetoed` does.
* **bounded**: at most `max_queued` auto jobs queued or running at once (beyond, the
  request is counted as skipped), and at most `max_per_peer` jobs in any 24 hours for
  the genes one peer sends (a peer flooding us with genes buys that many M_M searches a
  day, each bounded by `population` × `generations` over at most 512 states).
* **the adaptation rate**: of the vetoed genes whose auto job finished, the share that
  got at least one variant beating its parent on held-out states (`summary()`).

A received gene has no history of its own here; it is adapted on the states of our own
history in its domain (the experiences of our genes there), the record we trust. With no
such history nothing is queued (counted as `no_history`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from gd.crdt.clock import Clock
from gd.genome import Decision, Gene, StateVector, canonical
from gd.genome.gene import GeneStatus
from gd.node.app.auto_adapt_settings import AdaptationSettings
from gd.node.app.gene_history import ADAPTABLE, MAX_ADAPT_STATES, history_states
from gd.node.clock import SYSTEM_CLOCK
from gd.node.store.cortex import Cortex

BOOK_DB: Final = "auto_adapt"
DAY_MS: Final = 24 * 3600 * 1000
SOURCES: Final = ("veto", "received")
# Outcome counters kept per source (the book's `c/<source>` records).
COUNTERS: Final = ("queued", "adapted", "improved", "failed", "cancelled", "skipped_cap",
                   "skipped_peer", "no_history")


class JobQueue(Protocol):
    """Where adapt jobs go (the API's durable job store, injected by the daemon)."""

    def submit_adapt(self, gene: Gene, params: dict[str, Any], actor: str) -> str:
        """Queue an adapt job; returns its id."""
        ...

    def job_state(self, job_id: str) -> tuple[str, dict[str, Any]] | None:
        """(state, result) of a job, None when there is no such job."""
        ...


def _key(gene: Gene) -> str:
    return f"{gene.id}:{gene.version_hash.hex()}"


def domain_states(cortex: Cortex, gene: Gene) -> list[StateVector]:
    """Our own record in the gene's domain: the states of our genes' experiences there,
    in a fixed order, the last MAX_ADAPT_STATES of them."""
    seen: dict[bytes, StateVector] = {}
    dated: list[tuple[int, str, StateVector]] = []
    for other in cortex.genes(domain=gene.domain, status=GeneStatus.NATIVE):
        dated += [(e.observed_at, e.id, e.state) for e in cortex.experiences_for(other.id)]
    dated.sort(key=lambda item: item[:2])
    for *_, state in dated:
        seen.setdefault(canonical.encode(state.to_plain()), state)
    return list(seen.values())[-MAX_ADAPT_STATES:]


class AutoAdapter:
    """Queues auto-adaptation jobs and keeps their book. Thread-safe: the API's handlers,
    the job runner and the sync applier call it from worker threads."""

    def __init__(self, cortex: Cortex, settings: AdaptationSettings, queue: JobQueue,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.cortex = cortex
        self.settings = settings
        self.queue = queue
        self.clock = clock
        self.db = cortex.open_db(BOOK_DB)
        self._lock = threading.Lock()
        # domain -> (experience count when read, our states there): every synced batch
        # asks for its domain's history, and reading it walks every gene of the domain
        # (100k received genes made a cold sync quadratic). An experience added anywhere
        # invalidates it; a gene approved with experiences recorded while pending joins
        # at the next experience.
        self._domain_history: dict[str, tuple[int, list[StateVector]]] = {}

    def domain_history(self, gene: Gene, marker: int) -> list[StateVector]:
        """`domain_states` for the gene's domain, read again only after the Cortex's
        experiences changed (`marker`: their count, `Cortex.experience_count`, which the
        caller reads once per call). Called with the lock held."""
        cached = self._domain_history.get(gene.domain)
        if cached is None or cached[0] != marker:
            cached = (marker, domain_states(self.cortex, gene))
            self._domain_history[gene.domain] = cached
        return cached[1]

    # -- the book ----------------------------------------------------------------------
    def _get(self, key: str) -> Any:
        with self.cortex.env.begin() as txn:
            raw = txn.get(key.encode(), db=self.db)
        return None if raw is None else canonical.decode(raw)

    def _prefix(self, prefix: str) -> list[tuple[str, Any]]:
        out = []
        with self.cortex.env.begin() as txn:
            cur = txn.cursor(db=self.db)
            if cur.set_range(prefix.encode()):
                for k, raw in cur:
                    if not k.startswith(prefix.encode()):
                        break
                    out.append((k.decode(), canonical.decode(raw)))
        return out

    def _write(self, puts: Mapping[str, Any], deletes: Sequence[str] = ()) -> None:
        if not puts and not deletes:
            return

        def run(txn: Any) -> None:
            for k in deletes:
                txn.delete(k.encode(), db=self.db)
            for k, v in puts.items():
                txn.put(k.encode(), canonical.encode(v), db=self.db)

        self.cortex.write(run)

    def settle(self) -> int:
        """Move the book's open entries whose jobs ended to `d/`, counting how each ended;
        returns how many are still open (queued or running)."""
        open_now = 0
        tally = _Tally(self)
        deletes = []
        for key, entry in self._prefix("o/"):
            found = self.queue.job_state(entry["job"])
            if found is not None and found[0] in ("queued", "running"):
                open_now += 1
                continue
            state, result = found if found is not None else ("failed", {})
            winners = len(result.get("variants", [])) + len(result.get("existing", []))
            tally.add(entry["source"], "adapted" if state == "succeeded" else
                      "cancelled" if state == "cancelled" else "failed")
            if state == "succeeded" and winners:
                tally.add(entry["source"], "improved")
            tally.puts[f"d/{key[2:]}"] = {**entry, "state": state, "winners": winners}
            deletes.append(key)
        if deletes:
            self._write(tally.flush(), deletes)
        return open_now

    # -- queueing ----------------------------------------------------------------------
    def _queue(self, gene: Gene, source: str, tally: _Tally, peer: str = "",
               stored_as: GeneStatus | None = None) -> str | None:
        """Queue one adapt job for this gene version unless the book or a bound says no;
        the job id, or None. Called with the lock held; counters and the book entry go
        into `tally`, written once per call (a synced batch costs one write, not one a
        gene). `stored_as`: the status the version is stored under, when `gene` is the
        received form (the job gets the gene with it; most are refused first)."""
        key = _key(gene)
        if (stored_as or gene.status) not in ADAPTABLE or key in tally.puts or \
                tally.booked(key):
            return None
        if tally.now_ms is None:  # one reading of the clock per call
            tally.now_ms = int(self.clock.wall() * 1000)
        now_ms = tally.now_ms
        if peer:
            times = tally.peer_times(peer, now_ms)
            if len(times) >= self.settings.max_per_peer:
                tally.add(source, "skipped_peer")
                return None
        if tally.open_jobs is None:
            tally.open_jobs = self.settle()
        if tally.open_jobs >= self.settings.max_queued:
            tally.add(source, "skipped_cap")
            return None
        states = tally.states(gene)
        if not states:
            tally.add(source, "no_history")
            return None
        if stored_as is not None:  # after the history: most received genes stop there
            gene = gene.with_local(status=stored_as)
        lineage = {"source": source, "peer": peer, "parent": gene.id,
                   "parent_version": gene.version,
                   "parent_version_hash": gene.version_hash.hex()}
        params = {"population": self.settings.population,
                  "generations": self.settings.generations, "top": 5,
                  # Seeded by the version it adapts: the job replays bit for bit.
                  "seed": int.from_bytes(gene.version_hash[:4], "big"),
                  "states": [{"values": dict(s.values), "entity": s.entity, "t": s.t}
                             for s in states], "auto": lineage}
        job_id = self.queue.submit_adapt(gene, params, f"auto-adapt:{source}")
        tally.open_jobs += 1
        tally.puts[f"o/{key}"] = {**lineage, "job": job_id, "queued_ms": now_ms}
        tally.add(source, "queued")
        if peer:
            tally.puts[f"p/{peer}"] = [*tally.peer_times(peer, now_ms), now_ms]
        return job_id

    def after_decisions(self, decisions: Sequence[Decision]) -> list[str]:
        """Stored decisions: each gene with a `vetoed` one gets an adapt job (once per
        version); `needs-evidence` and approvals queue nothing. Returns the job ids."""
        if not self.settings.auto:
            return []
        # Decisions exist, so the motors are loaded already (imported here, not at the
        # top: the daemon builds this adapter at start, ADR 0063).
        from gd.motors.craft import BAND_VETOED

        vetoed = sorted({(d.gene_id, d.gene_version) for d in decisions
                         if d.band == BAND_VETOED})
        made = []
        with self._lock:
            tally = _Tally(self)
            for gene_id, version in vetoed:
                gene = self.cortex.get_gene(gene_id)
                if gene is None or gene.version_hash.hex() != version:
                    continue  # edited since: the new version is judged on its own
                job = self._queue(gene, "veto", tally)
                if job is not None:
                    made.append(job)
            self._write(tally.flush())
        return made

    def after_received(self, sender: str, genes: Sequence[Gene]) -> list[str]:
        """Genes a peer sent that we stored pending (refused or queued ones are not):
        each gets an adapt job within the per-peer bound. Returns the job ids."""
        if not self.settings.auto or not genes:
            return []
        made = []
        with self._lock:
            tally = _Tally(self)
            # The heads' statuses and the book's entries for the whole batch, each in one
            # read; no gene is read back (issue 15: a `get_gene` and two book reads a
            # gene in the sync commit's thread). What is queued is the version received,
            # with the status it is stored under.
            statuses = self.cortex.head_statuses([(g.id, g.version_hash) for g in genes])
            pending = [g for g, status in zip(genes, statuses, strict=True)
                       if status == GeneStatus.ADAPTATION_PENDING]
            tally.read_book([_key(g) for g in pending])
            tally.read_history([g.id for g in pending])
            for incoming in pending:
                job = self._queue(incoming, "received", tally, sender,
                                  GeneStatus.ADAPTATION_PENDING)
                if job is not None:
                    made.append(job)
            self._write(tally.flush())
        return made

    # -- reporting ---------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What `gd-node status --json` and the API's status show under `adaptation`."""
        with self._lock:
            open_now = self.settle()
        counts = {s: {c: 0 for c in COUNTERS} | (self._get(f"c/{s}") or {})
                  for s in SOURCES}
        return {"auto": self.settings.auto, "open_jobs": open_now,
                "max_queued": self.settings.max_queued,
                "max_per_peer": self.settings.max_per_peer,
                **counts, "rate": adaptation_rate(counts["veto"])}


def adaptation_rate(counts: Mapping[str, int]) -> float | None:
    """Vetoed genes that got an improving variant / vetoed genes adapted (None: none yet)."""
    adapted = int(counts.get("adapted", 0))
    return None if adapted == 0 else round(int(counts.get("improved", 0)) / adapted, 4)


class _Tally:
    """What one call changes in the book, written in one transaction at its end; and
    what it read once for all its genes (open jobs, a peer's recent jobs, our domain
    history)."""

    def __init__(self, adapter: AutoAdapter) -> None:
        self.adapter = adapter
        self.puts: dict[str, Any] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.open_jobs: int | None = None
        self.now_ms: int | None = None
        self._booked: dict[str, bool] = {}  # `read_book`
        self._peer_times: dict[str, list[int]] = {}  # the book's `p/<peer>` as read
        self._with_history: set[str] | None = None  # `read_history`
        # The Cortex's experience count, read once per call (a synced batch asked it
        # once per gene: a read transaction each, ~3 % of the receiver's GIL time).
        self._experiences: int | None = None

    def read_book(self, keys: Sequence[str]) -> None:
        """Read whether each version key has an open or done entry, in one transaction
        (`booked` then answers from this); the caller holds the adapter's lock, so the
        book does not change meanwhile except through this tally's puts."""
        db = self.adapter.db
        with self.adapter.cortex.env.begin() as txn:
            for k in keys:
                self._booked[k] = (txn.get(f"o/{k}".encode(), db=db) is not None
                                   or txn.get(f"d/{k}".encode(), db=db) is not None)

    def booked(self, key: str) -> bool:
        """Has this version an open or done entry in the book?"""
        found = self._booked.get(key)
        if found is None:
            found = (self.adapter._get(f"o/{key}") is not None
                     or self.adapter._get(f"d/{key}") is not None)
        return found

    def add(self, source: str, counter: str) -> None:
        counts = self.counts.setdefault(source, {})
        counts[counter] = counts.get(counter, 0) + 1

    def peer_times(self, peer: str, now_ms: int) -> list[int]:
        stored = self.puts.get(f"p/{peer}")
        if stored is None:
            if peer not in self._peer_times:  # once per call, not once per gene
                self._peer_times[peer] = self.adapter._get(f"p/{peer}") or []
            stored = self._peer_times[peer]
        return [t for t in stored if now_ms - t < DAY_MS]

    def read_history(self, gene_ids: Sequence[str]) -> None:
        """Read which genes have decisions or experiences here, in one transaction
        (`states` then reads only those genes' own history); the caller holds the lock,
        and a sync batch records neither decisions nor experiences."""
        self._with_history = self.adapter.cortex.genes_with_history(gene_ids)

    def states(self, gene: Gene) -> list[StateVector]:
        """The gene's own decided and experienced states, or else our domain's."""
        if self._with_history is None or gene.id in self._with_history:
            own = history_states(self.adapter.cortex, gene)
            if own:
                return own
        if self._experiences is None:
            self._experiences = self.adapter.cortex.experience_count()
        return self.adapter.domain_history(gene, self._experiences)

    def flush(self) -> dict[str, Any]:
        """The puts, with each touched counter record read and increased."""
        for source, add in self.counts.items():
            counts = self.adapter._get(f"c/{source}") or {}
            self.puts[f"c/{source}"] = {c: counts.get(c, 0) + add.get(c, 0)
                                        for c in COUNTERS}
        self.counts = {}
        return self.puts
