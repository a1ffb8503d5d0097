"""Suite files: YAML onto typed, frozen dataclasses, validated whole before anything runs, expanded into cells."""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from bench.core.config import ConfigError, check_keys, field_names, from_mapping, to_mapping, yaml_documents
from bench.core.paths import SHIPPED_SUITES
from bench.core.registry import UnknownNameError, did_you_mean
from bench.core.seeding import Seed
from bench.spec.search import SECTIONS, SearchSpec, parse_space
from meta_bench.algorithms import LEARNERS
from meta_bench.algorithms.backbones import BackboneConfig
from meta_bench.datasets import DATASETS
from meta_bench.datasets.base import DataMissingError, DataRequestError
from meta_bench.datasets.registry import parse_options

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
MAX_CELLS = 5000  # a larger grid is more often a slip (one axis too many) than a plan: `run` wants --allow-large-grid


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "glyphs"  # a registered dataset (`meta-bench datasets` lists them), or a plugin's import path
    options: dict = field(default_factory=dict)  # checked against the dataset's own options dataclass


@dataclass(frozen=True)
class LearnerSpec:
    name: str  # a registered learner (`meta-bench list`), or a plugin's import path (module:Class)
    config: dict = field(default_factory=dict)  # checked against the learner's Config dataclass
    label: str = ""  # how reports name it; defaults to the registered name

    @property
    def display(self) -> str:
        """How reports, studies and runs name this learner: its label, or else its registered name."""
        return self.label or self.name


SPENDING_DESIGNS = ("obrien-fleming", "pocock", "linear")  # bench.consumers.sequential.boundaries.spent


@dataclass(frozen=True)
class SeedsPlan:
    """``grid.seeds`` as a group-sequential plan: seeds 0..looks[-1]-1 are run look by look, and after each look the
    comparisons the report makes are decided at the alpha its spending function has spent by then; only the cells
    an undecided comparison needs get the next look's seeds (docs/explanation/sequential-seeds.md).
    looks: cumulative seeds at each look (increasing, at least two, the first at least report.min_seeds);
    design: the alpha-spending function (Lan-DeMets O'Brien-Fleming-type, Pocock-type, or linear);
    equivalence_margin: a difference between two arms inside +-margin (in the score's unit: accuracy as a fraction,
    errors as they are) stops their comparison as equivalent once its repeated interval lies inside it (none: a
    comparison stops only when decided)."""

    looks: tuple[int, ...]
    design: Literal["obrien-fleming", "pocock", "linear"] = "obrien-fleming"
    equivalence_margin: float | None = None

    def __post_init__(self) -> None:
        looks = list(self.looks)
        if len(looks) < 2 or any(b <= a for a, b in zip(looks, looks[1:])) or looks[0] < 2:
            raise ValueError(f"looks must be at least two increasing seed counts, the first at least 2, got {looks}")
        if self.equivalence_margin is not None and not self.equivalence_margin > 0:
            raise ValueError(f"equivalence_margin must be positive (or absent), got {self.equivalence_margin}")

    def describe(self) -> str:
        """The plan as a user wrote it: what the store records, so a changed plan is seen."""
        return json.dumps({"looks": list(self.looks), "design": self.design,
                           "equivalence_margin": self.equivalence_margin}, sort_keys=True)


@dataclass(frozen=True)
class GridSpec:
    n_way: tuple[int, ...] = (5,)  # classes per episode (1 for regression), each value a cell
    k_shot: tuple[int, ...] = (1,)  # support examples per class in training episodes, each value a cell
    devices: tuple[str, ...] = ("cpu",)  # cpu, cuda, cuda:N or mps, each a cell (a missing device: a skipped run)
    # a list: a fixed design; a mapping: a sequential plan of looks (SeedsPlan), its seeds 0..looks[-1]-1
    seeds: tuple[Seed, ...] | SeedsPlan = (0,)
    options: dict = field(default_factory=dict)  # any learner option (inner_steps, inner_lr, ...): name -> values

    @property
    def plan(self) -> SeedsPlan | None:
        """The sequential plan, or None for a fixed list of seeds."""
        return self.seeds if isinstance(self.seeds, SeedsPlan) else None

    @property
    def seed_values(self) -> tuple[Seed, ...]:
        """Every seed a cell may be run with: the list, or a plan's 0..looks[-1]-1."""
        return tuple(range(self.seeds.looks[-1])) if isinstance(self.seeds, SeedsPlan) else self.seeds


