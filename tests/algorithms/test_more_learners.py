"""ANIL and ProtoNet, each proven against an independent computation (float64)."""
import math

import torch
from torch import nn
from torch.nn import functional as F

from algorithms.backbones import Classifier
from algorithms.base import TaskSpec
from datasets.episode import Episode
from tests.algorithms.helpers import flat_grad, make_learner, make_problem, rel


def test_anil_adapts_the_head_alone_and_its_first_order_form_is_fomaml_restricted_so():
    batch, task, model = make_problem(tasks=2, k_shot=2, q_query=2)
    anil = make_learner("anil", task, model(), inner_lr=0.4, inner_steps=2)
    assert anil.adapted_names() == {"head.weight", "head.bias"}
    adapted = anil.adapted_parameters(batch.task(0), steps=2)
    for name, p in anil.model.named_parameters():
        assert torch.equal(adapted[name], p.detach()) == (not name.startswith("head."))
    # first order: the query gradient at (backbone, adapted head), by hand
    first = make_learner("anil", task, model(), inner_lr=0.4, inner_steps=2, first_order=True)
    first.meta_gradient(batch)
    expected = [torch.zeros_like(p) for p in model().parameters()]
    for b in range(2):
        net = model()
        head = torch.optim.SGD(net.head.parameters(), lr=0.4)
        for _ in range(2):
            head.zero_grad()
            F.cross_entropy(net(batch.support_x[b]), batch.support_y[b]).backward()
            head.step()
        net.zero_grad()
        F.cross_entropy(net(batch.query_x[b]), batch.query_y[b]).backward()
        expected = [e + p.grad / 2 for e, p in zip(expected, net.parameters())]
    assert rel(flat_grad(first.model), torch.cat([e.flatten() for e in expected])) <= 1e-9


def test_protonet_loss_and_accuracy_equal_the_closed_form_on_a_2d_example():
    """Identity features (a linear layer set to the identity): 2 classes with prototypes (0, 0) and (4, 0) (two shots
    each); queries (1, 0) and (3, 1)."""
    features = nn.Linear(2, 2)
    with torch.no_grad():
        features.weight.copy_(torch.eye(2))
        features.bias.zero_()
    model = Classifier(features, 2, 2).double()
    learner = make_learner("protonet", TaskSpec("classification", 2), model)
    support = torch.tensor([[[0.0, 1.0], [0.0, -1.0], [4.0, 1.0], [4.0, -1.0]]], dtype=torch.float64)
    query = torch.tensor([[[1.0, 0.0], [3.0, 1.0]]], dtype=torch.float64)
    episode = Episode(support, torch.tensor([[0, 0, 1, 1]]), query, torch.tensor([[0, 0]]), torch.tensor([[0, 1]]))
    logits = learner.predict(episode.task(0))
    # squared distances: query 1 -> (1, 9); query 2 -> (10, 2)
    assert torch.allclose(logits, -torch.tensor([[1.0, 9.0], [10.0, 2.0]], dtype=torch.float64), rtol=0, atol=1e-12)
    result = learner.meta_gradient(episode)
    expected = (math.log1p(math.exp(-8.0)) + math.log1p(math.exp(8.0))) / 2
    assert abs(float(result.loss) - float(expected)) < 1e-12  # -log softmax of the true class (class 0)
    assert float(result.metrics["query_score"]) == 0.5  # the second query is nearer class 1
    batch, task, conv = make_problem(tasks=2, k_shot=2, q_query=2)
    learner = make_learner("protonet", task, conv())
    learner.meta_gradient(batch)
    assert all(p.grad is None for p in learner.model.head.parameters())  # the head is not part of it
    assert all(p.grad is not None for p in learner.meta_parameters())
