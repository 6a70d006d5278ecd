"""The oneDNN convolution accelerator (paddle_cnn.accel) against Paddle's own conv, in one run.

    python -m benchmarks.accel                                  # AlexNet@96 and ResNet-18@96, batch 128
    python -m benchmarks.accel --models alexnet:96,vgg11:96 --batch-size 64 --steps 5 --repeats 5

Two measurements, each with the accelerator off and on, alternated round by
round (off, on, off, on, ...) with the median of the rounds reported:

* ``convs`` -- forward + backward of every distinct convolution of each
  model (shapes recorded by hooks on a forward pass at the given input size
  and batch), alone: Paddle's ``F.conv2d`` (``F.conv2d_transpose`` for
  U-Net's up-sampling) with its bias add against the operator. The first layer's input needs no gradient, as in training, so
  neither side computes it.
* ``steps`` -- a whole training step of the registered model (forward, a
  loss, backward, a momentum-SGD update) on a random batch, with
  ``accel.apply`` / ``accel.remove`` switching the same model instance.
  Classifiers use cross-entropy; segmentation and detection models a
  stand-in mean-square loss on their outputs (the loss is a negligible part
  of the step, and the convolutions are the same).

Warm-up steps (primitive creation, first-touch of buffers) are excluded.
Threads: ``--threads`` (default: physical cores, as the trainer does).

Results: ``<out>/accel-bs<batch>.json`` and a markdown table beside it; the
table is printed too. Numbers come only from this command.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import paddle_cnn  # noqa: F401  (CPU tuning before paddle loads)
import paddle
import paddle.nn.functional as F
from paddle import nn

from paddle_cnn import accel, runtime
from paddle_cnn.models.registry import get_spec, list_models

DEFAULT_MODELS = "alexnet:96,resnet18:96"


def parse_models(text: str) -> list:
    """``alexnet:96,resnet18`` -> [(name, resize)]; without a size, the model's cpu profile decides."""
    if text == "all":
        text = ",".join(list_models())
    models = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, size = item.partition(":")
        try:
            spec = get_spec(name)
        except ValueError as e:  # names the registered models
            raise SystemExit(str(e)) from None
        resize = int(size) if size else int(spec.profile("cpu").get("resize", 28))
        if resize < spec.min_size:
            raise SystemExit(f"{name} needs inputs of at least {spec.min_size} pixels, got {resize}")
        models.append((name, resize))
    if not models:
        raise SystemExit("--models is empty")
    return models


def build(name: str, resize: int):
    from paddle_cnn.config import config_for
    from paddle_cnn.models.factory import build_model

    cfg = config_for(name, "cpu", resize=resize, device="cpu")
    return build_model(cfg)


def conv_shapes(model, resize: int, batch: int) -> list:
    """Distinct convolution problems of ``model`` at this input: (x shape, layer), first layer marked."""
    seen, found = set(), []

    def hook(layer, inputs, output):
        key = (tuple(inputs[0].shape), tuple(layer.weight.shape), tuple(layer._stride), str(layer._updated_padding),
               tuple(layer._dilation), layer.bias is not None)
        if key not in seen and accel.layer_supported(layer) is None:
            seen.add(key)
            found.append({"x": list(inputs[0].shape), "layer": layer, "first": not found})

    handles = [m.register_forward_post_hook(hook) for m in model.sublayers()
               if isinstance(m, (nn.Conv2D, nn.Conv2DTranspose))]
    with paddle.no_grad():
        model(paddle.randn([batch, 1, resize, resize]))
    for h in handles:
        h.remove()
    return found


def describe(problem: dict) -> str:
    layer = problem["layer"]
    transposed = isinstance(layer, nn.Conv2DTranspose)
    o, c, kh, kw = layer.weight.shape
    if transposed:
        o, c = c, o
    return (f"{'transposed ' if transposed else ''}{c}->{o} k{kh}x{kw} s{layer._stride[0]} on "
            f"{problem['x'][2]}x{problem['x'][3]}" + (" (input, no dx)" if problem["first"] else ""))


def time_conv(problem: dict, use_op: bool, iters: int) -> float:
    """Seconds per forward + backward of one convolution."""
    layer = problem["layer"]
    x = paddle.randn(problem["x"])
    x.stop_gradient = problem["first"]
    w = paddle.create_parameter(layer.weight.shape, "float32")
    b = paddle.create_parameter(layer.bias.shape, "float32") if layer.bias is not None else None
    kwargs = dict(stride=layer._stride, padding=layer._padding, dilation=layer._dilation)
    if isinstance(layer, nn.Conv2DTranspose):
        conv = accel.conv2d_transpose if use_op else F.conv2d_transpose
    else:
        conv = accel.conv2d if use_op else F.conv2d

    def once():
        y = conv(x, w, b, **kwargs)
        y.backward(paddle.ones_like(y))
        w.clear_gradient()
        if b is not None:
            b.clear_gradient()

    once()
    start = time.perf_counter()
    for _ in range(iters):
        once()
    return (time.perf_counter() - start) / iters


