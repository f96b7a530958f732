"""The glue between the motors and the Cortex: evaluate, replay, adapt, record outcomes.

`gd.motors` computes on values it is handed and touches no store; the Cortex stores and
touches no motor. This module does the fetching and storing around each motor call, so
the CLI (and later the daemon's control socket) call one function per user action:

* `evaluate_gene`: the gene, its experiences and its related genes (through synapses)
  become `Evidence`; the motors run once per state (or once over the batch); every
  Decision is stored. Nothing is stored unless every evaluation succeeded.
* `replay_decision`: the decision, the gene version it names (by version hash) and the
  evidence *as it was* re-run, compared field by field.
* `adapt_gene`: M_M's search, checkpointed in the Cortex's `meristic` sub-database every
  generation so that a crash or a Ctrl-C loses at most one generation; the winners are
  stored as new `adaptation_pending` genes with lineage and scored where they fire, so a
  person reviewing them (`gd-node pending show`) sees their CP.
* `record_experience`: an observed outcome, which M_P learns from at the next evaluation.

Listing and export (`list_decisions`, `decision_summary`, `decisions_csv`, ...) live in
`gd.node.app.decision_export` and are re-exported here for the callers.

Evidence snapshots. A decision stores only the digest of its evidence (experience ids
and related genes' counters), and both keep changing after it. So that a replay uses the
evidence as it was, each distinct evidence set is stored once, content-addressed by that
digest, in the `decision_evidence` sub-database, before the decisions that cite it.

Issue 7, "nothing acts on a pending gene before approval": evaluation refuses a gene
that is not `native` unless the caller asks for an inspection (`allow_pending`), and
even then only a pending gene, never a rejected, retired or revoked one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gd.genome import Decision, Experience, Gene, StateVector, canonical
from gd.genome.errors import DecodeError, ValidationError
from gd.genome.gene import GeneStatus
from gd.genome.synapse import SynapseKind
from gd.ledger.entry import EntryKind
from gd.motors import holdout, meristic
from gd.motors.domains import get_domain
from gd.motors.domains.pack import DomainConfig
from gd.motors.errors import MotorInputError
from gd.motors.evaluate import (
    EvaluationRequest,
    Evidence,
    ReplayReport,
    evaluate,
    replay,
)
from gd.motors.praxeological import RelatedGene
from gd.node.app.decision_export import CSV_COLUMNS as CSV_COLUMNS
from gd.node.app.decision_export import MOTORS as MOTORS
from gd.node.app.decision_export import decision_full as decision_full
from gd.node.app.decision_export import decision_summary as decision_summary
from gd.node.app.decision_export import decisions_csv as decisions_csv
from gd.node.app.decision_export import first_veto as first_veto
from gd.node.app.decision_export import list_decisions as list_decisions
from gd.node.app.gene_history import ADAPTABLE as ADAPTABLE
from gd.node.app.gene_history import MAX_ADAPT_STATES as MAX_ADAPT_STATES
from gd.node.app.gene_history import history_states as history_states
from gd.node.clock import hlc_now
from gd.node.config import ConfigError
from gd.node.domain_settings import domain_config
from gd.node.local import LocalNode
from gd.node.services.recorder import LedgerRecorder
from gd.node.store.cortex import Cortex, CortexError
from gd.node.store.meristic_checkpoints import LmdbCheckpoints

EVIDENCE_DB: Final = "decision_evidence"
DECISIONS_DB: Final = "decisions"   # the Cortex's own table, read here for id prefixes
# A shorter prefix would match many decisions in any real Cortex; 6 hex digits is the
# shortest `git` accepts by default too (it uses 7 to print, 4 to read).
MIN_ID_PREFIX: Final = 6
MERISTIC_DB: Final = meristic.CHECKPOINT_DB.decode()
# Related genes are looked for this many synapse hops away: a neighbour's neighbour
# still says something about a rule (a specialisation of a specialisation), further
# away the link is too weak to move a prior; the weights multiply along the path.
RELATED_HOPS: Final = 2
# The domain's history M_P consults for a gene: enough to cover a C-MAPSS file's worth of
# states around any state (k = 32 neighbours), small enough that loading it stays fast.
MAX_DOMAIN_EXPERIENCES: Final = 4000


class DecisionError(ValueError):
    """The request cannot be carried out on this node's data: unknown decision, a gene
    whose status forbids the action, no states to adapt on. Nothing was stored."""


# -- evidence ------------------------------------------------------------------------
def related_genes(cortex: Cortex, gene: Gene) -> list[tuple[Gene, RelatedGene]]:
    """Genes of the same domain within RELATED_HOPS synapses, each with its link.

    The link's weight is the product of the synapse weights along the strongest path (in
    either direction: evidence flows both ways along an edge), and it `inhibits` when that
    path crosses an odd number of inhibiting synapses. Sorted by gene id, so the same
    graph always gives the same prior (and the same evidence digest)."""
    near = cortex.neighbourhood(gene.id, RELATED_HOPS)
    best: dict[str, tuple[float, bool]] = {gene.id: (1.0, False)}
    frontier = [gene.id]
    for hop in range(1, RELATED_HOPS + 1):
        reached: dict[str, tuple[float, bool]] = {}
        for current in frontier:
            weight0, inhibits0 = best[current]
            edges = cortex.synapses_of(current) + cortex.synapses_of(current, incoming=True)
            for syn in edges:
                other = syn.target if syn.source == current else syn.source
                if near.get(other) != hop:
                    continue
                candidate = (weight0 * syn.weight,
                             inhibits0 ^ (syn.kind == SynapseKind.INHIBITS))
                # Strongest path wins; on a tie the non-inhibiting one (deterministic).
                if other not in reached or (candidate[0], not candidate[1]) > (
                        reached[other][0], not reached[other][1]):
                    reached[other] = candidate
        best.update(reached)
        frontier = sorted(reached)
    out = []
    for other_id in sorted(near):
        related = cortex.get_gene(other_id)
        weight, inhibits = best.get(other_id, (0.0, False))
        if related is None or related.domain != gene.domain or weight <= 0.0:
            continue
        out.append((related, RelatedGene(weight, related.successes, related.failures,
                                         inhibits)))
    return out


def domain_history(cortex: Cortex, gene: Gene) -> tuple[Experience, ...]:
    """The domain's record of this gene's means: experiences of the other genes of its
    domain that take the same action, at most MAX_DOMAIN_EXPERIENCES of them (an even,
    fixed spread over them by id, so the same Cortex gives the same evidence)."""
    found: list[Experience] = []
    for other in cortex.genes(domain=gene.domain):
        if other.id != gene.id and other.action == gene.action:
            found.extend(cortex.experiences_for(other.id))
    found.sort(key=lambda e: (e.id, e.gene_id))
    if len(found) > MAX_DOMAIN_EXPERIENCES:
        step = len(found) / MAX_DOMAIN_EXPERIENCES
        found = [found[int(i * step)] for i in range(MAX_DOMAIN_EXPERIENCES)]
    return tuple(found)


def evidence_for(cortex: Cortex, gene: Gene) -> Evidence:
    """What M_P learns from now: the gene's experiences, its related genes, and the
    domain's history of its action (`domain_history`)."""
    return Evidence(tuple(cortex.experiences_for(gene.id)),
                    tuple(r for _, r in related_genes(cortex, gene)),
                    domain_history(cortex, gene))


