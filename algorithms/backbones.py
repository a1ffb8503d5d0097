"""Backbones: Conv-4 (Vinyals et al. 2016 / Finn et al. 2017) and the 2x40 sinusoid MLP.

Every model is ``head(features(x))`` so that the fine-tuning baseline can freeze ``features`` and train a fresh
head. BatchNorm keeps no running statistics (``track_running_stats=False``): it normalises with the current
batch's statistics in meta-training, adaptation and evaluation alike, as the MAML reference code does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bench.core.seeding import seeded


@dataclass(frozen=True)
class BackboneConfig:
    """``filters`` 0 means the dataset's default (64; 32 for miniImageNet). ``pooling`` "max" is 2x2 max-pool
    after each block with a flattened head (Vinyals; Finn's miniImageNet); "stride" is stride-2 convolutions with
    spatially averaged features (Finn's Omniglot). ``bn_scale``: batch norm with a learned scale (gamma); Finn et
    al.'s reference (``tf.contrib.layers.batch_norm``, ``scale=False``) has the shift alone. ``batch_norm``:
    "batch_stats" normalises with the current batch's statistics everywhere (the MAML reference); "running_stats"
    keeps running statistics, used in evaluation mode (Chen et al.'s Baseline backbone, ordinary batch norm).
    ``linear_init``: "default" is PyTorch's; "truncated_normal" draws every ``nn.Linear`` weight from a normal of
    std ``linear_init_std`` truncated at two standard deviations, with zero biases (Finn et al.'s reference code:
    ``tf.truncated_normal(stddev=0.01)`` and ``tf.zeros`` for the sinusoid MLP's layers)."""

    filters: int = 0  # Conv-4 filters per block (0: the dataset's default)
    pooling: Literal["max", "stride"] = "max"  # max-pool after each block, or stride-2 convolutions
    hidden: int = 40  # units per hidden layer of the regression MLP
    bn_scale: bool = True
    batch_norm: Literal["batch_stats", "running_stats"] = "batch_stats"
    linear_init: Literal["default", "truncated_normal"] = "default"
    linear_init_std: float = 0.01  # std of linear_init truncated_normal

    def __post_init__(self) -> None:
        if self.filters < 0 or self.hidden <= 0:
            raise ValueError(f"backbone.filters must be >= 0 and backbone.hidden > 0, got {self.filters}, {self.hidden}")
        if self.linear_init_std <= 0:
            raise ValueError(f"backbone.linear_init_std must be positive, got {self.linear_init_std}")


class Classifier(nn.Module):
    def __init__(self, features: nn.Module, feature_dim: int, out_features: int):
        super().__init__()
        self.features = features
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BatchNormShift(nn.Module):
    """Batch norm with a learned shift and no scale (``tf.contrib.layers.batch_norm``'s default, Finn et al.)."""

    def __init__(self, channels: int, running_stats: bool):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False, track_running_stats=running_stats)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.bias.view(1, -1, 1, 1)


def is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, BatchNormShift))


def _conv_block(in_channels: int, filters: int, config: BackboneConfig) -> nn.Sequential:
    stride = 2 if config.pooling == "stride" else 1
    running = config.batch_norm == "running_stats"
    norm = nn.BatchNorm2d(filters, track_running_stats=running) if config.bn_scale else BatchNormShift(filters, running)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, filters, 3, stride=stride, padding=1), norm, nn.ReLU()]
    if config.pooling == "max":
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SpatialMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


def conv4(input_shape: tuple[int, ...], out_features: int, filters: int, config: BackboneConfig) -> Classifier:
    channels, height, width = input_shape
    blocks = [_conv_block(channels if i == 0 else filters, filters, config) for i in range(4)]
    if config.pooling == "max":
        for _ in range(4):
            height, width = height // 2, width // 2
        if height == 0 or width == 0:
            raise ValueError(f"conv4 with max-pooling needs inputs of at least 16x16, got {input_shape}")
        tail: nn.Module = nn.Flatten()
        feature_dim = filters * height * width
    else:
        tail, feature_dim = SpatialMean(), filters
    return Classifier(nn.Sequential(*blocks, tail), feature_dim, out_features)


def mlp(input_shape: tuple[int, ...], out_features: int, hidden: int = 40) -> Classifier:
    (inputs,) = input_shape
    features = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
    return Classifier(features, hidden, out_features)


def build_model(kind: str, input_shape: tuple[int, ...], out_features: int, config: BackboneConfig,
                default_filters: int, seed: int) -> Classifier:
    """The backbone ``kind`` with weights drawn from ``seed`` alone: every learner of a cell starts identical."""
    with seeded(seed):
        if kind == "conv4":
            model = conv4(input_shape, out_features, config.filters or default_filters, config)
        elif kind == "mlp":
            model = mlp(input_shape, out_features, config.hidden)
        else:
            raise ValueError(f"unknown backbone {kind!r}; known: conv4, mlp")
        if config.linear_init == "truncated_normal":
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    std = config.linear_init_std
                    nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
                    nn.init.zeros_(module.bias)
    return model
