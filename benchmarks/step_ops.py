"""Where a sinusoid MAML meta-iteration of the cell differs from the hand-written script's, counted in operators: the
torch profiler's count per meta-gradient (with the training loop's one read of its values) of the cell's learner
(``bmm`` over the 25 tasks of the Finn cell, as the autotuner chooses it) and of ``plain.BatchedMLPMAML`` on the same
meta-batch, and the operators where they differ. Counts, not times: they do not depend on the machine's load. The
profiler counts nested calls too (``aten::to`` and the ``aten::_to_copy`` it calls are two).

    .venv/bin/python -m benchmarks.step_ops
"""
from __future__ import annotations

from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from bench.run.batches import MetaBatches
from bench.run.factory import build_learner, dtype_of
from bench.run.problems import load_dataset
from bench.run.training import step_values
from bench.spec.suite import expand, parse_suite
from benchmarks.end_to_end import finn_maml_cell
from benchmarks.handwritten_sinusoid import INNER_LR, model
from benchmarks.plain import BatchedMLPMAML

STEPS = 10  # profiled meta-iterations of each side, after as many unprofiled


def _counts(step) -> Counter:
    for _ in range(STEPS):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        for _ in range(STEPS):
            step()
    return Counter({event.key: event.count / STEPS for event in profiled.key_averages()})


def main() -> None:
    (cell,) = expand(parse_suite(finn_maml_cell("step_ops", 100)))
    learner = build_learner(cell)
    learner.use_execution({"task_batching": "bmm", "vmap_chunk": str(cell.training.meta_batch_size)})
    data = load_dataset(cell.dataset.name, cell.dataset_options)
    source = data.sampler("train", cell.n_way, cell.k_shot, cell.train_query, cell.seed)
    batch = MetaBatches(source, cell.training.meta_batch_size, 1, torch.device("cpu"), dtype_of(cell.training))(0)
    script = BatchedMLPMAML(model(), INNER_LR, 1, True)

    def cell_step() -> None:  # the meta-gradient and the loop's one read of the loss and the learner's metrics
        step_values(learner.meta_gradient(batch))[1].tolist()

    def script_step() -> None:
        script.meta_gradient(batch.support_x, batch.support_y, batch.query_x, batch.query_y)

    ours, theirs = _counts(cell_step), _counts(script_step)
    aten = {name: sum(v for k, v in counts.items() if k.startswith("aten::"))
            for name, counts in (("cell", ours), ("script", theirs))}
    print(f"aten operators per meta-iteration: cell {aten['cell']:.0f}, script {aten['script']:.0f} "
          f"({aten['cell'] / aten['script']:.3f}x)")
    for key in sorted(ours.keys() | theirs.keys(), key=lambda k: (theirs[k] - ours[k], k)):
        if ours[key] != theirs[key]:
            print(f"  {ours[key] - theirs[key]:+5.0f}  {key[:80]}  (cell {ours[key]:.0f}, script {theirs[key]:.0f})")


if __name__ == "__main__":
    main()