def loss_of(out, target, classification: bool):
    if classification:
        return F.cross_entropy(out, target)
    parts = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else [out]
    return sum((p.astype("float32") ** 2).mean() for p in parts if isinstance(p, paddle.Tensor))


def time_steps(model, name: str, resize: int, batch: int, steps: int, warmup: int) -> float:
    """Seconds per training step of ``model`` as it is now routed."""
    classification = get_spec(name).task == "classification"
    x = paddle.randn([batch, 1, resize, resize])
    target = paddle.randint(0, 10, [batch])
    opt = paddle.optimizer.Momentum(0.01, momentum=0.9, parameters=model.parameters())
    model.train()

    def step():
        loss = loss_of(model(x), target, classification)
        loss.backward()
        opt.step()
        opt.clear_grad()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def alternate(measure, repeats: int) -> dict:
    """{"off": median s, "on": median s, "rounds": {...}} with the variants alternated per round."""
    rounds = {"off": [], "on": []}
    for _ in range(repeats):
        for variant in ("off", "on"):
            rounds[variant].append(measure(variant == "on"))
    return {"off": statistics.median(rounds["off"]), "on": statistics.median(rounds["on"]), "rounds": rounds}


def table(results: dict) -> str:
    lines = ["| what | Paddle conv (ms) | oneDNN op (ms) | speed-up |", "| --- | ---: | ---: | ---: |"]
    for model in results["models"]:
        for conv in model["convs"]:
            lines.append(f"| {model['name']}@{model['resize']} conv {conv['shape']} | {conv['off'] * 1e3:.1f} | "
                         f"{conv['on'] * 1e3:.1f} | {conv['off'] / conv['on']:.2f}x |")
        total_off = sum(c["off"] for c in model["convs"])
        total_on = sum(c["on"] for c in model["convs"])
        if model["convs"]:
            lines.append(f"| **{model['name']}@{model['resize']} all convs** | {total_off * 1e3:.1f} | "
                         f"{total_on * 1e3:.1f} | {total_off / total_on:.2f}x |")
        step = model["step"]
        lines.append(f"| **{model['name']}@{model['resize']} training step** | {step['off'] * 1e3:.0f} | "
                     f"{step['on'] * 1e3:.0f} | {step['off'] / step['on']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accel", description=__doc__.split("\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help="name[:resize],... or 'all' (default: %(default)s; no size = the cpu profile's)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed training steps per variant and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    p.add_argument("--conv-iters", type=int, default=3, help="timed forward+backward runs per conv and round")
    p.add_argument("--repeats", type=int, default=3, help="rounds; off and on alternate within each round")
    p.add_argument("--threads", type=int, default=0, help="MKL/oneDNN threads (0 = physical cores)")
    p.add_argument("--skip-convs", action="store_true", help="time whole training steps only")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    for name in ("batch_size", "steps", "conv_iters", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    models = parse_models(args.models)

    paddle.set_device("cpu")
    threads = args.threads or runtime.physical_cores()
    runtime.set_cpu_threads(threads)
    ok, reason = accel.available()
    if not ok:
        print(f"the oneDNN operator is not usable here: {reason}", file=sys.stderr)
        return 1
    try:
        env = runtime.environment("cpu")
    except AttributeError:  # an older runtime module
        env = {"paddle": paddle.__version__, "cpu_model": runtime.cpu_model()}
    results = {"benchmark": "accel", "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "batch_size": args.batch_size, "threads": threads, "onednn": accel.onednn_version(),
               "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "environment": env,
               "models": []}
    for name, resize in models:
        model = build(name, resize)
        record = {"name": name, "resize": resize, "convs": []}
        if not args.skip_convs:
            for problem in conv_shapes(model, resize, args.batch_size):
                timing = alternate(lambda on: time_conv(problem, on, args.conv_iters), args.repeats)
                record["convs"].append({"shape": describe(problem), "x": problem["x"],
                                        "weight": list(problem["layer"].weight.shape), **timing})
                print(f"{name}@{resize} {describe(problem)}: {timing['off'] * 1e3:.1f} -> {timing['on'] * 1e3:.1f} ms",
                      flush=True)

        def measure(on: bool):
            accel.remove(model)
            if on:
                accel.apply(model, "on", threads=threads, log=None)
            return time_steps(model, name, resize, args.batch_size, args.steps, args.warmup)

        record["step"] = alternate(measure, args.repeats)
        accel.remove(model)
        step = record["step"]
        print(f"{name}@{resize} training step: {step['off'] * 1e3:.0f} -> {step['on'] * 1e3:.0f} ms "
              f"({step['off'] / step['on']:.2f}x)", flush=True)
        results["models"].append(record)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"accel-bs{args.batch_size}"
    text = table(results)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    stem.with_suffix(".md").write_text(
        f"oneDNN accelerator, batch {args.batch_size}, {threads} threads, oneDNN {results['onednn']}, "
        f"Paddle {paddle.__version__}, {results['date']} (python -m benchmarks.accel)\n\n{text}\n")
    print(text)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
