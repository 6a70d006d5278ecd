"""What a reader sees of a homework folder: the README's generated table, the learning curves, the summary.

Every line here is drawn from a results.json (through :mod:`.schema`); nothing
is measured and no number is typed by hand.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .. import atomic, runtime
from ..metrics import interval95  # noqa: F401  (homework.interval95: the notebooks call it)
from ..tasks import all_tasks, get_task
from .schema import FULL_TEST_SET, README_MAX_BYTES, folder_problem, homework_root, load_results, read_text, run_key

BEGIN = "<!-- BEGIN GENERATED: written by `paddle-cnn homework run`; edits here are overwritten -->"
END = "<!-- END GENERATED -->"
ANALYSIS_HEADING = "## 分析（手写）"
ANALYSIS_TEMPLATE = (f"{ANALYSIS_HEADING}\n\n"
                     "（在这里用自己的话分析上表：精度与教材参考值相比如何，速度与相邻章节相比如何，"
                     "是什么限制了结果。重新运行 `paddle-cnn homework run` 不会改动这一部分。）\n")
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


# --------------------------------------------------------------------------- tables
def _device_text(env: dict) -> str:
    if env["device"] == "gpu":
        return f"GPU {env.get('gpu_name', '')}"
    return f"CPU {env['cpu_model']}, {env['physical_cores']} cores"


def metric_text(run_: dict) -> str:
    """The headline metrics as the run's task writes them (a test accuracy with its 95% interval)."""
    return get_task(run_["task"]).metric_text(run_["final"], run_["config"].get("test_subset"))


