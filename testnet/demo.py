"""Demo data for `make run`: a home with the demo genes of both domain packs, and a
history for them to be judged on.

Without history every demo gene would be judged on no evidence and the dashboard would
show nothing but `needs-evidence` (issue 14). So each org back-tests its genes on a small
record the packs generate from a seed, through the same `experiences import` a user runs
on real data: run-to-failure trajectories in the C-MAPSS layout from the turbofan pack's
wear model, and an event log in the BPI Challenge 2017 layout from the loan pack's
applicant model. The real data sets are never read here (they are not on a user's
machine). Each org gets its own record (a different seed), as each has its own past.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from gd.genome.identity import NodeKey
from gd.motors.domains import demo_genes, domain_names
from gd.motors.domains.loan import demo_events, write_csv
from gd.motors.domains.turbofan import demo_cmapss
from gd.node.app.history_import import HistoryImport, import_history
from gd.node.app.importer import import_genes
from gd.node.config import NodeConfig
from gd.node.home import Home
from gd.node.local import LocalNode, initialise_home, open_local

# Edges between the packs' demo genes, by name: the turbofan inspection rule is usually
# followed by the overhaul rule, and the low-s12 inspection specialises the hot-HPC one.
DEMO_SYNAPSES: dict[str, list[dict[str, Any]]] = {
    "inspect-hot-hpc": [{"target": "overhaul-late-life", "kind": "follows", "weight": 0.6}],
    "inspect-low-s12": [{"target": "inspect-hot-hpc", "kind": "specialises", "weight": 0.5}],
}


# Each org's demo record, by its index in the testnet: (engines run to failure,
# loan applications). Orgs differ in their past as real ones do: the first two have a
# long record (16 engines ~ 3,800 rows, ~500 of them within 30 cycles of failure; 300
# applications), the third a short one, the fourth is new to the federation and has
# none yet, so its genes are honestly `needs-evidence`. Enough for M_P's 32 neighbours
# to decide the others; `testnet up` imports it all in about two seconds.
HISTORY_BY_ORG: Final = ((16, 300), (16, 300), (4, 60), (0, 0))
HISTORY_FILES: Final = {"turbofan": "train_demo.txt", "loan": "bpi2017_demo.csv"}
# Offset of the history seeds from the seeds of the states the testnet evaluates on
# (`plan.seed * 1000 + index`), so no org is judged on the very rows it learned from.
HISTORY_SEED_OFFSET: Final = 500


def history_size(index: int) -> tuple[int, int]:
    """(engines, applications) of the demo record of the org at `index` (cycles through
    HISTORY_BY_ORG for testnets with more orgs)."""
    return HISTORY_BY_ORG[index % len(HISTORY_BY_ORG)]


def write_demo_history(domain: str, directory: Path, seed: int, size: int) -> Path:
    """Write a seeded historical record of `domain` in its real data's layout into
    `directory` (C-MAPSS `train_FD00x.txt` for turbofan, `size` engines; a BPI 2017 CSV
    for loan, `size` applications), so the pack's own loader reads it as it would read
    the real file."""
    path = directory / HISTORY_FILES[domain]
    if domain == "turbofan":
        rows, _ = demo_cmapss(size, seed)
        path.write_text("".join(
            f"{int(r[0])} {int(r[1])} " + " ".join(f"{v:.4f}" for v in r[2:]) + " \n"
            for r in rows))
    elif domain == "loan":
        write_csv(demo_events(size, seed), path)
    else:
        raise ValueError(f"no demo history for domain {domain!r}")
    return path


def import_demo_history(node: LocalNode, seed: int, engines: int, applications: int
                        ) -> list[HistoryImport]:
    """Back-test the node's native genes of each domain on a demo record generated from
    `seed` (`experiences import --domain D`, the user's own command). Domains where the
    node has no native gene, or whose size is 0, are skipped. Idempotent: the same seed
    and size give the same file, which is imported once."""
    sizes = {"turbofan": engines, "loan": applications}
    mine = {g.domain for g in node.cortex.genes(status="native")}
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        for domain in sorted(mine & set(HISTORY_FILES)):
            if sizes[domain] > 0:
                path = write_demo_history(domain, Path(tmp), seed, sizes[domain])
                done.append(import_history(node, path, domain=domain))
    return done


def give_demo_history(homes: Sequence[Path], seed: int) -> dict[str, int]:
    """Import each org's demo record (`history_size` by its index) into its home; the
    experiences recorded, by home directory name."""
    recorded: dict[str, int] = {}
    for index, directory in enumerate(homes):
        engines, applications = history_size(index)
        with open_local(Home.resolve(directory)) as node:
            done = import_demo_history(node, seed * 1000 + HISTORY_SEED_OFFSET + index,
                                       engines, applications)
        recorded[Path(directory).name] = sum(r.recorded for r in done)
    return recorded


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
