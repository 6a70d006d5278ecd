"""Grading a class: ``paddle-cnn homework grade SUBMISSIONS_DIR --out grades.csv``.

``SUBMISSIONS_DIR`` holds one entry per student: an archive made by
``paddle-cnn homework pack`` (``*.zip``) or the folder it unpacks to. Each is
graded in a separate process with a time limit; every recorded run's test
accuracy is re-measured by loading its exported program (Paddle's standard
operators only, read against an allow-list first) on the course test set or a
teacher's own (``--test-data``). Nothing a student wrote is imported or run.

The result is one CSV row per student and section (:data:`COLUMNS`) and a
``feedback/<student>.md`` per student. Whatever a submission holds (a zip bomb,
links out of the folder, a 1 GB file, a FIFO, missing or damaged files, a
program that takes too long) ends as a row with its reason: the batch always
finishes and writes the CSV. The points scheme and the flags are explained in
``docs/TEACHERS.md``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from .. import atomic
from .intake import Unreadable, check_name, copy_folder, read_json, read_text, unpack_zip
from ..tasks import get_task

COLUMNS = ("student", "section", "status", "run", "claimed", "rescored", "exercise", "own_network", "flags",
           "points", "max_points", "reason")
STATUSES = ("ok", "failed check", "timeout", "unreadable")
CLAIM_TOLERANCE = 0.003          # |claimed - re-scored| test accuracy on the same test images
DEFAULT_TIMEOUT = 600.0
# Points of a section (docs/TEACHERS.md): the reference run re-scored as claimed, the exercise passed, the
# student's own network recorded and re-scored as claimed. Sections without a block slot: 5 + 5.
POINTS_SLOT = {"reference": 3, "exercise": 3, "own_network": 4}
POINTS_NO_SLOT = {"reference": 5, "exercise": 5, "own_network": 0}
POINTS_NO_EXERCISE = {"reference": 10, "exercise": 0, "own_network": 0}     # a section without an exercise
FLAGS = {
    "claim_contradicted": "a claimed test accuracy differs from the re-scored one by more than 0.003",
    "edited": "results edited after recording (a manifest or recorded sum does not match)",
    "copied_source": "the student's source is identical to another student's",
    "copied_analysis": "the hand-written analysis is identical to another student's",
    "copied_history": "a training history is identical to another student's, recorded under a different seed",
    "foreign_data": "trained on data that are not the course's (sha256 not the official files' nor the shared copy's)",
    "seed_mismatch": "a run was not trained with the seed of the student id it is filed under",
    "not_rescored": "a run could not be re-scored from its program (no program, a refused operator, or not "
                    "a classification run)",
    "sample_answer": "the student's source is the course's sample answer (tools/answers/, the executed chapter's)",
}
# The sample answers the executed chapter runs (tools/answer_key.py); present in a checkout of the repository.
ANSWERS = Path(__file__).resolve().parents[2] / "tools" / "answers"


def sample_answer_sums(folder: Path = ANSWERS) -> dict:
    """Normalised SHA-256 of each course sample answer -> its file name ({} without the folder)."""
    from ..exercises.catalogue import cell_text
    from .student import source_sha256

    return {source_sha256(cell_text(path)): path.name for path in (sorted(folder.glob("*.py")) if folder.is_dir()
                                                                     else [])}


# --------------------------------------------------------------------------- one submission (in a worker)
def _history_fingerprint(run_: dict) -> Optional[str]:
    """SHA-256 of a run's per-epoch losses and metrics (timings left out): equal only for the same training."""
    rows = []
    for h in run_.get("history") or []:
        if isinstance(h, dict):
            rows.append([h.get(k) for k in sorted(h) if k not in ("wall_time", "train_time", "examples_per_sec")])
    if not rows:
        return None
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def _analysis(readme: Optional[str]) -> Optional[str]:
    """SHA-256 of the hand-written part of a section README (after the generated block), whitespace collapsed;
    None when it is empty or still the template."""
    from .render import ANALYSIS_HEADING, ANALYSIS_TEMPLATE, END

    if not readme or END not in readme:
        return None
    text = readme.split(END, 1)[1]
    words = " ".join(text.replace(ANALYSIS_HEADING, " ").split())
    template = " ".join(ANALYSIS_TEMPLATE.replace(ANALYSIS_HEADING, " ").split())
    if not words or words == template:
        return None
    return hashlib.sha256(words.encode("utf-8")).hexdigest()


