"""`protonet`: Prototypical Networks (Snell et al. 2017): class prototypes are the mean support embeddings, a query is
scored by its negative squared Euclidean distance to each prototype, and meta-training minimises the episodes'
query cross-entropy. No inner loop; the backbone's head is not used."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from meta_bench.algorithms.base import MetaLearner, StepResult, register_learner, task_score
from meta_bench.datasets.episode import Episode


@dataclass(frozen=True)
class ProtoNetConfig:
    """distance: "squared_euclidean" (the paper's, Snell et al. section 2.7) or "cosine" (the ablation of their
    section 3: cosine similarity between query and prototype as the logit)."""

    distance: Literal["squared_euclidean", "cosine"] = "squared_euclidean"


@register_learner("protonet")
class ProtoNet(MetaLearner):
    """ProtoNet: nearest class prototype (squared Euclidean distance) on the backbone's features."""

    Config = ProtoNetConfig
    kinds = ("classification",)

    def meta_parameters(self) -> list[nn.Parameter]:
        return list(self.model.features.parameters())

    def _logits(self, support_x, support_y, query_x) -> torch.Tensor:
        """Negative squared distances of each query to each class prototype: [queries, n_way]."""
        support, query = self.model.features(support_x), self.model.features(query_x)
        one_hot = F.one_hot(support_y, self.task.n_way).to(support.dtype)
        prototypes = one_hot.T @ support / one_hot.sum(dim=0).unsqueeze(1)
        if self.config.distance == "cosine":
            return F.normalize(query, dim=-1) @ F.normalize(prototypes, dim=-1).T
        # the difference itself, not cdist's |q|^2 - 2qp + |p|^2 expansion, which cancels badly at close range
        return -(query.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(dim=-1)

    def meta_gradient(self, batch: Episode) -> StepResult:
        tasks = len(batch)
        total, outputs = 0.0, []
        for b in range(tasks):
            logits = self._logits(batch.support_x[b], batch.support_y[b], batch.query_x[b])
            loss = F.cross_entropy(logits, batch.query_y[b])
            (loss / tasks).backward()
            total = total + loss.detach()
            outputs.append(logits.detach())
        score = task_score("classification", torch.stack(outputs), batch.query_y).mean()
        return StepResult(total / tasks, {"query_score": score})

    def predict(self, episode: Episode) -> torch.Tensor:
        with torch.no_grad():
            return self._logits(episode.support_x, episode.support_y, episode.query_x)
