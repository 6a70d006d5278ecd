"""The throughput benchmark's report: the JSON record of a run and the markdown table made from it.

Pure functions of what the workers returned; nothing is measured or imported
from a framework here.
"""
from __future__ import annotations

import datetime
import platform
import statistics
from typing import Dict, List, Optional

# The ceiling workers time fp32 kernels only, so a step that ran in another precision
# has no ceiling to be a fraction of (an fp16/bf16 step could show more than 100%).
CEILING_PRECISION = "fp32"


def median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def contender_entry(name: str, rounds: List[dict]) -> dict:
    """One contender's medians, per-round figures, errors and how it ran, from its rounds' worker results."""
    ok = [r for r in rounds if "error" not in r]
    entry = {"end_to_end": median([r["end_to_end"] for r in ok]), "d2l_timed": median([r["d2l_timed"] for r in ok]),
             "rounds_end_to_end": [r["end_to_end"] for r in ok], "rounds_d2l_timed": [r["d2l_timed"] for r in ok],
             "errors": [r["error"] for r in rounds if "error" in r],
             "dataloader_crashes_retried": [c for r in rounds for c in r.get("dataloader_crashes", [])]}
    if ok:
        first = ok[0]
        entry.update(params=first["params"], precision=first["precision"], versions=first["versions"],
                     threads=first.get("threads"), cpu_s_per_round=[r["cpu_s"] for r in ok],
                     loadavg_at_end=[r["loadavg_at_end"] for r in ok],
                     train_loss=[r["train_loss"] for r in ok])
        if first.get("compile"):  # torch+compile: the backend, and each round's first (compiling) step
            entry["compile"] = first["compile"]
            entry["compile_s_per_round"] = [r.get("compile_s") for r in ok]
        if first.get("tf32") is not None:  # GPU runs: whether fp32 GEMMs/convolutions may use TF32
            entry["tf32"] = first["tf32"]
        if name.startswith("d2l_paddle"):
            entry["num_workers"] = first["num_workers"]
            entry["paddle_cnn_imported"] = first["paddle_cnn_imported"]
        entry["env_given"] = first["env_given"]
    return entry


def build_report(args, contenders: List[str], runs: Dict[str, List[dict]], info: dict, ceiling: Dict[str, dict],
                 gflops_per_example: float, skipped: Dict[str, str], extra_env: Dict[str, Dict[str, str]],
                 host: dict) -> dict:
    """The JSON record of a run.

    ``args``: the command's options (model, resize, batch_size, steps, warmup,
    repeats, device); ``runs``: each contender's worker results, one per round;
    ``info``: the info worker's result; ``host``: what the parent measured of
    this machine (cpu_model, cpu_features, cores, logical_cpus, loadavg_at_start).
    """
    results, environment_env = {}, {}
    for name in contenders:
        results[name] = contender_entry(name, runs[name])
        ok = [r for r in runs[name] if "error" not in r]
        if ok:
            environment_env[name] = ok[0]["env"]
    for name, reason in skipped.items():
        if name in contenders or name.startswith("torch"):
            results[name] = {"skipped": reason}
    ceil_ok = {k: v for k, v in ceiling.items() if "error" not in v}
    ceiling_gflops = max((v["conv_train_gflops"] for v in ceil_ok.values()), default=None)
    ours = results.get("paddle_cnn", {}).get("end_to_end")

    def ratio(other):
        theirs = results.get(other, {}).get("end_to_end")
        return ours / theirs if ours and theirs else None

    def fastest_torch(ours_name, wanted):
        """Ours against the fastest PyTorch contender (eager or compiled) of the same precision."""
        mine = results.get(ours_name, {})
        theirs = {n: r["end_to_end"] for n, r in results.items()
                  if n.split("+")[0] == "torch" and r.get("end_to_end") and r.get("precision") == wanted}
        if not mine.get("end_to_end") or mine.get("precision") != wanted or not theirs:
            return None
        best = max(theirs, key=theirs.get)
        return {"ours": ours_name, "theirs": best, "ratio": mine["end_to_end"] / theirs[best]}

    achieved = {n: (r["end_to_end"] * gflops_per_example if r.get("end_to_end") else None)
                for n, r in results.items()}
    fraction = {n: (achieved[n] / ceiling_gflops if ceiling_gflops and achieved[n]
                    and r.get("precision") == CEILING_PRECISION else None)
                for n, r in results.items()}
    env_info = info["environment"]
    environment = {
        "device": args.device, "cpu_model": host["cpu_model"], "cpu_features": host.get("cpu_features"),
        "cores": host["cores"],
        "logical_cpus": host["logical_cpus"], "python": platform.python_version(), "platform": platform.platform(),
        "versions": {"paddle": env_info.get("paddle"),
                     "torch": next((r["versions"]["torch"] for r in results.values() if "torch" in r.get("versions", {})),
                                   None)},
        "env_per_contender": environment_env, "paddle_cnn_tuning": info.get("tuning"),
        "extra_env": extra_env, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg_at_start": host["loadavg_at_start"],
    }
    if args.device == "gpu":
        environment["gpu_name"] = env_info.get("gpu_name")
    return {
        "model": args.model, "resize": args.resize, "batch_size": args.batch_size, "steps": args.steps,
        "warmup": args.warmup, "repeats": args.repeats, "lr": info["lr"], "params": info["params"],
        "environment": environment, "contenders": results,
        "ratios": {"vs_d2l": ratio("d2l_paddle"), "vs_torch": ratio("torch"),
                   "vs_fastest_torch": {p: fastest_torch(n, p) for p, n in (("fp32", "paddle_cnn"),
                                                                            ("bf16", "paddle_cnn+bf16"))}},
        "gflops_per_example": gflops_per_example,
        "gflops_per_example_note": "3 x forward FLOPs of Conv2D and Linear layers (2 per multiply-accumulate; "
                                   "backward ~ 2 x forward); paddle_cnn.summary.count_flops",
        "ceiling_gflops": ceiling_gflops,
        "ceiling_note": "best framework's GFLOP/s of forward+backward of a 3x3 convolution (3 x forward FLOPs), "
                        "fp32: median of --ceiling-repeats timings, measured before and after the rounds, best kept; "
                        "no fraction for a contender that ran in another precision",
        "ceiling": ceiling, "achieved_gflops": achieved,
        "fraction_of_ceiling": fraction,
    }


