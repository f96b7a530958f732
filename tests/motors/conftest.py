from __future__ import annotations

import numpy as np
import pytest

from gd.genome import Codon, Gene, NodeKey
from gd.motors.backend import Backend
from gd.motors.domains.pack import DomainConfig, DomainPack


@pytest.fixture(scope="session")
def key() -> NodeKey:
    return NodeKey.from_seed(b"m" * 32)


def make_gene(key: NodeKey, domain: str, codons: list[tuple[str, str, float]], action: str,
              name: str = "g") -> Gene:
    return Gene.create(key, domain=domain, name=name,
                       codons=[Codon.simple(f, op, t) for f, op, t in codons], action=action)


class ToyPack(DomainPack):
    """One feature x, two actions. Action 1 ("act") loses 1 when z0 > x, else 0; action 0
    ("wait") always loses 0.5. So `act` is acceptable (tolerance 0) iff z0 ≤ x or ... :
    P(acceptable for act) = P(L_act ≤ min) = P(z0 ≤ x) = Φ(x)."""

    name = "toy"
    features = ("x",)
    actions = ("wait", "act")
    counter_actions = ("calm", "storm")
    default_action = "wait"
    noise_dims = 1
    center = np.array([0.0])
    scale = np.array([1.0])
    config = DomainConfig(floor=0.3, min_evidence=4.0, cvar_alpha=0.95, cvar_limit=0.9,
                          loss_scale=1.0, tolerance=0.0, horizon=5)

    def losses(self, bk: Backend, X, z):
        act = bk.tofloat(z[..., 0] > X[..., 0])
        return bk.stack([act * 0.0 + 0.5, act], axis=-1)

    def trajectory(self, bk: Backend, X, z):
        steps = bk.asarray(np.arange(1, 6, dtype=np.float64))
        return bk.expand(X[..., 0] + 0.0 * z[..., 0], -1) * bk.exp(0.1 * steps)

    def game(self, bk: Backend, X):
        n = X.shape[0]
        A = bk.zeros((n, 2, 2)) + bk.asarray([[-0.5, -0.5], [0.0, -1.0]])
        return A, -A
