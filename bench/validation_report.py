"""The C-MAPSS validation report's page and console summary (bench/validate_cmapss.py
computes the numbers; this only renders them, so the script stays one readable size)."""

from __future__ import annotations

import html
from pathlib import Path

from validation_metrics import share as _share


def render_html(report: dict, TESTS: tuple[str, ...]) -> str:
    """The report page (index.html) from report.json's content."""
    rows = []
    for gname, g in report["genes"].items():
        for tname in TESTS:
            w, wo = g[tname]["with_evidence"], g[tname]["without_evidence"]
            rows.append(f"<tr><td>{html.escape(gname)}</td><td>{tname}</td>"
                        f"<td>{wo['auc']:.3f}</td><td>{w['auc']:.3f}</td>"
                        f"<td>{wo['auc_where_applies']:.3f}</td>"
                        f"<td>{w['auc_where_applies']:.3f}</td>"
                        f"<td>{w['motor_auc']['mp']:.3f}</td><td>{g['experiences']}</td>"
                        f"<td>{g[tname]['auc_ceiling']:.3f}</td>"
                        f"<td>{_share(g[tname]['headroom_gained'])}</td></tr>")
    pol = []
    fb = report["policy"]["fitted_bands"]
    for tname in TESTS:
        for n, r in report["policy"][tname].items():
            pol.append(f"<tr><td>{tname}</td><td>{n}</td><td>{r['cost']:.0f}</td>"
                       f"<td>{r['unplanned_failures']}</td><td>{r['wasted_inspections']}</td>"
                       f"<td>{r['repairs']}</td></tr>")
    rule = report["policy"]["tuned_rule"]
    acting = report["policy"]["acting"]
    cand = "".join(
        f"<tr><td>{html.escape(n)}{' (chosen)' if n == acting['chosen'] else ''}</td>"
        f"<td>{c['level']:.2f}</td><td>{c['nested_train']['cost']:.0f}</td>"
        + "".join(f"<td>{c[t]['cost']:.0f} ({c[t]['unplanned_failures']} failures, "
                  f"{c[t]['wasted_inspections']} wasted)</td>" for t in TESTS) + "</tr>"
        for n, c in acting["candidates"].items())
    hp = report["history_prior"]
    hrows = "".join(
        f"<tr><td>{html.escape(k)}{' (chosen)' if float(k) == hp['chosen'] else ''}</td>"
        f"<td>{html.escape(c['acting'])}</td><td>{c['level']:.2f}</td>"
        f"<td>{c['nested_train']['cost']:.0f}</td></tr>" for k, c in hp["candidates"].items())
    ad = report["adaptation"]
    arows = []
    for gname, a in ad["genes"].items():
        best = a.get("winners", [{}])[0] if a.get("winners") else {}
        tests = " ".join(
            f"{t}: {w['parent_right']:.3f}→{w['variant_right']:.3f}"
            for t, w in best.get("test", {}).items())
        arows.append(f"<tr><td>{html.escape(gname)}</td><td>{html.escape(a['verdict'])}</td>"
                     f"<td>{a.get('cp', 0.0):.3f}</td><td>{len(a.get('winners', []))}</td>"
                     f"<td>{best.get('cp_gain', float('nan')):.3f}</td>"
                     f"<td>{best.get('cost_saving', float('nan')):.4f}</td>"
                     f"<td>{html.escape(tests)}</td></tr>")
    rate = "n/a" if ad["rate"] is None else f"{ad['rate']:.2f}"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>gd-node motors on C-MAPSS</title></head><body style="font-family:sans-serif">
