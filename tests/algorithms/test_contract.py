"""Every registered learner through the same checks."""
import dataclasses
import pickle

import pytest
import torch

from bench.core.config import ConfigError, from_mapping
from bench.core.registry import UnknownNameError
from meta_bench.algorithms import LEARNERS, MetaLearner, register_learner
from tests.algorithms.helpers import make_learner, make_problem


@pytest.mark.parametrize("name", LEARNERS.names())
@pytest.mark.parametrize("dataset", ["glyphs", "sinusoid"])
def test_meta_gradient_fills_grad_and_returns_detached_tensors(name, dataset):
    n_way = 5 if dataset == "glyphs" else 1
    batch, task, model = make_problem(dataset, n_way=n_way, k_shot=2, q_query=3, tasks=2)
    if task.kind not in LEARNERS[name].kinds:  # refused at once, with the reason
        with pytest.raises(ValueError, match=f"learns .* tasks, not {task.kind}"):
            make_learner(name, task, model())
        return
    learner = make_learner(name, task, model())
    before = [p.detach().clone() for p in learner.model.parameters()]
    result = learner.meta_gradient(batch)
    assert result.loss.dim() == 0 and not result.loss.requires_grad and torch.isfinite(result.loss)
    assert all(not v.requires_grad for v in result.metrics.values())
    grads = [p.grad for p in learner.meta_parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # the learner leaves the update to the runner's optimiser
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))


@pytest.mark.parametrize("name", LEARNERS.names())
def test_predict_adapts_without_touching_the_meta_parameters(name):
    batch, task, model = make_problem(tasks=1, k_shot=2, q_query=3)
    learner = make_learner(name, task, model())
    before = [p.detach().clone() for p in learner.model.parameters()]
    output = learner.predict(batch.task(0))
    assert output.shape == (15, 5) and not output.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))
    assert all(p.grad is None for p in learner.model.parameters())


@pytest.mark.parametrize("name", LEARNERS.names())
def test_config_is_a_frozen_dataclass_with_documented_defaults(name):
    cls = LEARNERS[name]
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    assert cls.__doc__ and cls.Config.__doc__
    config = cls.Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.__setattr__(dataclasses.fields(config)[0].name, 1)


def test_unknown_option_lists_the_known_ones():
    cls = LEARNERS["maml"]
    with pytest.raises(ConfigError, match=r"unknown key 'inner_l'.*did you mean 'inner_lr'.*known keys: inner_lr"):
        from_mapping(cls.Config, {"inner_l": 0.1}, "maml")
    with pytest.raises(ConfigError, match="inner_lr must be >= 0, got -1"):
        from_mapping(cls.Config, {"inner_lr": -1}, "maml")
    with pytest.raises(ConfigError, match="expected an integer, got 'three'"):
        from_mapping(cls.Config, {"inner_steps": "three"}, "maml")
    with pytest.raises(ConfigError, match="msl_epochs must be >= 1, got 0"):
        from_mapping(cls.Config, {"multi_step_loss": True, "msl_epochs": 0}, "maml")
    with pytest.raises(ConfigError, match="inner_rates: fixed at 'per_element' by this learner"):
        from_mapping(LEARNERS["metasgd"].Config, {"inner_rates": "per_layer_step"}, "metasgd")


def test_registry_refuses_duplicates_and_suggests_near_names():
    with pytest.raises(ValueError, match="learner 'maml' is already registered"):
        register_learner("maml")(MetaLearner)
    with pytest.raises(UnknownNameError, match="unknown learner 'fomaml/functionl' \\(did you mean "
                                               "'fomaml/functional'\\?\\); known: anil, finetune, fomaml/deepcopy"):
        LEARNERS["fomaml/functionl"]


def test_registered_names_keep_the_algorithm_variant_split():
    assert {"fomaml/deepcopy", "fomaml/functional", "fomaml/higher", "maml", "finetune"} <= set(LEARNERS.names())


@pytest.mark.parametrize("name", LEARNERS.names())
def test_a_learners_config_pickles_by_reference(name):
    """Ray and spawned workers receive cells pickled: a preset's Config (made at import) must come back as the same
    class, or the worker does not recognise it."""
    config = LEARNERS[name].Config()
    assert type(pickle.loads(pickle.dumps(config))) is LEARNERS[name].Config
