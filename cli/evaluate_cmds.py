"""`gd-node evaluate` and `gd-node adapt`: the motors on one gene.

`evaluate` goes through the node's writer (`gd.cli.writer`): the running daemon stores
the decisions, or this process does under the home's lock. `adapt` runs here under the
lock (its search, progress bar and Ctrl-C belong to this terminal); with a daemon
running it is refused, pointing at the API's jobs, rather than writing beside it.

Exit codes as everywhere (`gd.cli.output`): 1 when the operation fails (unknown gene,
bad states file, a pending gene without --allow-pending), 2 when the command line is
wrong, 130 when `adapt` is interrupted.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gd.cli.gene_ref import gene_argument
from gd.cli.motors_common import (
    DEFAULTS,
    EXIT_INTERRUPTED,
    SEARCH,
    SEED_MAX,
    decisions_table,
    motor_command,
    print_more,
    print_vetoes,
    unlabelled,
    verdict_counts,
)
from gd.cli.output import Failure, console, err_console, fold_table, print_json, resolve_home
from gd.cli.writer import node_writer
from gd.genome import Decision
from gd.motors import meristic
from gd.motors.errors import MotorInputError
from gd.motors.evaluate import EvaluationRequest
from gd.node.app import decisions as dec
from gd.node.app.states_file import read_states
from gd.node.local import open_local


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
@click.option("--monte-carlo-n", type=click.IntRange(1), default=DEFAULTS.monte_carlo_n,
              show_default=True, help="M_C futures per sequential batch.")
@click.option("--epsilon", type=click.FloatRange(0.0, 1.0, min_open=True),
              default=DEFAULTS.epsilon, show_default=True,
              help="M_C stops when the Wilson half-width is at most this.")
@click.option("--cap", type=click.IntRange(1), default=DEFAULTS.cap, show_default=True,
              help="M_C stops at this many futures whatever the interval.")
@motor_command
def evaluate_cmd(gene_id: str, states_path: Path, seed: int | None, aggregate: bool,
                 allow_pending: bool, monte_carlo_n: int, epsilon: float, cap: int,
                 home: Path | None, as_json: bool) -> None:
    """Score GENE_ID with the four motors on the states in --states; store each decision.

    One decision per state row (or one over the batch with --aggregate), each with M_P,
    M_N, M_C and M_M's scores, vetoes and explanations, CP, band and verdict. Every
    decision can be re-run with `gd-node decisions replay ID`.
    """
    try:  # the request's bounds, checked here so a bad one is a usage error
        EvaluationRequest(monte_carlo_n=monte_carlo_n, epsilon=epsilon, cap=cap)
    except MotorInputError as exc:
        raise click.UsageError(str(exc)) from None
    seed = secrets.randbits(63) if seed is None else seed
    where = resolve_home(home)
    with open_local(where, readonly=True) as node:  # a read: which domain's states
        gene = node.cortex.require_gene(gene_id)
    states = read_states(states_path, gene.domain)
    with node_writer(where) as writer:
        plain = writer.run("evaluate", gene_id=gene_id, states=[s.to_plain() for s in states],
                           seed=seed, aggregate=aggregate, allow_pending=allow_pending,
                           request={"monte_carlo_n": monte_carlo_n, "epsilon": epsilon,
                                    "cap": cap})
    decisions = [Decision.from_plain(d) for d in plain]
    if as_json:
        print_json([dec.decision_summary(d) for d in decisions])
        return
    console.print(decisions_table(
        f"{escape(gene.name)} ({gene.id}, {gene.action}) on {len(states)} state(s), "
        f"seed {seed}", decisions, numbered=not aggregate and unlabelled(decisions)))
    print_more(decisions)
    print_vetoes(decisions)
    console.print(f"{len(decisions)} decision(s) stored: {verdict_counts(decisions)}")


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
              default=SEARCH.population, show_default=True, help="Variants per generation.")
@click.option("--generations", type=click.IntRange(1, meristic.MAX_GENERATIONS),
              default=SEARCH.generations, show_default=True)
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None,
              help="Search seed (default: fixed by the gene version, so a rerun resumes).")
@click.option("--states", "states_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="States to adapt on (default: the gene's evaluated and experienced "
                   "states).")
@click.option("--top", type=click.IntRange(1, SEARCH.retreat_size), default=SEARCH.top,
              show_default=True, help="Keep at most this many winners.")
@motor_command
def adapt_cmd(gene_id: str, population: int, generations: int, seed: int | None,
              states_path: Path | None, top: int, home: Path | None, as_json: bool) -> None:
    """Grow better variants of GENE_ID with M_M's evolutionary search.

    Winners are stored as new adaptation_pending genes (parent: GENE_ID) and scored; a
    person approves them (`gd-node pending ...`). Every generation is checkpointed:
    after Ctrl-C or a crash, the same command resumes where it stopped.
    """
    cancel = InterruptCancel()
    with node_writer(resolve_home(home)) as writer:
        if writer.node is None:
            raise Failure(
                "adapt runs for minutes and checkpoints every generation: with a daemon "
                "running, run it as a job (POST /v1/jobs, kind adapt) or stop the daemon "
                "first; nothing was changed")
        node = writer.node
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
        table = fold_table(f"{len(variants)} new adaptation_pending variant(s)",
                           ("id", "name", "action", "condition", "fitness",
                            "held-out CP gain", "held-out cost saving", "CP where it fires",
                            "verdict"))
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