@dataclass(frozen=True)
class TrainingSpec:
    meta_iterations: int = 100  # outer-loop updates of the meta-parameters
    meta_batch_size: int = 4  # tasks (episodes) per meta-iteration
    # query examples per class (points, for regression) in training episodes; "k_shot": as many as the cell's K
    # (Finn et al.'s Omniglot: 2K images per class split into K support and K query)
    query: int | Literal["k_shot"] = 15
    optimizer: Literal["adam", "sgd"] = "adam"  # the outer (meta) optimiser
    lr: float = 0.001  # the outer (meta) learning rate
    validate_every: int = 50  # meta-iterations between validation passes (the validation curve, tune's pruning)
    validation_episodes: int = 20  # episodes of the validation classes per validation pass
    warmup_iterations: int = 2  # first meta-iterations left out of the timings (compilation, caches, autotuning)
    dtype: Literal["float32", "float64"] = "float32"  # float64: variants agree to rounding (gradient checks)
    meta_grad_clip: float | None = None  # clip every meta-gradient element to [-c, c] (Finn's miniImageNet: 10)
    # seconds between checkpoints of the whole training state (bench.run.checkpoint; 0: after every meta-iteration):
    # how a cell resumes mid-training. It changes no number: no configuration hash holds it
    checkpoint_every: float = 300.0

    def __post_init__(self) -> None:
        for name in ("meta_iterations", "meta_batch_size", "validate_every", "validation_episodes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"training.{name} must be positive, got {getattr(self, name)}")
        if self.query != "k_shot" and self.query <= 0:
            raise ValueError(f"training.query must be positive or 'k_shot', got {self.query}")
        if self.meta_grad_clip is not None and self.meta_grad_clip <= 0:
            raise ValueError(f"training.meta_grad_clip must be positive (or absent), got {self.meta_grad_clip}")
        if self.lr <= 0:
            raise ValueError(f"training.lr must be positive, got {self.lr}")
        if not self.checkpoint_every >= 0:
            raise ValueError(f"training.checkpoint_every must be 0 or more seconds, got {self.checkpoint_every}")
        if not 0 <= self.warmup_iterations < self.meta_iterations:
            raise ValueError(f"training.warmup_iterations must be in [0, meta_iterations), got {self.warmup_iterations}")


UNHASHED_TRAINING = ("checkpoint_every",)  # how often the state is saved: no result depends on it


@dataclass(frozen=True)
class EvaluationSpec:
    """Test episodes and the test-time conditions they are scored under. ``inner_steps``: one count sets every
    MAML-family learner's ``eval_inner_steps`` (None: each learner's own); a list scores every learner that adapts
    in steps (its ``test_steps_option``: ``eval_inner_steps``, finetune's ``head_epochs``) after each count, from
    one adaptation per episode, and records its whole adaptation curve 0..max. ``k_shot``: the support shots of the
    test episodes, one or several (empty: the cell's K); the trained model is scored under every (K, steps)
    combination without retraining. A test episode scored non-finite or above ``divergence_factor`` times its
    condition's median (errors only) is diverged: counted and listed, and left out of the mean only with
    ``exclude_diverged``."""

    test_episodes: int = 600  # test episodes per cell, identical for every learner and seed
    query: int | Literal["k_shot"] = 15  # query examples per class in validation and test episodes; see training
    inner_steps: int | tuple[int, ...] | None = None
    k_shot: tuple[int, ...] = ()
    episode_seed: Seed = 0  # validation and test episodes depend on this alone: identical across learners and seeds
    warmup_episodes: int = 1  # first test episodes left out of the test timings (not of the scores)
    divergence_factor: float = 1000.0  # an episode's error above this many times the reference error is diverged
    exclude_diverged: bool = False  # leave diverged episodes out of the means (they are counted and listed either way)
    # cross-domain: test on this dataset's test classes instead of the suite's (validation stays the suite's); its
    # options declare the resize and channels that give its images the training data's shape (nothing else adapts)
    dataset: DatasetSpec | None = None

    def __post_init__(self) -> None:
        if self.test_episodes <= 0 or (self.query != "k_shot" and self.query <= 0):
            raise ValueError(f"evaluation.test_episodes and evaluation.query must be positive, got "
                             f"{self.test_episodes}, {self.query}")
        steps = self.steps_list or ()
        if any(s < 0 for s in steps) or (isinstance(self.inner_steps, tuple) and not steps):
            raise ValueError(f"evaluation.inner_steps must be a count >= 0 or a non-empty list of them, got "
                             f"{self.inner_steps}")
        if len(set(steps)) != len(steps) or len(set(self.k_shot)) != len(self.k_shot):
            raise ValueError(f"evaluation.inner_steps and evaluation.k_shot list each value once, got "
                             f"{self.inner_steps}, {list(self.k_shot)}")
        if any(k <= 0 for k in self.k_shot):
            raise ValueError(f"evaluation.k_shot values must be positive, got {list(self.k_shot)}")
        if self.divergence_factor <= 1:
            raise ValueError(f"evaluation.divergence_factor must be above 1, got {self.divergence_factor}")
        if not 0 <= self.warmup_episodes < self.test_episodes:
            raise ValueError(f"evaluation.warmup_episodes must be in [0, test_episodes), got {self.warmup_episodes}")

    @property
    def steps_list(self) -> tuple[int, ...] | None:
        """The test-step counts as a list (one count: a list of one); None where the suite names none."""
        return (self.inner_steps,) if isinstance(self.inner_steps, int) else self.inner_steps

    @property
    def curves(self) -> bool:
        """Whether the suite asks for scores after several step counts (then adaptation curves are recorded)."""
        return isinstance(self.inner_steps, tuple)


@dataclass(frozen=True)
class TrackingSpec:
    uri: str = DEFAULT_TRACKING_URI  # the MLflow store: sqlite:///path, an http(s):// server, postgresql://...


@dataclass(frozen=True)
class ReportOptions:
    """reference: "" compares every pair of learners; a learner's label compares every other learner with it alone
    (fewer tests, so more power after the multiple-comparison correction); alpha: the family-wise level of the
    Holm-corrected verdicts; min_seeds: training seeds needed before a verdict is given; output_dir: where
    reports/<suite>/ is written; published: learner label -> the published series its cells should reproduce
    (the report shows measured against published for each N and K the series has, by the equivalence rule of
    bench.consumers.report.reproduction with the margin the series declares); baselines: axis -> the value its
    ablation effects are measured from (default: the first value the suite lists)."""

    reference: str = ""  # a learner label every other is compared with ("": every pair)
    alpha: float = 0.05  # the family-wise error level of the verdicts
    min_seeds: int = 3  # seeds a comparison needs before it gets a verdict
    output_dir: str = "reports"  # where reports/<suite>/ is written (relative: to the working root)
    published: dict = field(default_factory=dict)  # learner label -> published series (bench/data/published.yaml)
    baselines: dict = field(default_factory=dict)  # axis (n_way, k_shot, a grid option, test_k_shot, test_steps) -> value

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"report.alpha must lie strictly between 0 and 1, got {self.alpha}")
        if self.min_seeds < 2:
            raise ValueError(f"report.min_seeds must be at least 2 (a verdict needs a between-seed variance), "
                             f"got {self.min_seeds}")


