"""One MKL thread or all of them? A/B of training-step speed per registered model.

Paddle's CPU kernels for small inputs (28-32 px, batch 128) are short GEMMs and
elementwise ops; splitting them across threads can cost more than it gains.
This script times the training step of each model's cpu profile (input side,
batch size, model arguments) on random data at one MKL thread and on all
physical cores (runtime's default), alternating the two settings twice and
keeping the better round of each, and prints examples/sec. The profiles'
``cpu_threads`` values come from its output.

    python -m benchmarks.threads resnet18 googlenet alexnet

The loss is the mean square of the outputs and the optimizer AdamW: the figure
is the cost of forward + backward + update, not of a task's loss or data path,
so it ranks the thread settings but is not the homework's examples/sec.
Run it on a quiet machine: another job on the cores distorts both columns.
"""
from __future__ import annotations

import argparse
import time

import paddle_cnn  # noqa: F401  (tunes MKL before Paddle loads)
from paddle_cnn import runtime
from paddle_cnn.models import list_models
from paddle_cnn.config import config_for
from paddle_cnn.models.factory import build_model

import paddle


def step_rate(model_name: str, threads: int, steps: int, profile: str = "cpu") -> float:
    """Training examples/sec of ``model_name`` with ``threads`` MKL threads (after 2 warm-up steps)."""
    cfg = config_for(model_name, profile, device="cpu")
    runtime.set_cpu_threads(threads)
    paddle.seed(0)
    model = build_model(cfg)
    optimizer = paddle.optimizer.AdamW(1e-3, parameters=model.parameters())
    images = paddle.randn([cfg.batch_size, 1, cfg.resize, cfg.resize])

    def train_step():
        out = model(images)
        outputs = out.values() if isinstance(out, dict) else [out]
        loss = sum(o.square().mean() for o in outputs)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()

    for _ in range(2):
        train_step()
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    return cfg.batch_size * steps / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", choices=list_models(), metavar="MODEL")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round (default 4)")
    parser.add_argument("--device", default="cpu", choices=runtime.DEVICES)
    args = parser.parse_args(argv)
    runtime.get_device(args.device)  # before any model or tensor exists
    cores = runtime.physical_cores()  # what runtime gives MKL by default
    print(f"# {runtime.cpu_text(runtime.cpu_model(), runtime.cpu_features())}, {cores} cores, cpu profiles, "
          "random data")
    for name in args.models:
        rates = {1: [], cores: []}
        for threads in (1, cores, 1, cores):
            rates[threads].append(step_rate(name, threads, args.steps))
        print(f"{name}: 1 thread {max(rates[1]):.0f} ex/s, {cores} threads {max(rates[cores]):.0f} ex/s",
              flush=True)


if __name__ == "__main__":
    main()