class Context:
    """What a worker loads once: the test set, its sums, the grading policy."""

    def __init__(self, test_data=None, accept_smoke: bool = False):
        from ..data import OFFLINE_COPY_SHA256, describe_source, find_data, load_fashion_mnist

        folder, kind = find_data(test_data, download_if_missing=False)
        self.arrays = load_fashion_mnist(folder, download_if_missing=False, allow_unknown=True)
        self.sums = describe_source(folder, kind)["sha256"]
        # The course's data: the shared offline copy, the files graded with, and (with a teacher's own test set)
        # the Fashion-MNIST found as for training. The official files' SHA-256 sums are known only from a copy
        # found here: the package holds their md5 sums alone.
        self.course_sums = [dict(OFFLINE_COPY_SHA256), dict(self.sums)]
        if test_data is not None:
            try:
                found, how = find_data(None, download_if_missing=False)
                self.course_sums.append(describe_source(found, how)["sha256"])
            except Exception:  # noqa: BLE001 - no other copy here: the two above are all there is
                pass
        self.course_test = test_data is None or self._same_test(self.sums, OFFLINE_COPY_SHA256)
        self.accept_smoke = accept_smoke
        self._data = {}

    @staticmethod
    def _same_test(a: dict, b: dict) -> bool:
        keys = [k for k in a if k.startswith("t10k")]
        return bool(keys) and all(a.get(k) == b.get(k) for k in keys)

    def data(self, resize: int, test_subset, run_sums: dict):
        """The test split a run is re-scored on: the run's own subset when the grader's test set is the one it
        was scored on, else the grader's whole test set."""
        from ..data import FashionMNIST

        same = self._same_test(self.sums, run_sums)
        key = (resize, test_subset if same else None)
        if key not in self._data:
            self._data[key] = FashionMNIST(resize=resize, arrays=self.arrays, train_subset=10, test_subset=key[1])
        return self._data[key], same


def _rescore(folder: Path, run_: dict, ctx: Context) -> tuple:
    """(re-scored accuracy or None, phrase why not, tolerance used)."""
    from .programs import ProgramError, score

    if run_.get("task") != "classification":
        return None, f"{run_.get('task')} runs are not re-scored (classification only)", None
    prog = run_.get("program")
    if not isinstance(prog, dict) or not isinstance(prog.get("path"), str):
        return None, "no exported program recorded", None
    rel = Path(prog["path"])
    if rel.is_absolute() or ".." in rel.parts:
        return None, "its program path leaves the folder", None
    cfg = run_["config"]
    resize, subset = cfg.get("resize"), cfg.get("test_subset")
    if not isinstance(resize, int) or not 1 <= resize <= 512 or not (subset is None or isinstance(subset, int)):
        return None, "its config has an unusable resize or test_subset", None
    data, same = ctx.data(resize, subset, run_["data"].get("sha256") or {})
    try:
        acc = score(folder / rel, data, cfg.get("tta", "none") if cfg.get("tta") in ("none", "flip") else "none")
    except ProgramError as e:
        return None, str(e).replace(str(folder) + "/", ""), None
    except Exception as e:  # noqa: BLE001 - Paddle's loader on a damaged program: one phrase
        return None, f"its program does not load or run ({type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''})", None
    if same:
        tolerance = CLAIM_TOLERANCE
    else:   # another test set: two estimates of the same accuracy, each with its binomial spread
        from .render import interval95

        claimed = run_["final"].get("test_acc", 0.0)
        tolerance = max(CLAIM_TOLERANCE, math.hypot(interval95(claimed, subset or 10_000),
                                                    interval95(acc, data.num_test)))
    return acc, "", tolerance