def _save_evidence(cortex: Cortex, evidence: Evidence) -> str:
    digest = evidence.digest()
    raw = canonical.encode(evidence.plain())
    db = cortex.open_db(EVIDENCE_DB)
    cortex.write(lambda txn: txn.put(digest.encode(), raw, db=db, overwrite=True))
    return digest


def _stored_evidence(cortex: Cortex, decision: Decision) -> tuple[Evidence | None, str]:
    """The evidence a decision cited, rebuilt from its snapshot; (None, why) if it cannot
    be (no snapshot, or an experience it cited is gone)."""
    digest = str(decision.request.get("evidence", {}).get("digest", ""))
    try:
        db = cortex.open_db(EVIDENCE_DB)
    except CortexError:
        return None, "no evidence snapshots in this Cortex"
    with cortex.env.begin() as txn:
        raw = txn.get(digest.encode(), db=db)
    if raw is None:
        return None, f"no evidence snapshot {digest[:16]}…"
    try:
        snap = canonical.decode(raw)
        ids = [str(i) for i in snap["experiences"]]
        related = tuple(RelatedGene(float(w), int(s), int(f), bool(i))
                        for w, s, f, i in snap["related"])
        domain_ids = [(str(g), str(i)) for g, i in snap.get("domain", [])]
    except (DecodeError, KeyError, TypeError, ValueError) as exc:
        return None, f"evidence snapshot {digest[:16]}… is corrupt: {exc}"
    by_id = {e.id: e for e in cortex.experiences_for(decision.gene_id)}
    missing = [i for i in ids if i not in by_id]
    domain: list[Experience] = []
    for other in sorted({g for g, _ in domain_ids}):
        theirs = {e.id: e for e in cortex.experiences_for(other)}
        for g, i in domain_ids:
            if g == other:
                if i in theirs:
                    domain.append(theirs[i])
                else:
                    missing.append(i)
    if missing:
        return None, (f"{len(missing)} experience(s) the decision used are no longer in this "
                      f"Cortex (first {missing[0]})")
    return Evidence(tuple(by_id[i] for i in ids), related, tuple(domain)), ""


