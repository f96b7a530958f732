"""Issue 13, item 2: values are checked against the domain pack at import.

A gene with domain `turbofann`, feature `s99`, action `explode` or a parameter of the
wrong type used to be stored as native and fail only at evaluate. Now import refuses the
line, naming the line and the field, as it does for format errors; `check_gene` is the
same pure function the sync receive path uses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cli_runner import run_cli as run
from gd_testkit import key_from_int, make_gene

from gd.genome.errors import ValidationError
from gd.genome.gene import Codon, Gene
from gd.motors.domains import demo_genes, domain_names
from gd.motors.domains.gene_check import PackMismatch, check_gene

GOOD = {"domain": "turbofan", "name": "inspect-when-hot",
        "codons": [{"feature": "s11", "op": ">", "threshold": 47.6}], "action": "inspect",
        "params": {"lead_cycles": 30, "crew": "two"}, "purpose": "avoid unplanned failure"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    assert run("init", "--home", str(h), "--org", "acme", "--region", "eu-west")[0] == 0
    return h


def test_import_refuses_values_the_domain_pack_does_not_know(home: Path,
                                                              tmp_path: Path) -> None:
    rows = [
        GOOD,
        dict(GOOD, name="typo-domain", domain="turbofann"),
        dict(GOOD, name="no-such-feature",
             codons=[{"feature": "s11", "op": ">", "threshold": 1},
                     {"feature": "s99", "op": "<", "threshold": 2}]),
        dict(GOOD, name="no-such-action", action="explode"),
        dict(GOOD, name="bad-param", params={"lead_cycles": "soon"}),
        dict(GOOD, name="weighted", codons=[{"terms": {"s11": 1.0, "credit_score": -0.5},
                                             "op": ">", "threshold": 0}]),
        dict(GOOD, name="loan-feature-in-turbofan",
             codons=[{"feature": "credit_score", "op": ">", "threshold": 600}]),
        dict(GOOD, name="fine-too", params={"lead_cycles": 12}),
    ]
    path = tmp_path / "g.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out = run("genes", "import", str(path), "--home", str(home), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["added"] == 2
    reasons = {r["line"]: r["reason"] for r in report["rejected"]}
    assert set(reasons) == {2, 3, 4, 5, 6, 7}
    assert reasons[2].startswith("domain: unknown domain 'turbofann' (did you mean "
                                 "'turbofan'?)")
    assert reasons[3].startswith("codons[1].feature: 's99' is not a feature of domain "
                                 "'turbofan'")
    assert reasons[4].startswith("action: 'explode' is not an action of domain 'turbofan'")
    assert "continue, inspect, overhaul" in reasons[4]
    assert reasons[5].startswith("params.lead_cycles: 'soon' is not an integer")
    assert reasons[6].startswith("codons[0].terms[0].feature: 'credit_score'")
    assert reasons[7].startswith("codons[0].feature: 'credit_score'")
    listed = json.loads(run("genes", "list", "--home", str(home), "--json")[1])
    assert sorted(g["name"] for g in listed) == ["fine-too", "inspect-when-hot"]


def test_the_domain_case_exits_1_and_says_so_on_the_terminal(home: Path,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("domain,name,codons,action,params,purpose\n"
                    "turbofann,hot,s11 > 47.6,inspect,,\n")
    code, out = run("genes", "import", str(path), "--home", str(home))
    assert code == 1
    assert "added 0" in out and "line 2: domain: unknown domain 'turbofann'" in out


def test_check_gene_on_stored_genes() -> None:
    key = key_from_int(1)
    check_gene(make_gene(key))  # a good gene passes
    for domain in domain_names():
        for line in demo_genes(domain):  # every pack's own demo genes pass
            gene = Gene.create(key, domain=line["domain"], name=line["name"],
                               codons=[Codon.from_plain(c) for c in line["codons"]],
                               action=line["action"], params=line["params"], hlc=1)
            check_gene(gene)
    bad = Gene.create(key, domain="loan", name="x",
                      codons=[Codon.simple("credit_score", "<", 500.0)], action="inspect",
                      hlc=1)
    with pytest.raises(PackMismatch) as err:
        check_gene(bad)
    assert isinstance(err.value, ValidationError) and err.value.field == "action"
    boolean = Gene.create(key, domain="turbofan", name="y",
                          codons=[Codon.simple("s11", ">", 47.0)], action="inspect",
                          params={"lead_cycles": True}, hlc=1)
    with pytest.raises(PackMismatch, match="is not an integer"):
        check_gene(boolean)  # True is an int to Python, not to a person


def test_check_gene_is_cheap_enough_for_the_receive_path() -> None:
    gene = make_gene(key_from_int(1))
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        check_gene(gene)
    per_gene_us = (time.perf_counter() - started) / n * 1e6
    print(f"check_gene: {per_gene_us:.2f} us per gene")
    assert per_gene_us < 200  # generous for a loaded box; measured a few microseconds
