"""Small factories shared by the test suites (keys, genes)."""

from __future__ import annotations

from gd.genome import Codon, Gene, NodeKey


def key_from_int(n: int) -> NodeKey:
    """A deterministic node key: tests and simulations replay bit for bit."""
    return NodeKey.from_seed(n.to_bytes(32, "big"))


def make_gene(key: NodeKey, name: str = "inspect-when-hot", domain: str = "turbofan",
              threshold: float = 47.6, action: str = "inspect") -> Gene:
    return Gene.create(key, domain=domain, name=name,
                       codons=[Codon.simple("s11", ">", threshold)], action=action,
                       purpose="avoid unplanned failure", hlc=1 << 16)
