"""Training throughput of one model: d2l-style Paddle vs paddle_cnn vs PyTorch, in one run.

    python -m benchmarks.throughput --model alexnet --resize 96 --batch-size 128 --steps 30

Each contender runs in its own subprocess (``benchmarks/contenders.py``),
started from the environment this command was given minus the CPU-tuning
variables (``MKL_DEBUG_CPU_TYPE``, ``OMP_NUM_THREADS``, ...), so no tuning
leaks from one contender to another:

* ``d2l_paddle`` -- d2l's Paddle path as the book runs it: ``paddle.vision``'s
  FashionMNIST with ``Compose([Resize, ToTensor])`` per image, a
  ``paddle.io.DataLoader`` with 4 worker processes, the architecture as an
  ``nn.Sequential`` built from a layer table (``benchmarks/reference_layers.py``;
  never imported from paddle_cnn, whose import would tune the CPU), plain SGD,
  timed like ``d2l.train_ch6``.
* ``paddle_cnn`` -- ``import paddle_cnn`` (its CPU tuning), our registry's
  model and one epoch of ``Trainer.fit`` over ``steps * batch`` examples.
* ``torch`` -- the same architecture in PyTorch, fp32, a plain loop on
  in-memory tensors with the same on-device batch preparation as ours.
  Skipped, saying so, when torch cannot be imported.
* ``torch+bf16`` / ``paddle_cnn+bf16`` -- the same in bf16, alternated in the
  same rounds: PyTorch under ``torch.autocast("cpu", dtype=torch.bfloat16)``,
  paddle_cnn through its trainer with ``amp="bf16"``. The report gives them no
  fraction of the (fp32) conv ceiling.
* ``torch+compile`` / ``torch+compile+bf16`` -- the torch contender's model
  through ``torch.compile`` (TorchDynamo + inductor, default mode), fp32 or
  under the same autocast; the first warm-up step compiles (its wall time is
  recorded as ``compile_s``), so these contenders need ``--warmup`` >= 1.

Before anything is timed, each contender's model is built once in its own
subprocess and its trainable parameters are compared with our registry's
model; a mismatch stops the command there.

Two figures per contender, in training examples per second:

* ``end_to_end`` -- wall time of the timed steps including whatever feeds
  them (for d2l: waiting for the DataLoader; its workers compete for the same
  cores). The ratios use this figure.
* ``d2l_timed`` -- what d2l's ``train_ch6`` prints: its Timer starts before
  the forward and stops after the optimizer step and the metric update, so
  fetching the batch is outside it. For paddle_cnn and torch the batch is
  prepared on the device inside the step, so both figures are the same timer.

Warm-up steps are excluded; the contenders are alternated round by round
(d2l, ours, torch, d2l, ours, torch, ...) and the median of the rounds is
reported. The ceiling workers time a large fp32 matmul and a large 3x3
convolution in each framework, so the achieved GFLOP/s of a training step can
be put against what this machine's kernels reach at all.

Results: ``<out>/<model>-<resize>-bs<batch>.json`` and a markdown table
beside it (``benchmarks/report.py``); the table is printed too. Numbers come
only from this command.

This module is the command line and the round-robin driver only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

# Taken before this process imports paddle_cnn, whose import tunes os.environ (contender_env
# also removes every tuning variable, so nothing of the parent's tuning reaches a contender).
CLEAN_ENV = dict(os.environ)

from paddle_cnn.runtime import cpu_features, cpu_model, physical_cores  # noqa: E402  (stdlib only; imports no Paddle)

from benchmarks.contenders import DATALOADER_CRASH, FILES, TUNING_VARS  # noqa: E402
from benchmarks.reference_layers import architecture  # noqa: E402
from benchmarks.report import build_report, markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = ("d2l_paddle", "paddle_cnn", "torch")
# NAME+bf16 runs NAME in bf16 (torch: CPU autocast; paddle_cnn: the trainer's --amp bf16), alternated
# in the same rounds as the fp32 contenders; other +VARIANT suffixes only carry --env settings.
BF16_CONTENDERS = ("paddle_cnn", "torch")
# NAME+compile runs NAME's model through torch.compile (inductor); torch+compile+bf16 adds CPU autocast.
COMPILE_CONTENDERS = ("torch",)


def precision_of(name: str) -> str:
    """"bf16" for a contender named NAME+bf16 (or NAME+bf16+...), else "fp32"."""
    return "bf16" if "bf16" in name.split("+")[1:] else "fp32"


def compiled_of(name: str) -> bool:
    """True for a contender named NAME+compile (or NAME+compile+...): its model runs through torch.compile."""
    return "compile" in name.split("+")[1:]


def worker_config(base: dict, name: str) -> dict:
    """What contender ``name``'s timed worker is given: the run's settings, its precision and compilation."""
    return {**base, "precision": precision_of(name), "compile": compiled_of(name)}


def find_data_dir(explicit: Optional[str]) -> Path:
    """The first folder with the four gz files: --data-dir, PADDLE_CNN_DATA, ./data, Paddle's cache, ../shared."""
    places = [("--data-dir", explicit), ("PADDLE_CNN_DATA", CLEAN_ENV.get("PADDLE_CNN_DATA")),
              ("working directory", "data/fashion-mnist"),
              ("paddle cache", str(Path.home() / ".cache" / "paddle" / "dataset" / "fashion-mnist")),
              ("course shared folder", str(REPO.parent / "shared" / "data" / "fashion-mnist"))]
    for kind, folder in places:
        if folder and all((Path(folder) / f).is_file() for f in FILES):
            return Path(folder).resolve()
        if kind == "--data-dir" and folder:
            raise SystemExit(f"--data-dir {folder} does not hold the four gzip IDX files ({', '.join(FILES)})")
    searched = "\n".join(f"  - {folder} ({kind})" for kind, folder in places if folder)
    raise SystemExit("Fashion-MNIST gzip files not found (the d2l contender reads them with paddle.vision). "
                     f"Searched:\n{searched}\nPass --data-dir DIR or set PADDLE_CNN_DATA=DIR; "
                     "`python -m paddle_cnn data check` downloads them.")


