"""Replaying a homework folder: re-train the first epochs of each recorded run and compare with its history."""
from __future__ import annotations

import math
from pathlib import Path

from .. import runtime
from .schema import FINAL_KEYS, has_type, load_results, section_folders

# --------------------------------------------------------------------------- replaying a submission
#: What ``verify`` accepts when the replay ran on another machine, Paddle version, thread count or number
#: of processes (floating-point sums then round differently and the runs drift apart): losses within this
#: relative difference, accuracies and other metrics within this absolute difference. The learning rate
#: and the example count are pure arithmetic and must match exactly everywhere.
VERIFY_LOSS_RTOL, VERIFY_METRIC_ATOL = 0.03, 0.02
EXACT_KEYS = ("examples", "lr_end")
SAME_ENVIRONMENT = ("device", "cpu_model", "physical_cores", "paddle", "gpu_name")


def _replay_config(run_: dict, path):
    """The recorded TrainConfig, made to replay here: one process, no VisualDL, the recorded threads."""
    import dataclasses

    from ..config import TrainConfig

    config = dict(run_["config"])
    try:
        cfg = TrainConfig.from_dict(config, strict=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: run {run_['model']!r} has a config this version cannot replay ({e})") from None
    threads = (run_.get("run") or {}).get("threads_per_process")
    if not cfg.cpu_threads and isinstance(threads, int) and threads > 0:
        cfg = dataclasses.replace(cfg, cpu_threads=threads)
    return dataclasses.replace(cfg, nproc=1, log_dir=None)


def compare_epoch(recorded: dict, replayed: dict, exact: bool) -> list:
    """The fields of one epoch where the replay differs beyond what is allowed, as phrases."""
    differ = []
    for key, want in recorded.items():
        if key in ("epoch", "timed_examples", "train_time", "examples_per_sec", "wall_time") \
                or not has_type(want, "number"):
            continue
        got = replayed.get(key)
        if not has_type(got, "number"):
            differ.append(f"{key} recorded {want} but the replay has none")
            continue
        if exact or key in EXACT_KEYS:
            ok = got == want if key != "lr_end" else math.isclose(got, want, rel_tol=1e-9)
        elif "loss" in key:
            ok = math.isclose(got, want, rel_tol=VERIFY_LOSS_RTOL)
        else:
            ok = abs(got - want) <= VERIFY_METRIC_ATOL
        if not ok:
            differ.append(f"{key} recorded {want:.6g}, replayed {got:.6g}")
    return differ


def verify(root, epochs: int = 1, data_dir=None, log=print) -> bool:
    """Re-run the first ``epochs`` epochs of every recorded run and compare them with its history.

    Each run is rebuilt from its recorded config (all ``config.epochs`` kept, so a
    cosine or one-cycle schedule has the same learning rate at every step) and
    stopped after ``epochs`` epochs, on data whose sha256 sums must equal the
    recorded ones. On the same machine (device, CPU model, cores, Paddle
    version), with the same threads and one process, every figure must be
    equal: training here is deterministic. Elsewhere losses must agree within
    ``VERIFY_LOSS_RTOL`` (3%) relative and accuracies and metrics within
    ``VERIFY_METRIC_ATOL`` (0.02) absolute; learning rate and example counts
    exactly. Prints one line per run and a verdict; returns True when all match.
    Bad input (no or malformed results.json, data that differ, a config this
    version cannot replay) raises ValueError before anything is trained.
    """
    from ..data import describe_source, find_data
    from ..trainer import run as train_run

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"--epochs must be a whole number >= 1, got {epochs!r}")
    root = Path(root)
    folders = section_folders(root)
    if not folders:
        raise ValueError(f"{root}: no results.json here or in its sub-folders")
    folder, kind = find_data(data_dir, download_if_missing=False)
    sums = describe_source(folder, kind)["sha256"]
    plan = []
    for section in folders:   # everything checked before the first epoch is trained
        path = section / "results.json"
        for name, run_ in load_results(path)["runs"].items():
            if run_.get("implementation") == "student":   # its network holds the student's code: never run here
                log(f"{name}: not replayed (the student's own network; its program is re-scored by "
                    "`homework grade` instead)")
                continue
            differ = sorted(n for n in set(sums) | set(run_["data"]["sha256"])
                            if sums.get(n) != run_["data"]["sha256"].get(n))
            if differ:
                raise ValueError(f"{path}: run {name!r} was trained on other data than {folder} "
                                 f"({', '.join(differ)} differ{'s' if len(differ) == 1 else ''}); "
                                 "pass --data-dir with the files it names")
            if not run_["history"]:
                raise ValueError(f"{path}: run {name!r} has an empty history: nothing to replay")
            plan.append((name, run_, _replay_config(run_, path)))
    log(f"replaying the first {epochs} epoch{'s' if epochs > 1 else ''} of {len(plan)} run"
        f"{'s' if len(plan) > 1 else ''} on {folder}; tolerance off this machine: losses "
        f"{VERIFY_LOSS_RTOL:.0%} relative, metrics {VERIFY_METRIC_ATOL} absolute")
    failed = []
    for name, run_, cfg in plan:
        n = min(epochs, len(run_["history"]))
        result = train_run(cfg, out=None, data_dir=data_dir, progress=False, log=None, stop_after=n)
        env = runtime.environment(result.device)
        recorded_run = run_.get("run") or {}
        same = ([env.get(k) for k in SAME_ENVIRONMENT] == [run_["environment"].get(k) for k in SAME_ENVIRONMENT]
                and recorded_run.get("threads_per_process") == result.run_info.get("threads_per_process")
                and recorded_run.get("world", 1) == 1
                and (recorded_run.get("accel") or {}).get("enabled") == result.run_info["accel"].get("enabled"))
        problems = [f"epoch {i + 1}: {d}" for i in range(n)
                    for d in compare_epoch(run_["history"][i], result.history[i], exact=same)]
        how = "exactly (same machine, Paddle, threads)" if same else "within tolerance (another machine or setting)"
        shown = ", ".join(f"{k} {result.history[n - 1][k]:.4f}" for k in ("train_loss", "train_metric",
                                                                            *FINAL_KEYS[run_["task"]])
                          if has_type(result.history[n - 1].get(k), "number"))
        if problems:
            failed.append(name)
            log(f"{name}: MISMATCH in {n} epoch{'s' if n > 1 else ''} compared "
                f"{'exactly' if same else 'within tolerance'}: {'; '.join(problems[:4])}"
                + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""))
        else:
            log(f"{name}: {n} epoch{'s match' if n > 1 else ' matches'} {how}: {shown}")
    if failed:
        log(f"verdict: {len(failed)} of {len(plan)} runs do not reproduce their history ({', '.join(failed)})")
    else:
        log("verdict: the run reproduces its recorded history" if len(plan) == 1
            else f"verdict: all {len(plan)} runs reproduce their recorded history")
    return not failed
