"""A gene as plain JSON for people and programs: the CLI's `--json` and the HTTP API
print the same fields, so a script can move between them without remapping."""

from __future__ import annotations

from typing import Any

from gd.genome.gene import Gene


def gene_json(gene: Gene) -> dict[str, Any]:
    """The signed body plus what a reader wants beside it: status, outcome counts, the
    version hash and signature in hex, and the condition as text."""
    body = gene.body()
    body.update(status=str(gene.status), successes=gene.successes, failures=gene.failures,
                version_hash=gene.version_hash.hex(), signature=gene.signature.hex(),
                condition=gene.condition_text())
    return body