def contender_env(name: str, extra: Dict[str, Dict[str, str]]) -> Dict[str, str]:
    """A clean environment for one subprocess: no tuning variables, plus this contender's --env."""
    env = {k: v for k, v in CLEAN_ENV.items() if k not in TUNING_VARS}
    env.update(extra.get(name, {}))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_worker(name: str, cfg: dict, env: Dict[str, str], timeout: float) -> dict:
    """Run one worker of benchmarks/contenders.py in a subprocess; its JSON result, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.contenders", name, "--config", json.dumps(cfg),
               "--result", str(result)]
        try:
            proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0 or not result.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            return {"error": f"exit code {proc.returncode}:\n{tail}"}
        return json.loads(result.read_text())


def torch_available(env: Dict[str, str]) -> Optional[str]:
    """None when torch imports in a clean subprocess, else why not (one line)."""
    proc = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
    return f"torch cannot be imported ({last}); install it with `pip install torch` to add the PyTorch contender"


def parse_env(values: List[str]) -> Dict[str, Dict[str, str]]:
    out: Dict[str, Dict[str, str]] = {}
    for item in values:
        who, _, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not eq or who.split("+")[0] not in CONTENDERS:
            raise SystemExit(f"--env {item!r}: expected CONTENDER[+VARIANT]:KEY=VALUE with CONTENDER one of "
                             f"{', '.join(CONTENDERS)}")
        out.setdefault(who, {})[key] = value
    return out


def check_params(contenders: List[str], base: dict, expected: int, extra_env: Dict[str, Dict[str, str]],
                 timeout: float) -> Dict[str, int]:
    """Build each contender's model once, untimed, and compare its trainable parameters with ``expected``.

    One ``params`` worker per contender (variants share their contender's
    model), each in that contender's own environment. Raises SystemExit,
    before anything is timed, when a model differs or cannot be built.
    """
    counts, problems = {}, []
    for who in dict.fromkeys(c.split("+")[0] for c in contenders):
        res = run_worker("params", {**base, "contender": who}, contender_env(who, extra_env), timeout)
        if "error" in res:
            problems.append(f"{who}: its model could not be built: {res['error']}")
        elif res["params"] != expected:
            problems.append(f"{who}: architecture mismatch: {res['params']:,} trainable parameters, "
                            f"paddle_cnn's {base['model']} has {expected:,}")
        else:
            counts[who] = res["params"]
    if problems:
        raise SystemExit("parameter check failed, nothing was timed:\n" + "\n".join(problems))
    return counts


def host_facts() -> dict:
    """What the parent records of this machine, before the first worker starts."""
    return {"cpu_model": cpu_model(), "cpu_features": cpu_features(), "cores": physical_cores(),
            "logical_cpus": os.cpu_count(),
            "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="alexnet")
    p.add_argument("--resize", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=30, help="timed training steps per contender and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    p.add_argument("--repeats", type=int, default=3, help="rounds; contenders alternate within each round")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help="comma-separated; NAME+VARIANT runs NAME again with that variant's --env settings; "
                        "torch+bf16 and paddle_cnn+bf16 run in bf16 (CPU autocast / the trainer's --amp bf16); "
                        "torch+compile (and torch+compile+bf16) runs the torch model through torch.compile")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--amp", choices=("off", "auto"), default="off",
                   help="paddle_cnn on a GPU: off = fp32 like the others; auto = the trainer's default AMP "
                        "(recorded as the precision that ran: fp16 or bf16 on a GPU, fp32 on the CPU)")
    p.add_argument("--num-workers", type=int, default=4, help="d2l's DataLoader workers (d2l uses 4)")
    p.add_argument("--ceiling", choices=("full", "small", "off"), default="full")
    p.add_argument("--ceiling-repeats", type=int, default=5)
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env", action="append", default=[], metavar="CONTENDER:KEY=VALUE",
                   help="extra environment variable for one contender (experiments; recorded in the JSON)")
    p.add_argument("--tag", default="", help="suffix of the result file names (experiments)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    args = p.parse_args(argv)

    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in contenders if c.split("+")[0] not in CONTENDERS]
    if unknown or not contenders:
        p.error(f"unknown contender(s) {unknown}; choose from {', '.join(CONTENDERS)}")
    no_bf16 = [c for c in contenders if precision_of(c) == "bf16" and c.split("+")[0] not in BF16_CONTENDERS]
    if no_bf16:
        p.error(f"no bf16 variant of {', '.join(no_bf16)}: +bf16 exists for {', '.join(BF16_CONTENDERS)}")
    no_compile = [c for c in contenders if compiled_of(c) and c.split("+")[0] not in COMPILE_CONTENDERS]
    if no_compile:
        p.error(f"no compiled variant of {', '.join(no_compile)}: +compile exists for "
                f"{', '.join(COMPILE_CONTENDERS)} (torch.compile)")
    for name in ("steps", "batch_size", "resize", "repeats"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.warmup < 1 and any(compiled_of(c) for c in contenders):
        p.error("--warmup must be >= 1 with a +compile contender: its first step compiles, and must not be timed")
    if any(not c.startswith("paddle_cnn") for c in contenders):
        architecture(args.model, args.resize)  # fails early, saying which models have a re-implementation
    extra_env = parse_env(args.env)
    out_dir = Path(args.out).resolve()
    data_dir = find_data_dir(args.data_dir)
    host = host_facts()
    log = lambda s: print(s, flush=True)  # noqa: E731

    skipped = {}
    if any(c.startswith("torch") for c in contenders) or args.ceiling != "off":
        reason = torch_available(contender_env("torch", extra_env))
        if reason:
            log(f"torch: skipped -- {reason}")
            skipped.update({c: reason for c in contenders if c.startswith("torch")} or {"torch": reason})
            contenders = [c for c in contenders if not c.startswith("torch")]

    base = {"model": args.model, "resize": args.resize, "batch_size": args.batch_size, "steps": args.steps,
            "warmup": args.warmup, "device": args.device, "seed": args.seed, "data_dir": str(data_dir),
            "num_workers": args.num_workers, "amp": args.amp}
    info = run_worker("info", base, contender_env("paddle_cnn", extra_env), args.timeout)
    if "error" in info:
        raise SystemExit(f"could not inspect {args.model} with paddle_cnn: {info['error']}")
    base["lr"] = info["lr"]
    gflops_per_example = 3 * info["forward_flops"] / 1e9
    log(f"{args.model} @ {args.resize}: {info['params']:,} trainable parameters, "
        f"{info['forward_flops'] / 1e9:.3f} GFLOPs forward, ~{gflops_per_example:.3f} GFLOPs per training example")
    counts = check_params(contenders, base, info["params"], extra_env, args.timeout)
    log(f"parameter check before timing: {', '.join(f'{c} {n:,}' for c, n in counts.items())} -- all agree")

    ceiling: Dict[str, dict] = {}
    frameworks = [("paddle_default", "d2l_paddle"), ("paddle_cnn", "paddle_cnn")]
    if "torch" not in skipped:
        frameworks.append(("torch", "torch"))

    def measure_ceiling(when: str) -> None:
        """One ceiling measurement per framework; before and after the rounds, the best one is kept,
        because a busy neighbour can only slow a measurement down."""
        ccfg = {**base, "ceiling": args.ceiling, "ceiling_repeats": args.ceiling_repeats}
        for label, env_of in frameworks:
            framework = "torch" if label == "torch" else label
            res = run_worker("ceiling", {**ccfg, "framework": framework}, contender_env(env_of, extra_env),
                             args.timeout)
            if "error" in res:
                log(f"ceiling {label} ({when}): failed -- {res['error']}")
                ceiling.setdefault(label, res)
                continue
            log(f"ceiling {label:15s} ({when}) matmul {res['matmul_gflops']:7.1f} GFLOP/s, conv forward "
                f"{res['conv_fwd_gflops']:7.1f}, conv forward+backward {res['conv_train_gflops']:7.1f}")
            best = ceiling.get(label, {})
            runs_ = best.get("runs", []) + [res]
            ceiling[label] = {**res, **{k: max(r[k] for r in runs_) for k in
                                        ("matmul_gflops", "conv_fwd_gflops", "conv_train_gflops")}, "runs": runs_}

    if args.ceiling != "off":
        measure_ceiling("before")

    runs: Dict[str, List[dict]] = {c: [] for c in contenders}
    for r in range(args.repeats):
        for name in contenders:
            res = run_worker(name.split("+")[0], worker_config(base, name),
                             contender_env(name, extra_env), args.timeout)
            crashes = []
            # Paddle 3.3.1's DataLoader workers (fork, 4 of them) sometimes die with SIGSEGV while
            # starting; that is d2l's path as it is, so the round is run again and the crash recorded.
            while "error" in res and DATALOADER_CRASH in res["error"] and len(crashes) < 3:
                crashes.append(res["error"].splitlines()[-1])
                log(f"round {r + 1} {name}: a DataLoader worker crashed ({crashes[-1][:80]}...); running it again")
                res = run_worker(name.split("+")[0], worker_config(base, name),
                                 contender_env(name, extra_env), args.timeout)
            res["dataloader_crashes"] = crashes
            res["round"] = r + 1
            runs[name].append(res)
            if "error" in res:
                log(f"round {r + 1} {name}: FAILED -- {res['error']}")
            else:
                log(f"round {r + 1} {name:11s} end-to-end {res['end_to_end']:8.1f} ex/s, "
                    f"d2l-timed {res['d2l_timed']:8.1f} ex/s  (load {res['loadavg_at_end'][0]:.2f})")

    if args.ceiling != "off":
        measure_ceiling("after")
    report = build_report(args, contenders, runs, info, ceiling, gflops_per_example, skipped, extra_env, host)
    name = f"{args.model}-{args.resize}-bs{args.batch_size}{'-' + args.tag if args.tag else ''}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (out_dir / f"{name}.md").write_text(table)
    log("\n" + table)
    log(f"wrote {out_dir / (name + '.json')} and {name}.md")
    failed = [c for c, rs in runs.items() if any("error" in r for r in rs)]
    for c in failed:
        log(f"{c}: at least one round failed (see its 'errors' in the JSON)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