@dataclass(frozen=True)
class Suite:
    suite: str  # the suite's name: its MLflow experiment and its folder of reports/
    dataset: DatasetSpec = DatasetSpec()  # where episodes come from (the same for every cell)
    learners: tuple[LearnerSpec, ...] = ()  # the learners compared: names, or mappings with config and label
    grid: GridSpec = GridSpec()  # the axes swept: every combination is a cell
    training: TrainingSpec = TrainingSpec()  # the outer loop, the same for every learner
    evaluation: EvaluationSpec = EvaluationSpec()  # test episodes and the test conditions they are scored under
    backbone: BackboneConfig = BackboneConfig()  # the network every learner adapts
    tracking: TrackingSpec = TrackingSpec()  # where results are stored
    report: ReportOptions = ReportOptions()  # what the report compares and how verdicts are made
    search: SearchSpec | None = None  # what `bench tune` explores (see bench/spec/search.py)
    # the text of the file it was read from, read once (logged with its runs); not a key of the file
    text: str = field(default="", init=False, compare=False, repr=False)

    @functools.cached_property
    def cells(self) -> tuple[Cell, ...]:
        """The grid as cells, expanded once per suite: validation, the run, the executor's checks and the report
        all receive these."""
        return tuple(expand(self))


AXES = ("n_way", "k_shot", "device", "seed")  # every cell's axes; a suite's grid.options add their own
ABSENT = "-"  # an option axis of a learner that lacks the option