def _section(folder: Path, ctx: Context, student: Optional[str], seed: Optional[int], manifest_bad: list) -> dict:
    """Everything graded about one section folder of a submission."""
    from .check import _consistency, _impossible, recorded_sums_problems
    from .schema import load_results
    from ..exercises import section_exercises
    from .student import SLOTS, seed_for, source_sha256

    section = folder.name
    out = {"section": section, "problems": [], "flags": set(), "runs": {}, "fingerprints": {}}
    try:
        read_json(folder / "results.json", f"{section}/results.json")     # size and depth, before the parser
        doc = load_results(folder / "results.json", folder)               # schema; NaN and infinities refused
    except (Unreadable, ValueError, OSError) as e:
        out["problems"].append(str(e))
        return out
    if manifest_bad:
        out["flags"].add("edited")
        out["problems"] += manifest_bad
    for name, run_ in doc["runs"].items():
        info = {"claimed": run_["final"].get("test_acc"), "implementation": run_.get("implementation", "reference"),
                "problems": [], "notes": []}
        problems = [f"run {name}: {p}" for p in _impossible(run_) + _consistency(run_)]
        sums = [f"run {name}: {p}" for p in recorded_sums_problems(folder, run_)]
        if sums or "sha256" not in run_:
            out["flags"].add("edited")
            sums = sums or [f"run {name}: recorded without its sha256 (not made by this course's record)"]
        info["problems"] += problems + sums
        if run_["profile"] == "smoke" and not ctx.accept_smoke:
            info["problems"].append(f"run {name}: a smoke-profile run (seconds of training), not a homework run")
        if get_task(run_["task"]).full_test_set and run_["config"].get("test_subset") and not ctx.accept_smoke:
            info["problems"].append(f"run {name}: scored on {run_['config']['test_subset']} test images, not all")
        data_sums = run_["data"].get("sha256") or {}
        if not any(all(data_sums.get(k) == v for k, v in ref.items()) for ref in ctx.course_sums):
            out["flags"].add("foreign_data")
            info["notes"].append(f"run {name} trained on {run_['data'].get('name')!r}, not the course's data")
        run_seed = run_["config"].get("seed")
        if student and (run_seed != seed_for(student) or (run_.get("student") or {}).get("id") != student):
            out["flags"].add("seed_mismatch")
            info["notes"].append(f"run {name} trained with seed {run_seed}, student {student}'s is {seed_for(student)}")
        acc, why, tolerance = _rescore(folder, run_, ctx)
        info["rescored"] = acc
        if acc is None:
            out["flags"].add("not_rescored")
            info["notes"].append(f"run {name} not re-scored: {why}")
        elif isinstance(info["claimed"], (int, float)) and abs(acc - info["claimed"]) > tolerance:
            out["flags"].add("claim_contradicted")
            info["notes"].append(f"run {name} claims test acc {info['claimed']:.4f}, its program re-scores "
                                 f"{acc:.4f}")
        if info["implementation"] == "student":
            info["exercise"] = (run_.get("exercise") or {}).get("outcome", "not run")
            src = run_.get("source") or {}
            text = read_text(folder / src["file"]) if isinstance(src.get("file"), str) and ".." not in src["file"] \
                else None
            out["fingerprints"]["source"] = source_sha256(text) if text is not None else src.get("sha256")
        else:
            passed = [e.get("passed") for e in run_.get("exercises") or [] if isinstance(e, dict)]
            info["exercise"] = ("passed" if passed and all(p is True for p in passed) else
                                "failed" if any(p is False for p in passed) else "not run")
        out["fingerprints"].setdefault("history", {})[name] = [_history_fingerprint(run_), run_seed]
        out["runs"][name] = info
    out["fingerprints"]["analysis"] = _analysis(read_text(folder / "README.md"))
    out["slot"] = section in SLOTS
    out["exercise"] = bool(section_exercises(section))
    return out


