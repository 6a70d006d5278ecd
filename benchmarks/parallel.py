"""One process or several? Training examples/sec of ``paddle-cnn train`` with 1 and N data-parallel processes.

Each contender is the real command line, one epoch of ``steps x batch``
examples of the real data, run in its own subprocess, and its figure is the
trainer's own examples/sec (global examples over the timed steps, warm-up
steps excluded, see trainer.py):

* ``1p x 1t``  one process, one MKL thread;
* ``1p x Ct``  one process, all C physical cores as MKL threads;
* ``Np x 1t``  N processes (``--nproc N``, gloo), one thread each (C / N in general).

Rounds alternate the contenders and the median round is reported, so a slow
moment of the machine hits all of them alike. ``--accel`` is passed through
(default: the trainer's own choice, ``auto``).

    python -m benchmarks.parallel                        # every cpu profile at its own size and batch
    python -m benchmarks.parallel --cases alexnet:96:128 resnet18:96:128 --rounds 3
    python -m benchmarks.parallel --comm                 # where a data-parallel step's extra time goes

Writes ``results/parallel.json`` (``--cases``: ``results/parallel-cases.json``, so
a few chosen cases do not replace the table of every profile; ``--comm``:
``results/parallel-comm.json``) and prints a markdown table. Run it on a quiet machine: another job on the
cores distorts every column.

``--comm`` starts 2 processes (one thread each) that time, in lockstep, a gloo
all-reduce of float32 tensors of several sizes, and a training step of a model
(random data, momentum SGD) as a plain layer and wrapped in
``paddle.DataParallel``: the difference is what synchronising the gradients
costs per step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def cases_from_profiles():
    """(model, resize, batch) of every classification and scene model's cpu profile."""
    import paddle_cnn  # noqa: F401
    from paddle_cnn.models import REGISTRY

    return [(name, spec.profiles["cpu"]["resize"], spec.profiles["cpu"]["batch_size"])
            for name, spec in REGISTRY.items()]


