"""Demo data for `make run`: a home with the demo genes of both domain packs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from gd.genome.identity import NodeKey
from gd.node.config import NodeConfig, render_config
from gd.node.cortex import Cortex
from gd.node.home import Home
from gd.node.importer import import_genes
from gd.node.local import open_local

# Hand-written demo rules. Thresholds sit inside the sensor ranges of C-MAPSS FD001
# (s11 ≈ 46.8–48.5, s4 ≈ 1380–1440, s9 ≈ 9020–9250) and plausible loan attributes.
DEMO_GENES: list[dict[str, Any]] = [
    {"domain": "turbofan", "name": "inspect-when-hot",
     "codons": [{"feature": "s11", "op": ">", "threshold": 47.6}],
     "action": "inspect", "purpose": "avoid unplanned failure",
     "synapses": [{"target": "overhaul-when-worn", "kind": "follows", "weight": 0.6}]},
    {"domain": "turbofan", "name": "overhaul-when-worn",
     "codons": [{"feature": "s11", "op": ">", "threshold": 48.0},
                {"feature": "s4", "op": ">", "threshold": 1420.0}],
     "action": "overhaul", "purpose": "restore health before failure"},
    {"domain": "turbofan", "name": "continue-when-healthy",
     "codons": [{"feature": "s11", "op": "<=", "threshold": 47.4},
                {"feature": "s9", "op": "<", "threshold": 9100.0}],
     "action": "continue", "purpose": "no needless maintenance"},
    {"domain": "loan", "name": "offer-when-low-risk",
     "codons": [{"feature": "credit_score", "op": ">=", "threshold": 650.0},
                {"feature": "requested_amount", "op": "<=", "threshold": 25000.0}],
     "action": "offer", "params": {"rate_bp": 450}, "purpose": "profitable lending"},
    {"domain": "loan", "name": "decline-when-overextended",
     "codons": [{"op": ">", "threshold": 0.45,
                 "terms": {"monthly_cost": 1.0, "income": -0.45}}],
     "action": "decline", "purpose": "limit default losses"},
]


def demo_lines() -> list[str]:
    return [json.dumps(g, sort_keys=True) for g in DEMO_GENES]


def prepare_demo_home(directory: Path, *, org: str, region: str) -> dict[str, Any]:
    """Initialise `directory` as a home (if it is not one) and import the demo genes.
    Idempotent: a second call finds every gene unchanged."""
    home = Home.resolve(directory)
    if not home.is_initialised():
        home.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        cfg = NodeConfig(org=org, region=region)
        NodeKey.generate().save(home.key_path)
        home.config_path.write_text(render_config(cfg))
        Cortex.open(home.cortex_path, map_size=cfg.cortex_map_size_mb << 20).close()
    with open_local(home) as node, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo.jsonl"
        path.write_text("\n".join(demo_lines()) + "\n")
        report = import_genes(node.cortex, node.key, path)
        if report.rejected:
            raise ValueError(f"demo genes rejected: {report.rejected}")
        return {"home": str(home.root), "peer_id": node.key.peer_id, **report.to_plain()}
