"""``paddle-cnn doctor``: what this machine is, in a form a student can paste into a question.

It reports the Paddle build (CUDA or CPU, with CUDA and cuDNN versions), the
GPUs (name, memory, compute capability, fp16/bf16), the CPU (model, physical
cores, the container's CPU quota) and the MKL/OpenMP settings paddle_cnn made,
where the Fashion-MNIST files are and whether their checksums match a known
copy, whether the output folders can be written, and which optional packages
(VisualDL, PyTorch) are installed.

Every probe is guarded: a failing probe becomes "unknown (reason)" in the
report, never a traceback, because doctor is what people run when something
is already wrong.

>>> from paddle_cnn import doctor
>>> print(doctor.one_line(doctor.report()))     # doctest: +SKIP
paddle 3.3.1 (CPU build) · AMD EPYC 7B13 · 2 cores · data: offline copy ✓
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from .runtime import cgroup_cpu_limit  # noqa: F401  (re-exported: doctor reports it)
from . import __version__, runtime

TUNING_VARIABLES = ("MKL_NUM_THREADS", "OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "KMP_BLOCKTIME")
OPTIONAL_PACKAGES = ("visualdl", "torch")
CGROUP_ROOT = "/sys/fs/cgroup"
GIB = 2**30


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _probe(fn: Callable, *args):
    """``fn(*args)``, or "unknown (reason)" when it raises."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001  (doctor reports every failure instead of raising)
        return f"unknown ({_reason(e)})"


def _unknown(value) -> bool:
    return isinstance(value, str) and value.startswith("unknown (")


# --------------------------------------------------------------------------- CPU
def _cpu() -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    return {"model": _probe(runtime.cpu_model), "physical_cores": _probe(runtime.physical_cores),
            "logical_cpus": os.cpu_count(), "usable_cpus": affinity,
            "cgroup_cpu_limit": _probe(cgroup_cpu_limit)}


def _tuning() -> dict:
    return {"environment": {k: os.environ.get(k) for k in TUNING_VARIABLES},
            "paddle_cnn": {k: (dict(v) if isinstance(v, dict) else v) for k, v in runtime.TUNING.items()}}


# --------------------------------------------------------------------------- Paddle and GPUs
# Every device question goes through runtime's device queries (the boundary tests mock); Paddle's probes
# that abort the process on a GPU build without a GPU are asked there only after Paddle counts a GPU.
def _paddle() -> dict:
    import paddle

    info = {"version": paddle.__version__, "compiled_with_cuda": _probe(runtime.cuda_build)}
    versions = _probe(runtime.cuda_versions)
    for key in ("cuda", "cudnn"):
        info[key] = versions if _unknown(versions) else versions[key]
    if info["compiled_with_cuda"] is True:
        known = isinstance(info["cuda"], str) and not _unknown(info["cuda"])
        info["build"] = f"CUDA {info['cuda']}" if known else "CUDA"
    elif info["compiled_with_cuda"] is False:
        info["build"] = "CPU"
    else:
        info["build"] = info["compiled_with_cuda"]
    return info


def _capability_flags(major: int, minor: int) -> dict:
    """fp16/bf16 by compute capability: fp16 tensor cores from Volta (7.0), bf16 from Ampere (8.0)."""
    return {"fp16": (major, minor) >= (5, 3), "fp16_tensor_cores": major >= 7, "bf16": major >= 8}


def _gpu(index: int) -> dict:
    gpu: dict = {"index": index}
    props = _probe(runtime.gpu_properties, index)
    if _unknown(props):
        gpu.update(name=props, memory_bytes=props, compute_capability=props)
        return gpu
    gpu.update(name=props.name, memory_bytes=props.total_memory, compute_capability=f"{props.major}.{props.minor}")
    gpu.update(_capability_flags(props.major, props.minor))
    said = _probe(runtime.gpu_precision, index)  # Paddle's own answer, where it has one
    for flag in ("fp16", "bf16"):
        gpu[f"paddle_says_{flag}"] = said if _unknown(said) else said.get(flag)
    return gpu


def _gpus() -> dict:
    if runtime.cuda_build() is not True:
        return {"count": 0, "devices": [], "note": "CPU build of Paddle"}
    count = runtime.gpu_count()
    note = "" if count else "GPU build, no GPU visible (driver, CUDA_VISIBLE_DEVICES?): training uses the CPU"
    return {"count": count, "devices": [_guarded(_gpu, i) for i in range(count)], "note": note}


