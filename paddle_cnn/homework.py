"""Homework folders: run a model's profile and write ``homework/<section>/`` from the measurement.

``paddle-cnn homework run alexnet`` trains with the registry profile and writes

* ``results.json``  -- every measured run of the section (exercise variants beside
  the main model), each with config, data source and sha256, per-epoch history,
  final metrics, parameters and FLOPs, environment and date;
* ``curves.png``    -- learning curves of the section's runs and predictions of the
  model just trained;
* ``README.md``     -- a generated table between two markers, regenerated on every
  run, and the hand-written analysis below it, kept exactly as it is.

``paddle-cnn homework summary`` writes ``homework/README.md`` and ``summary.png``
over all sections. No number in these files is typed by hand.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Optional

from . import atomic, runtime
from .tasks import all_tasks

ROOT = Path(__file__).resolve().parents[1] / "homework"
BEGIN = "<!-- BEGIN GENERATED: written by `paddle-cnn homework run`; edits here are overwritten -->"
END = "<!-- END GENERATED -->"
ANALYSIS_HEADING = "## 分析（手写）"
ANALYSIS_TEMPLATE = (f"{ANALYSIS_HEADING}\n\n"
                     "（在这里用自己的话分析上表：精度与教材参考值相比如何，速度与相邻章节相比如何，"
                     "是什么限制了结果。重新运行 `paddle-cnn homework run` 不会改动这一部分。）\n")
SCHEMA_VERSION = 1
FINAL_KEYS = {name: task.final_keys for name, task in all_tasks().items()}
# Test accuracy that d2l-zh (2nd edition, PyTorch tab; trained on a GPU with its own input size and
# epochs) prints at the end of the section that trains the same model: the targets of the homework.
# Quoted from the course, not measured here; the summary links each page. lenet and lenet_bn are
# absent: their figures were not looked up (this repository is built without internet access) and
# none is quoted rather than one remembered.
_D2L = "https://zh.d2l.ai/chapter_convolutional-modern/"
COURSE_REFERENCE = {
    "alexnet": (0.883, _D2L + "alexnet.html"),
    "vgg11_small": (0.920, _D2L + "vgg.html"),
    "nin": (0.790, _D2L + "nin.html"),
    "googlenet": (0.886, _D2L + "googlenet.html"),
    "lenet_bn_scratch": (0.807, _D2L + "batch-norm.html"),   # the from-scratch BatchNorm, as ours
    "resnet18": (0.893, _D2L + "resnet.html"),
    "densenet": (0.885, _D2L + "densenet.html"),
}
FULL_TEST_SET = 10_000


def interval95(accuracy: float, n: int = FULL_TEST_SET) -> float:
    """Half-width of the 95% normal-approximation interval of an accuracy measured on ``n`` images.

    >>> round(interval95(0.9), 4)
    0.0059
    """
    return 1.96 * (accuracy * (1 - accuracy) / n) ** 0.5


def homework_root(root=None) -> Path:
    """``root``, else ``PADDLE_CNN_HOMEWORK``, else the repository's ``homework/``."""
    return Path(root or os.environ.get("PADDLE_CNN_HOMEWORK") or ROOT)


# --------------------------------------------------------------------------- running
def run(model: str, profile: str = "auto", device: str = "auto", root=None, data_dir=None, resume: bool = False,
        progress: Optional[bool] = None, log=print, **overrides) -> Optional[dict]:
    """Train ``model`` with a registry profile and record the run in its section folder.

    ``overrides`` are TrainConfig fields (e.g. ``nproc``, ``accel``); in a
    multi-process run every process trains and rank 0 alone records (the
    others return None).
    """
    from . import distributed
    from .models import get_spec
    from .trainer import config_for
    from .trainer import run as train_run

    spec = get_spec(model)
    cfg = config_for(model, profile, device=device, **overrides)
    in_repo = homework_root(root).resolve() == ROOT.resolve()
    _refuse_smoke_in_repo(cfg, root)  # before hours of training, not after
    # Checkpoints of the run (for --resume) stay out of the folder that gets committed.
    scratch = (ROOT.parent / "runs" / "homework" if in_repo else homework_root(root) / ".runs") / model
    result = train_run(cfg, out=scratch, resume=resume, data_dir=data_dir, progress=progress, log=log)
    if not distributed.current().is_main:
        return None
    return record(result, spec, root=root)