def section_table(doc: dict) -> str:
    rows = ["| model | profile | test metric | examples/sec | params | MFLOPs/example | epochs | wall time | "
            "device | Paddle | date |", "|" + " --- |" * 11]
    for name, r in doc["runs"].items():
        rows.append(f"| `{name}` | {r['profile']} | {metric_text(r)} | {r['final']['examples_per_sec']:.1f} | "
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


def settings_line(name: str, r: dict) -> str:
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


def student_lines(doc: dict) -> list:
    """Who recorded the folder (student id and seed) and whether the student's own network is recorded.

    A section whose exercise block slots into its network (:data:`.student.SLOTS`) and whose folder holds
    no student run says so: the student run is missing.
    """
    from .student import SLOTS

    lines = []
    who = doc.get("student")
    if isinstance(who, dict) and who.get("id"):
        lines.append(f"Student: `{who['id']}`, seed {who.get('seed')} (every run here trained with it).")
    section = doc.get("section")
    if section in SLOTS:
        mine = [name for name, r in doc["runs"].items() if r.get("implementation") == "student"]
        if mine:
            for name in mine:
                r = doc["runs"][name]
                outcome = (r.get("exercise") or {}).get("outcome", "not run")
                digest = (r.get("source") or {}).get("sha256", "")
                exercise = (r.get("exercise") or {}).get("name") or SLOTS[section].exercise
                lines.append(f"Student run `{name}`: {SLOTS[section].model} built with the student's "
                             f"`{exercise}`; exercise check {outcome}; source sha256 "
                             f"{digest[:16]}…")
        else:
            lines.append(f"Student run: missing (学生自己的网络尚未记录). The section's network built with the "
                         f"student's own `{'` or `'.join(SLOTS[section].exercises)}` has not been recorded; only the "
                         "reference run is here.")
    return lines


def student_comparison(doc: dict) -> str:
    """One Chinese sentence reading the student run against the reference run of ``doc`` (the task's metric).

    The two accuracies differ by noise when the gap is inside the 95% interval of a difference of two
    accuracies measured on the same number of test images; the sentence says whether the two runs had
    the same settings (then only the block differed). '' when the folder has no pair to compare.
    """
    runs = doc.get("runs", {})
    pairs = [(name[: -len(".student")], name) for name in runs if name.endswith(".student")]
    lines = []
    for ref_name, mine_name in pairs:
        ref, mine = runs.get(ref_name), runs[mine_name]
        key = get_task(mine["task"]).metric if ref is not None else None
        if key is None or key not in ref["final"] or key not in mine["final"]:
            continue
        a, b = ref["final"][key], mine["final"][key]
        gap = b - a
        if key == "test_acc":
            n = mine["config"].get("test_subset") or FULL_TEST_SET
            half = 1.96 * ((a * (1 - a) + b * (1 - b)) / n) ** 0.5
            verdict = (f"相差 {gap:+.4f}，在两次测量之差的 95% 区间 ±{half:.4f} 之内，是噪声：这个测试集分不出两者"
                       if abs(gap) <= half else
                       f"相差 {gap:+.4f}，超出两次测量之差的 95% 区间 ±{half:.4f}")
        else:   # no interval for this metric: the gap alone, without a verdict on noise
            verdict = f"相差 {gap:+.4f}（这个指标没有算区间，一次训练说明不了两者谁更好）"
        same = {k: v for k, v in ref["config"].items() if k != "model"} == \
            {k: v for k, v in mine["config"].items() if k != "model"}
        what = "两次训练的配置和随机种子相同，只有块不同" if same else "两次训练的配置不同（见下面的 Settings）"
        label = "测试精度" if key == "test_acc" else key
        lines.append(f"你的网络 `{mine_name}` 的{label} {b:.4f}，参考实现 `{ref_name}` {a:.4f}，{verdict}；"
                     f"{what}。")
    return "\n".join(lines)


def generated_block(doc: dict) -> str:
    """The README part that ``homework run`` and ``homework summary`` rewrite from results.json."""
    config_lines = [settings_line(name, r) for name, r in doc["runs"].items()]
    students = student_lines(doc)
    return "\n".join([BEGIN, "", section_table(doc), "", *students, *([""] if students else []),
                      "Settings:", *config_lines, "",
                      _data_lines(doc), "",
                      "examples/sec counts training steps only (evaluation excluded); every figure above was "
                      "measured by running the code (`paddle-cnn homework run`, or the section's notebook "
                      "through `homework.record`) on the device named in the table.",
                      "", "![learning curves and predictions](curves.png)", "", END])


def readme_parts(path):
    """``(head, tail)`` around the generated block of an existing section README; None when there is none.

    Read as untrusted input (a regular file of at most ``README_MAX_BYTES``); a README without both markers
    is a ValueError, so that nothing regenerates over a hand-written analysis.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return None
    text = read_text(path, README_MAX_BYTES)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head, rest.split(END, 1)[1]
    raise ValueError(f"{path} has no generated-table markers; restore them ({BEGIN!r} ... {END!r}) "
                     "so the table can be regenerated without touching your analysis")


def write_section_readme(doc: dict, path) -> None:
    """Regenerate the table between the markers; keep everything else, analysis included."""
    from ..models import REGISTRY

    path = Path(path)
    block = generated_block(doc)
    parts = readme_parts(path)
    if parts is not None:
        atomic.write_text(path, parts[0] + block + parts[1])
        return
    spec = next(s for s in REGISTRY.values() if s.section == doc["section"])
    text = f"# {spec.title[1]} / {spec.title[0]}\n\n{block}\n\n{ANALYSIS_TEMPLATE}"
    atomic.write_text(path, text)


# --------------------------------------------------------------------------- figures
def draw_curves(doc: dict, grid, env: dict, model: str):
    """The part of a section's figure drawn from results.json alone: ``(fig, bottom, heading)``.

    The learning curves of every run (top) and the heading of the prediction cells of ``model``; ``bottom``
    is the empty ``grid`` (rows, cols) of those cells. ``env`` is the environment named in the title.
    """
    import matplotlib.pyplot as plt

    from .. import plots  # noqa: F401  (non-interactive backend where there is no display)
    from ..tasks import get_task

    panels = get_task(next(iter(doc["runs"].values()))["task"]).curve_panels
    rows, cols = grid
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
    fig.suptitle(f"{doc['section']} — measured on {_device_text(env)}; "
                 f"{next(iter(doc['runs'].values()))['data']['name']}", fontsize=9)
    # The prediction cells get a heading naming the model they show (sections hold several runs).
    heading = fig.add_subplot(top[1])
    heading.axis("off")
    heading.set_title(f"test predictions of {model} (the run recorded last)", fontsize=9)
    return fig, top[1].subgridspec(rows, cols), heading


def save_section_figure(doc: dict, result, path) -> None:
    """Learning curves of every run in the section (top) and predictions of the run just made (bottom).

    One measure per panel (the task's ``curve_panels``): train and test of the
    same measure share a panel, a test metric without a train counterpart gets
    its own. Each model keeps one colour across panels; train is dashed, test solid.
    """
    import matplotlib.pyplot as plt
    import paddle

    from ..tasks import task_of

    task = task_of(result.config.model)
    rows, cols = task.prediction_grid
    fig, bottom, _ = draw_curves(doc, task.prediction_grid, runtime.environment(result.device), result.config.model)
    with runtime.evaluating(result.model), paddle.no_grad():
        task.draw_predictions(fig, bottom, result.model, result.data, result.config, count=rows * cols)
    atomic.save_figure(fig, path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- summary
# What a reader of the chapter's site sees of homework/README.md above the table, in the site's language
# (d2l-zh 2nd edition's terms: 测试精度, 样本/秒, 轮); the cells below stay as results.json has them.
GENERATED_LINE = "本文件由 `paddle-cnn homework summary` 根据各节的 `results.json` 生成，请勿手动编辑。"
SUMMARY_COLUMNS = ("章节", "模型", "测试指标", "d2l-zh 测试精度", "样本/秒", "参数量", "轮数", "用时", "配置",
                   "设备")
def summary(root=None) -> Path:
    """Write ``homework/README.md`` (all sections in one table) and ``summary.png``.

    Each section README's generated block is rewritten from its results.json as well
    (the hand-written analysis below it is kept), so a change of the table format
    reaches every folder without re-running the measurements.
    """
    import matplotlib.pyplot as plt

    from ..models import sections

    root = homework_root(root)
    runs = []
    for section in sections():
        path = root / section / "results.json"
        if os.path.lexists(path):
            problem = folder_problem(root / section, root)
            if problem:
                raise ValueError(problem)
            doc = load_results(path)
            write_section_readme(doc, root / section / "README.md")  # tables follow results.json
            runs += list(doc["runs"].values())
    lines = ["# Homework results / 作业结果", "",
             GENERATED_LINE, "", "| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + " --- |" * len(SUMMARY_COLUMNS)]
    for r in runs:
        reference = COURSE_REFERENCE.get(r["model"])
        cited = "–" if reference is None else f"[{reference[0]:.3f}]({reference[1]})"
        shown = run_key(r["model"], r.get("implementation", "reference"))   # a student run: `<model>.student`
        lines.append(f"| [{r['section']}]({r['section']}/README.md) | `{shown}` | {metric_text(r)} | "
                     f"{cited} | {r['final']['examples_per_sec']:.1f} | {r['params']:,} | {r['final']['epochs']} | "
                     f"{r['final']['wall_time'] / 60:.1f} min | {r['profile']} | {_device_text(r['environment'])} |")
    data_names = sorted({r["data"]["name"] for r in runs})
    devices = sorted({_device_text(r["environment"]) for r in runs})
    lines += ["", f"Data: {'; '.join(data_names) or '–'} (sha256 sums in each section's README). "
              f"Measured on: {'; '.join(devices) or '–'}. examples/sec counts training steps only "
              "(scenes/sec for U-Net and DenseBox). ± is the 95% interval of a test accuracy over its "
              f"{FULL_TEST_SET:,} test images: two runs closer than that are not told apart by this test set.", "",
              f"{SUMMARY_COLUMNS[3]}: the test accuracy printed at the end of the d2l-zh (2nd edition, PyTorch) "
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
    widths = [get_task(p[0]).summary_width for p in panels]
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


