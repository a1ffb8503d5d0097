"""The published members of the functional learner's family, each a registry preset: the options that define it
are fixed (a suite cannot set them), every other option keeps its default and stays free. Adding a preset, or
running a combination no preset names (``maml`` with ``plan: fast`` or ``fast_weights: head``), is one line."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from meta_bench.algorithms.base import register_learner
from meta_bench.algorithms.functional import FunctionalConfig, FunctionalLearner


def preset(name: str, algorithm: str, summary: str, **fixed: Any) -> type[FunctionalLearner]:
    """Register the functional learner under ``name`` with the options ``fixed``. Its ``Config`` holds the free
    options only; the learner sees the whole ``FunctionalConfig`` (validated at once, so a bad combination of free
    options is refused where the suite is read)."""
    unknown = set(fixed) - {f.name for f in dataclasses.fields(FunctionalConfig)}
    if unknown:
        raise TypeError(f"preset {name!r}: no option {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(FunctionalConfig, include_extras=True)
    free = [(f.name, hints[f.name], dataclasses.field(default=f.default))
            for f in dataclasses.fields(FunctionalConfig) if f.name not in fixed]

    def full(self) -> FunctionalConfig:
        return FunctionalConfig(**dataclasses.asdict(self), **fixed)

    title = "".join(part.capitalize() for part in name.replace("/", "_").split("_"))
    config = dataclasses.make_dataclass(
        f"{title}Config", free, frozen=True,
        namespace={"FIXED": dict(fixed), "full": full, "__post_init__": lambda self: self.full(),
                   "__doc__": f"{name}: the functional learner's options less those it fixes "
                              f"({', '.join(f'{k}={v!r}' for k, v in fixed.items()) or 'none'})."})
    config.__module__ = __name__
    globals()[config.__name__] = config  # importable by name: pickled by reference (Ray workers, spawned processes)

    learner = type(title, (FunctionalLearner,), {"Config": config, "__doc__": summary,
                                                 "__module__": __name__})
    globals()[title] = learner
    return register_learner(name, algorithm)(learner)


preset("maml", "maml", "Second-order MAML (Finn et al. 2017), tasks looped or vmapped, with the MAML++ options.")
preset("maml/fast", "maml", "Second-order MAML on the fast execution plan (same gradients).", plan="fast")
preset("fomaml/functional", "fomaml", "First-order MAML, functional: parameter dicts, tasks looped or vmapped.",
       first_order=True, first_order_epochs=0)
preset("fomaml/fast", "fomaml", "First-order MAML, functional, on the fast execution plan (same gradients).",
       first_order=True, first_order_epochs=0, plan="fast")
preset("anil", "anil", "ANIL (Raghu et al. 2020): MAML with only the head in the inner loop (second order; "
       "first_order option).", fast_weights="head")
preset("metasgd", "metasgd", "Meta-SGD (Li et al. 2017): a learned inner rate per parameter element (second order; "
       "first_order option).", inner_rates="per_element")
