"""Seeds as a group-sequential plan: the boundaries, the decisions, and a suite run look by look."""
import dataclasses
import math

import numpy as np
import pytest
import yaml
from scipy import stats

from bench.__main__ import main
from bench.consumers.report.statistics import Test
from bench.consumers.sequential import running
from bench.consumers.sequential.boundaries import SPENDING, boundaries, spent
from bench.consumers.sequential.design import DECIDED, EQUIVALENT, Question, decide
from bench.consumers.sequential.walk import still_needed
from bench.spec.suite import SeedsPlan
from tests.suites import cell_runs

# Lan-DeMets O'Brien-Fleming-type boundaries, two-sided alpha 0.05, equally spaced looks, as tabulated (DeMets and
# Lan 1994, Statistics in Medicine 13: 1341-1352, table 1; Jennison and Turnbull 2000, section 7.2)
PUBLISHED_OBF = {4: (4.3326, 2.9631, 2.3590, 2.0141), 5: (4.8769, 3.3569, 2.6803, 2.2898, 2.0310)}


@pytest.mark.parametrize("looks", sorted(PUBLISHED_OBF))
def test_obrien_fleming_boundaries_equal_the_published_values(looks):
    computed = boundaries(tuple(range(1, looks + 1)), "obrien-fleming", 0.05)
    assert computed == pytest.approx(PUBLISHED_OBF[looks], abs=6e-4)


@pytest.mark.parametrize("design", SPENDING)
def test_each_look_spends_what_its_function_says_by_an_independent_integration(design):
    """The probability of crossing by look k under no effect, from scipy's multivariate normal (Genz's method, not
    the recursion), equals the alpha the spending function has spent by then."""
    looks = (3, 6, 10)
    c = boundaries(looks, design, 0.05)
    t = np.array(looks) / looks[-1]
    correlation = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    for k in range(1, len(looks) + 1):
        inside = stats.multivariate_normal(np.zeros(k), correlation[:k, :k]).cdf(
            np.array(c[:k]), lower_limit=-np.array(c[:k]), rng=np.random.default_rng(0))
        assert 1 - inside == pytest.approx(spent(design, t[k - 1], 0.05), abs=2e-4)


def _question(name: str, margin=None) -> Question:
    return Question(("compare", name), "algorithms", name, True, 0.0, margin, f"{name} A better", f"{name} B better",
                    frozenset({name}), True)


def _test(z: float, seeds: int = 200) -> Test:
    """A test whose statistic is ``z`` (many seeds: its t quantiles are normal ones)."""
    return Test(z, 0.0, float(2 * stats.norm.sf(abs(z))), seeds, 100, 1.0, ((1.0, 1e9),))


PLAN = SeedsPlan((3, 6, 10))


def test_a_rejection_raises_the_others_level_and_past_looks_count_group_sequential_holm():
    """Two comparisons at look 3 of 3: one far past its boundary, one between the boundary at alpha / 2 and at alpha:
    Holm's step-down rejects the first, then the second at alpha (on its own test)."""
    at_half = boundaries(PLAN.looks, PLAN.design, 0.025)[2]
    at_full = boundaries(PLAN.looks, PLAN.design, 0.05)[2]
    questions = {q.key: q for q in (_question("a"), _question("b"))}
    middle = (at_half + at_full) / 2
    quiet = {("compare", "a"): _test(0.5), ("compare", "b"): _test(0.5)}
    looks = [quiet, quiet, {("compare", "a"): _test(6.0), ("compare", "b"): _test(middle)}]
    decided = decide(questions, looks, PLAN, 0.05, 3)
    assert decided[("compare", "a")].state == DECIDED and decided[("compare", "b")].state == DECIDED
    looks[2][("compare", "a")] = _test(0.5)  # without the first rejection the second stays at alpha / 2
    assert decide(questions, looks, PLAN, 0.05, 3)[("compare", "b")].state == "no verdict at the budget"


