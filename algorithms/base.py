"""The one interface every meta-learner implements, and the registry they join.

A learner fills one slot of the harness. The runner owns the data, the clock, the device and the outer
optimiser (over ``meta_parameters()``); a learner only
  1. ``meta_gradient(batch)``: writes the meta-gradient of a batch of episodes into ``.grad`` (accumulating,
     so the runner zeroes it) and returns the meta-loss and metrics as detached tensors, and
  2. ``predict(episode)``: adapts to one episode's support set and returns its query outputs.
Learners never call ``.item()``, ``synchronize()`` or ``print()``: reading numbers off the device is the
measurement module's job.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from bench.core.plugins import PluginError
from bench.core.registry import Registry
from meta_bench.algorithms.backbones import Classifier
from meta_bench.datasets.episode import Episode


@dataclass(frozen=True)
class TaskSpec:
    """What a learner may know about the problem: never the data itself."""

    kind: Literal["classification", "regression"]
    n_way: int
    num_train_classes: int = 0  # global meta-train classes (the fine-tuning baseline trains on them)
    seed: int = 0  # for weights a learner adds to the model (the baseline's global classifier)


def task_loss(kind: str, output: torch.Tensor, target: torch.Tensor, per_class: int | None = None) -> torch.Tensor:
    """Mean loss over the task's examples; with ``per_class`` (Finn et al.'s reference ``xent``), the sum over the
    examples divided by ``per_class`` (the support shots K), i.e. the mean times examples / K."""
    if kind == "classification":
        loss, examples = F.cross_entropy(output, target), target.shape[-1]
    else:
        loss, examples = F.mse_loss(output, target), target.shape[-2]
    return loss if per_class is None else loss * (examples / per_class)


def task_losses(kind: str, output: torch.Tensor, target: torch.Tensor, per_class: int | None = None
                ) -> torch.Tensor:
    """``task_loss`` of every task of a batch at once: ``output`` and ``target`` lead with a task dimension; returns
    [T]. The same numbers as ``task_loss`` task by task (float rounding apart), in one operator instead of T."""
    if kind == "classification":
        loss = F.cross_entropy(output.transpose(-1, -2), target, reduction="none").mean(dim=-1)
        examples = target.shape[-1]
    else:
        loss, examples = (output - target).pow(2).flatten(start_dim=1).mean(dim=1), target.shape[-2]
    return loss if per_class is None else loss * (examples / per_class)


def task_score(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Accuracy for classification, mean squared error for regression (over the last example dimension)."""
    if kind == "classification":
        return (output.argmax(dim=-1) == target).to(output.dtype).mean(dim=-1)
    return (output - target).pow(2).flatten(start_dim=-2).mean(dim=-1)


@dataclass
class StepResult:
    loss: torch.Tensor  # detached scalar meta-loss
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # detached tensors


