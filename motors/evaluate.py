"""The motors' entry point: evaluate a gene on a batch of states → a replayable Decision.

`evaluate(gene, states, seed=...)` runs M_P, then M_N and M_C, then M_M's scale
coherence, stopping at the first veto, and returns a `gd.genome.Decision` holding the
gene version hash, every input state, the seed, the request (Monte Carlo plan, backend,
the domain config in force, a digest of the evidence, motor versions) and each motor's
result. `replay(decision, gene, evidence)` re-runs it from exactly those inputs and
reports whether it reproduces, field by field.

Each motor scores every state; the decision over a batch reports the mean score and
vetoes when more than VETO_SHARE of the states are vetoed (one state: its own veto).
`score_states` gives the per-state arrays of every motor without early stop, for
validation and benchmarks.

Random streams: `SeedSequence(seed)` spawns one independent stream per motor, so adding
draws to one motor never shifts another's.
"""

from __future__ import annotations

import copy
import dataclasses
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gd.genome import Decision, Experience, Gene, MotorResult, StateVector, canonical
from gd.motors import chaotic, meristic, nash, praxeological
from gd.motors.backend import BACKENDS, Backend, get_backend
from gd.motors.condition import CompiledGene, compile_gene
from gd.motors.craft import (
    BAND_NEEDS_EVIDENCE,
    FLAT_PRIOR,
    VERDICT_NEEDS_EVIDENCE,
    evidence_need,
    undecided,
    verdict,
)
from gd.motors.domains import get_domain
from gd.motors.domains.pack import DomainConfig, DomainPack
from gd.motors.errors import MotorInputError
from gd.motors.praxeological import RelatedGene, prior_from_history, prior_from_related

VETO_SHARE = 0.5
MAX_STATES = 100_000           # per decision; a Decision stores every input state
MAX_EXPERIENCES = 1_000_000
MOTOR_VERSIONS = {"M_P": praxeological.VERSION, "M_N": nash.VERSION, "M_C": chaotic.VERSION,
                  "M_M": meristic.VERSION}
STREAMS = ("M_C", "M_M", "search")


@dataclass(frozen=True)
class EvaluationRequest:
    """Per-request knobs, stored in the Decision so a replay uses the same ones."""

    monte_carlo_n: int = 256
    epsilon: float = 0.05
    cap: int = 4096
    k_neighbours: int = praxeological.K_NEIGHBOURS
    backend: str = "numpy"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise MotorInputError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 1 <= self.k_neighbours <= 10_000:
            raise MotorInputError("k_neighbours must be in [1, 10000]")
        self.plan()

    def plan(self) -> chaotic.MonteCarloPlan:
        return chaotic.MonteCarloPlan(self.monte_carlo_n, self.epsilon, self.cap)

    def to_plain(self) -> dict[str, Any]:
        return {"backend": self.backend, "cap": self.cap, "epsilon": self.epsilon,
                "k_neighbours": self.k_neighbours, "monte_carlo_n": self.monte_carlo_n}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any] | None) -> EvaluationRequest:
        data = dict(data or {})
        known = set(cls().to_plain())
        unknown = sorted(set(data) - known)
        if unknown:
            raise MotorInputError(f"unknown request field(s): {', '.join(unknown)}")
        try:
            return cls(monte_carlo_n=int(data.get("monte_carlo_n", 256)),
                       epsilon=float(data.get("epsilon", 0.05)),
                       cap=int(data.get("cap", 4096)),
                       k_neighbours=int(data.get("k_neighbours", praxeological.K_NEIGHBOURS)),
                       backend=str(data.get("backend", "numpy")))
        except (TypeError, ValueError) as exc:
            raise MotorInputError(f"bad request: {exc}") from None


