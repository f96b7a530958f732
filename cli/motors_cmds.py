"""`gd-node evaluate`, `adapt`, `experiences ...` and `decisions ...`: the motors from the
command line.

Each command opens the home directly (the motors run in this process, not in the
daemon): `evaluate`, `adapt` and `experiences add` read-write, the rest read-only. The
work itself is `gd.node.app.decisions`; this module parses options and prints.

Exit codes as everywhere (`gd.cli.output`): 1 when the operation fails (unknown gene or
decision, bad states file, a pending gene without --allow-pending, a replay that does
not reproduce), 2 when the command line is wrong, 130 when `adapt` is interrupted.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final, TypeVar

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gd.cli.gene_ref import gene_argument, gene_option
from gd.cli.naming import is_wide
from gd.cli.output import (
    console,
    err_console,
    home_option,
    json_option,
    print_json,
    resolve_home,
    user_errors,
    user_errors_with,
)
from gd.genome import Decision
from gd.motors import meristic
from gd.motors.errors import CheckpointError, MotorInputError
from gd.motors.evaluate import EvaluationRequest
from gd.node.app import decisions as dec
from gd.node.app import history_import
from gd.node.app.states_file import StatesFileError, parse_state_text, read_states
from gd.node.local import open_local

F = TypeVar("F", bound=Callable[..., Any])

# A terminal table of thousands of rows helps nobody; the summary line counts them all
# and --json (or `decisions export`) gives every one.
MAX_TABLE_ROWS: Final = 200
# Decision ids as tables show them: 12 hex digits (48 bits) are unique among millions of
# decisions; the full id is in --json and `decisions show`.
SHORT_ID: Final = 12
SEED_MAX: Final = 2**64 - 1
# Exit status of a command stopped by SIGINT (128 + signal number), as shells report it.
EXIT_INTERRUPTED: Final = 130
_DEFAULTS = EvaluationRequest()
_SEARCH = meristic.SearchConfig()
_MOTOR_ERRORS = (MotorInputError, CheckpointError, dec.DecisionError, StatesFileError)


motor_errors = user_errors_with(*_MOTOR_ERRORS)


def _score_cell(decision: Decision, motor: str) -> str:
    r = decision.result(motor)
    if r is None:
        return "[dim]-[/]"
    return f"[bold red]{r.score:.3f}✗[/]" if r.veto else f"{r.score:.3f}"


def _verdict_cell(decision: Decision) -> str:
    colour = {"approve": "green", "veto": "red", "adapt": "yellow",
              "needs-evidence": "cyan"}.get(decision.verdict, "")
    return f"[{colour}]{decision.verdict}[/]" if colour else decision.verdict


def _where(decision: Decision, row: int | None = None) -> str:
    """Which state a decision is about: entity@t, or the states file's row number when
    the file had neither an entity nor a time column (every t would read 0)."""
    if len(decision.states) != 1:
        return f"{len(decision.states)} states"
    s = decision.states[0]
    if s.entity:
        return f"{s.entity}@{s.t}"
    return f"row {row}" if row is not None and s.t == 0 else str(s.t)


def _unlabelled(decisions: list[Decision]) -> bool:
    return all(not s.entity and s.t == 0 for d in decisions for s in d.states)


def _when(stamp: int) -> str:
    """An HLC stamp (ms in the top 48 bits) as UTC time; anything else as the number."""
    ms = stamp >> 16
    if 10**12 <= ms < 10**14:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(stamp)


def _decisions_table(title: str, decisions: list[Decision], *, numbered: bool = False
                     ) -> Table:
    """Scores per decision; ids shortened to SHORT_ID characters (every command taking a
    decision id accepts a unique prefix) so the table fits a terminal."""
    # Each motor's score only where the terminal has room; ids and scores are never cut
    # (issue 13, item 9): below WIDE columns the table is decision, state, CP, verdict.
    wide = is_wide(console)
    table = Table(title=title)
    table.add_column("decision", no_wrap=True, min_width=SHORT_ID)
    table.add_column("state", overflow="fold")
    for col in (*(dec.MOTORS if wide else ()), "CP", *(("band",) if wide else ()),
                "verdict"):
        table.add_column(col, no_wrap=True, min_width=5 if col != "verdict" else None)
    for i, d in enumerate(decisions[:MAX_TABLE_ROWS]):
        motors = [_score_cell(d, m) for m in dec.MOTORS] if wide else []
        table.add_row(d.id[:SHORT_ID], escape(_where(d, i + 1 if numbered else None)),
                      *motors, f"{d.cp:.3f}", *((d.band,) if wide else ()),
                      _verdict_cell(d))
    return table


def _print_vetoes(decisions: list[Decision]) -> None:
    """The explanation of the motor that stopped each vetoed decision, under the table."""
    shown = [d for d in decisions[:MAX_TABLE_ROWS] if dec.first_veto(d)]
    if shown:
        console.print("[bold]first veto[/] ([bold red]✗[/]):")
    for d in shown:
        console.print(f"  {d.id[:SHORT_ID]}  {escape(dec.first_veto(d))}", highlight=False)


def _verdict_counts(decisions: list[Decision]) -> str:
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d.verdict] = counts.get(d.verdict, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _print_more(decisions: list[Decision]) -> None:
    if len(decisions) > MAX_TABLE_ROWS:
        console.print(f"({len(decisions) - MAX_TABLE_ROWS} more not shown; --json lists all)")


# -- evaluate --------------------------------------------------------------------------
@click.command("evaluate")
@gene_argument()
@click.option("--states", "states_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with a header of feature names, or the domain's raw format "
                   "(C-MAPSS .txt, BPI 2017 CSV or XES).")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None,
              help="RNG seed (default: a random one, stored in each decision).")
@click.option("--aggregate", is_flag=True,
              help="One decision over all the states instead of one per state row.")
@click.option("--allow-pending", is_flag=True,
              help="Evaluate an adaptation_pending gene for inspection (it still does not "
                   "act before approval).")
@click.option("--monte-carlo-n", type=click.IntRange(1), default=_DEFAULTS.monte_carlo_n,
              show_default=True, help="M_C futures per sequential batch.")
@click.option("--epsilon", type=click.FloatRange(0.0, 1.0, min_open=True),
              default=_DEFAULTS.epsilon, show_default=True,
              help="M_C stops when the Wilson half-width is at most this.")
@click.option("--cap", type=click.IntRange(1), default=_DEFAULTS.cap, show_default=True,
              help="M_C stops at this many futures whatever the interval.")
@home_option
@json_option
@user_errors
@motor_errors
def evaluate_cmd(gene_id: str, states_path: Path, seed: int | None, aggregate: bool,
                 allow_pending: bool, monte_carlo_n: int, epsilon: float, cap: int,
                 home: Path | None, as_json: bool) -> None:
    """Score GENE_ID with the four motors on the states in --states; store each decision.

    One decision per state row (or one over the batch with --aggregate), each with M_P,
    M_N, M_C and M_M's scores, vetoes and explanations, CP, band and verdict. Every
    decision can be re-run with `gd-node decisions replay ID`.
    """
    try:
        request = EvaluationRequest(monte_carlo_n=monte_carlo_n, epsilon=epsilon, cap=cap)
    except MotorInputError as exc:
        raise click.UsageError(str(exc)) from None
    seed = secrets.randbits(63) if seed is None else seed
    with open_local(resolve_home(home)) as node:
        gene = node.cortex.require_gene(gene_id)
        states = read_states(states_path, gene.domain)
        decisions = dec.evaluate_gene(node, gene_id, states, seed=seed, aggregate=aggregate,
                                      request=request, allow_pending=allow_pending)
    if as_json:
        print_json([dec.decision_summary(d) for d in decisions])
        return
    console.print(_decisions_table(
        f"{escape(gene.name)} ({gene.id}, {gene.action}) on {len(states)} state(s), "
        f"seed {seed}", decisions, numbered=not aggregate and _unlabelled(decisions)))
    _print_more(decisions)
    _print_vetoes(decisions)
    console.print(f"{len(decisions)} decision(s) stored: {_verdict_counts(decisions)}")


# -- adapt -----------------------------------------------------------------------------
class InterruptCancel:
    """A `cancel()` for the search that turns the first Ctrl-C into "stop after this
    generation" (its checkpoint is already written); a second Ctrl-C interrupts at once.
    Installed only in the main thread, where Python delivers signals."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        err_console.print("stopping after this generation (Ctrl-C again to stop now)")

    @contextmanager
    def installed(self) -> Iterator[InterruptCancel]:
        try:
            previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, no cancel
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


