import math

import numpy as np
import pytest
import torch

from meta_bench.datasets import SPLITS, DataRequestError, Episode, load_dataset


def test_episode_layout(glyphs):
    episode = glyphs.sampler("train", 5, 2, 3, seed=0).episode(0)
    assert episode.support_x.shape == (10, 1, 28, 28) and episode.query_x.shape == (15, 1, 28, 28)
    assert episode.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert episode.query_y.tolist() == [c for c in range(5) for _ in range(3)]
    assert episode.classes.shape == (5,) and len(set(episode.classes.tolist())) == 5
    assert 0 <= int(episode.classes.min()) and int(episode.classes.max()) < glyphs.num_classes("train")
    assert episode.support_x.dtype == torch.float32 and 0.0 <= float(episode.support_x.min()) <= 1.0


def test_support_and_query_are_distinct_examples(glyphs):
    episode = glyphs.sampler("train", 5, 5, 15, seed=3).episode(7)
    for c in range(5):
        support = episode.support_x[episode.support_y == c].flatten(1)
        query = episode.query_x[episode.query_y == c].flatten(1)
        everything = torch.cat([support, query])
        assert torch.unique(everything, dim=0).shape[0] == 20  # K + Q different renderings of one class


def test_same_index_same_episode_whatever_came_before(glyphs):
    sampler = glyphs.sampler("train", 5, 1, 15, seed=11)
    first = sampler.episode(42)
    for i in range(5):
        sampler.episode(i)
    again = glyphs.sampler("train", 5, 1, 15, seed=11).episode(42)
    assert torch.equal(first.support_x, again.support_x) and torch.equal(first.classes, again.classes)
    assert not torch.equal(first.classes, sampler.episode(43).classes) or \
        not torch.equal(first.support_x, sampler.episode(43).support_x)
    other_seed = glyphs.sampler("train", 5, 1, 15, seed=12).episode(42)
    assert not torch.equal(first.support_x, other_seed.support_x)


def test_batch_stacks_the_same_episodes_with_a_task_dimension(glyphs):
    sampler = glyphs.sampler("train", 5, 1, 4, seed=0)
    batch = sampler.batch(10, 3)
    assert batch.is_batch and len(batch) == 3 and batch.support_x.shape == (3, 5, 1, 28, 28)
    for i in range(3):
        single = sampler.episode(10 + i)
        assert torch.equal(batch.task(i).query_x, single.query_x)
        assert torch.equal(batch.task(i).classes, single.classes)
    stacked = Episode.stack([sampler.episode(10 + i) for i in range(3)])
    assert torch.equal(stacked.support_x, batch.support_x)


def test_splits_are_class_disjoint(glyphs):
    ids = {s: set(glyphs.data.splits[s].tolist()) for s in SPLITS}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert len(ids["train"] | ids["val"] | ids["test"]) == len(glyphs.data.names)


@pytest.mark.parametrize("split, n, k, q, message", [
    ("train", 5000, 1, 1, "n_way=5000 is larger than the"),
    ("test", 5, 15, 6, "k_shot + q_query = 15 + 6 = 21 is larger than the 20 examples"),
    ("valid", 5, 1, 1, "unknown split 'valid'; known splits: train, val, test"),
    ("train", 0, 1, 1, "n_way must be a positive integer, got 0"),
    ("train", 5, -1, 1, "k_shot must be a positive integer, got -1"),
    ("train", 5, 1, 0, "q_query must be a positive integer, got 0"),
])
def test_bad_requests_fail_early_naming_the_numbers(glyphs, split, n, k, q, message):
    with pytest.raises(DataRequestError, match=message.replace("+", r"\+")):
        glyphs.sampler(split, n, k, q, seed=0)


def reference_sinusoid_episode(seed, split, index, k_shot, q_query, amplitude=(0.1, 5.0), phase=(0.0, math.pi),
                               x_range=(-5.0, 5.0)):
    """The episode drawn one task at a time by numpy's own generator over its counter-based stream (sinusoid
    version 2: Philox keyed by seed and split, from the counter index * blocks; Finn et al.'s family: A ~ U[0.1, 5],
    phase ~ U[0, pi], x ~ U[-5, 5], y = A sin(x - phase))."""
    blocks = -(-(k_shot + q_query + 2) // 4)
    rng = np.random.Generator(np.random.Philox(key=np.array([seed, SPLITS.index(split)], dtype=np.uint64),
                                               counter=np.array([index * blocks, 0, 0, 0], dtype=np.uint64)))
    a, p = np.float32(rng.uniform(*amplitude)), np.float32(rng.uniform(*phase))
    x = rng.uniform(*x_range, size=(k_shot + q_query, 1)).astype(np.float32)
    y = a * np.sin(x - p)  # in float32
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    return Episode(x[:k_shot], y[:k_shot], x[k_shot:], y[k_shot:], torch.full((1,), -1, dtype=torch.int64))


@pytest.mark.parametrize("split, seed, k_shot, q_query", [("train", 0, 10, 10), ("test", 4, 5, 3)])
def test_a_sinusoid_batch_drawn_at_once_holds_exactly_the_episodes_drawn_one_by_one(split, seed, k_shot, q_query):
    sampler = load_dataset("sinusoid").sampler(split, 1, k_shot, q_query, seed)
    batch = sampler.batch(100, 50)
    expected = Episode.stack([reference_sinusoid_episode(seed, split, 100 + i, k_shot, q_query) for i in range(50)])
    for name in ("support_x", "support_y", "query_x", "query_y", "classes"):
        assert torch.equal(getattr(batch, name), getattr(expected, name)), name
        assert getattr(batch, name).is_contiguous()
    one = sampler.episode(117)
    assert all(torch.equal(getattr(one, f), getattr(batch.task(17), f)) for f in ("support_x", "query_y"))
    # and pinned, so that a change to both paths at once is seen too
    if split == "test":
        pinned = sampler.episode(11)
        assert pinned.support_x[:2].flatten().tolist() == [-3.563767433166504, -4.5839152336120605]
        assert pinned.query_y[-1].tolist() == [-0.9632816314697266]