# -- evaluate ------------------------------------------------------------------------
def _require_status(gene: Gene, allowed: Iterable[GeneStatus], action: str, hint: str) -> None:
    allowed = tuple(allowed)
    if gene.status not in allowed:
        raise DecisionError(f"gene {gene.id} is {gene.status}: {action} needs "
                            f"{' or '.join(str(s) for s in allowed)}{hint}")


def _request(node: LocalNode, request: EvaluationRequest | None) -> EvaluationRequest:
    """The caller's Monte Carlo plan on the backend this node's config names."""
    return dataclasses.replace(request or EvaluationRequest(),
                               backend=node.config.motors_backend)


def evaluate_gene(node: LocalNode, gene_id: str, states: Sequence[StateVector], *, seed: int,
                  aggregate: bool = False, request: EvaluationRequest | None = None,
                  allow_pending: bool = False,
                  also: Callable[[Any], object] | None = None) -> list[Decision]:
    """Evaluate a gene on `states`: one decision per state, or one over the batch with
    `aggregate`; all decisions are stored, or none if any evaluation fails. `also` runs
    in the decisions' write transaction (the HTTP API's audit record of the call)."""
    gene = node.cortex.require_gene(gene_id)
    if allow_pending:
        _require_status(gene, (GeneStatus.NATIVE, GeneStatus.ADAPTATION_PENDING),
                        "evaluation", "")
    else:
        _require_status(gene, (GeneStatus.NATIVE,), "evaluation",
                        " (a pending gene acts only after approval; pass --allow-pending to "
                        "evaluate it for inspection)" if gene.status ==
                        GeneStatus.ADAPTATION_PENDING else "")
    if not states:
        raise DecisionError("no states to evaluate")
    req = _request(node, request)
    config = node_domain_config(node, gene.domain)
    evidence = evidence_for(node.cortex, gene)
    base = hlc_now()
    batches = [list(states)] if aggregate else [[s] for s in states]
    decisions = [evaluate(gene, batch, seed=seed, evidence=evidence, request=req,
                          config=config, decided_at=base + i, node=node.key.peer_id)
                 for i, batch in enumerate(batches)]
    _save_evidence(node.cortex, evidence)
    node.cortex.put_decisions(decisions, also=also)
    record_decisions(node, decisions)
    return decisions


def node_domain_config(node: LocalNode, domain: str) -> DomainConfig | None:
    """This node's `[domains.<domain>]` motor settings (None: the pack's defaults); a bad
    table is a DecisionError naming the key, before anything runs."""
    try:
        return domain_config(node.config, domain)
    except ConfigError as exc:
        raise DecisionError(f"config.toml: {exc}") from None


def record_decisions(node: LocalNode, decisions: Sequence[Decision]) -> None:
    """Put each decision on the ledger: its content hash and a public summary (gene id
    and version, verdict, CP) — never the states or the gene's content."""
    LedgerRecorder(node.cortex.env, node.key).append_many([
        (EntryKind.DECISION, canonical.sha256(d.encode()),
         {"decision": d.id, "gene": d.gene_id, "version": d.gene_version[:16],
          "verdict": d.verdict, "cp": round(d.cp, 6)})
        for d in decisions])


# -- replay --------------------------------------------------------------------------
def resolve_decision_id(cortex: Cortex, text: str) -> str:
    """The full id of the decision `text` names: the id itself, or a unique prefix of at
    least MIN_ID_PREFIX hex digits (tables print shortened ids)."""
    text = text.strip().lower()
    db = cortex.open_db(DECISIONS_DB)
    with cortex.env.begin() as txn:
        if txn.get(text.encode(), db=db) is not None:
            return text
        matches: list[str] = []
        if len(text) >= MIN_ID_PREFIX and all(c in "0123456789abcdef" for c in text):
            cur = txn.cursor(db=db)
            if cur.set_range(text.encode()):
                for key in cur.iternext(keys=True, values=False):
                    if not key.startswith(text.encode()) or len(matches) == 2:
                        break
                    matches.append(key.decode())
    if not matches:
        raise DecisionError(f"no decision {text!r} in this Cortex")
    if len(matches) > 1:
        raise DecisionError(f"decision id prefix {text!r} is ambiguous: give more digits")
    return matches[0]