def test_the_naive_procedure_rejects_what_the_spending_boundary_does_not():
    """p = 0.01 at the first of three looks: below alpha (naive Holm stops and claims), far above the
    O'Brien-Fleming-type boundary's nominal level (the design continues)."""
    questions = {("compare", "a"): _question("a")}
    looks = [{("compare", "a"): _test(float(stats.norm.isf(0.005)))}]
    assert decide(questions, looks, PLAN, 0.05, 3, naive=True)[("compare", "a")].state == DECIDED
    assert decide(questions, looks, PLAN, 0.05, 3)[("compare", "a")].state == "continue"


def test_equivalence_needs_the_interval_inside_the_margin():
    questions = {("compare", "a"): _question("a", margin=0.5)}
    narrow = Test(0.1, 0.0, 0.5, 200, 100, 0.05, ((0.05 ** 2, 1e9),))
    wide = Test(0.1, 0.0, 0.5, 200, 100, 0.3, ((0.3 ** 2, 1e9),))
    assert decide(questions, [{("compare", "a"): narrow}], PLAN, 0.05, 3)[("compare", "a")].state == EQUIVALENT
    assert decide(questions, [{("compare", "a"): wide}], PLAN, 0.05, 3)[("compare", "a")].state == "continue"


def test_a_comparison_over_diverged_episodes_stops_without_a_verdict_and_asks_no_more_seeds():
    """At look 2, diverged test episodes kept in (a huge mean) or a mean that is not finite: no verdict there, no seed
    of a later look for it (still_needed), and it keeps its place in the Holm family's count."""
    questions = {q.key: q for q in (_question("a"), _question("b"), _question("c"))}
    quiet = {key: _test(0.5) for key in questions}
    second = {**quiet, ("compare", "a"): dataclasses.replace(_test(0.5), mean=1e12, diverged=3),
              ("compare", "b"): dataclasses.replace(_test(0.5), mean=math.inf, p=math.nan)}
    decided = decide(questions, [quiet, second], PLAN, 0.05, 3)
    for name in ("a", "b"):
        d = decided[("compare", name)]
        assert (d.state, d.verdict, d.look) == ("diverged", "no verdict: diverged test episodes", 1)
    assert decided[("compare", "c")].state == "continue"
    assert still_needed(questions, decided) == {"c"}
    # at the last look, "c" between the boundary at alpha / 3 and at alpha / 2: the diverged ones still count
    at_third = boundaries(PLAN.looks, PLAN.design, 0.05 / 3)[2]
    at_half = boundaries(PLAN.looks, PLAN.design, 0.025)[2]
    last = {("compare", "c"): _test((at_third + at_half) / 2)}
    assert decide(questions, [quiet, second, last], PLAN, 0.05, 3)[("compare", "c")].state == \
        "no verdict at the budget"


SUITE = {"suite": "seq", "dataset": {"name": "sinusoid"},
         "learners": ["fomaml/deepcopy", "fomaml/functional", "finetune"],
         "grid": {"n_way": [1], "k_shot": [5], "seeds": {"looks": [3, 4], "equivalence_margin": 0.5}},
         "training": {"meta_iterations": 3, "meta_batch_size": 2, "validate_every": 3, "validation_episodes": 2,
                      "warmup_iterations": 1, "dtype": "float64"},
         "evaluation": {"test_episodes": 20, "query": 5}}


def _seeds_by_learner(uri):
    runs = [r for r in cell_runs(uri, "seq") if r.data.tags.get("outcome") == "finished"]
    by = {}
    for run in runs:
        by.setdefault(run.data.tags["learner"], []).append(int(run.data.tags["axis.seed"]))
    return {learner: sorted(seeds) for learner, seeds in by.items()}


def test_only_cells_an_undecided_comparison_needs_get_the_next_look(tmp_path, tracking_uri):
    """float64 variants score identically: equivalent at the first look, so the variant that stands for no other
    comparison stops at 3 seeds; the comparison between algorithms is undecided there and its two learners go on."""
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "report": {"output_dir": str(tmp_path / "reports")}}))
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress"]) == 0
    assert _seeds_by_learner(tracking_uri) == {"fomaml/deepcopy": [0, 1, 2, 3], "fomaml/functional": [0, 1, 2],
                                               "finetune": [0, 1, 2, 3]}
    report = (tmp_path / "reports" / "seq" / "report.md").read_text()
    assert "## Sequential design" in report and "Cell runs: 11 of the fixed design's 12" in report
    variants = next(line for line in report.splitlines() if line.startswith("| fomaml/deepcopy vs fomaml/functional"))
    assert "| 1 (3 seeds) |" in variants and "equivalent (within ±0.5)" in variants


