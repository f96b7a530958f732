"""Adaptation judged on held-out states: the split never mixes an entity across sides,
and only variants that beat their parent there (CP up and cost down) are winners."""

from __future__ import annotations

import pytest

from gd.genome import Codon, Gene, NodeKey
from gd.motors import holdout, meristic
from gd.motors.domains import get_domain
from gd.motors.errors import MotorInputError
from gd.motors.evaluate import EvaluationRequest

REQ = EvaluationRequest(monte_carlo_n=64, epsilon=0.1, cap=256)


def test_split_keeps_entities_whole_and_replays() -> None:
    pack = get_domain("turbofan")
    X = pack.matrix(pack.demo_states(60, 2))
    states = pack.states(X, entities=[str(i % 6) for i in range(60)], times=list(range(60)))
    search, held = holdout.split_held_out(states, seed=3)
    assert sorted(search + held) == list(range(60)) and held
    assert not {states[i].entity for i in search} & {states[i].entity for i in held}
    assert holdout.split_held_out(states, seed=3) == (search, held)
    with pytest.raises(MotorInputError, match="at least"):
        holdout.split_held_out(states[:5], seed=3)


def test_winners_beat_the_parent_on_held_out_states() -> None:
    key = NodeKey.from_seed(b"h" * 32)
    gene = Gene.create(key, domain="turbofan", name="late", action="inspect",
                       codons=[Codon.simple("s11", ">", 48.3)])
    states = get_domain("turbofan").demo_states(80, 5)
    res = holdout.adapt_held_out(gene, states, seed=9, request=REQ,
                                 search=meristic.SearchConfig(population=128, generations=5,
                                                              top=3))
    assert res.compared, "the pool's variants are all compared"
    held = set(res.held_rows)
    assert held and not held & set(res.search_rows)
    for c in res.winners:
        assert c.improves and c.cp_gain > 0 and c.cost_saving > 0
        assert c.parent == res.compared[0].parent   # one parent score, common futures
    assert {id(c) for c in res.winners} <= {id(c) for c in res.compared if c.improves}
    assert len(res.winners) == min(3, sum(c.improves for c in res.compared))
    gains = [c.cp_gain for c in res.winners]
    assert gains == sorted(gains, reverse=True)
    assert min(gains, default=1.0) >= max((c.cp_gain for c in res.compared if c.improves
                                           and c not in res.winners), default=0.0)
