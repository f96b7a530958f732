from __future__ import annotations

import numpy as np
import pytest

from gd.motors.backend import PARITY_ATOL, PARITY_RTOL, get_backend
from gd.motors.domains import get_domain
from gd.motors.errors import MotorInputError
from gd.motors.evaluate import EvaluationRequest, score_states
from gd.motors.nash import support_enumeration
from tests.motors.conftest import make_gene

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(("domain", "codon", "action"), [
    ("turbofan", ("s11", ">", 47.5), "inspect"),
    ("loan", ("credit_score", ">", 600.0), "standard_offer"),
])
def test_numpy_and_torch_agree(key, domain: str, codon, action: str) -> None:
    pack = get_domain(domain)
    X = pack.matrix(pack.demo_states(40, 6))
    gene = make_gene(key, domain, [codon], action)
    a = score_states(gene, X, seed=11)
    b = score_states(gene, X, seed=11, request=EvaluationRequest(backend="torch"))
    for name in ("mp", "mn", "mc", "mm"):
        np.testing.assert_allclose(getattr(b, name).score, getattr(a, name).score,
                                   rtol=PARITY_RTOL, atol=PARITY_ATOL, err_msg=name)
    np.testing.assert_allclose(b.cp, a.cp, rtol=PARITY_RTOL, atol=PARITY_ATOL)
    np.testing.assert_allclose(b.mc.cvar, a.mc.cvar, rtol=PARITY_RTOL, atol=PARITY_ATOL)


def test_numpy_is_bit_exact_across_runs(key) -> None:
    pack = get_domain("turbofan")
    X = pack.matrix(pack.demo_states(30, 1))
    gene = make_gene(key, "turbofan", [("s4", ">", 1410.0)], "overhaul")
    a, b = score_states(gene, X, seed=3), score_states(gene, X, seed=3)
    assert a.cp.tobytes() == b.cp.tobytes() and a.mc.cvar.tobytes() == b.mc.cvar.tobytes()


def test_equilibria_agree_across_backends() -> None:
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((50, 3, 3)), rng.standard_normal((50, 3, 3))
    tb = get_backend("torch", "cpu")
    x_np = support_enumeration(get_backend(), A, B).x
    x_t = tb.to_numpy(support_enumeration(tb, tb.asarray(A), tb.asarray(B)).x)
    np.testing.assert_allclose(x_t, x_np, rtol=PARITY_RTOL, atol=PARITY_ATOL)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(MotorInputError, match="unknown backend"):
        get_backend("jax")