def _guarded(fn: Callable, *args) -> dict:
    """A report section: ``fn(*args)``, or ``{"error": reason}`` when it fails."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        return {"error": f"unknown ({_reason(e)})"}


# --------------------------------------------------------------------------- data and folders
def _data(data_dir) -> dict:
    from . import data

    try:
        folder, kind = data.find_data(data_dir, download_if_missing=False)
    except data.DataError as e:
        return {"found": False, "error": str(e)}
    source = data.describe_source(folder, kind)
    copy = {data.OFFICIAL_NAME: "official", data.OFFLINE_COPY_NAME: "offline copy"}.get(source["name"])
    path = source.get("path") or str(Path(folder).resolve())
    return {"found": True, "path": path, "found_via": kind, "name": source["name"],
            "copy": copy or "unrecognised", "verified": copy is not None, "sha256": source["sha256"]}


def writable(folder) -> dict:
    """Can files be created in ``folder`` (or, when missing, in the parent it would be created in)?

    Tries a real temporary file, since permission bits lie for root and on
    some mounts; nothing is left behind and no folder is created.
    """
    path = Path(folder).absolute()
    probe, exists = path, path.exists()
    if exists and not path.is_dir():
        return {"path": str(path), "exists": True, "writable": False, "reason": "exists but is not a folder"}
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return {"path": str(path), "exists": False, "writable": False,
                "reason": f"cannot be created: {probe} is a file, not a folder"}
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".paddle_cnn_doctor_"):
            pass
    except OSError as e:
        where = "" if probe == path else f" (in {probe}, where it would be created)"
        return {"path": str(path), "exists": exists, "writable": False,
                "reason": f"{e.strerror or _reason(e)}{where}"}
    return {"path": str(path), "exists": exists, "writable": True,
            "reason": "" if exists else f"will be created in {probe}"}


def _optional(name: str) -> dict:
    """Installed version of a package, found without importing it (torch takes seconds to import)."""
    from importlib import metadata, util

    try:
        return {"installed": True, "version": metadata.version(name)}
    except metadata.PackageNotFoundError:
        return {"installed": util.find_spec(name) is not None, "version": None}


# --------------------------------------------------------------------------- the report
def report(data_dir=None, out_dirs: Sequence = ("runs", "homework")) -> dict:
    """Everything doctor knows, as a JSON-serialisable dict; never raises."""
    return {
        "paddle_cnn": __version__,
        "python": sys.version.split()[0],
        "platform": _probe(platform.platform),
        "paddle": _guarded(_paddle),
        "gpus": _guarded(_gpus),
        "cpu": _guarded(_cpu),
        "tuning": _guarded(_tuning),
        "data": _guarded(_data, data_dir),
        "outputs": [_guarded(writable, d) for d in out_dirs],
        "optional": {name: _guarded(_optional, name) for name in OPTIONAL_PACKAGES},
    }


def _gib(n) -> str:
    return f"{n / GIB:.1f} GiB" if isinstance(n, (int, float)) else str(n)


def _gpu_line(gpu: dict) -> str:
    if "error" in gpu:
        return gpu["error"]
    parts = [str(gpu.get("name")), _gib(gpu.get("memory_bytes")), f"compute {gpu.get('compute_capability')}"]
    if "bf16" in gpu:
        parts.append("precision: " + (", ".join(p for p in ("fp16", "bf16") if gpu.get(p)) or "fp32 only"))
    return f"gpu:{gpu.get('index')}  " + ", ".join(parts)


def _data_line(d: dict) -> str:
    if not d.get("found"):
        if d.get("found") is None:  # the probe itself failed
            return str(d.get("error"))
        # find_data's message names every folder searched and how to supply the files
        lines = str(d["error"]).splitlines()
        return "\n".join(["not found ✗  " + lines[0]] + lines[1:])
    mark = "✓ checksums match" if d["verified"] else "✗ checksums match no known copy"
    return f"{d['path']} (via {d['found_via']}): {d['name']} {mark}"


def _outputs_line(o: dict) -> str:
    if "error" in o:
        return o["error"]
    state = "writable" if o["writable"] else "NOT writable"
    return f"{o['path']}: {state}" + (f" ({o['reason']})" if o.get("reason") else "")


def format_table(rep: dict) -> str:
    """The report for people: one labelled line per fact."""
    rows = [("paddle_cnn", f"{rep.get('paddle_cnn')}, Python {rep.get('python')}, {rep.get('platform')}")]
    p = rep.get("paddle", {})
    if "error" in p:
        rows.append(("Paddle", p["error"]))
    else:
        rows.append(("Paddle", f"{p['version']}, {p['build']} build"
                     + (f" (cuDNN {p['cudnn'] or 'unknown'})" if p.get("compiled_with_cuda") is True else "")))
    g = rep.get("gpus", {})
    if "error" in g:
        rows.append(("GPU", g["error"]))
    elif not g.get("devices"):
        rows.append(("GPU", f"none: {g.get('note') or 'no device'}"))
    else:
        rows += [("GPU", _gpu_line(gpu)) for gpu in g["devices"]]
    c = rep.get("cpu", {})
    if "error" in c:
        rows.append(("CPU", c["error"]))
    else:
        limit = c["cgroup_cpu_limit"]
        quota = "none" if limit is None else (f"{limit:g} CPUs" if isinstance(limit, float) else limit)
        cpu = (f"{c['model']}, {c['physical_cores']} physical cores, {c['usable_cpus']} usable "
               f"of {c['logical_cpus']} logical, cgroup quota: {quota}")
        rows.append(("CPU", cpu))
    t = rep.get("tuning", {})
    if "error" in t:
        rows.append(("CPU tuning", t["error"]))
    else:
        env = " ".join(f"{k}={v if v is not None else 'unset'}" for k, v in t["environment"].items())
        ours = t["paddle_cnn"]
        if ours.get("paddle_imported_first"):
            note = "paddle was imported before paddle_cnn: tuning not applied"
        else:
            note = f"set by paddle_cnn: {', '.join(ours.get('applied', {})) or 'nothing'}"
        rows.append(("CPU tuning", f"{env} ({note})"))
    rows.append(("Data", _data_line(rep.get("data", {}))))
    rows += [("Output", _outputs_line(o)) for o in rep.get("outputs", [])]
    opt = []
    for name, o in rep.get("optional", {}).items():
        if "error" in o:
            opt.append(f"{name} {o['error']}")
        else:
            opt.append(f"{name} {o['version'] or 'installed'}" if o["installed"] else f"{name} not installed")
    rows.append(("Optional", ", ".join(opt)))
    width = max(len(label) for label, _ in rows)
    indent = "\n" + " " * (width + 2)  # continuation lines line up under the first
    return "\n".join(f"{label:<{width}}  {indent.join(str(value).splitlines())}" for label, value in rows)


def one_line(rep: dict) -> str:
    """A one-line summary for a notebook's setup cell."""
    p = rep.get("paddle", {})
    parts = [f"paddle {p['version']} ({p['build']} build)" if "version" in p else "paddle: unknown"]
    devices = rep.get("gpus", {}).get("devices") or []
    parts += [f"{g.get('name')} {_gib(g.get('memory_bytes'))}" for g in devices if "error" not in g]
    if p.get("compiled_with_cuda") is True and rep.get("gpus", {}).get("count") == 0:
        parts.append("no GPU visible")
    c = rep.get("cpu", {})
    parts.append(str(c.get("model", "CPU unknown")))
    cores = f"{c.get('physical_cores')} cores"
    if isinstance(c.get("cgroup_cpu_limit"), float):
        cores += f" (quota {c['cgroup_cpu_limit']:g})"
    parts.append(cores)
    d = rep.get("data", {})
    if d.get("found"):
        parts.append(f"data: {d['copy']} {'✓' if d['verified'] else '✗'}")
    else:
        parts.append("data: not found ✗" if d.get("found") is False else "data: unknown")
    blocked = [o["path"] for o in rep.get("outputs", []) if o.get("writable") is False]
    if blocked:
        parts.append("not writable: " + ", ".join(blocked))
    return " · ".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``paddle-cnn doctor [--json] [--data-dir DIR]``; prints the report, returns 0."""
    parser = argparse.ArgumentParser(prog="paddle-cnn doctor",
                                     description="Describe this machine, Paddle build, GPUs, data and output folders "
                                                 "(paste the output into a question).")
    parser.add_argument("--json", action="store_true", help="print the report as JSON, for machines")
    parser.add_argument("--data-dir", default=None, help="the Fashion-MNIST folder to check "
                                                         "(default: where training would look)")
    parser.add_argument("--out", action="append", default=None, metavar="DIR",
                        help="an output folder to check for writing (repeatable; default: runs and homework)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    rep = report(args.data_dir, tuple(args.out) if args.out else ("runs", "homework"))
    print(json.dumps(rep, indent=2, default=str) if args.json else format_table(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