@dataclass(frozen=True)
class Cell:
    """One learner at one point of the grid: everything a run depends on."""

    suite: str
    learner: str
    label: str
    learner_config: Any
    n_way: int
    k_shot: int
    device: str
    seed: int
    dataset: DatasetSpec
    dataset_options: Any
    backbone: BackboneConfig
    training: TrainingSpec
    evaluation: EvaluationSpec
    options: tuple[str, ...] = ()  # the learner options the grid sweeps: axes like n_way, whatever their name

    def resolved(self) -> dict[str, Any]:
        return {"suite": self.suite, "learner": self.learner, "label": self.label,
                "learner_config": to_mapping(self.learner_config), "n_way": self.n_way, "k_shot": self.k_shot,
                "device": self.device, "seed": self.seed, "dataset": self.dataset.name,
                "dataset_options": to_mapping(self.dataset_options), "backbone": to_mapping(self.backbone),
                "training": {k: v for k, v in to_mapping(self.training).items() if k not in UNHASHED_TRAINING},
                # no cross-domain dataset: left out, so the hashes of cells before it existed stay what they were
                "evaluation": {k: v for k, v in to_mapping(self.evaluation).items()
                               if not (k == "dataset" and v is None)}}

    @property
    def config_hash(self) -> str:
        return _digest(self.resolved())

    @property
    def training_hash(self) -> str:
        """The configuration less what only testing reads (the evaluation section, and the learner's count of
        test-time steps): equal for cells that train the same model, so a test condition added to a suite tests
        the trained meta-parameters of its finished runs instead of training them again. Validation reads the
        evaluation section too, but its scores are curves beside training: it never changes the weights."""
        resolved = self.resolved()
        del resolved["evaluation"]
        option = LEARNERS[self.learner].test_steps_option
        resolved["learner_config"] = {k: v for k, v in resolved["learner_config"].items() if k != option}
        return _digest(resolved)

    @property
    def axes(self) -> dict[str, str]:
        """The grid's coordinates of this cell as strings, every axis the same way: n_way, k_shot, device, seed and
        each swept option (``-`` where this learner has no such option)."""
        values = {name: str(getattr(self, name)) for name in AXES}
        for option in self.options:
            has = hasattr(self.learner_config, option)
            values[option] = str(getattr(self.learner_config, option)) if has else ABSENT
        return values

    @property
    def train_query(self) -> int:
        return self.k_shot if self.training.query == "k_shot" else self.training.query

    @property
    def test_query(self) -> int:
        return self.k_shot if self.evaluation.query == "k_shot" else self.evaluation.query

    @property
    def test_dataset(self) -> tuple[str, Any]:
        """The dataset whose test classes score the cell, and its typed options: the suite's, or
        ``evaluation.dataset`` (cross-domain)."""
        chosen = self.evaluation.dataset
        if chosen is None:
            return self.dataset.name, self.dataset_options
        return chosen.name, parse_options(chosen.name, chosen.options)

    @property
    def evaluation_fingerprint(self) -> str:
        """Equal for two cells exactly when their test episodes are identical: only such runs are paired."""
        name, options = self.test_dataset
        return _digest({"dataset": name, "options": to_mapping(options),
                        "version": DATASETS[name].version, "split": "test",
                        "episode_seed": self.evaluation.episode_seed, "n_way": self.n_way,
                        "k_shot": self.test_k_shots[0],  # the primary test condition's K
                        "query": self.test_query, "episodes": self.evaluation.test_episodes})

    @property
    def test_k_shots(self) -> tuple[int, ...]:
        """The support shots the trained model is tested at: the suite's evaluation.k_shot, else the cell's K."""
        return self.evaluation.k_shot or (self.k_shot,)

    @property
    def test_steps(self) -> tuple[int | None, ...]:
        """The test-time step counts this cell is scored after: the suite's list where it gives one and the learner
        adapts in steps; else (None,): the learner's own."""
        steps = self.evaluation.steps_list
        if self.evaluation.curves and LEARNERS[self.learner].test_steps_option:
            return tuple(steps)
        return (None,)

    @property
    def title(self) -> str:
        options = "".join(f" {k}={v}" for k, v in self.axes.items() if k not in AXES and v != ABSENT)
        return f"{self.label} {self.n_way}-way {self.k_shot}-shot{options} {self.device} seed={self.seed}"