<h1>Turbofan motors on NASA C-MAPSS</h1>
<p>Evidence from {html.escape(report['evidence_from'])} only; scored on FD001 and FD003 test
(true RUL from RUL_FD00x.txt). Truth: inspect is right when RUL ≤ {report['lead_cycles']},
continue when RUL &gt; {report['lead_cycles']}.</p>
<h2>AUC of CP</h2><table border=1 cellpadding=3>
<tr><th>gene</th><th>test</th><th>CP AUC without evidence</th><th>CP AUC with evidence</th>
<th>same, states where the gene applies: without</th><th>with</th>
<th>M_P AUC with evidence</th><th>experiences</th><th>ceiling (perfect evidence, same
condition)</th><th>share of that headroom gained by evidence</th></tr>{''.join(rows)}</table>
<p>Over all rows CP is 0 wherever the gene's condition does not apply, with or without
evidence, so evidence can only move the AUC up to the ceiling of the same condition with
perfect evidence; the last column is how much of that room the learned evidence takes.</p>
<img src="roc_FD001.png"><img src="roc_FD003.png">
<h2>Maintenance policy</h2><p>Tuned rule (FD001 train, truncated engines):
{rule['feature']} {html.escape(rule['op'])} {rule['threshold']:.4g}.
The CP policy inspects where {html.escape(fb['acts_on'])} reaches the approve level
{fb['bands'][1][0]:.2f} ({html.escape(fb['how'])}; the acting rule,
<b>{html.escape(acting['chosen'])}</b>, is chosen on training data, below).
Cost model: {html.escape(report['policy']['cost_model'])}</p>
<table border=1 cellpadding=3><tr><th>test</th><th>policy</th><th>cost</th>
<th>unplanned failures</th><th>wasted inspections</th><th>repairs</th></tr>{''.join(pol)}
</table><img src="policy.png">
<p>Acting on needs-evidence verdicts: {html.escape(acting['how'])}; a challenger must cost
{acting['margin']:.0%} less than the incumbent ({html.escape(acting['incumbent'])}) in nested
training cost (seeds {acting['seeds']}). Test costs are shown for every candidate; only the
chosen one is the report's policy.</p>
<table border=1 cellpadding=3><tr><th>candidate</th><th>level (train)</th>
<th>nested train cost</th>{''.join(f'<th>{t} test</th>' for t in TESTS)}</tr>{cand}</table>
<p>M_P's history fallback: {html.escape(hp['how'])}; incumbent {hp['incumbent']:g} (no
fallback), a strength must cost {hp['margin']:.0%} less.</p>
<table border=1 cellpadding=3><tr><th>strength</th><th>acting rule chosen</th><th>level</th>
<th>nested train cost</th></tr>{hrows}</table>
<h2>Adaptation</h2><p>Adaptation rate: <b>{rate}</b> ({len(ad['improved'])} of
{len(ad['vetoed'])} vetoed genes got a variant that beats them on held-out engines).
{html.escape(ad['how'])}. Last column: share of test rows where the policy is right by the
truth, parent → best winner.</p>
<table border=1 cellpadding=3><tr><th>gene</th><th>verdict on its history</th><th>CP</th>
<th>winners</th><th>best held-out CP gain</th><th>cost saving</th><th>test: right share</th>
</tr>{''.join(arows)}</table>
<h2>CP over engine life</h2><img src="cp_over_life.png">
<h2>Motor distributions</h2><img src="motors.png">
</body></html>
"""


def print_summary(report: dict, TESTS: tuple[str, ...], OUT: Path) -> None:
    """The report's numbers on stdout."""
    print(f"{'gene':<20}{'test':<7}{'AUC no ev':>10}{'AUC ev':>8}{'applies: no ev':>15}"
          f"{'ev':>7}{'M_P AUC':>9}{'ceiling':>9}{'gained':>8}")
    for gname, g in report["genes"].items():
        for tname in TESTS:
            w, wo = g[tname]["with_evidence"], g[tname]["without_evidence"]
            print(f"{gname:<20}{tname:<7}{wo['auc']:>10.3f}{w['auc']:>8.3f}"
                  f"{wo['auc_where_applies']:>15.3f}{w['auc_where_applies']:>7.3f}"
                  f"{w['motor_auc']['mp']:>9.3f}{g[tname]['auc_ceiling']:>9.3f}"
                  f"{_share(g[tname]['headroom_gained']):>8}")
    hp = report["history_prior"]
    print("history strength (nested train cost): " + ", ".join(
        f"{k}: {c['acting']} {c['nested_train']['cost']:.0f}"
        for k, c in hp["candidates"].items()) + f"; chosen {hp['chosen']:g}")
    print(f"approve band fitted on FD001 train: {report['policy']['fitted_bands']['bands']}")
    for n, c in report["policy"]["acting"]["candidates"].items():
        print(f"acting {n:<14} level {c['level']:.2f} nested train {c['nested_train']['cost']:.0f}"
              + "".join(f" {t} {c[t]['cost']:.0f}" for t in TESTS))
    print(f"chosen: {report['policy']['acting']['chosen']}")
    for tname in TESTS:
        p = report["policy"][tname]
        print(f"{tname} policy cost: CP verdicts {p['cp_verdicts']['cost']:.0f}, tuned threshold "
              f"{p['tuned_threshold']['cost']:.0f}, perfect {p['perfect_knowledge']['cost']:.0f}")
    ad = report["adaptation"]
    for gname, a in ad["genes"].items():
        print(f"adapt {gname:<20} {a['verdict']:<15} winners {len(a.get('winners', []))}")
    print(f"adaptation rate {ad['rate']} ({len(ad['improved'])} of {len(ad['vetoed'])} vetoed)")
    print(f"wrote {OUT / 'index.html'} ({report['seconds']:.0f} s)")
