"""What every dataset offers the harness: deterministic episodes from class-disjoint splits."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from meta_bench.datasets.episode import Episode

SPLITS = ("train", "val", "test")


class DataRequestError(ValueError):
    """A request the data cannot satisfy (impossible N/K/Q, unknown split, missing files)."""


class DataMissingError(DataRequestError):
    """The dataset's files are not where the options say; the message says where to put them."""


def check_episode_shape(n_way: int, k_shot: int, q_query: int) -> None:
    for name, value in (("n_way", n_way), ("k_shot", k_shot), ("q_query", q_query)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise DataRequestError(f"{name} must be a positive integer, got {value!r}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataRequestError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")


def episode_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One generator per (seed, split, index): an episode never depends on what was drawn before it. The stream of
    ``np.random.default_rng([seed, split, index])``, built from its SeedSequence directly: what default_rng does,
    without its argument coercion (~18 -> ~11 us; batches build one per episode)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, SPLITS.index(split), index])))


def episode_uniforms(seed: int, split: str, first: int, count: int, size: int) -> np.ndarray:
    """``size`` doubles in [0, 1) for each of the episodes ``first .. first + count - 1``: episode ``i``'s are
    ``numpy.random.Generator(numpy.random.Philox(key=[seed, split], counter=[i * blocks, 0, 0, 0])).random(size)``
    (``blocks``: the 4-word blocks ``size`` doubles take). A counter-based stream: every episode is still addressed
    by its index alone, and a batch's episodes are consecutive blocks of one generator, drawn in one call (about 17
    us for 25 episodes where a generator per episode took 270)."""
    blocks = -(-size // 4)
    bits = np.random.Philox(key=np.array([seed % 2**64, SPLITS.index(split)], dtype=np.uint64),
                            counter=np.array([first * blocks, 0, 0, 0], dtype=np.uint64))
    words = bits.random_raw(count * blocks * 4).reshape(count, blocks * 4)[:, :size]
    return (words >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # numpy's next_double: the top 53 bits


class TaskSource(ABC):
    """Episodes of one split at one (N, K, Q), addressed by index."""

    @abstractmethod
    def episode(self, index: int) -> Episode: ...

    def batch(self, first: int, count: int) -> Episode:
        return Episode.stack([self.episode(first + i) for i in range(count)])


class Dataset(ABC):
    name: str
    task_kind: str  # "classification" or "regression"
    input_shape: tuple[int, ...]
    # what its episodes are made from (meta_bench.datasets.content): the files it read, or what it is generated
    # from; a loader that leaves it empty gets one of its options alone (load_dataset), which files do not enter
    content_identity: str = ""

    @property
    def score_name(self) -> str:
        """What a test episode is scored by: "accuracy" for classification, "mse" for regression."""
        return "accuracy" if self.task_kind == "classification" else "mse"

    @abstractmethod
    def sampler(self, split: str, n_way: int, k_shot: int, q_query: int, seed: int) -> TaskSource: ...

    @abstractmethod
    def num_classes(self, split: str) -> int: ...

    @abstractmethod
    def min_examples(self, split: str) -> int:
        """Examples in the smallest class of ``split`` (the bound on K + Q)."""

    @abstractmethod
    def statistics(self) -> dict[str, object]: ...

    def zero_prediction_mse(self) -> float | None:
        """Regression: the expected test MSE of predicting 0 everywhere, the scale a learner's error is judged
        against ("exploded" far above it: bench.run.test_time.exploded); None for classification."""
        return None

    def check_request(self, split: str, n_way: int, k_shot: int, q_query: int) -> None:
        check_split(split)
        check_episode_shape(n_way, k_shot, q_query)
        classes = self.num_classes(split)
        if n_way > classes:
            raise DataRequestError(
                f"{self.name}: n_way={n_way} is larger than the {classes} classes of split {split!r}")
        smallest = self.min_examples(split)
        if k_shot + q_query > smallest:
            named = self.smallest_class(split)
            raise DataRequestError(
                f"{self.name}: k_shot + q_query = {k_shot} + {q_query} = {k_shot + q_query} is larger than the "
                f"{smallest} examples of the smallest class in split {split!r}"
                + (f" (class {named!r}: give it more examples, or lower k_shot or the query)" if named else ""))

    def smallest_class(self, split: str) -> str | None:
        """The name of a class of ``split`` with ``min_examples`` examples, where classes have names."""
        return None


@dataclass(frozen=True)
class ClassImages:
    """Decoded images of every class, held in memory as one uint8 tensor.

    Class ``c`` owns rows ``offsets[c]:offsets[c+1]`` of ``images``; ``splits`` maps a split to its class ids;
    ``groups[c]`` is the alphabet (or other grouping) class ``c`` belongs to.
    """

    images: torch.Tensor  # uint8 [M, C, H, W]
    offsets: torch.Tensor  # int64 [num_classes + 1]
    splits: dict[str, torch.Tensor]
    names: list[str]
    groups: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [M, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.names) != len(self.offsets) - 1 or len(self.groups) != len(self.names):
            raise ValueError("names, groups and offsets disagree on the number of classes")

    @property
    def counts(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]


class ImageDataset(Dataset):
    """A classification dataset backed by :class:`ClassImages`."""

    task_kind = "classification"

    def __init__(self, name: str, data: ClassImages, content_identity: str = "",
                 normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None):
        self.name = name
        self.data = data
        self.content_identity = content_identity
        self.input_shape = tuple(data.images.shape[1:])
        self.normalisation = normalisation  # per-channel (mean, std) of pixels in [0, 1] that episodes are scaled by

    def smallest_class(self, split: str) -> str | None:
        ids = self.data.splits[split]
        if not ids.numel():
            return None
        return self.data.names[int(ids[int(self.data.counts[ids].argmin())])]

    def num_classes(self, split: str) -> int:
        check_split(split)
        return int(self.data.splits[split].numel())

    def min_examples(self, split: str) -> int:
        check_split(split)
        ids = self.data.splits[split]
        return int(self.data.counts[ids].min()) if ids.numel() else 0

    def sampler(self, split: str, n_way: int, k_shot: int, q_query: int, seed: int) -> "ImageEpisodeSampler":
        self.check_request(split, n_way, k_shot, q_query)
        return ImageEpisodeSampler(self.data, split, n_way, k_shot, q_query, seed, self.normalisation)

    def statistics(self) -> dict[str, object]:
        counts = self.data.counts
        stats: dict[str, object] = {"dataset": self.name, "image_shape": list(self.input_shape),
                                    "classes": len(self.data.names), "images": int(self.data.images.shape[0])}
        for split in SPLITS:
            ids = self.data.splits[split]
            split_counts = counts[ids]
            stats[split] = {
                "classes": int(ids.numel()),
                "alphabets": len({self.data.groups[i] for i in ids.tolist()}),
                "examples_per_class_min": int(split_counts.min()) if ids.numel() else 0,
                "examples_per_class_max": int(split_counts.max()) if ids.numel() else 0,
            }
        if self.normalisation is not None:
            stats["normalisation"] = {"mean": list(self.normalisation[0]), "std": list(self.normalisation[1]),
                                      "from": "the train split's images"}
        return stats


class ImageEpisodeSampler(TaskSource):
    """N-way K-shot Q-query episodes; the same (seed, split, index) always gives the same episode."""

    def __init__(self, data: ClassImages, split: str, n_way: int, k_shot: int, q_query: int, seed: int,
                 normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None):
        self.data, self.split = data, split
        self._scale = None if normalisation is None else tuple(
            torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in normalisation)
        self.n_way, self.k_shot, self.q_query, self.seed = n_way, k_shot, q_query, seed
        self._split_classes = data.splits[split].numpy()
        self._offsets = data.offsets.numpy()

    def _rows(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = episode_rng(self.seed, self.split, index)
        classes = rng.choice(len(self._split_classes), size=self.n_way, replace=False)  # ids within the split
        per_class = self.k_shot + self.q_query
        rows = np.empty((self.n_way, per_class), dtype=np.int64)
        for i, c in enumerate(self._split_classes[classes]):
            start, stop = self._offsets[c], self._offsets[c + 1]
            rows[i] = start + rng.choice(stop - start, size=per_class, replace=False)
        return classes, rows

    def _assemble(self, classes: np.ndarray, rows: np.ndarray) -> Episode:
        # rows: [..., N, K+Q]; one gather for the whole batch keeps assembly cheap.
        k = self.k_shot
        lead = rows.shape[:-2]
        pixels = self.data.images[torch.from_numpy(rows)].float().div_(255.0)  # [..., N, K+Q, C, H, W]
        if self._scale is not None:
            pixels.sub_(self._scale[0]).div_(self._scale[1])
        labels = torch.arange(self.n_way).view(self.n_way, 1)
        shape = pixels.shape[-3:]
        support_x = pixels[..., :k, :, :, :].reshape(*lead, self.n_way * k, *shape)
        query_x = pixels[..., k:, :, :, :].reshape(*lead, self.n_way * self.q_query, *shape)
        support_y = labels.expand(self.n_way, k).reshape(-1).expand(*lead, -1).clone()
        query_y = labels.expand(self.n_way, self.q_query).reshape(-1).expand(*lead, -1).clone()
        return Episode(support_x, support_y, query_x, query_y, torch.from_numpy(classes))

    def episode(self, index: int) -> Episode:
        return self._assemble(*self._rows(index))

    def batch(self, first: int, count: int) -> Episode:
        drawn = [self._rows(first + i) for i in range(count)]
        return self._assemble(np.stack([c for c, _ in drawn]), np.stack([r for _, r in drawn]))