@dataclass(frozen=True)
class Evidence:
    """What M_P learns from: the gene's experiences, its related genes, and the domain's
    history (other genes' experiences with the same action, counted at DOMAIN_WEIGHT)."""

    experiences: tuple[Experience, ...] = ()
    related: tuple[RelatedGene, ...] = ()
    domain: tuple[Experience, ...] = ()
    # Pseudo-observations of the history fallback (praxeological.prior_from_history).
    history_strength: float = praxeological.HISTORY_STRENGTH

    def __post_init__(self) -> None:
        if len(self.experiences) + len(self.domain) > MAX_EXPERIENCES:
            raise MotorInputError(f"more than {MAX_EXPERIENCES} experiences")

    def _full_prior(self) -> tuple[float, float, float]:
        return prior_from_history(
            prior_from_related(self.related),
            np.array([float(e.success) for e in self.experiences]),
            np.array([float(e.success) for e in self.domain]), self.history_strength)

    def prior(self) -> tuple[float, float]:
        """M_P's prior: related genes, then the gene's and the domain's overall rate."""
        a0, b0, _ = self._full_prior()
        return a0, b0

    def prior_n(self) -> float:
        """Pseudo-observations of the prior that are not evidence (flat 2 + history's)."""
        return FLAT_PRIOR + self._full_prior()[2]

    def ordered(self) -> list[Experience]:
        return sorted(self.experiences, key=lambda e: e.id)

    def plain(self) -> dict[str, Any]:
        """What the digest covers (and a decision's evidence snapshot stores): experience
        ids, the related genes' links and counters, and (when any) the domain's
        experiences as (gene id, experience id) pairs."""
        out: dict[str, Any] = {
            "experiences": [e.id for e in self.ordered()],
            "related": [[r.weight, r.successes, r.failures, r.inhibits] for r in self.related],
        }
        if self.domain:
            out["domain"] = [[e.gene_id, e.id] for e in _by_id(self.domain)]
        if self.history_strength != praxeological.HISTORY_STRENGTH:
            out["history_strength"] = self.history_strength
        return out

    def digest(self) -> str:
        """Content address of the evidence (`plain`)."""
        return canonical.sha256(canonical.encode(self.plain())).hex()

    def arrays(self, pack: DomainPack) -> tuple[np.ndarray, np.ndarray]:
        return _arrays(self.ordered(), pack)

    def domain_arrays(self, pack: DomainPack) -> tuple[np.ndarray, np.ndarray]:
        return _arrays(_by_id(self.domain), pack)


def _by_id(exps: Sequence[Experience]) -> list[Experience]:
    return sorted(exps, key=lambda e: (e.id, e.gene_id))


def _arrays(exps: Sequence[Experience], pack: DomainPack) -> tuple[np.ndarray, np.ndarray]:
    if not exps:
        return np.zeros((0, len(pack.features))), np.zeros(0)
    return pack.matrix([e.state for e in exps]), np.array([float(e.success) for e in exps])


@dataclass(frozen=True)
class StateScores:
    """Every motor's per-state output (no early stop)."""

    mp: praxeological.PraxeologicalOutput
    mn: nash.NashOutput
    mc: chaotic.ChaoticOutput
    mm: meristic.MeristicOutput
    cp: np.ndarray
    vetoed: np.ndarray
    needs_evidence: np.ndarray     # per state: the evidence cannot decide the band


def with_config(pack: DomainPack, config: DomainConfig | None) -> DomainPack:
    if config is None:
        return pack
    out = copy.copy(pack)
    out.config = config
    return out


def _streams(seed: int) -> dict[str, np.random.Generator]:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise MotorInputError(f"seed must be an integer in [0, 2^64), got {seed!r}")
    kids = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.Generator(np.random.PCG64(k)) for name, k in zip(STREAMS, kids,
                                                                                strict=True)}


def _prepare(gene: Gene, states: Sequence[StateVector] | np.ndarray,
             config: DomainConfig | None) -> tuple[DomainPack, CompiledGene, np.ndarray]:
    if not isinstance(gene, Gene):
        raise MotorInputError("expected a Gene")
    pack = with_config(get_domain(gene.domain), config)
    if isinstance(states, np.ndarray):
        X = pack.check_matrix(states)
    else:
        if len(states) > MAX_STATES:
            raise MotorInputError(f"{len(states)} states; one decision holds at most "
                                  f"{MAX_STATES}")
        X = pack.matrix(list(states))
    return pack, compile_gene(gene, pack), X