def get_decision(node: LocalNode, decision_id: str) -> Decision:
    """The stored decision named by its id or a unique prefix of it."""
    return _load_decision(node.cortex, resolve_decision_id(node.cortex, decision_id))


def _load_decision(cortex: Cortex, full_id: str) -> Decision:
    try:
        decision = cortex.get_decision(full_id)
    except (DecodeError, ValidationError, KeyError, TypeError) as exc:
        raise DecisionError(f"decision {full_id} is stored but unreadable: {exc}") from None
    if decision is None:
        raise DecisionError(f"no decision {full_id!r} in this Cortex")
    return decision


def replay_decision(node: LocalNode, decision_id: str) -> ReplayReport:
    """Re-run a stored decision from its gene version, states, seed, request and the
    evidence as it was; `exact` only if every field (and its content address) matches."""
    decision_id = resolve_decision_id(node.cortex, decision_id)
    decision = _load_decision(node.cortex, decision_id)
    integrity: list[str] = []
    if decision.id != decision_id:
        integrity.append(f"$id: the stored record hashes to {decision.id}, not to its key "
                         f"{decision_id} (altered after it was written)")
    try:
        vhash = bytes.fromhex(decision.gene_version)
    except ValueError:
        return ReplayReport(False, (*integrity, f"$.gene_version: {decision.gene_version!r} "
                                    "is not a version hash"), None)
    gene = node.cortex.get_by_version_hash(vhash)
    if gene is None or gene.id != decision.gene_id:
        return ReplayReport(False, (*integrity, f"$.gene_version: gene {decision.gene_id} "
                                    f"version {decision.gene_version[:16]}… is not in this "
                                    "Cortex"), None)
    evidence, why = _stored_evidence(node.cortex, decision)
    notes: list[str] = []
    if evidence is None:
        notes.append(f"{why}; replayed with the gene's current evidence")
        evidence = evidence_for(node.cortex, gene)
    try:
        report = replay(decision, gene, evidence)
    except (MotorInputError, ValidationError) as exc:
        return ReplayReport(False, (*integrity, f"replay failed on the stored inputs: {exc}"),
                            None, tuple(notes))
    differences = (*integrity, *report.differences)
    return ReplayReport(not differences, differences, report.replayed,
                        (*notes, *report.notes))


# -- adapt ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AdaptOutcome:
    """What an `adapt_gene` run did. `genes`: new variants stored (pending); `existing`:
    ids of winners already in the Cortex from an earlier run (left as they are, approved
    or not); `decisions`: the new variants' scores on the adaptation states; `fitness`:
    each winner's search fitness by gene id (new and existing); `held_out`: each winner's
    comparison with the gene on the held-out states, by gene id (CP gain and cost saving,
    `gd.motors.holdout`); `compared`: every pool variant's comparison, winners or not."""

    gene: Gene
    result: meristic.SearchResult
    seed: int
    states: int
    genes: tuple[Gene, ...] = ()
    existing: tuple[str, ...] = ()
    decisions: tuple[Decision, ...] = ()
    fitness: Mapping[str, float] = dataclasses.field(default_factory=dict)
    held_out: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    compared: tuple[Mapping[str, Any], ...] = ()

    @property
    def cancelled(self) -> bool:
        return self.result.cancelled


def default_seed(gene: Gene) -> int:
    """A search seed fixed by the gene version, so that running `adapt` again with the
    same options resumes the checkpointed search instead of starting another."""
    return int.from_bytes(gene.version_hash[:8], "big") >> 1


def _same_rule(gene: Gene, variant: meristic.Variant) -> bool:
    return (variant.action == gene.action
            and sorted(canonical.encode(c.to_plain()) for c in variant.codons)
            == sorted(canonical.encode(c.to_plain()) for c in gene.codons))


