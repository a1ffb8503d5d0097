"""`bench run` of a suite whose seeds are a plan: look after look, each look's cells through the one cell loop.

Nothing about the looks is stored but the plan (a tag of the suite's experiment): which look the suite is at and which
cells it needs are replayed from the finished runs (bench.consumers.sequential.walk), so an interrupted suite resumes at
the look whose cells are not all finished, and two invocations compute the same look (the cells' claims keep any
from running twice). Every pass hands all the cells of the looks reached to the cell loop, which reuses a finished
run only where the fixed design would (same code, same environment); a look is decided only once every cell it needs
has finished.
"""
from __future__ import annotations

from typing import Callable

from bench.consumers.report import look
from bench.consumers.report.loading import load_runs
from bench.consumers.sequential.walk import walk
from bench.core import tags as t
from bench.core.config import ConfigError
from bench.run.execution import Outcome
from bench.run.runner import run_suite
from bench.spec.suite import Suite
from bench.store import tracking


def record_plan(client, suites: list[Suite]) -> None:
    """Record the suite's seeds plan with its experiment, or refuse one that differs from the plan recorded there
    (or a fixed list where a plan was recorded): a changed plan is a new design, whose looks would mix with the old
    one's decisions. Checked before anything is run."""
    name, plan = suites[0].suite, suites[0].grid.plan
    experiment = tracking.experiment_id(client, name, create=plan is not None)
    if experiment is None:
        return
    recorded = client.get_experiment(experiment).tags.get(t.SEEDS_PLAN)
    wanted = plan.describe() if plan is not None else None
    if recorded is not None and recorded != wanted:
        raise ConfigError(f"grid.seeds: suite {name!r} was run with the seeds plan {recorded} in this store, and this "
                          f"file gives {wanted or 'a fixed list of seeds'}; a changed plan is a new design (its looks "
                          f"would mix with the old one's decisions): give the suite a new name or use a new store")
    if recorded is None and wanted is not None:
        client.set_experiment_tag(experiment, t.SEEDS_PLAN, wanted)


def _stored(client, suites: list[Suite]):
    try:
        return load_runs(client, suites)
    except LookupError:  # nothing run yet
        return None


def run_sequential(suites: list[Suite], uri: str, echo: Callable[[str], None] = print, force: bool = False,
                   **run_options) -> list[Outcome]:
    """Run the looks of ``suites`` (the documents of one suite, sharing its plan) until every comparison is decided
    or the budget is spent; ``force`` and ``run_options``: those of ``run_suite`` (--force reruns each cell once per
    invocation). Returns each cell's latest outcome; stops early where a look's cells did not all finish."""
    client = tracking.client_for(uri)
    record_plan(client, suites)
    plan, outcomes, handed, forced = suites[0].grid.plan, {}, None, set()
    while True:
        state = walk(_stored(client, suites), suites, look)
        cells = {cell.config_hash for cell in state.reached}
        if cells == handed:  # every cell of the looks reached has been through the loop: nothing more to run
            break
        handed, reached = cells, len(state.needed) - 1
        echo(f"{suites[0].suite}: look {reached + 1} of {len(plan.looks)}: seeds 0-{plan.looks[reached] - 1} of "
             f"{len(state.needed[reached])} cell definition(s)")
        for suite in suites:
            mine = [cell for cell in suite.cells if cell.config_hash in cells]
            for again in (False, True):  # --force: cells not yet rerun by this invocation, then those that were
                part = [cell for cell in mine if (cell.config_hash in forced) == again]
                if part:
                    for outcome in run_suite(suite, suite.text, uri, force=force and not again, echo=echo,
                                             cells=part, **run_options):
                        if outcome.outcome != t.OUTCOME_REUSED or outcome.cell.config_hash not in outcomes:
                            outcomes[outcome.cell.config_hash] = outcome  # a run made here, not its later reuse
            forced.update(cell.config_hash for cell in mine)
    if state.done:
        echo(f"{suites[0].suite}: sequential design done after look {state.looks_done} of {len(plan.looks)}: "
             f"{state.seeds_spent} cell runs of the fixed design's {state.fixed_budget}")
    else:
        echo(f"{suites[0].suite}: look {len(state.needed)} of {len(plan.looks)} is not complete "
             f"({len(state.next_cells)} cell(s) without a finished run); rerun to retry them")
    return list(outcomes.values())


def run_documents(suites: list[Suite], uri: str, **run_options) -> list[Outcome]:
    """The documents of one suite: look by look where they have a seeds plan, else each document's cells."""
    if suites[0].grid.plan is not None:
        return run_sequential(suites, uri, **run_options)
    return [o for suite in suites for o in run_suite(suite, suite.text, uri, **run_options)]