def score_states(gene: Gene, states: Sequence[StateVector] | np.ndarray, *, seed: int,
                 evidence: Evidence | None = None, request: EvaluationRequest | None = None,
                 config: DomainConfig | None = None) -> StateScores:
    """All four motors on every state, as arrays; CP per state (0 where vetoed)."""
    req = request or EvaluationRequest()
    pack, cg, X = _prepare(gene, states, config)
    bk = get_backend(req.backend)
    rngs = _streams(seed)
    ev = evidence or Evidence()
    ev_X, ev_y = ev.arrays(pack)
    Xb = bk.asarray(X)
    mp = praxeological.praxeological(bk, pack, cg, Xb, ev_X, ev_y, ev.prior(), req.k_neighbours,
                                     ev.domain_arrays(pack), ev.prior_n())
    mn = _nash(bk, pack, cg, Xb)
    mc = chaotic.chaotic(bk, pack, cg, Xb, rngs["M_C"], req.plan())
    mm = meristic.scale_coherence(bk, pack, cg, Xb, mc.multiverse, rngs["M_M"])
    w = pack.config.weights
    cp = (mp.score ** w.get("M_P", 1.0) * mn.score ** w.get("M_N", 1.0)
          * mc.score ** w.get("M_C", 1.0) * mm.score ** w.get("M_M", 1.0))
    vetoed = mp.veto | mn.veto | mc.veto | mm.veto
    cp = np.where(vetoed, 0.0, cp)
    needs = undecided(cp, mp.alpha, mp.beta, w.get("M_P", 1.0), pack.config.bands,
                      pack.config.min_evidence, mp.prior_n)
    return StateScores(mp, mn, mc, mm, cp, vetoed, needs)


def _nash(bk: Backend, pack: DomainPack, cg: CompiledGene, Xb: Any) -> nash.NashOutput:
    A, B = pack.game(bk, Xb)
    return nash.nash(bk, A, B, cg.action)


def _agg(score: np.ndarray, veto: np.ndarray) -> tuple[float, bool, float]:
    share = float(np.mean(veto))
    return float(np.clip(np.mean(score), 0.0, 1.0)), share > VETO_SHARE or (
        len(veto) == 1 and bool(veto[0])), share


def _r(x: float) -> float:
    return float(round(float(x), 6))


