"""Many genes on the same states at once: what is the same for every gene is computed once.

`score_genes(genes, X, seed=...)` returns, for each gene, exactly what
`score_states(gene, X, seed=seed, evidence=...)` returns (bit for bit: the same draws in
the same order, the same operations), but shares across the genes of one domain:

* M_N: the game and its equilibrium depend on the states only; a gene picks its action's
  column (and whether that action is dominated);
* M_C: the futures (one stream, batch after batch, as long as the slowest gene's action
  needs; a gene uses the prefix at which its own sequential rule stops), the losses of
  every action in them, the flip-rate perturbations and the divergence trajectories (once
  per distinct stopping point, from the stream's state there);
* M_M: the scale-coherence perturbations (their own stream).

What remains per gene is its condition on the perturbed states and M_P's evidence. After
M_P the motors M_N and M_C do not depend on each other: here they run side by side on the
shared arrays. This is the batched path of the benchmark (`bench/motors.py`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gd.genome import Gene
from gd.motors import chaotic, meristic, nash, praxeological
from gd.motors.backend import Backend, get_backend
from gd.motors.condition import CompiledGene, compile_gene, fires
from gd.motors.craft import undecided
from gd.motors.domains.pack import DomainConfig, DomainPack
from gd.motors.errors import MotorInputError
from gd.motors.evaluate import (
    EvaluationRequest,
    Evidence,
    StateScores,
    _prepare,
    _streams,
)

MAX_GENES = 10_000


def _flip_share(bk: Backend, base: np.ndarray, on: np.ndarray) -> np.ndarray:
    # Summed one sample at a time, as `chaotic.flip_rate_from` does (same bits).
    flipped = np.zeros(base.shape[0])
    for i in range(on.shape[0]):
        flipped = flipped + (on[i] != base).astype(np.float64)
    return flipped / chaotic.FLIP_SAMPLES


def _coherence(bk: Backend, pack: DomainPack, cg: CompiledGene, coh_X: np.ndarray,
               mv: chaotic.Multiverse) -> meristic.MeristicOutput:
    """`meristic.coherence_from` on the stacked perturbations, summed in its order."""
    n, m = mv.acceptable.shape[0], len(pack.actions)
    on = bk.to_numpy(fires(bk, cg, bk.asarray(coh_X))).reshape(
        len(meristic.SCALES), meristic.COHERENCE_SAMPLES, n).astype(np.int64)
    acc = mv.acceptable.reshape(-1)
    rows = np.arange(n) * m
    perf = []
    for block in on:
        total = np.zeros(n)
        for i in range(block.shape[0]):
            act = cg.default_action + block[i] * (cg.action - cg.default_action)
            total = total + acc[rows + act]
        perf.append(total / meristic.COHERENCE_SAMPLES)
    p = np.stack(perf)
    hi, lo = p.max(axis=0), p.min(axis=0)
    score = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 0.0)
    return meristic.MeristicOutput(score=score, veto=np.zeros(n, dtype=bool), perf=p)


def _rng_at(state: Mapping[str, Any]) -> np.random.Generator:
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = copy.deepcopy(dict(state))
    return rng


def score_genes(genes: Sequence[Gene], X: np.ndarray, *, seed: int,
                evidence: Mapping[str, Evidence] | None = None,
                request: EvaluationRequest | None = None,
                config: DomainConfig | None = None) -> list[StateScores]:
    """Per gene (in order), `score_states(gene, X, seed=seed, evidence=evidence[gene.id])`."""
    if not genes:
        return []
    if len(genes) > MAX_GENES:
        raise MotorInputError(f"{len(genes)} genes; one batch holds at most {MAX_GENES}")
    if len({g.domain for g in genes}) != 1:
        raise MotorInputError("a batch holds genes of one domain")
    req = request or EvaluationRequest()
    pack, _, X = _prepare(genes[0], X, config)
    cgs = [compile_gene(g, pack) for g in genes]
    bk = get_backend(req.backend)
    rngs = _streams(seed)
    Xb = bk.asarray(X)
    n = X.shape[0]
    cfg = pack.config
    plan = req.plan()
    if plan.monte_carlo_n * n > chaotic.MAX_FUTURE_ELEMENTS:
        raise MotorInputError(
            f"{plan.monte_carlo_n} futures × {n} states exceeds "
            f"{chaotic.MAX_FUTURE_ELEMENTS}; evaluate fewer states per call")

    # M_N, shared: the equilibrium of the states' game.
    A, B = pack.game(bk, Xb)
    eq = nash.equilibrium(bk, A, B)
    s_all, d_all = bk.to_numpy(nash.action_scores(bk, A, eq.y)), bk.to_numpy(
        nash.dominated(bk, A))
    eq_x, eq_y, eq_exact = bk.to_numpy(eq.x), bk.to_numpy(eq.y), bk.to_numpy(eq.exact)

    # M_C, shared futures: draw until every gene's action has stopped.
    rng = rngs["M_C"]
    m = len(pack.actions)
    wanted = sorted({cg.action for cg in cgs})
    stop: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
    loss_sum, acc_sum = np.zeros((n, m)), np.zeros((n, m))
    snaps: list[tuple[int, np.ndarray, np.ndarray, dict[str, Any]]] = []
    batches: list[np.ndarray] = []
    drawn = 0
    first_z = None
    while len(stop) < len(wanted):
        batch = min(plan.monte_carlo_n, plan.cap - drawn)
        z = bk.normal(rng, (batch, n, pack.noise_dims))
        if first_z is None:
            first_z = z[:chaotic.DIVERGENCE_FUTURES]
        L = pack.losses(bk, Xb, z)
        best = bk.min(L, axis=2)
        ok = bk.expand(best, 2) + cfg.tolerance >= L
        loss_sum += bk.to_numpy(bk.sum(L, axis=0))
        acc_sum += bk.to_numpy(bk.sum(bk.tofloat(ok), axis=0))
        batches.append(bk.to_numpy(L))
        drawn += batch
        snaps.append((drawn, loss_sum.copy(), acc_sum.copy(),
                      copy.deepcopy(dict(rng.bit_generator.state))))
        for a in wanted:
            if a in stop:
                continue
            lo, hi = chaotic.wilson(acc_sum[:, a], drawn)
            if float(np.max(hi - lo)) / 2.0 <= plan.epsilon or drawn >= plan.cap:
                stop[a] = (len(snaps) - 1, lo, hi)

    # Per stopping point: the flip perturbations, the divergence, the multiverse.
    groups: dict[int, tuple[Any, np.ndarray, chaotic.Multiverse]] = {}
    for k in sorted({v[0] for v in stop.values()}):
        d_k, ls_k, as_k, state = snaps[k]
        r = _rng_at(state)
        noise = chaotic.flip_noise(bk, pack, Xb, r)
        lyap = chaotic.divergence(bk, pack, Xb, first_z, r)
        groups[k] = (noise, lyap, chaotic.Multiverse(ls_k / d_k, as_k / d_k, d_k))
    own: dict[int, np.ndarray] = {}
    # Every perturbed copy of the states in one matrix: a gene's condition is one call.
    flip_X = {k: bk.to_numpy(Xb + g[0]).reshape(-1, X.shape[1]) for k, g in groups.items()}
    coh_X = np.concatenate([bk.to_numpy(Xb + nz).reshape(-1, X.shape[1])
                            for nz in meristic.coherence_noise(bk, pack, Xb, rngs["M_M"])])
    w = cfg.weights
    out = []
    for gene, cg in zip(genes, cgs, strict=True):
        ev = (evidence or {}).get(gene.id) or Evidence()
        ev_X, ev_y = ev.arrays(pack)
        mp = praxeological.praxeological(bk, pack, cg, Xb, ev_X, ev_y, ev.prior(),
                                         req.k_neighbours, ev.domain_arrays(pack), ev.prior_n())
        a = cg.action
        mn = nash.NashOutput(score=s_all[:, a], veto=d_all[:, a], scores_all=s_all,
                             dominated_all=d_all, x=eq_x, y=eq_y, exact=eq_exact)
        k, lo, hi = stop[a]
        noise, lyap, mv = groups[k]
        d_k = snaps[k][0]
        if a not in own:
            own[a] = np.sort(np.concatenate([b[:, :, a] for b in batches[:k + 1]], axis=0),
                             axis=0, kind="stable")
        tail = max(1, math.ceil((1.0 - cfg.cvar_alpha) * d_k))
        cvar = own[a][-tail:].mean(axis=0) / cfg.loss_scale
        p_hat = snaps[k][2][:, a] / d_k
        base = fires(bk, cg, Xb)
        on_flip = bk.to_numpy(fires(bk, cg, bk.asarray(flip_X[k]))).reshape(
            chaotic.FLIP_SAMPLES, n)
        flip = _flip_share(bk, bk.to_numpy(base), on_flip)
        mc = chaotic.ChaoticOutput(
            score=np.clip(p_hat * (1.0 - flip), 0.0, 1.0), veto=cvar > cfg.cvar_limit,
            p_hat=p_hat, lower=lo, upper=hi, cvar=cvar, flip=flip, divergence=lyap,
            futures=d_k, multiverse=mv)
        mm = _coherence(bk, pack, cg, coh_X, mv)
        cp = (mp.score ** w.get("M_P", 1.0) * mn.score ** w.get("M_N", 1.0)
              * mc.score ** w.get("M_C", 1.0) * mm.score ** w.get("M_M", 1.0))
        vetoed = mp.veto | mn.veto | mc.veto | mm.veto
        cp = np.where(vetoed, 0.0, cp)
        needs = undecided(cp, mp.alpha, mp.beta, w.get("M_P", 1.0), cfg.bands,
                          cfg.min_evidence, mp.prior_n)
        out.append(StateScores(mp, mn, mc, mm, cp, vetoed, needs))
    return out