def _fmt(x, spec=".1f", none="–"):
    return none if x is None else format(x, spec)


def markdown(rep: dict) -> str:
    """The report as the markdown table printed and written beside the JSON."""
    from paddle_cnn.runtime import cpu_text  # stdlib only (a report written before cpu_features: the model alone)

    env = rep["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [f"# Training throughput: {rep['model']}, {rep['resize']}x{rep['resize']}, batch {rep['batch_size']} "
             f"({env['device']})", "",
             f"Measured {env['date']} on {cpu_text(env['cpu_model'], env.get('cpu_features'))} "
             f"({env['cores']} cores), {versions}. "
             f"{rep['steps']} timed steps after {rep['warmup']} warm-up steps per run; {rep['repeats']} rounds with the "
             "contenders alternated; medians. Written by `python -m benchmarks.throughput`. The tuning column shows "
             "the variables as each contender ran with them, after its framework loaded (Paddle itself sets "
             "OMP_NUM_THREADS=1 when it is unset).", "",
             "| contender | end-to-end ex/s | d2l-timed ex/s | end-to-end per round | GFLOP/s | of conv ceiling "
             "| tuning env |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for name, r in rep["contenders"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped | | {r['skipped']} | | | |")
            continue
        rounds = ", ".join(f"{v:.1f}" for v in r["rounds_end_to_end"])
        tuning = " ".join(f"{k}={v}" for k, v in env["env_per_contender"].get(name, {}).items()) or "(none)"
        frac = rep["fraction_of_ceiling"].get(name)
        label = name if r.get("precision", CEILING_PRECISION) == CEILING_PRECISION else f"{name} ({r['precision']})"
        lines.append(f"| {label} | {_fmt(r['end_to_end'])} | {_fmt(r['d2l_timed'])} | {rounds} "
                     f"| {_fmt(rep['achieved_gflops'].get(name))} | {_fmt(frac, '.0%')} | {tuning} |")
    ratios = rep["ratios"]
    lines += ["", f"paddle_cnn vs d2l-style Paddle: **{_fmt(ratios['vs_d2l'], '.2f')}x**; "
                  f"vs PyTorch: **{_fmt(ratios['vs_torch'], '.2f')}x** (end-to-end examples/sec)."]
    for prec, best in (ratios.get("vs_fastest_torch") or {}).items():
        if best:  # against the best PyTorch offers in that precision, eager or torch.compile
            lines.append(f"{best['ours']} vs the fastest PyTorch {prec} contender ({best['theirs']}): "
                         f"**{best['ratio']:.2f}x**.")
    compiled = [f"{n} {', '.join(_fmt(s) for s in r['compile_s_per_round'])} s"
                for n, r in rep["contenders"].items() if r.get("compile_s_per_round")]
    if compiled:
        lines.append(f"First (compiling, untimed) step per round: {'; '.join(compiled)}.")
    lines += ["",
              f"{rep['params']:,} trainable parameters; {rep['gflops_per_example']:.3f} GFLOPs per training example "
              "(3 x forward, Conv2D + Linear)."]
    if rep["ceiling"]:
        lines += ["", "Ceiling on this machine (GFLOP/s, fp32; median of repeats, best of the measurements "
                      "before and after the rounds):", "",
                  "| framework | matmul | conv 3x3 forward | conv 3x3 forward+backward |", "| --- | ---: | ---: | ---: |"]
        for label, c in rep["ceiling"].items():
            if "error" in c:
                lines.append(f"| {label} | failed | | |")
            else:
                lines.append(f"| {label} | {c['matmul_gflops']:.1f} | {c['conv_fwd_gflops']:.1f} "
                             f"| {c['conv_train_gflops']:.1f} |")
        shapes = next((c["shapes"] for c in rep["ceiling"].values() if "shapes" in c), None)
        if shapes:
            conv = shapes["conv"]
            lines += ["", f"matmul {'x'.join(map(str, shapes['matmul']))}; conv batch {conv['N']}, "
                          f"{conv['C_in']}->{conv['C_out']} channels, {conv['H']}x{conv['W']}. "
                          "paddle_default: Paddle without our tuning (as d2l runs it); paddle_cnn: after "
                          "`import paddle_cnn`."]
    return "\n".join(lines) + "\n"