def run_contender(model: str, resize: int, batch: int, nproc: int, threads: int, steps: int, accel: str,
                  data_dir: str | None) -> float:
    """examples/sec of one ``paddle-cnn train`` epoch of ``steps`` global batches."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "paddle_cnn", "train", model, "--profile", "cpu", "--resize", str(resize),
               "--batch-size", str(batch), "--epochs", "1", "--train-subset", str(batch * steps),
               "--test-subset", "100", "--schedule", "constant", "--nproc", str(nproc), "--cpu-threads", str(threads),
               "--accel", accel, "--out", out, "--no-progress"]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        result = json.loads((Path(out) / "results.json").read_text())
        return result["final"]["examples_per_sec"]


COMM_SIZES = (1_000, 62_000, 1_000_000, 11_200_000)   # floats: tiny, LeNet, a mid layer, ResNet-18
COMM_MODELS = (("lenet_relu", 28, 128), ("resnet18", 28, 128))


def _comm_worker(steps: int, out: str) -> None:
    """One of 2 processes: all-reduce times per size, plain vs DataParallel step times per model (ms)."""
    import paddle
    import paddle.distributed as dist

    from paddle_cnn import runtime
    from paddle_cnn.config import TrainConfig
    from paddle_cnn.models.factory import build_model

    runtime.set_cpu_threads(1)
    dist.init_parallel_env()
    result = {"allreduce_ms": {}, "step_ms": {}}
    for n in COMM_SIZES:
        t = paddle.ones([n])
        for _ in range(5):
            dist.all_reduce(t)
        start = time.perf_counter()
        for _ in range(steps):
            dist.all_reduce(t)
        result["allreduce_ms"][str(n)] = (time.perf_counter() - start) / steps * 1e3
    for name, resize, batch in COMM_MODELS:
        cfg = TrainConfig(model=name, resize=resize, accel="off")
        model = build_model(cfg)
        from paddle_cnn import accel

        accel.apply(model, "auto", threads=1, log=None)
        opt = paddle.optimizer.Momentum(0.01, 0.9, parameters=model.parameters())
        x, y = paddle.randn([batch // 2, 1, resize, resize]), paddle.randint(0, 10, [batch // 2])
        times = {}
        for label, net in (("plain", model), ("DataParallel", paddle.DataParallel(model))):
            def step():
                loss = paddle.nn.functional.cross_entropy(net(x), y)
                loss.backward()
                opt.step()
                opt.clear_grad()
            for _ in range(3):
                step()
            dist.barrier()
            start = time.perf_counter()
            for _ in range(max(3, steps // 5)):
                step()
            times[label] = (time.perf_counter() - start) / max(3, steps // 5) * 1e3
        result["step_ms"][f"{name}@{resize} batch {batch // 2} per process"] = times
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(result))


def comm(out_json: str, steps: int) -> None:
    import paddle_cnn  # noqa: F401
    from paddle_cnn import launcher, runtime

    with tempfile.TemporaryDirectory() as tmp:
        part = str(Path(tmp) / "comm.json")
        from benchmarks.parallel import _comm_worker as worker  # importable by name in the spawned processes

        launcher.spawn(worker, 2, "cpu", steps, part)
        result = json.loads(Path(part).read_text())
    import paddle

    doc = {"command": "python -m benchmarks.parallel --comm", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "cpu": runtime.cpu_model(), "paddle": paddle.__version__, **result}
    Path(out_json).write_text(json.dumps(doc, indent=1))
    print("| all-reduce of N floats (2 processes, gloo) | ms |\n| --- | --- |")
    for n, ms in result["allreduce_ms"].items():
        print(f"| {int(n):,} | {ms:.2f} |")
    print("\n| training step (2 processes, 1 thread each) | plain ms | DataParallel ms |\n| --- | --- | --- |")
    for case, t in result["step_ms"].items():
        print(f"| {case} | {t['plain']:.1f} | {t['DataParallel']:.1f} |")
    print(f"wrote {out_json}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", help="MODEL:RESIZE:BATCH (default: every cpu profile)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24, help="global batches per timed epoch (3 more are warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accel", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--data-dir", default=os.environ.get("PADDLE_CNN_DATA"))
    parser.add_argument("--out", default=None, help="default results/parallel.json (--cases: parallel-cases.json, "
                        "--comm: parallel-comm.json)")
    parser.add_argument("--comm", action="store_true", help="time the all-reduce and a DataParallel step instead")
    args = parser.parse_args(argv)
    if args.comm:
        return comm(args.out or str(HERE / "results" / "parallel-comm.json"), 50)
    args.out = args.out or str(HERE / "results" / ("parallel-cases.json" if args.cases else "parallel.json"))

    from paddle_cnn import runtime

    cores = runtime.physical_cores()
    cases = ([(m, int(r), int(b)) for m, r, b in (c.split(":") for c in args.cases)] if args.cases
             else cases_from_profiles())
    contenders = [("1p x 1t", 1, 1), (f"1p x {cores}t", 1, cores),
                  (f"{args.nproc}p x {max(1, cores // args.nproc)}t", args.nproc, max(1, cores // args.nproc))]
    rows = []
    print(f"# {runtime.cpu_text(runtime.cpu_model(), runtime.cpu_features())}, {cores} cores, {args.steps} timed steps, median of {args.rounds} rounds\n"
          "| model | resize | batch | " + " | ".join(n for n, _, _ in contenders) + " | N procs vs best 1 proc |\n"
          "| --- | --- | --- | " + " | ".join("---" for _ in contenders) + " | --- |", flush=True)
    for model, resize, batch in cases:
        rates = {name: [] for name, _, _ in contenders}
        for _ in range(args.rounds):
            for name, nproc, threads in contenders:
                rates[name].append(run_contender(model, resize, batch, nproc, threads, args.steps + 3, args.accel,
                                                 args.data_dir))
        medians = {name: statistics.median(v) for name, v in rates.items()}
        best_single = max(medians[contenders[0][0]], medians[contenders[1][0]])
        row = {"model": model, "resize": resize, "batch": batch, "rounds": rates, "median": medians,
               "speedup_vs_best_single": medians[contenders[2][0]] / best_single}
        rows.append(row)
        print(f"| {model} | {resize} | {batch} | " + " | ".join(f"{medians[n]:.1f}" for n, _, _ in contenders)
              + f" | {row['speedup_vs_best_single']:.2f}x |", flush=True)
    import paddle

    doc = {"command": "python -m benchmarks.parallel " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": runtime.cpu_model(), "cpu_features": runtime.cpu_features(), "cores": cores,
           "paddle": paddle.__version__, "steps": args.steps, "accel": args.accel,
           "contenders": [n for n, _, _ in contenders], "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
