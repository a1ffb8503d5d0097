"""Meta-batches drawn ahead are the meta-batches drawn one at a time: the same episodes, in blocks that never reach
past the last meta-iteration; a large meta-batch is drawn alone."""
import torch

from bench.run import batches
from bench.run.batches import MetaBatches
from meta_bench.datasets import load_dataset

CPU = torch.device("cpu")


class Counting:
    """A task source that counts the episodes drawn."""

    def __init__(self, source):
        self.source, self.calls = source, []

    def batch(self, first, count):
        self.calls.append((first, count))
        return self.source.batch(first, count)


def same(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f))
               for f in ("support_x", "support_y", "query_x", "query_y", "classes"))


def test_sinusoid_meta_batches_drawn_ahead_are_those_drawn_one_at_a_time(monkeypatch):
    source = load_dataset("sinusoid").sampler("train", 1, 10, 10, seed=3)
    one = batches._bytes(source.batch(0, 25).to(CPU, torch.float64))
    monkeypatch.setattr(batches, "AHEAD_BYTES", 7 * one)  # 7 meta-batches a block
    counting = Counting(source)
    drawn = MetaBatches(counting, 25, 40, CPU, torch.float64)
    for iteration in [*range(0, 40), 17, 3]:  # in order, then back (a resumed loop starts anywhere)
        batch = drawn(iteration)
        assert batch.query_x.dtype == torch.float64 and len(batch) == 25
        assert same(batch, source.batch(iteration * 25, 25).to(CPU, torch.float64)), iteration
    assert counting.calls[:2] == [(0, 25), (25, 7 * 25)]  # one to size the blocks, then blocks
    assert max(first + count for first, count in counting.calls) == 40 * 25  # never past the last meta-iteration
    assert len(counting.calls) == 1 + 6 + 2  # 39 meta-batches in blocks of 7, then two drawn again


def test_a_large_meta_batch_is_drawn_alone():
    source = Counting(load_dataset("glyphs").sampler("train", 5, 1, 15, seed=0))
    drawn = MetaBatches(source, 4, 10, CPU, torch.float32)
    for iteration in range(3):
        drawn(iteration)
    assert source.calls == [(0, 4), (4, 4), (8, 4)]
