from __future__ import annotations

import json

import numpy as np
import pytest

from gd.genome import Codon, Gene
from gd.motors.backend import get_backend
from gd.motors.domains import demo_genes, domain_names, get_domain
from gd.motors.domains.loan import (
    cases_from_events,
    demo_events,
    load_cases,
    write_csv,
)
from gd.motors.domains.turbofan import (
    CMAPSS_COLUMNS,
    demo_cmapss,
    load_cmapss,
    rul_for_test,
    rul_for_train,
)
from gd.motors.errors import MotorInputError, UnknownDomainError

bk = get_backend()


def test_registry_knows_both_packs_and_refuses_others() -> None:
    assert domain_names() == ("loan", "turbofan")
    with pytest.raises(UnknownDomainError, match="known domains: loan, turbofan"):
        get_domain("weather")


@pytest.mark.parametrize("domain", ["turbofan", "loan"])
def test_demo_genes_are_importable_jsonl(key, domain: str) -> None:
    genes = demo_genes(domain)
    assert len(genes) >= 3
    pack = get_domain(domain)
    for g in genes:
        line = json.loads(json.dumps(g))
        assert set(line) == {"domain", "name", "codons", "action", "params", "purpose"}
        codons = [Codon.from_plain(c) for c in line["codons"]]
        gene = Gene.create(key, domain=line["domain"], name=line["name"], codons=codons,
                           action=line["action"], purpose=line["purpose"],
                           params=line["params"])
        assert gene.action in pack.actions
        assert all(f in pack.features for c in codons for f in c.features)


def test_cmapss_demo_is_seeded_and_in_layout() -> None:
    a, rul = demo_cmapss(units=3, seed=1)
    b, _ = demo_cmapss(units=3, seed=1)
    assert np.array_equal(a, b) and a.shape[1] == CMAPSS_COLUMNS
    assert rul[-1] == 0 and set(np.unique(a[:, 0])) == {1.0, 2.0, 3.0}
    assert np.array_equal(rul, rul_for_train(a))


def test_cmapss_loader_reads_trailing_spaces_and_rejects_bad_files(tmp_path) -> None:
    rows, _ = demo_cmapss(units=2, seed=2, truncate=True)
    path = tmp_path / "test_FD001.txt"
    path.write_text("\n".join(" ".join(f"{v:g}" for v in r) + "  " for r in rows) + "\n")
    loaded = load_cmapss(path)
    assert loaded.shape == rows.shape and np.allclose(loaded, rows)
    (tmp_path / "RUL_FD001.txt").write_text("10\n20\n")
    rul = rul_for_test(loaded, tmp_path / "RUL_FD001.txt")
    last1 = loaded[loaded[:, 0] == 1][-1]
    assert rul[np.flatnonzero(loaded[:, 0] == 1)[-1]] == 10 and last1[0] == 1
    states = get_domain("turbofan").load(path)
    assert states[0].entity == "1" and states[0].t == 1 and len(states[0].values) == 26
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(MotorInputError, match="3 columns"):
        load_cmapss(bad)
    with pytest.raises(MotorInputError, match="cannot read"):
        load_cmapss(tmp_path / "missing.txt")


def test_wear_estimate_rises_towards_failure() -> None:
    pack = get_domain("turbofan")
    rows, rul = demo_cmapss(units=10, seed=3)
    w = pack.wear(bk, rows)
    assert w[rul < 10].mean() > 0.7 > 0.2 > w[rul > 100].mean()


def test_turbofan_game_and_losses_shapes() -> None:
    pack = get_domain("turbofan")
    X = pack.matrix(pack.demo_states(5, 1))
    A, B = pack.game(bk, X)
    assert A.shape == B.shape == (5, 3, 3)
    z = np.random.default_rng(0).standard_normal((7, 5, pack.noise_dims))
    assert pack.losses(bk, X, z).shape == (7, 5, 3)
    assert pack.trajectory(bk, X, z).shape == (7, 5, pack.config.horizon)


def test_loan_csv_round_trip_and_outcomes(tmp_path) -> None:
    events = demo_events(60, seed=4)
    assert events == demo_events(60, seed=4)
    path = tmp_path / "bpi2017.csv"
    write_csv(events, path)
    cases = load_cases(path)
    assert len(cases) == 60
    assert {c.outcome for c in cases} <= {"pending", "denied", "cancelled"}
    direct = cases_from_events(events)
    assert [c.values for c in cases] == [c.values for c in direct]
    states = get_domain("loan").load(path)
    assert states[0].domain == "loan" and states[0].entity.startswith("Application_")


