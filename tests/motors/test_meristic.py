from __future__ import annotations

import lmdb
import msgpack
import numpy as np
import pytest

from gd.genome import Codon, Gene, GeneStatus
from gd.motors.backend import get_backend
from gd.motors.chaotic import Multiverse
from gd.motors.checkpoints import CheckpointStore, MemoryCheckpoints
from gd.motors.condition import OP_CODES, compile_gene
from gd.motors.errors import CheckpointError, MotorInputError
from gd.motors.meristic import (
    Population,
    SearchConfig,
    evolve,
    population_fitness,
    scale_coherence,
    variants_to_genes,
)
from gd.node.store.meristic_checkpoints import LmdbCheckpoints
from tests.motors.conftest import ToyPack, make_gene

bk = get_backend()


def _planted(n_states: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One feature uniform on [0, 1]; acting pays 1 where x > 0.7, waiting pays 1 elsewhere.
    The best gene is "x > 0.7 → act" with fitness 1 - COMPLEXITY."""
    x = np.linspace(0.0, 1.0, n_states)
    Z = x[:, None]
    value = np.stack([(x <= 0.7).astype(float), (x > 0.7).astype(float)], axis=1)
    return Z, value


def _seed_pop(thr: float = 0.1) -> Population:
    return Population(np.zeros((1, 2), np.int64), np.array([[OP_CODES[">"], 0]]),
                      np.array([[thr, 0.0]]), np.array([[True, False]]), np.array([1]))


def test_search_improves_fitness_on_a_planted_problem() -> None:
    Z, value = _planted()
    res = evolve(bk, Z, np.array([0.25]), value, _seed_pop(), _seed_pop().take(np.array([], int)),
                 0, SearchConfig(population=400, generations=12, slots=2), seed=3)
    assert res.history[-1] > res.seed_fitness + 0.3
    assert res.history[-1] >= 0.98
    assert list(res.history) == sorted(res.history)    # the pool never gets worse
    best = res.pool.take(np.array([0]))
    assert 0.68 < best.thr[0, best.active[0].argmax()] < 0.72


def test_population_fitness_hand_computed() -> None:
    Z, value = _planted(11)            # x = 0, .1, …, 1
    pop = Population(np.zeros((2, 1), np.int64), np.array([[OP_CODES[">"]], [OP_CODES["<"]]]),
                     np.array([[0.7], [0.0]]), np.ones((2, 1), bool), np.array([1, 1]))
    fit = population_fitness(bk, pop, bk.asarray(Z.T), bk.asarray(value.reshape(-1)), 0)
    assert fit[0] == pytest.approx(1.0 - 1e-3)
    # Never fires, so it always waits: right wherever x ≤ 0.7.
    assert fit[1] == pytest.approx(value[:, 0].mean() - 1e-3)
    assert 0.6 < value[:, 0].mean() < 0.75


def test_search_resumes_after_a_crash_exactly(tmp_path) -> None:
    Z, value = _planted()
    cfg = SearchConfig(population=200, generations=8, slots=2)
    empty = _seed_pop().take(np.array([], int))
    whole = evolve(bk, Z, np.array([0.25]), value, _seed_pop(), empty, 0, cfg, seed=9)
    env = lmdb.open(str(tmp_path / "db"), max_dbs=4, map_size=1 << 28)
    store = LmdbCheckpoints(env)
    calls = {"n": 0}

    def cancel_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    part = evolve(bk, Z, np.array([0.25]), value, _seed_pop(), empty, 0, cfg, seed=9,
                  checkpoints=store, search_id="s1", fingerprint="f", cancel=cancel_after_three)
    assert part.cancelled and part.generations_run == 3
    env.close()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=4, map_size=1 << 28)   # "restart"
    rest = evolve(bk, Z, np.array([0.25]), value, _seed_pop(), empty, 0, cfg, seed=9,
                  checkpoints=LmdbCheckpoints(env), search_id="s1", fingerprint="f")
    assert rest.resumed_from == 3 and not rest.cancelled
    assert rest.history == whole.history
    assert np.array_equal(rest.pool.thr, whole.pool.thr)
    with pytest.raises(CheckpointError):
        evolve(bk, Z, np.array([0.25]), value, _seed_pop(), empty, 0, cfg, seed=9,
               checkpoints=LmdbCheckpoints(env), search_id="s1", fingerprint="other")
    env.close()


def test_checkpoint_stores_fit_the_protocol_and_resume_alike(tmp_path) -> None:
    """The in-memory store resumes exactly like the LMDB one: the search depends only on
    the protocol, not on where the bytes live."""
    Z, value = _planted()
    cfg = SearchConfig(population=200, generations=6, slots=2)
    empty = _seed_pop().take(np.array([], int))
    whole = evolve(bk, Z, np.array([0.25]), value, _seed_pop(), empty, 0, cfg, seed=4)
    env = lmdb.open(str(tmp_path / "db"), max_dbs=4, map_size=1 << 28)
    for store in (MemoryCheckpoints(), LmdbCheckpoints(env)):
        assert isinstance(store, CheckpointStore)
        n = {"calls": 0}

        def stop_after_two(n: dict[str, int] = n) -> bool:
            n["calls"] += 1
            return n["calls"] > 2

        part = evolve(bk, Z, np.array([0.25]), value, _seed_pop(), empty, 0, cfg, seed=4,
                      checkpoints=store, search_id="s", fingerprint="f", cancel=stop_after_two)
        assert part.cancelled and store.load("s") is not None
        rest = evolve(bk, Z, np.array([0.25]), value, _seed_pop(), empty, 0, cfg, seed=4,
                      checkpoints=store, search_id="s", fingerprint="f")
        assert rest.resumed_from == 2 and rest.history == whole.history
        store.delete("s")
        assert store.load("s") is None
    env.close()


@pytest.mark.parametrize("raw", [b"\xc1 not msgpack", msgpack.packb({"format": 99}),
                                 msgpack.packb([1, 2])])
def test_a_corrupt_or_foreign_checkpoint_is_refused_by_name(raw: bytes) -> None:
    Z, value = _planted()
    store = MemoryCheckpoints()
    store.save("s1", raw)
    with pytest.raises(CheckpointError, match="checkpoint s1"):
        evolve(bk, Z, np.array([0.25]), value, _seed_pop(), _seed_pop().take(np.array([], int)),
               0, SearchConfig(population=50, generations=2, slots=2), seed=1,
               checkpoints=store, search_id="s1", fingerprint="f")


def test_scale_coherence_of_a_gene_that_always_fires(key) -> None:
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", -100.0)], "act"), pack)
    mv = Multiverse(loss_mean=np.array([[0.5, 0.4]]), acceptable=np.array([[0.2, 0.6]]),
                    futures=10)
    out = scale_coherence(bk, pack, cg, np.array([[0.0]]), mv, np.random.default_rng(1))
    assert out.perf[:, 0] == pytest.approx([0.6] * 4)
    assert out.score[0] == 1.0


def test_scale_coherence_drops_near_a_threshold(key) -> None:
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", 0.0)], "act"), pack)
    mv = Multiverse(loss_mean=np.array([[0.5, 0.4]]), acceptable=np.array([[0.0, 1.0]]),
                    futures=10)
    out = scale_coherence(bk, pack, cg, np.array([[0.05]]), mv, np.random.default_rng(1))
    # Coarse noise (σ = 1) flips the decision about half the time, fine noise (0.03) never.
    assert out.perf[-1, 0] == 1.0 and out.perf[0, 0] < 0.8
    assert out.score[0] == pytest.approx(out.perf[:, 0].min())


def test_variants_become_pending_genes_with_lineage(key) -> None:
    parent = make_gene(key, "toy", [("x", ">", 0.1)], "act")
    from gd.motors.meristic import Variant

    genes = variants_to_genes(key, parent, [Variant((Codon.simple("x", ">", 0.7),), "act", 1.0)])
    assert isinstance(genes[0], Gene)
    assert genes[0].status == GeneStatus.ADAPTATION_PENDING
    assert genes[0].parents == (parent.id,)
    genes[0].verify()


def test_bad_search_configs_are_refused() -> None:
    with pytest.raises(MotorInputError):
        SearchConfig(population=1)
    with pytest.raises(MotorInputError):
        SearchConfig(generations=0)
    with pytest.raises(MotorInputError):
        SearchConfig(top=50, retreat_size=16)