def test_an_interrupted_sequential_suite_resumes_at_its_look(tmp_path, tracking_uri, monkeypatch):
    """Interrupted as look 2 starts: the rerun runs look 2's cells alone (look 1's are reused, none run twice)."""
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "report": {"output_dir": str(tmp_path / "reports")}}))
    real, calls = running.run_suite, []

    def interrupted_at_look_two(suite, text, uri, cells=None, **options):
        calls.append(sorted(c.seed for c in cells))
        if max(c.seed for c in cells) == 3:
            raise KeyboardInterrupt
        return real(suite, text, uri, cells=cells, **options)

    monkeypatch.setattr(running, "run_suite", interrupted_at_look_two)
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 130
    assert _seeds_by_learner(tracking_uri) == {learner: [0, 1, 2] for learner in SUITE["learners"]}
    monkeypatch.setattr(running, "run_suite", real)
    before = {r.info.run_id for r in cell_runs(tracking_uri, "seq")}
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    new = [r for r in cell_runs(tracking_uri, "seq") if r.info.run_id not in before]
    assert sorted((r.data.tags["learner"], r.data.tags["axis.seed"]) for r in new) == [
        ("finetune", "3"), ("fomaml/deepcopy", "3")]


def test_a_changed_plan_is_refused_before_anything_runs(tmp_path, tracking_uri, capsys):
    path = tmp_path / "seq.yaml"
    small = {**SUITE, "learners": ["fomaml/deepcopy", "fomaml/functional"]}
    path.write_text(yaml.safe_dump(small))
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    made = len(cell_runs(tracking_uri, "seq"))
    capsys.readouterr()
    for seeds in ({"looks": [3, 5], "equivalence_margin": 0.5}, [0, 1, 2, 3]):
        path.write_text(yaml.safe_dump({**small, "grid": {**small["grid"], "seeds": seeds}}))
        assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 2
        error = capsys.readouterr().err
        assert "grid.seeds" in error and '"looks": [3, 4]' in error and "new design" in error
    assert len(cell_runs(tracking_uri, "seq")) == made


def _published_report(shift_in_margins: float):
    from bench.consumers import calibration as cal
    from bench.consumers.report import analyse
    from bench.consumers.report.loading import assemble
    from bench.spec import published as papers
    from bench.spec.suite import suites_from_text

    regime = cal.Regime("published", 10, 0.05, 0.3, episodes=600)
    raw = yaml.safe_load(cal.suite_of(regime)[0].text)
    raw["grid"]["seeds"] = {"looks": [3, 6, 10]}
    suites = suites_from_text(yaml.safe_dump(raw), "published sequential", notes=[])
    truth = {(p.test_k_shot, p.test_steps): p.value + shift_in_margins * p.margin_value
             for p in papers.under_conditions("finn2017.sinusoid.maml", 1, 10)}
    stored, _ = cal.replicate(regime, suites, 0, truth)
    return analyse(assemble(stored, suites), suites)


def test_published_values_are_decided_look_by_look_by_the_equivalence_rule():
    """Simulated with the truth at the published values, the sequential report says "reproduced" (or leaves them open
    at the budget), never "not reproduced"; with the truth six margins away it says "not reproduced" before the last
    look (not at the first: with 3 seeds, 2 degrees of freedom, O'Brien-Fleming's first boundary is out of reach)."""
    equal = _published_report(0.0)
    verdicts = set(equal.frames["published_test_conditions"]["verdict"])
    assert "reproduced" in verdicts and verdicts <= {"reproduced", "no verdict at the budget"}
    far = _published_report(6.0)
    assert set(far.frames["published_test_conditions"]["verdict"]) == {"not reproduced"}
    table = far.frames["sequential"]
    assert set(table.loc[table["kind"] == "published", "decided at look"]) == {"2 (6 seeds)"}
