"""A batch of received wire genes with every kind of fault a verifier must tell apart.

Shared by the verify-pool and verify-process tests: both must give the one-by-one core's
verdict gene for gene, so both check the same mix (one builder, not two that drift).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gd_testkit import make_gene

from gd.genome import canonical
from gd.genome.identity import NodeKey


def mixed_wire_batch(n: int, author: NodeKey, stranger: NodeKey, *,
                     non_canonical: bool = False) -> list[dict[str, Any]]:
    """n wire genes by `author` as a receiver decodes them: every 7th with a forged name
    (bad signature), every 11th re-signed by `stranger` under the author's id (unbound
    id), with `non_canonical` every 13th valid but not in canonical form (an integer
    threshold: the signature covers the float the gene encodes to), and the 41st (when
    there is one) not even a gene."""
    wires = []
    for i in range(n):
        gene = make_gene(author, f"g{i:03d}", threshold=47.0)
        if i % 7 == 3:
            wire = dataclasses.replace(gene, name="evil").to_wire()
            wire["body"]["name"] = "evil"
            wire["sig"] = gene.signature
        elif i % 11 == 5:
            wire = dataclasses.replace(gene, author="", signature=b"", domain="loan",
                                       vv={stranger.peer_id: 1}).signed(stranger).to_wire()
        else:
            wire = gene.to_wire()
            if non_canonical and i % 13 == 6:
                wire["body"]["codons"][0]["threshold"] = 47
        wires.append(canonical.decode(canonical.encode_plain(wire)))
    if n > 40:
        wires[40] = {"body": {"id": "not-a-gene"}}
    return wires
