"""The batched path (`score_genes`) gives every gene exactly what `score_states` gives it
alone: sharing the game, the futures and the perturbations changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from gd.genome import Codon, Experience, Gene, NodeKey
from gd.motors.batch import score_genes
from gd.motors.domains import get_domain
from gd.motors.errors import MotorInputError
from gd.motors.evaluate import EvaluationRequest, Evidence, score_states

REQ = EvaluationRequest(monte_carlo_n=64, epsilon=0.05, cap=512)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("domain", ["turbofan", "loan"])
def test_each_gene_scores_as_if_alone(domain: str) -> None:
    key = NodeKey.from_seed(b"k" * 32)
    pack = get_domain(domain)
    genes = [Gene.create(key, domain=domain, name=spec["name"], action=spec["action"],
                         codons=[Codon.simple(c["feature"], c["op"], c["threshold"])
                                 for c in spec["codons"]])
             for spec in pack.demo_genes()]
    states = pack.demo_states(24, 3)
    X = pack.matrix(states)
    first = genes[0]
    ev = {first.id: Evidence(tuple(Experience(first.id, first.version_hash.hex(), s,
                                              bool(i % 3), i + 1, "")
                                   for i, s in enumerate(states[:10])))}
    batch = score_genes(genes, X, seed=11, evidence=ev, request=REQ)
    assert len(batch) == len(genes) >= 3
    for gene, got in zip(genes, batch, strict=True):
        alone = score_states(gene, X, seed=11, evidence=ev.get(gene.id), request=REQ)
        assert _same(got.cp, alone.cp) and _same(got.needs_evidence, alone.needs_evidence)
        for motor in ("mp", "mn", "mc", "mm"):
            assert _same(getattr(got, motor).score, getattr(alone, motor).score), motor
            assert _same(getattr(got, motor).veto, getattr(alone, motor).veto), motor
        assert got.mc.futures == alone.mc.futures
        assert _same(got.mc.cvar, alone.mc.cvar) and _same(got.mc.divergence,
                                                          alone.mc.divergence)


def test_one_domain_per_batch() -> None:
    key = NodeKey.from_seed(b"k" * 32)
    a = Gene.create(key, domain="turbofan", name="a", action="inspect",
                    codons=[Codon.simple("s11", ">", 47.5)])
    spec = get_domain("loan").demo_genes()[0]
    b = Gene.create(key, domain="loan", name="b", action=spec["action"],
                    codons=[Codon.simple(c["feature"], c["op"], c["threshold"])
                            for c in spec["codons"]])
    with pytest.raises(MotorInputError, match="one domain"):
        score_genes([a, b], get_domain("turbofan").matrix(
            get_domain("turbofan").demo_states(4, 1)), seed=1)
    assert score_genes([], np.zeros((0, 26)), seed=1) == []