def _digest(mapping: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()[:16]


def _positive_ints(values: tuple[int, ...], where: str) -> None:
    for v in values:
        if v <= 0:
            raise ConfigError(f"{where}: {v} is not allowed; values must be positive")


def _learner_specs(raw: Any) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"learners: expected a non-empty list of learner names or mappings; known learners: "
                          f"{', '.join(LEARNERS.names())}")
    return [{"name": item} if isinstance(item, str) else item for item in raw]


def parse_suite(raw: Mapping[str, Any], source: str = "<suite>", notes: list[str] | None = None,
                max_cells: int | None = None) -> Suite:
    """The validated suite. With ``notes`` (a list), data that is not on this machine is noted there rather than
    refused, so that a suite for a dataset one does not have can still be checked (``--dry-run``). With
    ``max_cells``, a larger grid is refused before it is expanded."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a suite file is a mapping with keys {', '.join(field_names(Suite))}")
    raw = dict(raw)
    check_keys(raw, field_names(Suite), source)
    if "suite" not in raw:
        raise ConfigError(f"{source}: the key 'suite' (the suite's name, also its MLflow experiment) is required")
    raw["learners"] = _learner_specs(raw.get("learners"))
    grid = raw.get("grid")
    if isinstance(grid, Mapping) and isinstance(grid.get("seeds"), Mapping):  # a plan: its own keys' errors
        raw["grid"] = {**grid, "seeds": from_mapping(SeedsPlan, grid["seeds"], f"{source}: grid.seeds")}
    suite = from_mapping(Suite, raw, source)
    validate(suite, source, notes, max_cells)
    return suite


def shipped_suites() -> dict[str, Path]:
    """The suites meta-bench ships, by name (the file's stem): the repository's ``suites/``, in an installed copy
    too."""
    return {path.stem: path for path in sorted(SHIPPED_SUITES.glob("*.yaml"))}


def suite_file(path: str | Path) -> Path:
    """The suite file ``path`` names: that file, or where there is none, the shipped suite of that name
    (``quickstart``, ``quickstart.yaml`` or ``suites/quickstart.yaml``), so an installed copy runs what it ships."""
    path = Path(path)
    if path.is_file():
        return path
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    shipped = shipped_suites()
    if path.parent in (Path("."), Path("suites")) and stem in shipped:
        return shipped[stem]
    raise ConfigError(f"{path}: no such suite file, nor a shipped suite of that name (shipped: "
                      f"{', '.join(shipped) or 'none'}; `bench suites` lists them)")


def load_suites(path: str | Path, notes: list[str] | None = None, max_cells: int | None = None) -> list[Suite]:
    """Every suite of a YAML file. A file may hold several documents (``---``), each a whole suite: a published
    protocol whose settings differ by N (Finn et al.'s 5-way and 20-way Omniglot) is one file of two documents
    with the same suite name, so they share one MLflow experiment and one report."""
    path = suite_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); "
                          f"save the suite file as UTF-8") from None
    return suites_from_text(text, str(path), notes, max_cells)


def suites_from_text(text: str, source: str, notes: list[str] | None = None,
                     max_cells: int | None = None) -> list[Suite]:
    """Every suite of a suite file's text (also the copy logged to MLflow with a run)."""
    documents = yaml_documents(text, source)
    if not documents:
        raise ConfigError(f"{source}: the file holds no suite")
    where = [source if len(documents) == 1 else f"{source} (document {i + 1})" for i in range(len(documents))]
    suites = [parse_suite(raw, place, notes, max_cells) for raw, place in zip(documents, where)]
    for suite in suites:
        object.__setattr__(suite, "text", text)  # frozen: set once, here
    check_grid_size(sum(grid_size(s) for s in suites), source, max_cells)
    _check_labels_across(suites, where)
    _check_plans_across(suites, where)
    return suites


def _check_plans_across(suites: list[Suite], where: list[str]) -> None:
    """The documents of one suite share one seeds plan (or none): its looks decide their comparisons together."""
    first: dict[str, tuple[SeedsPlan | None, str]] = {}
    for suite, place in zip(suites, where):
        plan, there = first.setdefault(suite.suite, (suite.grid.plan, place))
        if suite.grid.plan != plan:
            raise ConfigError(f"{place}: grid.seeds: {suite.grid.plan.describe() if suite.grid.plan else 'a list'} "
                              f"here and {plan.describe() if plan else 'a list'} in {there}; the documents of a "
                              f"suite share one seeds plan (their comparisons are decided at the same looks)")


def _check_labels_across(suites: list[Suite], where: list[str]) -> None:
    """A label names one learner in every document of a suite: the report groups and pairs runs by label."""
    named: dict[tuple[str, str], tuple[str, str]] = {}  # (suite, label) -> (learner, document)
    for suite, place in zip(suites, where):
        for spec in suite.learners:
            key = (suite.suite, spec.display)
            first = named.setdefault(key, (spec.name, place))
            if first[0] != spec.name:
                raise ConfigError(f"{place}: learners: label {key[1]!r} names {spec.name} here and {first[0]} in "
                                  f"{first[1]}; a label names one learner across the documents of a suite")


def validate(suite: Suite, source: str, notes: list[str] | None = None, max_cells: int | None = None) -> None:
    """Everything that can be checked before a run: names, option keys, ranges, N and K against the data; with
    ``max_cells``, the grid's size."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", suite.suite) or set(suite.suite) == {"."}:
        raise ConfigError(f"{source}: suite: {suite.suite!r} is not allowed: the name (also a folder of reports/) "
                          f"may hold only letters, digits, '_', '.' and '-', and not only dots")
    try:
        DATASETS[suite.dataset.name]
    except UnknownNameError as error:
        raise ConfigError(f"{source}: dataset.name: {error}") from None
    parse_options(suite.dataset.name, suite.dataset.options)
    labels = set()
    for i, spec in enumerate(suite.learners):
        where = f"{source}: learners[{i}]"
        try:
            cls = LEARNERS[spec.name]
        except UnknownNameError as error:
            raise ConfigError(f"{where}.name: {error}") from None
        from_mapping(cls.Config, spec.config, f"{where}.config ({spec.name})")
        label = spec.display
        if label in labels:
            raise ConfigError(f"{where}: learner label {label!r} appears twice; give one a distinct 'label'")
        labels.add(label)
    from bench.spec.published import series  # noqa: PLC0415

    for label, name in suite.report.published.items():
        if label not in labels:
            raise ConfigError(f"{source}: report.published: no learner is labelled {label!r}; labels: "
                              f"{', '.join(sorted(labels))}")
        if name not in series():
            raise ConfigError(f"{source}: report.published.{label}: unknown published series {name!r}"
                              f"{did_you_mean(str(name), list(series()))}; known: {', '.join(series())}")
    grid = suite.grid
    _positive_ints(grid.n_way, f"{source}: grid.n_way")
    _positive_ints(grid.k_shot, f"{source}: grid.k_shot")
    for name in ("n_way", "k_shot", "devices", "seeds"):
        if not getattr(grid, name):
            raise ConfigError(f"{source}: grid.{name} must list at least one value")
    if grid.plan is not None and grid.plan.looks[0] < suite.report.min_seeds:
        raise ConfigError(f"{source}: grid.seeds.looks: the first look ({grid.plan.looks[0]} seeds) must have at least "
                          f"report.min_seeds ({suite.report.min_seeds}): a look with fewer can decide nothing")
    for device in grid.devices:
        if not DEVICE_PATTERN.match(device):
            raise ConfigError(f"{source}: grid.devices: unknown device {device!r}; known: cpu, cuda, cuda:N, mps")
    all_options = sorted({f for spec in suite.learners for f in field_names(LEARNERS[spec.name].Config)})
    for option, values in grid.options.items():
        if option not in all_options:
            raise ConfigError(f"{source}: grid.options: no learner of this suite has the option {option!r}"
                              f"{did_you_mean(option, all_options)}; their options: {', '.join(all_options)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: grid.options.{option}: expected a non-empty list of values")
    _check_baselines(suite, source)
    check_grid_size(grid_size(suite), source, max_cells)  # before the data is loaded and the grid expanded
    from meta_bench.datasets import load_dataset  # noqa: PLC0415  (loading is the expensive part: only for a valid suite)
    try:
        data = load_dataset(suite.dataset.name, suite.dataset.options)
        tested = data if suite.evaluation.dataset is None else _test_data(suite, data, source)
        for spec in suite.learners:
            if data.task_kind not in LEARNERS[spec.name].kinds:
                raise ConfigError(f"{source}: learners: {spec.name} learns {' and '.join(LEARNERS[spec.name].kinds)} "
                                  f"tasks; dataset {suite.dataset.name} is {data.task_kind}")
        for n, k in itertools.product(grid.n_way, grid.k_shot):
            train_query = k if suite.training.query == "k_shot" else suite.training.query
            test_query = k if suite.evaluation.query == "k_shot" else suite.evaluation.query
            data.check_request("train", n, k, train_query)
            data.check_request("val", n, k, test_query)
            tested.check_request("test", n, k, test_query)
            for test_k in suite.evaluation.k_shot:
                tested.check_request("test", n, test_k, test_query)
    except DataMissingError as error:
        if notes is None:
            raise ConfigError(f"{source}: dataset: {error}") from None
        notes.append(f"N and K not checked against the data: {error}")
    except DataRequestError as error:
        raise ConfigError(f"{source}: grid / dataset: {error}") from None
    if suite.search is not None:
        validate_search(suite, source)
    suite.cells  # every learner config of the grid builds (and the cells are kept)


def _test_data(suite: Suite, data, source: str):
    """The cross-domain test dataset, refused where its episodes cannot feed the model trained on ``data``."""
    from meta_bench.datasets import load_dataset  # noqa: PLC0415

    chosen = suite.evaluation.dataset
    if chosen.name not in DATASETS:
        raise ConfigError(f"{source}: evaluation.dataset.name: unknown dataset {chosen.name!r}"
                          f"{did_you_mean(chosen.name, DATASETS.names())}; known: {', '.join(DATASETS.names())}")
    tested = load_dataset(chosen.name, chosen.options)
    if tested.task_kind != data.task_kind:
        raise ConfigError(f"{source}: evaluation.dataset: {chosen.name} is {tested.task_kind}, the suite's "
                          f"{suite.dataset.name} is {data.task_kind}: a model cannot be tested across them")
    if tuple(tested.input_shape) != tuple(data.input_shape):
        raise ConfigError(f"{source}: evaluation.dataset: {chosen.name}'s inputs are {tuple(tested.input_shape)}, the "
                          f"model is trained on {suite.dataset.name}'s {tuple(data.input_shape)}; declare the resize "
                          f"and channels in evaluation.dataset.options (image_size, channels where the dataset has "
                          f"them) so the shapes match")
    return tested


def _check_baselines(suite: Suite, source: str) -> None:
    """report.baselines names swept axes and one of the values each lists (compared as the report shows them)."""
    swept = {"n_way": suite.grid.n_way, "k_shot": suite.grid.k_shot, **suite.grid.options,
             "test_k_shot": suite.evaluation.k_shot, "test_steps": suite.evaluation.steps_list or ()}
    swept = {axis: [str(v) for v in values] for axis, values in swept.items() if len(values) > 1}
    for axis, value in suite.report.baselines.items():
        if axis not in swept:
            raise ConfigError(f"{source}: report.baselines: {axis!r} is not an axis the suite sweeps (one with more "
                              f"than one value); swept: {', '.join(swept) or 'none'}")
        if str(value) not in swept[axis]:
            raise ConfigError(f"{source}: report.baselines.{axis}: {value!r} is not one of its values "
                              f"({', '.join(swept[axis])})")


def validate_search(suite: Suite, source: str) -> None:
    """Every parameter names an option that exists, every range and choice is well formed."""
    search = suite.search
    labels = {spec.display: spec.name for spec in suite.learners}
    own = {label: field_names(LEARNERS[name].Config) for label, name in labels.items()}
    known = {"training": field_names(TrainingSpec), "backbone": field_names(BackboneConfig)}
    unknown_labels = set(search.learners) - set(labels)
    if unknown_labels:
        raise ConfigError(f"{source}: search.learners: no learner is labelled {sorted(unknown_labels)[0]!r}; labels: "
                          f"{', '.join(labels)}")
    spaces = [("search.space", search.space, None)] + [(f"search.learners.{label}", raw, label)
                                                       for label, raw in search.learners.items()]
    for where, raw, label in spaces:
        for name, spec in parse_space(raw, f"{source}: {where}").items():
            here = f"{source}: {where}.{name}"
            section, _, option = name.partition(".")
            if section not in SECTIONS or not option:
                raise ConfigError(f"{here}: a parameter is <section>.<option> with section one of "
                                  f"{', '.join(SECTIONS)}")
            if section == "learner":
                options = own[label] if label else sorted({o for names in own.values() for o in names})
                if option not in options:
                    who = f"learner {label!r} has no option" if label else "no learner of this suite has the option"
                    raise ConfigError(f"{here}: {who} {option!r}{did_you_mean(option, options)}; options: "
                                      f"{', '.join(options)}")
            elif option not in known[section]:
                raise ConfigError(f"{here}: {section} has no option {option!r}{did_you_mean(option, known[section])}; "
                                  f"known: {', '.join(known[section])}")
            spec.check(here)


def describe(suite: Suite) -> list[str]:
    """The suite as it would run, one line per part and per cell (``bench run --dry-run``)."""
    lines = [f"suite {suite.suite}: {len(suite.cells)} cell(s)"]
    lines += [f"  {part}" for part in (suite.training, suite.evaluation, suite.backbone)]
    lines += [f"  {cell.config_hash}  {cell.title}  queries train/test {cell.train_query}/{cell.test_query}  "
              f"{cell.learner_config}" for cell in suite.cells]
    return lines


def grid_size(suite: Suite) -> int:
    """How many cells ``expand`` makes (at most: it drops repeats), from the axes' lengths alone."""
    grid = suite.grid
    points = len(grid.n_way) * len(grid.k_shot) * len(grid.devices) * len(grid.seed_values)
    own = [set(field_names(LEARNERS[spec.name].Config)) for spec in suite.learners]
    return points * sum(math.prod(len(v) for name, v in grid.options.items() if name in names) for names in own)


def check_grid_size(cells: int, source: str, max_cells: int | None) -> None:
    if max_cells is not None and cells > max_cells:
        raise ConfigError(f"{source}: grid: {cells} cells is more than {max_cells}: pass --allow-large-grid to run "
                          f"a grid this large (check the axes first: n_way x k_shot x devices x seeds x each "
                          f"learner's grid.options)")


def expand(suite: Suite) -> list[Cell]:
    """The grid as cells, in run order; a learner lacking a swept option runs once, not once per value."""
    cells, seen = [], set()
    dataset_options = parse_options(suite.dataset.name, suite.dataset.options)
    grid = suite.grid
    swept = dict(grid.options)
    names = list(swept)
    dataset_defaults = DATASETS[suite.dataset.name].learner_defaults  # what suits the task better than the learner's
    for n, k, device, seed in itertools.product(grid.n_way, grid.k_shot, grid.devices, grid.seed_values):
        for spec in suite.learners:
            cls = LEARNERS[spec.name]
            own = set(field_names(cls.Config))
            for values in itertools.product(*(swept[name] for name in names)):
                overrides = {name: v for name, v in zip(names, values) if name in own}
                defaults = {name: v for name, v in dataset_defaults.items() if name in own}
                config_map = {**defaults, **spec.config, **overrides}
                steps = suite.evaluation.steps_list
                if steps is not None and "eval_inner_steps" in own:  # the test-time count: the largest listed
                    config_map["eval_inner_steps"] = max(steps)
                if suite.evaluation.curves and cls.test_steps_option:  # every step-adapting learner scored alike
                    config_map[cls.test_steps_option] = max(steps)
                config = from_mapping(cls.Config, config_map, f"learners ({spec.name}) with grid values {overrides}")
                cell = Cell(suite.suite, spec.name, spec.display, config, n, k, device, seed,
                            suite.dataset, dataset_options, suite.backbone, suite.training, suite.evaluation,
                            tuple(names))
                if cell.config_hash not in seen:
                    seen.add(cell.config_hash)
                    cells.append(cell)
    return cells