def evaluate(gene: Gene, states: Sequence[StateVector], *, seed: int,
             evidence: Evidence | None = None, request: EvaluationRequest | None = None,
             config: DomainConfig | None = None, decided_at: int = 0,
             node: str = "") -> Decision:
    """Evaluate `gene` on `states` (one decision over the batch); see module docstring."""
    req = request or EvaluationRequest()
    if isinstance(states, np.ndarray):
        raise MotorInputError("evaluate takes StateVectors (a Decision stores them); "
                              "use score_states for raw matrices")
    pack, cg, X = _prepare(gene, states, config)
    bk = get_backend(req.backend)
    rngs = _streams(seed)
    ev = evidence or Evidence()
    ev_X, ev_y = ev.arrays(pack)
    cfg = pack.config
    Xb = bk.asarray(X)
    n = X.shape[0]
    results: list[MotorResult] = []

    mp = praxeological.praxeological(bk, pack, cg, Xb, ev_X, ev_y, ev.prior(), req.k_neighbours,
                                     ev.domain_arrays(pack), ev.prior_n())
    score, veto, share = _agg(mp.score, mp.veto)
    applies = int(np.sum(mp.applicability >= cfg.apply_min))
    mean_p = float(np.mean(mp.alpha / (mp.alpha + mp.beta)))
    why = (f"applies to {applies}/{n} state(s); success posterior mean {mean_p:.3f} "
           f"from {float(np.mean(mp.n_eff)):.1f} weighted experience(s); upper bound "
           f"{float(np.mean(mp.upper)):.3f} vs floor {cfg.floor}")
    if veto:
        why = ("vetoed: " + ("the gene does not apply" if applies <= n * VETO_SHARE
               else "evidence puts success below the floor") + "; " + why)
    results.append(MotorResult("M_P", MOTOR_VERSIONS["M_P"], score, veto, why, {
        "applicability": _r(np.mean(mp.applicability)), "posterior_mean": _r(mean_p),
        "n_eff": _r(np.mean(mp.n_eff)), "upper": _r(np.mean(mp.upper)),
        "veto_share": _r(share)}))

    if not veto:
        mn = _nash(bk, pack, cg, Xb)
        score, veto, share = _agg(mn.score, mn.veto)
        y = np.mean(mn.y, axis=0)
        reply = ", ".join(f"{a} {p:.2f}" for a, p in zip(pack.counter_actions, y, strict=True))
        why = (f"{gene.action!r} vs counterpart equilibrium ({reply}): regret-normalised "
               f"payoff {score:.3f}; exact equilibria {int(mn.exact.sum())}/{n}")
        if veto:
            why = f"vetoed: {gene.action!r} is strictly dominated; " + why
        results.append(MotorResult("M_N", MOTOR_VERSIONS["M_N"], score, veto, why, {
            "dominated_share": _r(share), "exact_share": _r(np.mean(mn.exact)),
            **{f"y_{a}": _r(p) for a, p in zip(pack.counter_actions, y, strict=True)}}))

    if not veto:
        mc = chaotic.chaotic(bk, pack, cg, Xb, rngs["M_C"], req.plan())
        score, veto, share = _agg(mc.score, mc.veto)
        why = (f"acceptable in {float(np.mean(mc.p_hat)):.3f} of {mc.futures} futures "
               f"(Wilson 95% [{float(np.mean(mc.lower)):.3f}, {float(np.mean(mc.upper)):.3f}]);"
               f" CVaR{int(cfg.cvar_alpha * 100)} {float(np.mean(mc.cvar)):.3f} vs limit "
               f"{cfg.cvar_limit}; flip rate {float(np.mean(mc.flip)):.3f}; divergence "
               f"{float(np.mean(mc.divergence)):.4f}/step")
        if veto:
            why = "vetoed: tail risk above the domain limit; " + why
        results.append(MotorResult("M_C", MOTOR_VERSIONS["M_C"], score, veto, why, {
            "p_hat": _r(np.mean(mc.p_hat)), "wilson_low": _r(np.mean(mc.lower)),
            "wilson_high": _r(np.mean(mc.upper)), "cvar": _r(np.mean(mc.cvar)),
            "flip_rate": _r(np.mean(mc.flip)), "divergence": _r(np.mean(mc.divergence)),
            "futures": mc.futures, "veto_share": _r(share)}))
        if not veto:
            mm = meristic.scale_coherence(bk, pack, cg, Xb, mc.multiverse, rngs["M_M"])
            score = float(np.clip(np.mean(mm.score), 0.0, 1.0))
            perf = mm.perf.mean(axis=1)
            why = ("acceptable share by perturbation scale " + ", ".join(
                f"{s:g}: {p:.3f}" for s, p in zip(meristic.SCALES, perf, strict=True))
                + f"; coherence {score:.3f}")
            results.append(MotorResult("M_M", MOTOR_VERSIONS["M_M"], score, False, why, {
                f"perf_{s:g}": _r(p) for s, p in zip(meristic.SCALES, perf, strict=True)}))

    cp, band, what = verdict(results, cfg.weights, cfg.bands)
    if not any(r.veto for r in results):
        need = evidence_need(cp, float(np.mean(mp.alpha)), float(np.mean(mp.beta)),
                             float(cfg.weights.get("M_P", 1.0)), cfg.bands, cfg.min_evidence,
                             mp.prior_n)
        if need is not None:
            band, what = BAND_NEEDS_EVIDENCE, VERDICT_NEEDS_EVIDENCE
            p_result = results[0]
            results[0] = dataclasses.replace(p_result, explanation=(
                f"needs evidence: {need.evidence:.1f} weighted experience(s) of "
                f"{cfg.min_evidence:g} needed; CP could be {need.cp_low:.3f}–"
                f"{need.cp_high:.3f}; about {need.more} more experience(s) like these "
                f"would decide it; " + p_result.explanation), details={
                    **p_result.details, "evidence": _r(need.evidence), "more": need.more,
                    "cp_low": _r(need.cp_low), "cp_high": _r(need.cp_high)})
    plain_request = {
        **req.to_plain(), "config": cfg.to_plain(), "motor_versions": dict(MOTOR_VERSIONS),
        "evidence": {"digest": ev.digest(), "experiences": len(ev.experiences),
                     "prior": list(ev.prior())},
    }
    return Decision(gene_id=gene.id, gene_version=gene.version_hash.hex(), domain=gene.domain,
                    states=tuple(states), seed=seed, request=plain_request,
                    results=tuple(results), cp=cp, band=band, verdict=what,
                    decided_at=decided_at, node=node)


@dataclass(frozen=True)
class ReplayReport:
    """`exact`: the re-run decision equals the stored one in every field."""

    exact: bool
    differences: tuple[str, ...]
    replayed: Decision | None
    notes: tuple[str, ...] = field(default_factory=tuple)