def _run_entry(result, spec) -> dict:
    from . import exercises
    from .summary import count_flops, count_params

    cfg = result.config
    shape = [1, int(cfg.model_args.get("in_channels", 1)), cfg.resize, cfg.resize]
    with runtime.evaluating(result.model):
        flops = count_flops(result.model, shape)
    entry = result.to_dict()
    entry.update({
        "schema": SCHEMA_VERSION,
        "model": spec.name,
        "section": spec.section,
        "title": {"en": spec.title[0], "zh": spec.title[1]},
        "task": spec.task,
        "profile": cfg.profile,
        "params": count_params(result.model),
        "flops_per_example": flops,
        "environment": runtime.environment(result.device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        # The section's exercises as checked in this process (the notebook's exercise cell), else "not run".
        "exercises": exercises.section_results(spec.section),
    })
    entry["final"]["epochs"] = len(result.history)
    return entry


def _refuse_smoke_in_repo(cfg, root=None) -> None:
    if cfg.profile == "smoke" and homework_root(root).resolve() == ROOT.resolve():
        raise ValueError("homework/ records real measurements: use the cpu, course or auto profile, "
                         "or send smoke runs elsewhere with root=... / PADDLE_CNN_HOMEWORK=DIR")


def record(result, spec=None, root=None) -> dict:
    """Add ``result`` (a FitResult) to its section's results.json, then redraw and retable.

    The notebooks call this with the result they have just trained, so the
    homework folder holds exactly the run the reader saw; the run's entry also
    says whether the section's exercises passed ``exercises.check`` in this
    process (``"exercises": [{"exercise": name, "passed": bool or "not run"}]``). A smoke-profile
    result is refused when it would land in the repository's ``homework/``.
    """
    from .models import get_spec

    _refuse_smoke_in_repo(result.config, root)
    spec = spec or get_spec(result.config.model)
    folder = homework_root(root) / spec.section
    path = folder / "results.json"
    doc = load_results(path) if path.exists() else {"section": spec.section, "runs": {}}
    doc["runs"][spec.name] = _run_entry(result, spec)
    doc["runs"] = {k: doc["runs"][k] for k in _course_order(doc["runs"])}
    # Figure and table first: if drawing fails, the old results.json still matches the old README.
    save_section_figure(doc, result, folder / "curves.png")
    write_section_readme(doc, folder / "README.md")
    atomic.write_json(path, doc)
    return doc


def _course_order(names):
    from .models import REGISTRY

    order = list(REGISTRY)
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def load_results(path) -> dict:
    """Read and :func:`validate` a section's results.json; any problem is a ValueError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    validate(doc, path)
    return doc


# Field -> type of a run in results.json ("number": an int or a float, never a bool). Only these are
# required; other fields (written by newer versions) are allowed and left alone.
RUN_FIELDS = {"schema": int, "model": str, "section": str, "task": str, "profile": str, "config": dict,
              "data": dict, "history": list, "final": dict, "params": int, "flops_per_example": "number",
              "environment": dict, "date": str}
CONFIG_FIELDS = {"model": str, "epochs": int}
DATA_FIELDS = {"name": str, "sha256": dict}
ENVIRONMENT_FIELDS = {"device": str, "cpu_model": str, "physical_cores": int, "paddle": str, "python": str}
HISTORY_FIELDS = {"epoch": int, "train_loss": "number", "train_metric": "number", "examples_per_sec": "number",
                  "wall_time": "number"}
FINAL_FIELDS = {"examples_per_sec": "number", "wall_time": "number", "epochs": int}


def _type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _shown(value) -> str:
    """``a list [1]``: a JSON value's kind and (the start of) its text, for an error line."""
    text = json.dumps(value)
    return f"{_type_name(value)} {text if len(text) <= 40 else text[:37] + '...'}"


def _has_type(value, kind) -> bool:
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def validate(doc: dict, path="results.json") -> None:
    """Check a section's results.json against the schema; raise ValueError naming the first bad field.

    Every required field must be present and of its type (``runs.lenet.history[2].train_loss must be a
    number, got a string``); the message is one line, whatever the document holds.
    """
    def need(obj, spec, where):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: {where or 'the document'} must be an object, got {_shown(obj)}")
        missing = [k for k in spec if k not in obj]
        if missing:
            raise ValueError(f"{path}: {where or 'the document'} lacks {', '.join(missing)}")
        for key, kind in spec.items():
            if not _has_type(obj[key], kind):
                wanted = "a number" if kind == "number" else _type_name(kind())
                raise ValueError(f"{path}: {where + '.' if where else ''}{key} must be {wanted}, got "
                                 f"{_shown(obj[key])}")

    need(doc, {"section": str, "runs": dict}, "")
    if not doc["runs"]:
        raise ValueError(f"{path}: runs is empty")
    for name, run_ in doc["runs"].items():
        where = f"runs.{name}"
        need(run_, RUN_FIELDS, where)
        if run_["task"] not in FINAL_KEYS:
            raise ValueError(f"{path}: {where}.task is {run_['task']!r}, not one of {', '.join(FINAL_KEYS)}")
        need(run_["config"], CONFIG_FIELDS, where + ".config")
        need(run_["data"], DATA_FIELDS, where + ".data")
        bad = [k for k, v in run_["data"]["sha256"].items() if not isinstance(v, str)]
        if bad:
            raise ValueError(f"{path}: {where}.data.sha256.{bad[0]} must be a string")
        need(run_["environment"], ENVIRONMENT_FIELDS, where + ".environment")
        metrics = dict.fromkeys(FINAL_KEYS[run_["task"]], "number")
        need(run_["final"], {**FINAL_FIELDS, **metrics}, where + ".final")
        for i, h in enumerate(run_["history"]):
            need(h, {**HISTORY_FIELDS, **metrics}, f"{where}.history[{i}]")
        if run_["section"] != doc["section"] or run_["model"] != name:
            raise ValueError(f"{path}: run {name!r} is filed under the wrong section or name")


# --------------------------------------------------------------------------- tables
def _device_text(env: dict) -> str:
    if env["device"] == "gpu":
        return f"GPU {env.get('gpu_name', '')}"
    return f"CPU {env['cpu_model']}, {env['physical_cores']} cores"


def _metric_text(run_: dict) -> str:
    """The headline metrics; a test accuracy carries its 95% interval (binomial, over the test images)."""
    final = run_["final"]
    text = ", ".join(f"{k} {final[k]:.3f}" for k in FINAL_KEYS[run_["task"]])
    if run_["task"] == "classification":
        n = run_["config"].get("test_subset") or FULL_TEST_SET
        text += f" ± {interval95(final['test_acc'], n):.3f}"
    return text


def section_table(doc: dict) -> str:
    rows = ["| model | profile | test metric | examples/sec | params | MFLOPs/example | epochs | wall time | "
            "device | Paddle | date |", "|" + " --- |" * 11]
    for name, r in doc["runs"].items():
        rows.append(f"| `{name}` | {r['profile']} | {_metric_text(r)} | {r['final']['examples_per_sec']:.1f} | "
                    f"{r['params']:,} | {r['flops_per_example'] / 1e6:,.1f} | {r['final']['epochs']} | "
                    f"{r['final']['wall_time'] / 60:.1f} min | {_device_text(r['environment'])} | "
                    f"{r['environment']['paddle']} | {r['date'][:10]} |")
    return "\n".join(rows)


def _data_lines(doc: dict) -> str:
    seen, lines = set(), []
    for r in doc["runs"].values():
        key = json.dumps(r["data"]["sha256"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"Data: {r['data']['name']}; sha256 "
                     + ", ".join(f"`{n}` {h[:16]}…" for n, h in r["data"]["sha256"].items()))
    return "\n".join(lines)


def _settings_line(name: str, r: dict) -> str:
    """One run's configuration in a line: everything a reader needs to repeat it.

    The process count is the one that ran (``run.world``): a notebook trains in one process even when the
    profile asks the command line for two.
    """
    c = r["config"]
    momentum = f" momentum {c['momentum']}" if c.get("momentum") else ""
    parts = [f"resize {c['resize']}", f"{c['epochs']} epochs", f"batch {c['batch_size']}",
             f"{c['optimizer']}{momentum} lr {c['lr']} ({c['schedule']})", f"weight decay {c['weight_decay']}",
             f"augment {c['augment']}", f"seed {c['seed']}"]
    for key, label in (("label_smoothing", "label smoothing"), ("erase", "random erasing"), ("ema", "weight EMA")):
        if c.get(key):
            parts.append(f"{label} {c[key]}")
    if c.get("tta", "none") != "none":
        parts.append(f"test-time {c['tta']}")
    processes = r.get("run", {}).get("world", c.get("nproc", 1))
    if processes > 1:
        parts.append(f"{processes} processes")
    if c.get("train_subset"):
        parts.append(f"{c['train_subset']} training examples")
    if c.get("test_subset"):
        parts.append(f"{c['test_subset']} test examples")
    for key in ("model_args", "task_args"):
        if c.get(key):
            parts.append(f"{key} " + ", ".join(f"{k}={v}" for k, v in sorted(c[key].items())))
    if c.get("cpu_threads"):
        parts.append(f"{c['cpu_threads']} MKL thread{'s' if c['cpu_threads'] > 1 else ''}")
    return f"- `{name}`: " + ", ".join(parts)


def generated_block(doc: dict) -> str:
    """The README part that ``homework run`` and ``homework summary`` rewrite from results.json."""
    config_lines = [_settings_line(name, r) for name, r in doc["runs"].items()]
    return "\n".join([BEGIN, "", section_table(doc), "", "Settings:", *config_lines, "",
                      _data_lines(doc), "",
                      "examples/sec counts training steps only (evaluation excluded); every figure above was "
                      "measured by running the code (`paddle-cnn homework run`, or the section's notebook "
                      "through `homework.record`) on the device named in the table.",
                      "", "![learning curves and predictions](curves.png)", "", END])


def write_section_readme(doc: dict, path) -> None:
    """Regenerate the table between the markers; keep everything else, analysis included."""
    from .models import REGISTRY

    path = Path(path)
    block = generated_block(doc)
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            atomic.write_text(path, head + block + tail)
            return
        raise ValueError(f"{path} has no generated-table markers; restore them ({BEGIN!r} ... {END!r}) "
                         "so the table can be regenerated without touching your analysis")
    spec = next(s for s in REGISTRY.values() if s.section == doc["section"])
    text = f"# {spec.title[1]} / {spec.title[0]}\n\n{block}\n\n{ANALYSIS_TEMPLATE}"
    atomic.write_text(path, text)


# --------------------------------------------------------------------------- figures
def save_section_figure(doc: dict, result, path) -> None:
    """Learning curves of every run in the section (top) and predictions of the run just made (bottom).

    One measure per panel (the task's ``curve_panels``): train and test of the
    same measure share a panel, a test metric without a train counterpart gets
    its own. Each model keeps one colour across panels; train is dashed, test solid.
    """
    import matplotlib.pyplot as plt
    import paddle

    from . import plots  # noqa: F401  (non-interactive backend where there is no display)
    from .tasks import get_task, task_of

    task = task_of(result.config.model)
    panels = get_task(next(iter(doc["runs"].values()))["task"]).curve_panels
    rows, cols = task.prediction_grid
    fig = plt.figure(figsize=(max(11, 3.4 * len(panels)), 8 if rows * cols >= 16 else 9.5))
    top = fig.add_gridspec(2, 1, height_ratios=[1, 1.35], hspace=0.3)
    axes = top[0].subgridspec(1, len(panels), wspace=0.45).subplots()
    for ax, (ylabel, lines) in zip(axes, panels):
        for colour, (name, r) in enumerate(doc["runs"].items()):
            epochs = [h["epoch"] for h in r["history"]]
            for key, label in lines:
                ax.plot(epochs, [h[key] for h in r["history"]], "--" if label == "train" else "-",
                        marker="o" if label == "train" else "s", markersize=3, color=f"C{colour}",
                        label=f"{name} {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    env = runtime.environment(result.device)
    fig.suptitle(f"{doc['section']} — measured on {_device_text(env)}; "
                 f"{next(iter(doc['runs'].values()))['data']['name']}", fontsize=9)
    # The prediction cells get a heading naming the model they show (sections hold several runs).
    heading = fig.add_subplot(top[1])
    heading.axis("off")
    heading.set_title(f"test predictions of {result.config.model} (the run recorded last)", fontsize=9)
    bottom = top[1].subgridspec(rows, cols)
    with runtime.evaluating(result.model), paddle.no_grad():
        task.draw_predictions(fig, bottom, result.model, result.data, result.config, count=rows * cols)
    atomic.save_figure(fig, path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- summary
def summary(root=None) -> Path:
    """Write ``homework/README.md`` (all sections in one table) and ``summary.png``.

    Each section README's generated block is rewritten from its results.json as well
    (the hand-written analysis below it is kept), so a change of the table format
    reaches every folder without re-running the measurements.
    """
    import matplotlib.pyplot as plt

    from .models import sections

    root = homework_root(root)
    runs = []
    for section in sections():
        path = root / section / "results.json"
        if path.exists():
            doc = load_results(path)
            write_section_readme(doc, root / section / "README.md")  # tables follow results.json
            runs += list(doc["runs"].values())
    lines = ["# Homework results / 作业结果", "",
             "Generated by `paddle-cnn homework summary` from the `results.json` files; do not edit.", "",
             "| section | model | test metric | d2l-zh test acc | examples/sec | params | epochs | wall time | "
             "profile | device |",
             "|" + " --- |" * 10]
    for r in runs:
        reference = COURSE_REFERENCE.get(r["model"])
        cited = "–" if reference is None else f"[{reference[0]:.3f}]({reference[1]})"
        lines.append(f"| [{r['section']}]({r['section']}/README.md) | `{r['model']}` | {_metric_text(r)} | "
                     f"{cited} | {r['final']['examples_per_sec']:.1f} | {r['params']:,} | {r['final']['epochs']} | "
                     f"{r['final']['wall_time'] / 60:.1f} min | {r['profile']} | {_device_text(r['environment'])} |")
    data_names = sorted({r["data"]["name"] for r in runs})
    devices = sorted({_device_text(r["environment"]) for r in runs})
    lines += ["", f"Data: {'; '.join(data_names) or '–'} (sha256 sums in each section's README). "
              f"Measured on: {'; '.join(devices) or '–'}. examples/sec counts training steps only "
              "(scenes/sec for U-Net and DenseBox). ± is the 95% interval of a test accuracy over its "
              f"{FULL_TEST_SET:,} test images: two runs closer than that are not told apart by this test set.", "",
              "d2l-zh test acc: the test accuracy printed at the end of the d2l-zh (2nd edition, PyTorch) "
              "section that trains the same model, linked; the course trains on a GPU with its own input "
              "size and epochs. A target, not measured here. `lenet` and `lenet_bn` have none quoted: their "
              "figures were not looked up (no internet access where this was built); the other rows marked – "
              "are models d2l-zh does not train (exercise variants, the scene tasks, the best model)."]
    missing = [s for s in sections() if not (root / s / "results.json").exists()]
    if missing:
        lines += ["", "Not yet measured: " + ", ".join(missing) + "."]
    lines += ["", "![headline metric against training speed, one panel per task](summary.png)", ""]
    fig = _summary_figure(runs, devices, data_names)
    atomic.save_figure(fig, root / "summary.png", dpi=100)
    plt.close(fig)
    atomic.write_text(root / "README.md", "\n".join(lines))
    return root / "README.md"


SUMMARY_PANELS = tuple((name, task.metric, *task.summary_labels) for name, task in all_tasks().items())


def _legend_label(run_: dict, several: bool) -> str:
    """A summary legend entry; with runs from several machines it names the run's, since a speed
    is comparable only on one machine.

    >>> env = {"device": "cpu", "cpu_model": "Intel(R) Xeon(R) Processor", "physical_cores": 2}
    >>> _legend_label({"model": "vgg11", "params": 9_000_000, "environment": env}, several=True)
    'vgg11 (9 M params; Intel Xeon Processor)'
    """
    env = run_["environment"]
    machine = env.get("gpu_name", "GPU") if env["device"] == "gpu" else env["cpu_model"]
    where = "; " + machine.replace("(R)", "").replace("(TM)", "") if several else ""
    return f"{run_['model']} ({run_['params'] / 1e6:.2g} M params{where})"


def _summary_figure(runs: list, devices: list, data_names: list):
    """One panel per task (its own headline metric on the y axis), each model a legend entry."""
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    panels = [p for p in SUMMARY_PANELS if any(r["task"] == p[0] for r in runs)] or list(SUMMARY_PANELS[:1])
    widths = [3 if p[0] == "classification" else 1.4 for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * sum(widths) / 1.4 * 0.75, 5.2), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    markers = "osD^v<>phX*P"
    for ax, (task, key, ylabel, xlabel) in zip(axes[0], panels):
        mine = [r for r in runs if r["task"] == task]
        for i, r in enumerate(mine):
            ax.scatter(r["final"]["examples_per_sec"], r["final"][key], s=45, color=plt.cm.tab20(i % 20),
                       marker=markers[i % len(markers)], edgecolor="black", linewidth=0.5,
                       label=_legend_label(r, several=len(devices) > 1))
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())  # 100, 200, 500 rather than 10^2
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(task, fontsize=9)
        ax.grid(alpha=0.3)
        ax.margins(x=0.15, y=0.15)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2 if len(mine) > 4 else 1,
                  frameon=False)
    fig.suptitle(f"Measured homework runs on {'; '.join(devices) or '–'}\n{'; '.join(data_names) or '–'}",
                 fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- checking a submission
def _absolute_paths(value, where="results.json") -> list:
    """Every string in a JSON value that names an absolute path on some machine (where it was found)."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _absolute_paths(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _absolute_paths(v, f"{where}[{i}]")
    elif isinstance(value, str) and (value.startswith(("/", "~")) or (len(value) > 2 and value[1:3] in (":\\", ":/"))):
        if value.count("/") + value.count("\\") >= 2:
            found.append(f"{where} = {value!r}")
    return found


# History fields that are not final figures: the epoch's number, its counts and its timings.
NOT_FINAL = ("epoch", "examples", "timed_examples", "train_time", "wall_time", "lr_end", "examples_per_sec")


def _consistency(run_: dict) -> list:
    """How one (schema-valid) run disagrees with itself, one phrase each."""
    history, final, problems = run_["history"], run_["final"], []
    if not history:
        return ["history is empty"]
    numbers = [h["epoch"] for h in history]
    if numbers != list(range(1, len(history) + 1)):
        shown = ", ".join(map(str, numbers[:12])) + (", ..." if len(numbers) > 12 else "")
        problems.append(f"history epochs are numbered {shown}, not 1..{len(history)}")
    for where, value in (("final.epochs", final["epochs"]), ("config.epochs", run_["config"]["epochs"])):
        if value != len(history):
            problems.append(f"history holds {len(history)} epochs but {where} is {value}")
    last = {k: v for k, v in history[-1].items() if k not in NOT_FINAL}
    figures = {k: v for k, v in final.items() if k not in ("epochs", "examples_per_sec", "wall_time")}
    differ = sorted(k for k in set(last) | set(figures) if last.get(k) != figures.get(k))
    if differ:
        k = differ[0]
        problems.append(f"final.{k} is {figures.get(k, 'missing')} but the last history epoch has "
                        f"{last.get(k, 'none')}" + (f" ({len(differ) - 1} more such fields)" if len(differ) > 1 else ""))
    timed = [h for h in history if h.get("train_time")]
    if timed and all(_has_type(h.get("timed_examples", h.get("examples")), "number") for h in timed):
        rate = sum(h.get("timed_examples", h.get("examples")) for h in timed) / max(1e-12, sum(h["train_time"]
                                                                                              for h in timed))
        if not math.isclose(rate, final["examples_per_sec"], rel_tol=1e-6):
            problems.append(f"final.examples_per_sec is {final['examples_per_sec']:.1f} but the history's timed "
                            f"steps give {rate:.1f}")
    wall = sum(h["wall_time"] for h in history)
    if not math.isclose(wall, final["wall_time"], rel_tol=1e-6, abs_tol=1e-6):
        problems.append(f"final.wall_time is {final['wall_time']:.1f} s but the history's epochs add up to {wall:.1f} s")
    return problems


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_problem(path: Path) -> Optional[str]:
    """Why ``path`` is not a readable PNG image (None when it is one)."""
    if not path.is_file():
        return f"{path}: missing"
    with open(path, "rb") as f:
        if f.read(8) != PNG_MAGIC:
            return f"{path}: not a PNG image (its first bytes are not the PNG signature)"
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.load()
    except ImportError:  # Pillow comes with matplotlib; without it the signature is all we check
        return None
    except Exception as e:  # noqa: BLE001  (any decoder failure means the same to the reader)
        return f"{path}: a damaged PNG image ({type(e).__name__}: {e})"
    return None


def check(root=None) -> list:
    """Problems of a homework folder (one section's or all of ``homework/``), one line each; [] when it holds.

    Checked: results.json matches the schema, every field with its type; each
    run agrees with itself (history epochs numbered 1..N with N = final.epochs =
    config.epochs, final figures equal to the last epoch's, examples/sec and wall
    time the history's); README.md's generated block matches results.json; the
    data is the official files or the course's offline copy, named with its
    sha256 sums; the headline metric is on the full test set; no absolute machine
    path is recorded; curves.png is a PNG image that decodes; in the repository,
    a section whose notebook was executed reads as that notebook printed it
    (:func:`notebook_agreement`).
    """
    from .data import OFFICIAL_MD5, OFFLINE_COPY_NAME, OFFLINE_COPY_SHA256, OFFICIAL_NAME

    root = Path(root) if root is not None else homework_root()
    folders = [root] if (root / "results.json").exists() else sorted(p.parent for p in root.glob("*/results.json"))
    if not folders:
        return [f"{root}: no results.json here or in its sub-folders"]
    problems = []
    for folder in folders:
        path = folder / "results.json"
        try:
            doc = load_results(path)
        except ValueError as e:   # the message names the file and the field
            problems.append(str(e))
            continue
        except OSError as e:
            problems.append(f"{path}: cannot be read ({e.strerror or e})")
            continue
        readme = folder / "README.md"
        if not readme.exists() or generated_block(doc) not in readme.read_text(encoding="utf-8"):
            problems.append(f"{readme}: the generated table does not match results.json "
                            "(run `paddle-cnn homework summary` to regenerate it)")
        if folder.resolve().parent == ROOT.resolve():
            problems += notebook_agreement(folder, doc)
        png = _png_problem(folder / "curves.png")
        if png:
            problems.append(png)
        for name, run_ in doc["runs"].items():
            problems += [f"{path}: run {name!r}: {p}" for p in _consistency(run_)]
            data = run_["data"]
            if data["name"] == OFFLINE_COPY_NAME and data["sha256"] != OFFLINE_COPY_SHA256:
                problems.append(f"{path}: run {name!r} names the offline copy but its sha256 sums differ")
            elif data["name"] == OFFICIAL_NAME and set(data["sha256"]) != set(OFFICIAL_MD5):
                problems.append(f"{path}: run {name!r} names the official files but not all four sums")
            elif data["name"] not in (OFFLINE_COPY_NAME, OFFICIAL_NAME):
                problems.append(f"{path}: run {name!r} used unrecognised data ({data['name']})")
            if run_["task"] == "classification" and run_["config"].get("test_subset"):
                problems.append(f"{path}: run {name!r} is scored on {run_['config']['test_subset']} test images, "
                                "not the full test set")
            problems += [f"{path}: absolute path recorded: {p}" for p in _absolute_paths(run_, f"runs.{name}")]
    return problems


# --------------------------------------------------------------------------- the executed notebooks
EXECUTED = ROOT.parent / "notebooks" / "executed"


def _table_rows(text: str) -> dict:
    """``{model: {column: cell}}`` for the rows of the homework table(s) in ``text``."""
    rows, header = {}, None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
        if not cells:
            header = None
        elif cells[0] == "model":
            header = cells
        elif header and cells[0].startswith("`") and len(cells) == len(header):
            rows[cells[0].strip("`")] = dict(zip(header, cells))
    return rows


def printed_table(notebook: Path) -> dict:
    """The homework table printed by the cell of an executed notebook that calls ``homework.record``."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        source = "".join(cell.get("source", []))
        if cell.get("cell_type") == "code" and "homework.record" in source:
            text = "".join("".join(o.get("text", [])) for o in cell.get("outputs", [])
                           if o.get("output_type") == "stream" and o.get("name") == "stdout")
            return _table_rows(text)
    return {}


def notebook_agreement(folder: Path, doc: dict, executed: Path = EXECUTED) -> list:
    """How a section folder differs from the table its executed notebook printed; [] when they agree.

    Applies to the repository's ``homework/`` when ``notebooks/executed/NN_<section>.ipynb`` exists (written
    by ``tools/execute_notebooks.py``): the notebook recorded the section, so every row of the folder's table
    must read as the notebook printed it, number for number.
    """
    copies = sorted(executed.glob(f"[0-9][0-9]_{doc['section']}.ipynb")) if executed.is_dir() else []
    if not copies:
        return []
    notebook = copies[0]
    shown = f"notebooks/executed/{notebook.name}"
    fix = (f"re-run `python tools/execute_notebooks.py {notebook.name}`, or restore {folder.name}/ from git")
    try:
        printed = printed_table(notebook)
    except (OSError, ValueError) as e:
        return [f"{shown}: cannot be read as a notebook ({e})"]
    if not printed:
        return [f"{shown}: no homework table in the output of its `homework.record` cell; {fix}"]
    now = _table_rows(section_table(doc))
    problems = []
    for model in sorted(set(printed) | set(now)):
        if model not in now or model not in printed:
            where = "the folder" if model not in now else shown
            problems.append(f"{folder}: run `{model}` is missing from {where}; {fix}")
            continue
        differ = [k for k in printed[model] if k in now[model] and printed[model][k] != now[model][k]]
        if differ:
            k = differ[0]
            problems.append(f"{folder}: `{model}` {k} is {now[model][k]} here but {printed[model][k]} in {shown}; "
                            f"{fix}")
    return problems


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

    from .config import TrainConfig

    config = dict(run_["config"])
    try:
        cfg = TrainConfig(**config)
        cfg.validate()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: run {run_['model']!r} has a config this version cannot replay ({e})") from None
    threads = (run_.get("run") or {}).get("threads_per_process")
    if not cfg.cpu_threads and isinstance(threads, int) and threads > 0:
        cfg = dataclasses.replace(cfg, cpu_threads=threads)
    return dataclasses.replace(cfg, nproc=1, log_dir=None)


def _compare(recorded: dict, replayed: dict, exact: bool) -> list:
    """The fields of one epoch where the replay differs beyond what is allowed, as phrases."""
    differ = []
    for key, want in recorded.items():
        if key in ("epoch", "timed_examples", "train_time", "examples_per_sec", "wall_time") \
                or not _has_type(want, "number"):
            continue
        got = replayed.get(key)
        if not _has_type(got, "number"):
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
    from .data import describe_source, find_data
    from .trainer import run as train_run

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"--epochs must be a whole number >= 1, got {epochs!r}")
    root = Path(root)
    folders = [root] if (root / "results.json").exists() else sorted(p.parent for p in root.glob("*/results.json"))
    if not folders:
        raise ValueError(f"{root}: no results.json here or in its sub-folders")
    folder, kind = find_data(data_dir, download_if_missing=False)
    sums = describe_source(folder, kind)["sha256"]
    plan = []
    for section in folders:   # everything checked before the first epoch is trained
        path = section / "results.json"
        for name, run_ in load_results(path)["runs"].items():
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
                    for d in _compare(run_["history"][i], result.history[i], exact=same)]
        how = "exactly (same machine, Paddle, threads)" if same else "within tolerance (another machine or setting)"
        shown = ", ".join(f"{k} {result.history[n - 1][k]:.4f}" for k in ("train_loss", "train_metric",
                                                                            *FINAL_KEYS[run_["task"]])
                          if _has_type(result.history[n - 1].get(k), "number"))
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