class MetaLearner(ABC):
    """Subclasses set ``Config`` (a frozen dataclass of hyperparameters) and a one-line docstring."""

    Config: ClassVar[type]
    kinds: ClassVar[tuple[str, ...]] = ("classification", "regression")  # the task kinds it can learn
    # the config option that counts test-time adaptation steps (None: the learner adapts in no steps, ProtoNet);
    # a suite's evaluation.inner_steps list evaluates it after each count, from one adaptation (predict_curve)
    test_steps_option: ClassVar[str | None] = None

    def __init__(self, model: Classifier, config, task: TaskSpec):
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}")
        if task.kind not in self.kinds:
            raise ValueError(f"{type(self).__name__} learns {' and '.join(self.kinds)} tasks, not {task.kind}")
        # a preset's Config holds its free options and completes itself with the options it fixes (presets.py)
        self.model, self.config, self.task = model, config.full() if hasattr(config, "full") else config, task

    def meta_parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything meta-learned (saved with a finished cell): the model's state, plus any meta-parameters a
        learner adds (learned inner learning rates)."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take back what ``state_dict`` gave (a finished run's meta-parameters, tested again under a new test
        condition)."""
        self.model.load_state_dict(state)

    def start_iteration(self, iteration: int) -> None:
        """Called by the runner before meta-iteration ``iteration`` (from 0): learners whose objective follows a
        training schedule (MAML++'s annealing) read the clock here; the others ignore it."""

    def execution(self, tasks: int, device: torch.device) -> dict[str, str]:
        """How this learner runs a meta-batch of ``tasks`` on ``device`` where a config leaves it open (an "auto"
        option resolved): logged with the cell so results say what actually ran."""
        return {}

    def execution_candidates(self, tasks: int, device: torch.device) -> list[dict[str, str]]:
        """The ways to run a meta-batch of ``tasks`` that the config leaves open (an "auto" option), each computing
        the same meta-gradient; the harness times them and passes the fastest to ``use_execution``. Empty: nothing
        to choose (every option explicit)."""
        return []

    def use_execution(self, choice: dict[str, str]) -> None:
        """Run as ``choice`` (one of ``execution_candidates``) from now on."""
        raise ValueError(f"{type(self).__name__} has no execution left to choose")

    def execution_phase(self, iteration: int) -> str:
        """A label for what about meta-iteration ``iteration`` decides which execution is fastest or fits in memory
        (the order of differentiation, the graphs kept): where it changes, the harness chooses the execution again.
        One phase unless the learner's schedule changes its computation."""
        return ""

    @abstractmethod
    def meta_gradient(self, batch: Episode) -> StepResult:
        """Accumulate the meta-gradient of ``batch`` (B episodes) into ``.grad``."""

    @abstractmethod
    def predict(self, episode: Episode) -> torch.Tensor:
        """Adapt to ``episode``'s support set; return outputs for its query set."""

    def predict_batch(self, batch: Episode) -> torch.Tensor:
        """``predict`` of every episode of ``batch``, stacked [T, ...]; each episode adapted on its own support set
        alone. Episode by episode here; a learner that can adapt many at once overrides it (the same outputs, float
        rounding apart: the tests hold it to that)."""
        return torch.stack([self.predict(batch.task(i)) for i in range(len(batch))])

    def predict_curve(self, batch: Episode, steps: int) -> torch.Tensor:
        """Query outputs of every episode of ``batch`` after 0, 1, ..., ``steps`` test-time adaptation steps, from
        one adaptation per episode: [steps + 1, T, ...]; entry s equals ``predict`` with ``steps`` = s (tested).
        Only learners with a ``test_steps_option`` have it."""
        raise NotImplementedError(f"{type(self).__name__} does not adapt in steps: it has no adaptation curve")


def _adopt(name: str, loaded: object) -> tuple[type[MetaLearner], dict[str, str]]:
    """A plugin learner: a MetaLearner subclass with a Config dataclass. Its algorithm: the one it was registered
    under where its own module registered it too, else its ``algorithm`` attribute, else its name."""
    if not (isinstance(loaded, type) and issubclass(loaded, MetaLearner)):
        raise PluginError(f"learner {name!r} names {loaded!r}, which is not a subclass of "
                          f"meta_bench.algorithms.base.MetaLearner")
    if not dataclasses.is_dataclass(getattr(loaded, "Config", None)):
        raise PluginError(f"learner {name!r}: {loaded.__name__}.Config must be a dataclass of its options")
    registered = LEARNERS.registered_as(loaded)
    algorithm = LEARNERS.fact(registered[0], "algorithm") if registered else getattr(loaded, "algorithm", name)
    return loaded, {"algorithm": str(algorithm)}


LEARNERS: Registry[type[MetaLearner]] = Registry("learner", group="meta_bench.learners", adopt=_adopt)

# options that change how a learner computes, never what (the same meta-gradient, tested): two learners of one
# algorithm that differ only in these, or in their registered implementation, are implementation variants
IMPLEMENTATION_OPTIONS = frozenset({"plan", "task_batching", "vmap_chunk"})


def register_learner(name: str, algorithm: str | None = None):
    """Register a learner class under ``name``. ``algorithm`` (default: ``name``) groups the implementation variants
    of one algorithm: they compute the same meta-gradient (``bench verify`` and the tests hold them to it)."""
    return LEARNERS.register(name, algorithm=algorithm or name)


def algorithm_of(name: str) -> str:
    """The algorithm a registered learner implements (``fomaml/deepcopy`` -> ``fomaml``)."""
    return LEARNERS.fact(name, "algorithm")
