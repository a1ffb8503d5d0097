import pytest
import torch

from datasets import SPLITS, DataRequestError, Episode


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