def _manifest(root: Path) -> tuple:
    """(manifest, problems, student, seed) of an unpacked submission."""
    from .student import seed_for, student_id

    manifest = read_json(root / "manifest.json", "manifest.json")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise Unreadable("manifest.json is not a submission manifest (made by `paddle-cnn homework pack`)")
    try:
        student = student_id(manifest.get("student") if isinstance(manifest.get("student"), str) else "?")
    except ValueError:
        raise Unreadable(f"manifest.json names no usable student id ({str(manifest.get('student'))[:40]!r})") from None
    problems = {}
    listed = set()
    for name, want in manifest["files"].items():
        try:
            rel = check_name(str(name))
        except Unreadable as e:
            raise Unreadable(f"manifest.json: {e}") from None
        listed.add(rel)
        section = rel.split("/")[0]
        path = root / rel
        digest = want.get("sha256") if isinstance(want, dict) else None
        if not path.is_file():
            problems.setdefault(section, []).append(f"{rel} is listed in the manifest but missing")
        else:
            from .programs import file_sha256

            if file_sha256(path) != digest:
                problems.setdefault(section, []).append(f"{rel} differs from its manifest sum (edited after packing)")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != "manifest.json" and rel not in listed:
            problems.setdefault(rel.split("/")[0], []).append(f"{rel} is not in the manifest (added after packing)")
    return manifest, problems, student, seed_for(student)


def grade_one(entry: str, ctx: Context, work: Path) -> dict:
    """Grade the submission at ``entry`` (a zip or a folder); a dict the parent turns into rows."""
    src = Path(entry)
    dest = Path(tempfile.mkdtemp(dir=work, prefix="sub-"))
    try:
        mode = os.lstat(src).st_mode
        if stat.S_ISDIR(mode):
            copy_folder(src, dest)
        elif stat.S_ISREG(mode):
            unpack_zip(src, dest)
        else:
            raise Unreadable("not a zip archive or a folder")
        manifest, bad, student, seed = _manifest(dest)
        sections = sorted(p.parent for p in dest.glob("*/results.json"))
        if not sections:
            raise Unreadable("no <section>/results.json in it")
        names = {f.name for f in sections}
        loose = [p for key, found in bad.items() if key not in names for p in found]   # files outside the sections
        graded = [_section(f, ctx, student, seed, bad.get(f.name, []) + loose) for f in sections]
        here = str(dest) + os.sep          # the private copy's path means nothing to the reader of a row
        for s in graded:
            s["problems"] = [p.replace(here, "") for p in s["problems"]]
            for r in s["runs"].values():
                r["problems"] = [p.replace(here, "") for p in r["problems"]]
                r["notes"] = [p.replace(here, "") for p in r["notes"]]
        return {"student": student, "seed": seed, "sections": graded}
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _worker(conn, test_data, accept_smoke, work, threads: int = 0) -> None:
    """A grading process: load the test set once, then grade what the parent sends until it sends None.

    ``threads``: its share of the cores (MKL threads), so that one slow submission does not starve the
    others' time limits."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    import warnings

    warnings.simplefilter("ignore")
    try:
        ctx = Context(test_data, accept_smoke)
        if threads:
            from ..runtime import set_cpu_threads

            set_cpu_threads(threads)
    except Exception as e:  # noqa: BLE001 - the parent reports it once, in one line
        conn.send({"fatal": f"{type(e).__name__}: {e}"})
        return
    conn.send({"ready": True})
    while True:
        entry = conn.recv()
        if entry is None:
            return
        try:
            result = grade_one(entry, ctx, Path(work))
            for s in result["sections"]:
                s["flags"] = sorted(s["flags"])
            conn.send({"entry": entry, "result": result})
        except Unreadable as e:
            conn.send({"entry": entry, "unreadable": str(e)})
        except Exception as e:  # noqa: BLE001 - a submission never ends the batch
            conn.send({"entry": entry, "unreadable": f"{type(e).__name__}: {str(e)[:160]}"})


# --------------------------------------------------------------------------- the batch (parent)
def submissions(folder: Path) -> list:
    """The entries of ``folder`` graded one per student: ``*.zip`` files and sub-folders, and whatever else
    is there (each of those becomes an unreadable row)."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; name the folder holding the students' archives or folders")
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _label(entry: Path) -> str:
    name = entry.name[:-4] if entry.name.lower().endswith(".zip") else entry.name
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64] or "unnamed"


