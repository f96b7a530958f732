"""Replay is bit for bit, and the seed really drives the motors' random draws.

"Exact" in a replay report means the re-run decision's canonical bytes equal the stored
ones: no tolerance, not even one unit in the last place, and -0.0 is not 0.0. A replay
that reproduced numbers whatever the seed would prove nothing, so a different seed must
change the Monte Carlo outcome, and replaying a decision under another seed must differ.
"""

from __future__ import annotations

import math
import struct

from gd.genome import Decision
from gd.motors.domains import get_domain
from gd.motors.evaluate import EvaluationRequest, evaluate, replay
from tests.motors.conftest import make_gene

STATES = get_domain("turbofan").demo_states(16, 4)
REQUEST = EvaluationRequest(monte_carlo_n=128, epsilon=0.1, cap=512)


def _gene(key):
    return make_gene(key, "turbofan", [("s11", "<", 49.0)], "continue", "healthy")


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _scores(decision: Decision) -> dict[str, bytes]:
    return {r.motor: _bits(r.score) for r in decision.results}


def test_numpy_replay_reproduces_the_canonical_bytes(key) -> None:
    gene = _gene(key)
    for seed in (0, 1, 77, 2**63 + 5):
        d = evaluate(gene, STATES, seed=seed, request=REQUEST, decided_at=1)
        rep = replay(d, gene)
        assert rep.exact and rep.replayed.encode() == d.encode(), seed


def test_replay_reports_a_drift_of_one_unit_in_the_last_place(key) -> None:
    gene = _gene(key)
    d = evaluate(gene, STATES, seed=77, request=REQUEST, decided_at=1)
    assert 0.0 < d.cp < 1.0
    drifted = Decision.from_plain({**d.to_plain(), "cp": math.nextafter(d.cp, 2.0)})
    assert abs(drifted.cp - d.cp) < 1e-15
    rep = replay(drifted, gene)
    assert not rep.exact and rep.differences == (
        f"$.cp: stored {drifted.cp!r}, replayed {d.cp!r}",)
    plain = d.to_plain()
    index = next(i for i, r in enumerate(plain["results"]) if 0.0 < r["score"] < 1.0)
    results = [dict(r) for r in plain["results"]]
    results[index]["score"] = math.nextafter(results[index]["score"], 0.0)
    rep = replay(Decision.from_plain({**plain, "results": results}), gene)
    assert not rep.exact
    assert rep.differences[0].startswith(f"$.results[{index}].score")


def test_replay_tells_negative_zero_from_zero(key) -> None:
    gene = make_gene(key, "turbofan", [("s11", ">", 60.0)], "inspect", "never")
    d = evaluate(gene, STATES, seed=1, decided_at=1)
    assert d.cp == 0.0 and _bits(d.cp) == _bits(0.0)
    signed = Decision.from_plain({**d.to_plain(), "cp": -0.0})
    assert signed.cp == d.cp  # equal as numbers, different as bits
    rep = replay(signed, gene)
    assert not rep.exact and rep.differences[0].startswith("$.cp")


def test_a_different_seed_changes_the_random_outcome(key) -> None:
    gene = _gene(key)
    runs = {seed: evaluate(gene, STATES, seed=seed, request=REQUEST, decided_at=1)
            for seed in (77, 78, 79)}
    assert [r.motor for r in runs[77].results] == ["M_P", "M_N", "M_C", "M_M"]
    again = evaluate(gene, STATES, seed=77, request=REQUEST, decided_at=1)
    assert again.encode() == runs[77].encode()  # same seed, same bytes
    # The Monte Carlo motor draws from the seed: each seed gives its own outcome.
    assert len({_scores(d)["M_C"] for d in runs.values()}) == 3
    assert len({_bits(d.cp) for d in runs.values()}) == 3


def test_replaying_under_another_seed_is_not_exact(key) -> None:
    gene = _gene(key)
    d = evaluate(gene, STATES, seed=77, request=REQUEST, decided_at=1)
    reseeded = Decision.from_plain({**d.to_plain(), "seed": 78})
    rep = replay(reseeded, gene)
    assert not rep.exact
    assert any(diff.startswith("$.results[2]") for diff in rep.differences)  # M_C moved