@click.command("adapt")
@gene_argument()
@click.option("--population", type=click.IntRange(2, meristic.MAX_POPULATION),
              default=_SEARCH.population, show_default=True, help="Variants per generation.")
@click.option("--generations", type=click.IntRange(1, meristic.MAX_GENERATIONS),
              default=_SEARCH.generations, show_default=True)
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None,
              help="Search seed (default: fixed by the gene version, so a rerun resumes).")
@click.option("--states", "states_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="States to adapt on (default: the gene's evaluated and experienced "
                   "states).")
@click.option("--top", type=click.IntRange(1, _SEARCH.retreat_size), default=_SEARCH.top,
              show_default=True, help="Keep at most this many winners.")
@home_option
@json_option
@user_errors
@motor_errors
def adapt_cmd(gene_id: str, population: int, generations: int, seed: int | None,
              states_path: Path | None, top: int, home: Path | None, as_json: bool) -> None:
    """Grow better variants of GENE_ID with M_M's evolutionary search.

    Winners are stored as new adaptation_pending genes (parent: GENE_ID) and scored; a
    person approves them (`gd-node pending ...`). Every generation is checkpointed:
    after Ctrl-C or a crash, the same command resumes where it stopped.
    """
    cancel = InterruptCancel()
    with open_local(resolve_home(home)) as node:
        gene = node.cortex.require_gene(gene_id)
        states = read_states(states_path, gene.domain) if states_path is not None else None
        show_bar = not as_json and err_console.is_terminal
        with Progress(TextColumn("adapting {task.fields[best]}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                      disable=not show_bar) as bar, cancel.installed():
            task = bar.add_task("adapt", total=generations, best="")

            def progress(generation: int, best: float) -> None:
                bar.update(task, completed=generation, best=f"best {best:.4f}")

            try:
                outcome = dec.adapt_gene(node, gene_id, population=population,
                                         generations=generations, seed=seed, states=states,
                                         top=top, progress=progress, cancel=cancel)
            except KeyboardInterrupt:
                err_console.print("interrupted; the last finished generation is checkpointed:"
                                  " run the same command again to resume")
                raise SystemExit(EXIT_INTERRUPTED) from None
    result = outcome.result
    if outcome.cancelled:
        err_console.print(f"cancelled after generation {result.generations_run} of "
                          f"{generations}; run the same command again to resume")
        raise SystemExit(EXIT_INTERRUPTED)
    cps = {d.gene_id: d for d in outcome.decisions}
    variants: list[dict[str, Any]] = [{"id": g.id, "name": g.name, "action": g.action,
                 "condition": g.condition_text(), "fitness": outcome.fitness[g.id],
                 "cp": cps[g.id].cp if g.id in cps else None,
                 "verdict": cps[g.id].verdict if g.id in cps else None,
                 "decision": cps[g.id].id if g.id in cps else None,
                 "scored_on": len(cps[g.id].states) if g.id in cps else 0,
                 "held_out": outcome.held_out.get(g.id)}
                for g in outcome.genes]
    if as_json:
        print_json({
            "gene": gene_id, "seed": outcome.seed, "states": outcome.states,
            "generations_run": result.generations_run, "resumed_from": result.resumed_from,
            "seed_fitness": result.seed_fitness, "history": list(result.history),
            "variants": variants, "existing": list(outcome.existing),
            "compared_on_held_out": list(outcome.compared)})
        return
    resumed = (f", resumed from generation {result.resumed_from}"
               if result.resumed_from else "")
    best = result.history[-1] if result.history else result.seed_fitness
    console.print(f"{result.generations_run} generation(s) on {outcome.states} state(s), "
                  f"seed {outcome.seed}{resumed}: fitness {result.seed_fitness:.4f} → "
                  f"{best:.4f}")
    if variants:
        table = Table(title=f"{len(variants)} new adaptation_pending variant(s)")
        for col in ("id", "name", "action", "condition", "fitness", "held-out CP gain",
                    "held-out cost saving", "CP where it fires", "verdict"):
            table.add_column(col, overflow="fold")
        for v in variants:
            cp = "-" if v["cp"] is None else f"{v['cp']:.3f} ({v['scored_on']} states)"
            ho = v["held_out"] or {}
            table.add_row(v["id"], escape(v["name"]), v["action"], escape(v["condition"]),
                          f"{v['fitness']:.4f}", f"{ho.get('cp_gain', 0.0):+.4f}",
                          f"{ho.get('cost_saving', 0.0):+.3f}", cp, v["verdict"] or "-")
        console.print(table)
    elif not outcome.existing:
        console.print(f"no variant beats the gene on the held-out states (both CP and cost;"
                      f" {len(outcome.compared)} compared): none proposed")
    if outcome.existing:
        console.print(f"{len(outcome.existing)} winner(s) already stored by an earlier run: "
                      + ", ".join(outcome.existing))


# -- experiences -----------------------------------------------------------------------
@click.group("experiences")
def experiences_group() -> None:
    """Observed outcomes of applying genes: M_P's evidence."""


@experiences_group.command("add")
@gene_argument()
@click.option("--state", "state_text", default=None,
              help="The state as 'feature=value,feature=value' (every feature of the domain).")
@click.option("--state-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="States file (as for evaluate): one experience per row.")
@click.option("--success/--failure", "success", default=None,
              help="Did applying the gene reach its purpose?")
@click.option("--reward", type=float, default=None, help="A graded outcome (finite number).")
@click.option("--note", default="", help="Free text kept with the experience.")
@home_option
@json_option
@user_errors
@motor_errors
def experiences_add_cmd(gene_id: str, state_text: str | None, state_file: Path | None,
                        success: bool | None, reward: float | None, note: str,
                        home: Path | None, as_json: bool) -> None:
    """Record that applying GENE_ID in a state succeeded (--success) or failed (--failure)."""
    if (state_text is None) == (state_file is None):
        raise click.UsageError("give exactly one of --state and --state-file")
    if success is None:
        raise click.UsageError("say how it went: --success or --failure")
    with open_local(resolve_home(home)) as node:
        gene = node.cortex.require_gene(gene_id)
        if state_text is not None:
            states = [parse_state_text(state_text, gene.domain)]
        else:
            assert state_file is not None
            states = read_states(state_file, gene.domain)
        recorded = [dec.record_experience(node, gene_id, s, success, reward, note)
                    for s in states]
        gene = node.cortex.require_gene(gene_id)
    if as_json:
        print_json([{"id": e.id, **e.to_plain()} for e in recorded])
        return
    console.print(f"recorded {len(recorded)} {'success' if success else 'failure'} "
                  f"experience(s) for {gene_id}; it now has {gene.successes} success(es) and "
                  f"{gene.failures} failure(s)", soft_wrap=True)


@experiences_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@gene_option("--gene", default=None, help="Back-test this gene")
@click.option("--domain", default=None, help="Back-test every native gene of this domain.")
@click.option("--max-per-gene", type=click.IntRange(1, 100_000),
              default=history_import.MAX_PER_GENE, show_default=True,
              help="At most this many experiences per gene (an even spread of its rows).")
@home_option
@json_option
@user_errors
@motor_errors
def experiences_import_cmd(path: Path, gene_id: str | None, domain: str | None,
                           max_per_gene: int, home: Path | None, as_json: bool) -> None:
    """Back-test genes on a domain's historical record in PATH and record the outcomes.

    PATH is read by the domain's loader: a C-MAPSS run-to-failure file (train_FD00x.txt)
    for turbofan, a BPI Challenge 2017 event log (CSV or XES) for loan. Every row where
    a gene fires becomes a labelled experience with its provenance (file hash, row); the
    import is one ledger entry.
    """
    if (gene_id is None) == (domain is None):
        raise click.UsageError("give exactly one of --gene and --domain")
    with open_local(resolve_home(home)) as node:
        report = history_import.import_history(node, path, gene_id=gene_id, domain=domain,
                                               limit=max_per_gene)
    if as_json:
        print_json(report.to_plain())
        return
    table = Table(title=f"{escape(path.name)} (sha256 {report.sha256[:16]}…): {report.rows} "
                        f"row(s) of {report.domain}")
    for col in ("gene", "name", "action", "fires on", "recorded", "success rate"):
        table.add_column(col, overflow="fold")
    for g in report.genes:
        rate = "-" if not g.recorded else f"{g.successes / g.recorded:.2f}"
        table.add_row(g.gene_id, escape(g.name), g.action, str(g.fired),
                      "already imported" if g.skipped else str(g.recorded), rate)
    console.print(table)
    console.print(f"labels: {escape(report.rule)}", highlight=False)
    console.print(f"{report.recorded} experience(s) recorded; ledger: {report.ledger}")


@experiences_group.command("list")
@gene_argument()
@home_option
@json_option
@user_errors
def experiences_list_cmd(gene_id: str, home: Path | None, as_json: bool) -> None:
    """Experiences recorded for GENE_ID, oldest first."""
    with open_local(resolve_home(home), readonly=True) as node:
        node.cortex.require_gene(gene_id)
        exps = sorted(node.cortex.experiences_for(gene_id), key=lambda e: (e.observed_at, e.id))
    if as_json:
        print_json([{"id": e.id, **e.to_plain()} for e in exps])
        return
    table = Table(title=f"{len(exps)} experience(s) of {gene_id}")
    for col in ("id", "observed", "outcome", "reward", "entity@t", "note"):
        table.add_column(col, overflow="fold")
    for e in exps:
        table.add_row(e.id, _when(e.observed_at), "success" if e.success else "failure",
                      "-" if e.reward is None else f"{e.reward:g}",
                      escape(f"{e.state.entity}@{e.state.t}"), escape(e.note))
    console.print(table)


# -- decisions -------------------------------------------------------------------------
@click.group("decisions")
def decisions_group() -> None:
    """Stored decisions: list, show, replay and export."""


@decisions_group.command("list")
@gene_option("--gene", default=None, help="Only decisions about this gene")
@home_option
@json_option
@user_errors
def decisions_list_cmd(gene_id: str | None, home: Path | None, as_json: bool) -> None:
    """Decisions, oldest first."""
    with open_local(resolve_home(home), readonly=True) as node:
        if gene_id is not None:
            node.cortex.require_gene(gene_id)
        found = dec.list_decisions(node.cortex, gene_id)
    if as_json:
        print_json([dec.decision_summary(d) for d in found])
        return
    console.print(_decisions_table(f"{len(found)} decision(s)", found))
    _print_more(found)


@decisions_group.command("show")
@click.argument("decision_id")
@home_option
@json_option
@user_errors
@motor_errors
def decisions_show_cmd(decision_id: str, home: Path | None, as_json: bool) -> None:
    """One decision: its inputs (gene version, states, seed, request) and every motor."""
    with open_local(resolve_home(home), readonly=True) as node:
        d = dec.get_decision(node, decision_id)
    if as_json:
        print_json(dec.decision_full(d))
        return
    grid = Table.grid(padding=(0, 2))
    evidence = d.request.get("evidence", {})
    plan = ", ".join(f"{k} {d.request.get(k)}" for k in ("monte_carlo_n", "epsilon", "cap",
                                                         "k_neighbours", "backend"))
    for key, value in (
            ("decision", d.id), ("gene", f"{d.gene_id} ({d.domain})"),
            ("gene version", d.gene_version), ("decided", _when(d.decided_at)),
            ("node", d.node or "-"), ("seed", str(d.seed)), ("request", plan),
            ("evidence", f"{evidence.get('experiences', 0)} experience(s), prior "
                         f"{evidence.get('prior')}, digest {str(evidence.get('digest'))[:16]}…"),
            ("states", _where(d)),
            ("CP / band / verdict", f"{d.cp:.4f} / {d.band} / {d.verdict}")):
        grid.add_row(f"[bold]{key}[/]", escape(value))
    for r in d.results:
        flag = " [bold red]VETO[/]" if r.veto else ""
        grid.add_row(f"[bold]{r.motor}[/] v{r.version}",
                     f"{r.score:.4f}{flag}  {escape(r.explanation)}")
    for motor in dec.MOTORS:
        if d.result(motor) is None:
            grid.add_row(f"[bold]{motor}[/]", "[dim]not run (an earlier motor vetoed)[/]")
    console.print(grid)


@decisions_group.command("replay")
@click.argument("decision_id")
@home_option
@json_option
@user_errors
@motor_errors
def decisions_replay_cmd(decision_id: str, home: Path | None, as_json: bool) -> None:
    """Re-run a decision from its stored inputs; exit 1 unless it reproduces exactly."""
    with open_local(resolve_home(home), readonly=True) as node:
        report = dec.replay_decision(node, decision_id)
    if as_json:
        print_json({"decision": decision_id, "exact": report.exact,
                    "differences": list(report.differences), "notes": list(report.notes)})
    else:
        for note in report.notes:
            err_console.print(f"note: {escape(note)}")
        if report.exact:
            console.print(f"decision {decision_id} reproduces exactly")
        else:
            console.print(f"[bold red]decision {decision_id} does not reproduce[/]: "
                          f"{len(report.differences)} difference(s)")
            for diff in report.differences:
                console.print(f"  {escape(diff)}", highlight=False)
    if not report.exact:
        raise SystemExit(1)


@decisions_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              show_default=True)
@gene_option("--gene", default=None, help="Only decisions about this gene")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here (atomically) instead of to stdout.")
@home_option
@user_errors
def decisions_export_cmd(fmt: str, gene_id: str | None, output: Path | None,
                         home: Path | None) -> None:
    """Every decision (or one gene's): JSON with all inputs, or CSV with one row each."""
    import json

    with open_local(resolve_home(home), readonly=True) as node:
        if gene_id is not None:
            node.cortex.require_gene(gene_id)
        found = dec.list_decisions(node.cortex, gene_id)
    if fmt == "json":
        text = json.dumps([dec.decision_full(d) for d in found], indent=2, sort_keys=True) + "\n"
    else:
        text = dec.decisions_csv(found)
    if output is None:
        click.echo(text, nl=False)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, output)
    err_console.print(f"exported {len(found)} decision(s) to {output}")


COMMANDS: Final = [evaluate_cmd, adapt_cmd, experiences_group, decisions_group]
