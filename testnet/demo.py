"""Demo data for `make run`: a home with the demo genes of both domain packs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from gd.genome.identity import NodeKey
from gd.motors.domains import demo_genes, domain_names
from gd.node.config import NodeConfig
from gd.node.home import Home
from gd.node.importer import import_genes
from gd.node.local import initialise_home, open_local

# Edges between the packs' demo genes, by name: the turbofan inspection rule is usually
# followed by the overhaul rule, and the low-s12 inspection specialises the hot-HPC one.
DEMO_SYNAPSES: dict[str, list[dict[str, Any]]] = {
    "inspect-hot-hpc": [{"target": "overhaul-late-life", "kind": "follows", "weight": 0.6}],
    "inspect-low-s12": [{"target": "inspect-hot-hpc", "kind": "specialises", "weight": 0.5}],
}


def demo_lines() -> list[str]:
    """The demo genes of every domain pack, as JSONL import lines (with synapses)."""
    lines = []
    for domain in domain_names():
        for gene in demo_genes(domain):
            row = dict(gene)
            if row["name"] in DEMO_SYNAPSES:
                row["synapses"] = DEMO_SYNAPSES[row["name"]]
            lines.append(json.dumps(row, sort_keys=True))
    return lines


def prepare_demo_home(directory: Path, *, org: str, region: str) -> dict[str, Any]:
    """Initialise `directory` as a home (if it is not one) and import the demo genes.
    Idempotent: a second call finds every gene unchanged."""
    home = Home.resolve(directory)
    if not home.is_initialised():
        initialise_home(home, NodeConfig(org=org, region=region), NodeKey.generate())
    with open_local(home) as node, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo.jsonl"
        path.write_text("\n".join(demo_lines()) + "\n")
        report = import_genes(node.cortex, node.key, path)
        if report.rejected:
            raise ValueError(f"demo genes rejected: {report.rejected}")
        return {"home": str(home.root), "peer_id": node.key.peer_id, **report.to_plain()}
