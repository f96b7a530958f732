"""Small factories shared by the test suites (keys, genes)."""

from __future__ import annotations

from gd.genome import Codon, Gene, NodeKey


def key_from_int(n: int) -> NodeKey:
    """A deterministic node key: tests and simulations replay bit for bit."""
    return NodeKey.from_seed(n.to_bytes(32, "big"))


# A feature and an action each domain pack knows, so that test genes pass the receive
# path's pack check (gd.motors.domains.gene_check) wherever they travel.
_DEFAULTS = {"turbofan": ("s11", "inspect"), "loan": ("credit_score", "decline")}


def make_gene(key: NodeKey, name: str = "inspect-when-hot", domain: str = "turbofan",
              threshold: float = 47.6, action: str | None = None) -> Gene:
    feature, default_action = _DEFAULTS.get(domain, ("s11", "inspect"))
    return Gene.create(key, domain=domain, name=name,
                       codons=[Codon.simple(feature, ">", threshold)],
                       action=action or default_action,
                       purpose="avoid unplanned failure", hlc=1 << 16)