def test_loan_csv_aliases_and_missing_columns(tmp_path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("Case ID,Activity,Complete Timestamp\n"
                    "A1,A_Create Application,2016/01/01 09:00:00.000\n"
                    "A1,A_Pending,2016/01/02 10:30:00.000\n")
    (case,) = load_cases(path)
    assert case.outcome == "pending" and case.elapsed_hours == 25
    bad = tmp_path / "bad.csv"
    bad.write_text("id,what\n1,2\n")
    with pytest.raises(MotorInputError, match="no column"):
        load_cases(bad)


def test_loan_xes_loader(tmp_path) -> None:
    xes = tmp_path / "log.xes"
    xes.write_text(
        '<?xml version="1.0"?><log xes.version="1.0">'
        '<trace><string key="concept:name" value="Application_1"/>'
        '<float key="RequestedAmount" value="20000"/>'
        '<string key="ApplicationType" value="New credit"/>'
        '<event><string key="concept:name" value="A_Create Application"/>'
        '<date key="time:timestamp" value="2016-01-01T09:00:00.000+01:00"/></event>'
        '<event><string key="concept:name" value="O_Create Offer"/>'
        '<float key="OfferedAmount" value="21000"/><float key="CreditScore" value="900"/>'
        '<date key="time:timestamp" value="2016-01-01T12:00:00.000+01:00"/></event>'
        '<event><string key="concept:name" value="A_Denied"/>'
        '<date key="time:timestamp" value="2016-01-03T09:00:00.000+01:00"/></event>'
        '</trace></log>')
    (case,) = load_cases(xes)
    assert case.outcome == "denied" and case.elapsed_hours == 48
    assert case.values["requested_amount"] == 20000 and case.values["credit_score"] == 900
    assert case.values["application_new"] == 1.0 and case.values["n_offers"] == 1
    broken = tmp_path / "broken.xes"
    broken.write_text("<log><trace>")
    with pytest.raises(MotorInputError, match="malformed XES"):
        load_cases(broken)


def test_loan_game_makes_standard_offer_dominated_for_bad_risks() -> None:
    pack = get_domain("loan")
    good = dict(zip(pack.features, pack.center, strict=True))
    bad = {**good, "credit_score": 400.0}
    X = np.array([[good[f] for f in pack.features], [bad[f] for f in pack.features]])
    from gd.motors.nash import dominated

    A, _ = pack.game(bk, X)
    dom = dominated(bk, A)
    assert not dom[0, 0] and dom[1, 0]     # decline beats lending to a likely default


@pytest.mark.parametrize("kind", ["feature", "action"])
def test_an_unknown_feature_or_action_is_a_motor_input_error_naming_the_known_ones(
        kind: str) -> None:
    pack = get_domain("turbofan")
    names = pack.features if kind == "feature" else pack.actions
    index = pack.feature_index if kind == "feature" else pack.action_index
    assert index(names[-1]) == len(names) - 1
    with pytest.raises(MotorInputError, match=rf"{kind} 'nope' is not in domain 'turbofan' "
                                              rf"\({kind}s: {names[0]}, "):
        index("nope")


def test_the_built_in_packs_load_on_the_first_lookup_not_with_the_registry() -> None:
    """The received-gene check imports the registry at a daemon's start; numpy and the
    packs wait for the first gene (ADR 0063)."""
    import subprocess
    import sys

    code = ("import sys, gd.motors.domains.gene_check as g, gd.motors.domains as d\n"
            "print('numpy' in sys.modules, 'gd.motors.domains.turbofan' in sys.modules)\n"
            "print(d.get_domain('turbofan').name, 'numpy' in sys.modules)\n"
            "print(d.DomainPack.__name__, d.DomainConfig.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.split("\n")[:3] == ["False False", "turbofan True",
                                           "DomainPack DomainConfig"]


def test_a_pack_registered_under_a_built_in_name_replaces_it(monkeypatch) -> None:
    from gd.motors import domains

    monkeypatch.setattr(domains, "_REGISTRY", {})
    monkeypatch.setattr(domains, "_loaded", False)
    mine = get_domain("loan").__class__()  # a fresh instance of the same pack
    domains.register(mine)
    assert get_domain("loan") is mine
    assert domain_names() == ("loan", "turbofan")
    with pytest.raises(AttributeError):
        domains.NoSuchThing  # noqa: B018
