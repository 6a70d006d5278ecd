"""Where a training step's time goes, per operator, with Paddle's profiler.

    python -m benchmarks.op_profile resnet18:96 alexnet:96 --batch-size 128

Runs a few training steps of each registered model (random batch,
cross-entropy, momentum SGD; the oneDNN accelerator as the trainer would use
it, ``--accel off`` for Paddle's own convolution; ``--amp bf16`` computes the
convolutions and linear layers in bf16 as ``--amp bf16`` trains, with bf16
activations between layers when ``PADDLE_CNN_BF16_ACTIVATIONS=1``) under
``paddle.profiler`` and prints Paddle's operator summary (CPU time per
operator type, forward and backward), the table benchmarks/README.md quotes.
Run it on a quiet machine.
"""
from __future__ import annotations

import argparse

import paddle_cnn  # noqa: F401  (CPU tuning before paddle loads)
import paddle
import paddle.profiler as profiler

from paddle_cnn import accel, runtime
from paddle_cnn.config import TrainConfig
from paddle_cnn.models.factory import build_model


def profile(model_name: str, resize: int, batch: int, steps: int, mode: str, amp: str = "off") -> None:
    runtime.get_device("cpu")
    cfg = TrainConfig(model=model_name, resize=resize, accel=mode)
    model = build_model(cfg)
    status = accel.apply(model, mode, log=None)
    if amp == "bf16":
        bf16 = accel.enable_bf16(model, log=print)
        status["reason"] += f"; bf16: {bf16}"
    opt = paddle.optimizer.Momentum(0.01, 0.9, parameters=model.parameters())
    x, y = paddle.randn([batch, 1, resize, resize]), paddle.randint(0, 10, [batch])

    def step():
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()

    for _ in range(2):
        step()
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda p: None)
    prof.start()
    for _ in range(steps):
        step()
        prof.step()
    prof.stop()
    print(f"\n## {model_name}@{resize}, batch {batch}, {steps} steps, accelerator: "
          f"{'on' if status['enabled'] else 'off'} ({status['reason']})")
    prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False,
                 time_unit="ms")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="name:resize")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--accel", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--amp", default="off", choices=("off", "bf16"))
    args = parser.parse_args(argv)
    for item in args.models:
        name, _, size = item.partition(":")
        profile(name, int(size or 96), args.batch_size, args.steps, args.accel, args.amp)


if __name__ == "__main__":
    main()