class _Pool:
    """``jobs`` worker processes; each submission has ``timeout`` seconds from the moment a warm worker takes it."""

    def __init__(self, jobs: int, test_data, accept_smoke: bool, work: str):
        import multiprocessing as mp

        from ..runtime import physical_cores

        self.mp = mp.get_context("spawn")
        self.args = (test_data, accept_smoke, work, max(1, physical_cores() // jobs))
        self.jobs = jobs
        self.workers = []

    def _start(self):
        import importlib

        os.environ.setdefault("GLOG_minloglevel", "2")   # Paddle's C++ INFO lines, read when a worker loads it
        parent, child = self.mp.Pipe()
        proc = self.mp.Process(target=_worker, args=(child, *self.args), daemon=True)
        # The child imports our package (CPU tuning, zlib) before Paddle, not the caller's main script.
        main = sys.modules["__main__"]
        sys.modules["__main__"] = importlib.import_module("paddle_cnn._spawn_main")
        try:
            proc.start()
        finally:
            sys.modules["__main__"] = main
        child.close()
        return {"proc": proc, "conn": parent, "ready": False, "task": None, "since": None}

    def run(self, entries: list, timeout: float, on_done) -> None:
        from multiprocessing.connection import wait

        todo = list(entries)
        self.workers = [self._start() for _ in range(min(self.jobs, len(todo)))]
        try:
            while todo or any(w["task"] for w in self.workers):
                for w in self.workers:
                    if w["ready"] and w["task"] is None and todo:
                        w["task"], w["since"] = todo.pop(0), time.monotonic()
                        w["conn"].send(str(w["task"]))
                waiting = [w["conn"] for w in self.workers]
                ready = wait(waiting + [w["proc"].sentinel for w in self.workers], timeout=0.2)
                for w in list(self.workers):
                    if w["conn"] in ready:
                        try:
                            msg = w["conn"].recv()
                        except (EOFError, OSError):
                            msg = None
                        if msg is None:
                            self._died(w, on_done)
                            continue
                        if "fatal" in msg:
                            raise ValueError(f"the grading process cannot start: {msg['fatal']}")
                        if msg.get("ready"):
                            w["ready"] = True
                            continue
                        task, w["task"] = w["task"], None
                        on_done(task, msg)
                    elif w["proc"].sentinel in ready and not w["proc"].is_alive():
                        self._died(w, on_done)
                    elif w["task"] is not None and time.monotonic() - w["since"] > timeout:
                        on_done(w["task"], {"timeout": timeout})
                        self._replace(w)
        finally:
            for w in self.workers:
                try:
                    w["conn"].send(None)
                except (OSError, BrokenPipeError):
                    pass
            for w in self.workers:
                w["proc"].join(timeout=5)
                if w["proc"].is_alive():
                    w["proc"].kill()

    def _replace(self, w):
        w["proc"].kill()
        w["proc"].join(timeout=5)
        self.workers[self.workers.index(w)] = self._start()

    def _died(self, w, on_done):
        code = w["proc"].exitcode
        if w["task"] is not None:
            on_done(w["task"], {"unreadable": f"the grading process ended while reading it (exit code {code})"})
        elif not w["ready"]:
            raise ValueError(f"the grading process ended while starting (exit code {code})")
        self._replace(w)


def _note(section: dict, text: str) -> None:
    notes = section.setdefault("cross", [])
    if text not in notes:
        notes.append(text)


def _cross_flags(graded: dict) -> None:
    """Flags between students: identical sources, analyses, histories (under different seeds); and a source
    that is the course's sample answer."""
    by = {"copied_source": {}, "copied_analysis": {}}
    histories = {}
    for label, g in graded.items():
        for s in g.get("sections", []):
            fp = s.get("fingerprints", {})
            for flag, key in (("copied_source", "source"), ("copied_analysis", "analysis")):
                if fp.get(key):
                    by[flag].setdefault((s["section"], fp[key]), []).append((label, s))
            for name, (digest, seed) in (fp.get("history") or {}).items():
                if digest:
                    histories.setdefault(digest, []).append((label, s, seed))
    for flag, groups in by.items():
        for holders in groups.values():
            students = {label for label, _ in holders}
            if len(students) > 1:
                for label, s in holders:
                    s["flags"] = sorted(set(s["flags"]) | {flag})
                    others = ", ".join(sorted(students - {label}))
                    _note(s, f"{FLAGS[flag].split(' is ')[0]} matches {others}'s")
    answers = sample_answer_sums()
    for label, g in graded.items():
        for s in g.get("sections", []):
            name = answers.get((s.get("fingerprints") or {}).get("source"))
            if name:
                s["flags"] = sorted(set(s["flags"]) | {"sample_answer"})
                _note(s, f"the student's source is the course's sample answer tools/answers/{name}")
    for holders in histories.values():
        students = {label for label, _, _ in holders}
        seeds = {seed for _, _, seed in holders}
        if len(students) > 1 and len(seeds) > 1:
            for label, s, _ in holders:
                s["flags"] = sorted(set(s["flags"]) | {"copied_history"})
                _note(s, f"a training history matches {', '.join(sorted(students - {label}))}'s under another seed")


def _fmt(x) -> str:
    return "" if x is None else f"{x:.4f}"


def _rows(label: str, g: dict) -> list:
    """The CSV rows (dicts) of one graded submission."""
    if "timeout" in g or "unreadable" in g:
        status = "timeout" if "timeout" in g else "unreadable"
        reason = (f"grading took longer than the {g['timeout']:g} s time limit" if status == "timeout"
                  else g["unreadable"])
        return [{"student": label, "section": "-", "status": status, "run": "", "claimed": "", "rescored": "",
                 "exercise": "", "own_network": "", "flags": "", "points": 0, "max_points": 0, "reason": reason}]
    rows = []
    for s in g["sections"]:
        scheme = POINTS_SLOT if s.get("slot") else POINTS_NO_SLOT if s.get("exercise", True) else POINTS_NO_EXERCISE
        total = sum(scheme.values())
        runs = s.get("runs", {})
        ref = next((r for r in runs.values() if r["implementation"] == "reference"), None)
        mine = next((r for r in runs.values() if r["implementation"] == "student"), None)
        problems = list(s["problems"]) + [p for r in runs.values() for p in r["problems"]]
        status = "failed check" if problems else "ok"

        def held(r):
            return (r is not None and r.get("rescored") is not None and isinstance(r.get("claimed"), (int, float))
                    and "claim_contradicted" not in s["flags"] and "foreign_data" not in s["flags"])

        points = 0
        if status == "ok":
            points += scheme["reference"] if held(ref) else 0
            exercise = (mine or ref or {}).get("exercise")
            points += scheme["exercise"] if exercise == "passed" else 0
            points += scheme["own_network"] if s.get("slot") and held(mine) else 0
        shown = mine or ref or {}
        run_name = next((n for n, r in runs.items() if r is shown), "")
        own = ("n/a" if not s.get("slot") and mine is None else "missing" if mine is None else
               "recorded, re-scored" if mine.get("rescored") is not None else "recorded, not re-scored")
        notes = [n for r in runs.values() for n in r["notes"]] + s.get("cross", [])
        rows.append({"student": g.get("student") or label, "section": s["section"], "status": status,
                     "run": run_name, "claimed": _fmt(shown.get("claimed")), "rescored": _fmt(shown.get("rescored")),
                     "exercise": shown.get("exercise", ""), "own_network": own,
                     "flags": ";".join(sorted(s["flags"])), "points": points, "max_points": total,
                     "reason": "; ".join(problems + notes)[:600]})
    return rows


FLAGS_ZH = {
    "claim_contradicted": "记录的测试准确率与从导出程序重新评分的结果相差超过 0.003",
    "edited": "记录之后结果被改动过（清单或记录的 SHA-256 校验和不一致）",
    "copied_source": "你的代码与另一位同学的完全相同",
    "copied_analysis": "你的手写分析与另一位同学的完全相同",
    "copied_history": "某次训练的历史记录与另一位同学的完全相同，而随机种子不同",
    "foreign_data": "训练数据不是课程的 Fashion-MNIST（SHA-256 既不是官方文件的，也不是共享副本的）",
    "seed_mismatch": "某次运行没有使用你的学号对应的随机种子",
    "not_rescored": "某次运行无法从导出的程序重新评分",
    "sample_answer": "你的代码就是课程的示例解答",
}
STATUS_ZH = {"ok": "通过检查", "failed check": "未通过检查", "timeout": "超时", "unreadable": "无法读取"}


def _feedback(student: str, rows: list) -> str:
    """``feedback/<student>.md``: per section, what held and what did not (Chinese, for the student;
    the checks' own lines, which name files and fields, are quoted as they are)."""
    earned, possible = sum(r["points"] for r in rows), sum(r["max_points"] for r in rows)
    lines = [f"# {student} 的作业反馈 / Feedback", "",
             f"得分：{earned} / {possible}（教师复核标记之前）。评分办法见 docs/TEACHERS.md。", ""]
    for r in rows:
        title = "整份提交" if r["section"] == "-" else r["section"]
        lines.append(f"## {title}：{STATUS_ZH[r['status']]}"
                     + (f"，{r['points']} / {r['max_points']} 分" if r["max_points"] else ""))
        held, failed = [], []
        if r["status"] in ("timeout", "unreadable"):
            failed.append(r["reason"])
        else:
            if r["status"] == "ok":
                held.append("文件夹与清单（manifest）和记录的校验和一致")
            if r["rescored"]:
                what = f"运行 `{r['run']}`：记录的测试准确率 {r['claimed']}，从导出程序重新评分 {r['rescored']}"
                (failed if "claim_contradicted" in r["flags"] else held).append(what)
            (held if r["exercise"] == "passed" else failed).append(f"练习检查：{r['exercise'] or 'not run'}")
            if r["own_network"] != "n/a":
                (held if r["own_network"].startswith("recorded") else failed).append(
                    f"用你自己的块搭建的网络：{r['own_network']}")
            for flag in filter(None, r["flags"].split(";")):
                failed.append(f"标记 `{flag}`：{FLAGS_ZH[flag]}")
            if r["reason"]:
                failed += [p for p in r["reason"].split("; ") if p]
        lines += [f"- 成立：{h}" for h in held] + [f"- 未成立：{f}" for f in failed] + [""]
    return "\n".join(lines)


def grade(folder, out, jobs: int = 1, timeout: float = DEFAULT_TIMEOUT, test_data=None, feedback=None,
          accept_smoke: bool = False, progress: Optional[bool] = None, log=print) -> list:
    """Grade every submission in ``folder`` into the CSV ``out`` and ``feedback/<student>.md``; the rows.

    ``feedback`` is the feedback folder (default: ``feedback/`` beside the CSV). ``accept_smoke`` grades
    smoke-profile runs scored on a test subset as if they were homework runs (for trying the grader).
    """
    from ..data import find_data

    folder, out = Path(folder), Path(out)
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    if not timeout or timeout <= 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout!r}")
    entries = submissions(folder)
    if not entries:
        raise ValueError(f"{folder} holds no submissions (one .zip archive or folder per student)")
    find_data(test_data, download_if_missing=False)          # a missing test set is refused before any worker starts
    if out.exists() and not out.is_file():
        raise ValueError(f"--out {out} is not a file; name a .csv file")
    feedback = Path(feedback) if feedback else out.parent / "feedback"
    graded = {}
    labels = {}
    for entry in entries:
        label = base = _label(entry)
        n = 2
        while label in labels.values():
            label, n = f"{base}-{n}", n + 1
        labels[str(entry)] = label
    bar = None
    if progress is not False:
        from tqdm import tqdm

        bar = tqdm(total=len(entries), desc="grading", unit="submission", file=sys.stderr,
                   disable=progress is None and not sys.stderr.isatty())

    def done(task, msg):
        graded[labels[task]] = msg.get("result") or msg
        if bar:
            bar.update(1)

    with tempfile.TemporaryDirectory(prefix="paddle-cnn-grade-") as work:
        _Pool(min(jobs, len(entries)), None if test_data is None else str(test_data), accept_smoke, work).run(
            [str(e) for e in entries], float(timeout), done)
    if bar:
        bar.close()
    _cross_flags(graded)
    rows, per_student = [], {}
    for entry in entries:
        label = labels[str(entry)]
        mine = _rows(label, graded[label])
        rows += mine
        per_student.setdefault(mine[0]["student"] if mine else label, []).extend(mine)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(out, buf.getvalue())
    for student, mine in per_student.items():
        atomic.write_text(feedback / f"{_label(Path(student))}.md", _feedback(student, mine))
    if log:
        counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
        log(f"graded {len(entries)} submission{'s' if len(entries) != 1 else ''}: {len(rows)} rows ("
            + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"); wrote {out} and {feedback}/")
    return rows