def adapt_gene(node: LocalNode, gene_id: str, *, population: int = 4096,
               generations: int = 20, seed: int | None = None,
               states: Sequence[StateVector] | None = None, top: int = 5,
               request: EvaluationRequest | None = None,
               progress: Callable[[int, float], None] | None = None,
               cancel: Callable[[], bool] | None = None, score: bool = True) -> AdaptOutcome:
    """Run M_M's search for `gene_id` (resuming a checkpointed one with the same inputs)
    and store the winners as `adaptation_pending` genes whose parent is the gene.

    `states` default to the gene's history (`history_states`). A cancelled search stores
    nothing but its checkpoint; a finished one deletes its checkpoint after the winners
    are stored. With `score`, each new variant is evaluated once over the states where
    its condition holds (an inspection of a pending gene) and the decision stored; a
    variant that fires on none of them gets no decision.

    The search sees only part of the states; a winner is stored only if it beats the
    gene on the rest in both held-out CP and cost (`gd.motors.holdout`), and the outcome
    says by how much. This is the function an adaptation job (a veto in the daemon, a
    gene received from a peer) calls; it is resumable through its checkpoints."""
    cortex = node.cortex
    gene = cortex.require_gene(gene_id)
    _require_status(gene, ADAPTABLE, "adaptation", "")
    chosen = list(states) if states is not None else history_states(cortex, gene)
    if not chosen:
        raise DecisionError(f"gene {gene.id} has no history to adapt on: evaluate it on some "
                            "states first, record experiences, or give states explicitly")
    if len(chosen) > MAX_ADAPT_STATES:
        raise DecisionError(f"{len(chosen)} states; adaptation uses at most "
                            f"{MAX_ADAPT_STATES}")
    search = meristic.SearchConfig(population=population, generations=generations, top=top,
                                   retreat_size=max(top, meristic.SearchConfig().retreat_size))
    seed = default_seed(gene) if seed is None else seed
    req = _request(node, request)
    related = [g for g, _ in related_genes(cortex, gene)]
    checkpoints = LmdbCheckpoints(cortex.env, cortex.open_db(MERISTIC_DB))
    held = holdout.adapt_held_out(
        gene, chosen, seed=seed, search=search, related=related,
        evidence=evidence_for(cortex, gene), request=req,
        config=node_domain_config(node, gene.domain), checkpoints=checkpoints,
        cancel=cancel, progress=progress)
    result = held.search
    outcome = AdaptOutcome(gene, result, seed, len(chosen))
    if result.cancelled:
        return outcome
    # Only variants that beat the gene on states the search never saw are proposed.
    winners = [c for c in held.winners if not _same_rule(gene, c.variant)]
    candidates = meristic.variants_to_genes(node.key, gene, [c.variant for c in winners],
                                            hlc=hlc_now())
    new = [g for g in candidates if cortex.get_gene(g.id) is None]
    existing = tuple(g.id for g in candidates if cortex.get_gene(g.id) is not None)
    if new:
        cortex.put_genes(new)
    checkpoints.delete(str(result.details["search_id"]))
    decisions: list[Decision] = []
    for variant in new if score else ():
        # A rule is judged where it fires: over all the history, a narrow rule (inspect
        # late in life) would be vetoed by M_P for not applying to most states.
        firing = [s for s in chosen if all(c.holds(s.values) for c in variant.codons)]
        if firing:
            decisions += evaluate_gene(node, variant.id, firing, seed=seed, aggregate=True,
                                       request=req, allow_pending=True)
    fitness = {g.id: c.variant.fitness for g, c in zip(candidates, winners, strict=True)}
    compared = {g.id: c.to_plain() for g, c in zip(candidates, winners, strict=True)}
    return dataclasses.replace(outcome, genes=tuple(new), existing=existing,
                               decisions=tuple(decisions), fitness=fitness,
                               held_out=compared,
                               compared=tuple(c.to_plain() for c in held.compared))


# -- experiences ---------------------------------------------------------------------
def record_experience(node: LocalNode, gene_id: str, state: StateVector, success: bool,
                      reward: float | None = None, note: str = "") -> Experience:
    """Record that applying the gene's current version in `state` succeeded or failed.

    The state must be in the gene's domain and hold every domain feature: M_P places
    experiences in feature space, and one it cannot place would break every later
    evaluation of the gene."""
    gene = node.cortex.require_gene(gene_id)
    if state.domain != gene.domain:
        raise DecisionError(f"the state is in domain {state.domain!r}, gene {gene.id} in "
                            f"{gene.domain!r}")
    get_domain(gene.domain).matrix([state])
    exp = Experience(gene_id=gene.id, gene_version=gene.version_hash.hex(), state=state,
                     success=success, observed_at=hlc_now(), recorder=node.key.peer_id,
                     reward=reward, note=note)
    node.cortex.add_experience(exp)
    return exp