def replay(decision: Decision, gene: Gene, evidence: Evidence | None = None, *,
           backend: str | None = None) -> ReplayReport:
    """Re-run `decision` from its stored inputs and compare every field."""
    notes = []
    if gene.id != decision.gene_id or gene.version_hash.hex() != decision.gene_version:
        return ReplayReport(False, ("gene_version: the gene given is not the version decided",),
                            None)
    ev = evidence or Evidence()
    stored = decision.request.get("evidence", {})
    if stored.get("digest") != ev.digest():
        return ReplayReport(False, (
            f"evidence: digest {ev.digest()[:16]}… differs from the stored "
            f"{str(stored.get('digest', ''))[:16]}… ({stored.get('experiences')} experiences)",),
            None)
    req_plain = {k: v for k, v in decision.request.items()
                 if k not in ("config", "motor_versions", "evidence")}
    if backend is not None:
        req_plain["backend"] = backend
    versions = decision.request.get("motor_versions", {})
    if dict(versions) != MOTOR_VERSIONS:
        notes.append(f"motor versions then {dict(versions)}, now {MOTOR_VERSIONS}")
    config = DomainConfig.from_plain(dict(decision.request["config"]))
    again = evaluate(gene, decision.states, seed=decision.seed, evidence=ev,
                     request=EvaluationRequest.from_plain(req_plain), config=config,
                     decided_at=decision.decided_at, node=decision.node)
    if backend is not None:
        again = Decision.from_plain({**again.to_plain(), "request": dict(decision.request)})
    diffs = tuple(_diff(decision.to_plain(), again.to_plain(), "$"))
    if not diffs and decision.encode() != again.encode():
        diffs = ("$: the canonical encodings differ",)  # exact means byte for byte
    return ReplayReport(not diffs, diffs, again, tuple(notes))


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'stored' if k in a else 'replayed'}")
            else:
                out.extend(_diff(a[k], b[k], f"{path}.{k}"))
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items stored, {len(b)} replayed"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        # Bit for bit: == would take -0.0 for 0.0 (and never match a NaN).
        same = struct.pack("<d", a) == struct.pack("<d", b)
    else:
        same = a == b and type(a) is type(b)
    if not same:
        return [f"{path}: stored {a!r}, replayed {b!r}"]
    return []


def adapt(gene: Gene, states: Sequence[StateVector] | np.ndarray, *, seed: int,
          search: meristic.SearchConfig | None = None, related: Sequence[Gene] = (),
          request: EvaluationRequest | None = None, config: DomainConfig | None = None,
          checkpoints: meristic.CheckpointStore | None = None,
          cancel: Any = None, progress: Any = None) -> meristic.SearchResult:
    """M_M's search for `gene` on `states`: the multiverse and Nash scores come from the
    same streams `evaluate` uses, so the search sees the futures the verdict saw.
    With `checkpoints`, a search with identical inputs resumes where it stopped."""
    sc = search or meristic.SearchConfig()
    req = request or EvaluationRequest()
    pack, cg, X = _prepare(gene, states, config)
    if any(g.domain != gene.domain for g in related):
        raise MotorInputError("related genes must be in the gene's domain")
    bk = get_backend(req.backend)
    rngs = _streams(seed)
    Xb = bk.asarray(X)
    mc = chaotic.chaotic(bk, pack, cg, Xb, rngs["M_C"], req.plan())
    mn = _nash(bk, pack, cg, Xb)
    value = meristic.fitness_fn(sc.fitness or pack.config.fitness)(mc.multiverse,
                                                                   mn.scores_all, pack)
    space = meristic.ColumnSpace.build(pack, [gene, *related])
    Z = X @ space.weights.T
    slots = max(sc.slots, len(gene.codons), *(len(g.codons) for g in related))
    sc = meristic.SearchConfig(**{**sc.to_plain(), "slots": slots})
    seeds = meristic.encode_genes([gene, *related], space, pack, slots)
    donors = meristic.encode_genes(list(related), space, pack, slots)
    fingerprint = canonical.sha256(canonical.encode({
        "gene": gene.version_hash.hex(), "related": [g.version_hash.hex() for g in related],
        "states": canonical.sha256(X.tobytes()).hex(), "seed": seed, "search": sc.to_plain(),
        "request": req.to_plain(), "config": pack.config.to_plain()})).hex()
    seed_int = int(rngs["search"].integers(2**63))
    res = meristic.evolve(bk, Z, space.scale, value, seeds, donors, cg.default_action, sc,
                          seed_int, checkpoints=checkpoints, search_id=fingerprint[:32],
                          fingerprint=fingerprint, cancel=cancel, progress=progress)
    variants = meristic.variants_from(res.pool, res.pool_fitness, space, pack, sc.top)
    return meristic.SearchResult(variants, res.history, res.seed_fitness, res.generations_run,
                                 res.resumed_from, res.cancelled,
                                 {"search_id": fingerprint[:32], "futures": mc.futures})
