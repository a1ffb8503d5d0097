"""Issue 13's proposed route, measured piece by piece before it is built: how long one Conv-4 forward + backward
takes over a meta-batch of tasks when the tasks are taken one by one (today's loop), with per-task weights through a
grouped convolution (what vmap does), with per-task weights through unfold + bmm, and with shared weights as one
ordinary convolution over all tasks' images with per-task batch-norm statistics (the first inner step, where every
task still has theta). Median ms of forward + backward, fp32, in one run.

    .venv/bin/python -m benchmarks.batched_route [--tasks 32] [--images 5] [--filters 64] [--size 28]
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch.nn import functional as F

from bench.run.measure import time_steps


def conv4_params(tasks: int, filters: int, channels: int, per_task: bool) -> list[torch.Tensor]:
    """(weight, bias, gamma, beta) per block; with ``per_task`` every tensor has a leading task dimension."""
    params, cin = [], channels
    for _ in range(4):
        shapes = [(filters, cin, 3, 3), (filters,), (filters,), (filters,)]
        for shape in shapes:
            p = torch.randn(*(((tasks,) if per_task else ()) + shape)) * 0.1
            params.append(p.requires_grad_())
        cin = filters
    return params


def block_tail(h: torch.Tensor, tasks: int, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Per-task batch norm (batch statistics over each task's images), ReLU, max-pool, on [tasks * images, C, H, W]
    in single calls: tasks become channel groups for the statistics."""
    n, c, hh, ww = h.shape
    grouped = h.reshape(tasks, n // tasks, c, hh, ww).transpose(0, 1).reshape(n // tasks, tasks * c, hh, ww)
    normed = F.batch_norm(grouped, None, None, gamma.reshape(-1), beta.reshape(-1), training=True)
    h = normed.reshape(n // tasks, tasks, c, hh, ww).transpose(0, 1).reshape(n, c, hh, ww)
    return F.max_pool2d(F.relu(h), 2)


def shared_weights(x: torch.Tensor, params: list[torch.Tensor], tasks: int) -> torch.Tensor:
    """All tasks' images through one ordinary convolution per block (weights shared: the first inner step)."""
    h = x.flatten(0, 1)
    for block in range(4):
        w, b, g, be = params[4 * block:4 * block + 4]
        h = block_tail(F.conv2d(h, w, b, padding=1), tasks, g.expand(tasks, -1), be.expand(tasks, -1))
    return h


def grouped_conv(x: torch.Tensor, params: list[torch.Tensor], tasks: int) -> torch.Tensor:
    """Per-task weights as one grouped convolution (tasks as groups), as vmap lowers conv2d."""
    images = x.shape[1]
    h = x.transpose(0, 1).flatten(1, 2)  # [images, tasks * C, H, W]
    for block in range(4):
        w, b, g, be = params[4 * block:4 * block + 4]
        h = F.conv2d(h, w.flatten(0, 1), b.flatten(), padding=1, groups=tasks)
        h = h.reshape(images, tasks, -1, *h.shape[-2:]).transpose(0, 1).flatten(0, 1)  # [tasks * images, C', ..]
        h = block_tail(h, tasks, g, be)
        h = h.reshape(tasks, images, *h.shape[1:]).transpose(0, 1).flatten(1, 2)
    return h.reshape(images, tasks, -1, *h.shape[-2:]).transpose(0, 1).flatten(0, 1)


def unfold_bmm(x: torch.Tensor, params: list[torch.Tensor], tasks: int) -> torch.Tensor:
    """Per-task weights through im2col patches and a batched matrix multiply."""
    images = x.shape[1]
    h = x.flatten(0, 1)
    for block in range(4):
        w, b, g, be = params[4 * block:4 * block + 4]
        hh, ww = h.shape[-2:]
        patches = F.unfold(h, 3, padding=1)  # [tasks * images, C * 9, H * W]
        patches = patches.reshape(tasks, images, -1, hh * ww).transpose(1, 2).flatten(2)  # [tasks, C*9, images*HW]
        out = torch.bmm(w.flatten(2), patches) + b.unsqueeze(-1)  # [tasks, C', images * HW]
        h = out.reshape(tasks, -1, images, hh, ww).transpose(1, 2).flatten(0, 1)
        h = block_tail(h, tasks, g, be)
    return h


def per_task_loop(x: torch.Tensor, params: list[torch.Tensor], tasks: int) -> torch.Tensor:
    """Today's loop: one task at a time with its own weights."""
    outs = []
    for t in range(tasks):
        h = x[t]
        for block in range(4):
            w, b, g, be = (p[t] for p in params[4 * block:4 * block + 4])
            h = F.conv2d(h, w, b, padding=1)
            h = F.max_pool2d(F.relu(F.batch_norm(h, None, None, g, be, training=True)), 2)
        outs.append(h)
    return torch.stack(outs).flatten(0, 1)


def median_ms(step, repeats: int = 5) -> float:
    return 1000 * statistics.median(time_steps(step, repeats, torch.device("cpu")).times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--images", type=int, default=5, help="images per task (N * K)")
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.tasks, args.images, 1, args.size, args.size)
    per_task = conv4_params(args.tasks, args.filters, 1, per_task=True)
    shared = conv4_params(args.tasks, args.filters, 1, per_task=False)
    reference = per_task_loop(x, per_task, args.tasks)
    for name, forward in (("grouped conv", grouped_conv), ("unfold + bmm", unfold_bmm)):
        assert torch.allclose(forward(x, per_task, args.tasks), reference, atol=1e-4), name  # same function

    def timed(forward, params):
        def step():
            for p in params:
                p.grad = None
            forward(x, params, args.tasks).square().sum().backward()
        return median_ms(step)

    print(f"# Conv-4 ({args.filters} filters, {args.size}x{args.size}), {args.tasks} tasks x {args.images} images, "
          f"forward + backward, fp32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    loop = timed(per_task_loop, per_task)
    print(f"per-task loop (today):              {loop:8.1f} ms  1.00x")
    for name, forward, params in (("grouped conv (vmap's lowering)", grouped_conv, per_task),
                                  ("unfold + bmm, per-task weights", unfold_bmm, per_task),
                                  ("one conv, shared weights", shared_weights, shared)):
        ms = timed(forward, params)
        print(f"{name:35s} {ms:8.1f} ms  {loop / ms:.2f}x")


if __name__ == "__main__":
    main()
