"""Writing a homework folder: train a model's profile (``run``) or take a result already trained (``record``).

``paddle-cnn homework run alexnet`` trains with the registry profile and
``homework.record(result)`` (what the notebooks call) writes
``homework/<section>/`` from the measurement:

* ``results.json``  -- every measured run of the section (exercise variants beside
  the main model), each with config, data source and sha256, per-epoch history,
  final metrics, parameters and FLOPs, environment and date;
* ``curves.png``    -- learning curves of the section's runs and predictions of the
  model just trained;
* ``README.md``     -- a generated table between two markers, regenerated on every
  run, and the hand-written analysis below it, kept exactly as it is;
* ``programs/<run-id>/`` -- each run's trained model as an exported inference program
  (:mod:`.programs`), which a grader re-scores without the student's code;
* ``source/<run-id>.py`` -- for a student run, the student's block as recorded (its
  normalised SHA-256 is in the run's entry).

A section's network built with the student's own block (:mod:`.student`) is
recorded beside the reference run under ``<model>.student``, with
``implementation: student``, the hash of the student's source and the exercise
check's outcome. With a student id (``student=`` or ``PADDLE_CNN_STUDENT``) every
run must have been trained with that student's seed; the id and the seed are
recorded. Each entry carries the SHA-256 of its own content (``sha256``), so an
edit after recording shows (a checksum anyone can recompute, not a signature: the
grader's re-scoring of the program is what settles a claimed accuracy).
"""
from __future__ import annotations

import os
import time
from typing import Optional

from .. import atomic, runtime
from . import programs
from .render import readme_parts, save_section_figure, write_section_readme
from .schema import (FIGURE_MAX_BYTES, ROOT, SCHEMA_VERSION, entry_sha256, homework_root, load_results,
                     read_bytes, run_key, runs_sha256, sha256_of)
from .student import SLOTS, seed_for, source_sha256, source_text, student_id

IMPLEMENTATIONS = ("reference", "student")
SOURCE_DIR = "source"
OUTCOMES = ("passed", "failed", "not attempted", "not run")

# --------------------------------------------------------------------------- running
def run(model: str, profile: str = "auto", device: str = "auto", root=None, data_dir=None, resume: bool = False,
        progress: Optional[bool] = None, log=print, student: Optional[str] = None, **overrides) -> Optional[dict]:
    """Train ``model`` with a registry profile and record the run in its section folder.

    ``overrides`` are TrainConfig fields (e.g. ``nproc``, ``accel``); in a
    multi-process run every process trains and rank 0 alone records (the
    others return None). With a student id (``student`` or ``PADDLE_CNN_STUDENT``)
    the run trains with that student's seed.
    """
    from .. import distributed
    from ..models import get_spec
    from ..config import config_for
    from ..trainer import run as train_run

    spec = get_spec(model)
    sid = student_id(student)
    if sid:
        overrides.setdefault("seed", seed_for(sid))
    cfg = config_for(model, profile, device=device, **overrides)
    in_repo = homework_root(root).resolve() == ROOT.resolve()
    _refuse_smoke_in_repo(cfg, root)  # before hours of training, not after
    # Checkpoints of the run (for --resume) stay out of the folder that gets committed.
    scratch = (ROOT.parent / "runs" / "homework" if in_repo else homework_root(root) / ".runs") / model
    result = train_run(cfg, out=scratch, resume=resume, data_dir=data_dir, progress=progress, log=log)
    if not distributed.current().is_main:
        return None
    return record(result, spec, root=root, student=sid)


def _run_entry(result, spec) -> dict:
    from .. import exercises
    from ..summary import count_flops, count_params

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


def _outcome(exercise, section: str, trained: Optional[str] = None) -> dict:
    """``{"name": exercise, "outcome": passed | failed | not attempted | not run}`` of the exercise the student's
    block answers.

    ``exercise`` is what ``exercises.check`` returned (True / False), the Verdict of ``exercises.run`` (which
    names its exercise), an outcome word, or None (then the outcome of this process's last check of that
    exercise, else "not run"). ``trained`` is the exercise ``train_student`` built the network for.
    """
    from .. import exercises

    slot = SLOTS.get(section)
    name = trained or (slot.exercise if slot else None)
    if hasattr(exercise, "exercise") and hasattr(exercise, "status"):     # a Verdict of exercises.run
        name, outcome = exercise.exercise, exercise.status
    elif isinstance(exercise, bool):
        outcome = "passed" if exercise else "failed"
    elif exercise is None:
        outcome = exercises.last_results().get(name, "not run") if name else "not run"
    elif isinstance(exercise, str) and exercise in OUTCOMES:
        outcome = exercise
    else:
        raise ValueError(f"exercise= takes what exercises.check returned (True or False), exercises.run's verdict "
                         f"or one of {', '.join(OUTCOMES)}; got {exercise!r}")
    if slot and name not in slot.exercises:
        raise ValueError(f"exercise {name!r} does not slot into {slot.model}; the {section} section's network "
                         f"takes {', '.join(slot.exercises)}")
    return {"name": name, "outcome": outcome}


def record(result, spec=None, root=None, implementation: str = "reference", source=None, exercise=None,
           student: Optional[str] = None, program: bool = True, log=None) -> dict:
    """Add ``result`` (a FitResult) to its section's results.json, then redraw and retable.

    The notebooks call this with the result they have just trained, so the
    homework folder holds exactly the run the reader saw; the run's entry also
    says whether the section's exercises passed ``exercises.check`` in this
    process (``"exercises": [{"exercise": name, "passed": bool or "not run"}]``). A smoke-profile
    result is refused when it would land in the repository's ``homework/``. results.json also keeps
    ``"curves": {"sha256": ..., "runs_sha256": ...}``: the SHA-256 of the curves.png just written and of
    the runs it was drawn from, which ``homework check`` compares (a checksum, not a signature: it tells a
    figure of another run or a number edited by hand, not a forger who recomputes both).

    ``implementation="student"`` records the section's network built with the student's block
    (:func:`~paddle_cnn.homework.student.train_student`) as ``<model>.student``, beside the reference
    run: ``source`` is the student's class or function (or its text), stored in ``source/`` and hashed
    after normalisation; ``exercise`` is the outcome of the section's exercise check. ``student`` (or
    ``PADDLE_CNN_STUDENT``) is the student id: the run must have been trained with its seed. With
    ``program`` (the default) the trained model is exported into ``programs/<run-id>/``.
    """
    from ..models import get_spec

    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")
    _refuse_smoke_in_repo(result.config, root)
    spec = spec or get_spec(result.config.model)
    sid = student_id(student)
    if sid and result.config.seed != seed_for(sid):
        raise ValueError(f"this run was trained with seed {result.config.seed}, but student {sid}'s seed is "
                         f"{seed_for(sid)}: train it again with seed=homework.student_seed() "
                         "(homework.train_student and `homework run` set it for you)")
    text = None
    if implementation == "student":
        if source is None:
            raise ValueError("a student run needs source=: the class or function of your block (or its code as "
                             "text), so its hash can be recorded")
        text = source_text(source)
    folder = homework_root(root) / spec.section
    path = folder / "results.json"
    # A README that cannot be regenerated (no markers, not a regular file) is refused before anything is written.
    readme_parts(folder / "README.md")
    doc = load_results(path, folder) if os.path.lexists(path) else {"section": spec.section, "runs": {}}
    held = (doc.get("student") or {}).get("id") if isinstance(doc.get("student"), dict) else None
    if held and sid and held != sid:
        raise ValueError(f"{path} holds the runs of student {held}, not {sid}; record into another folder "
                         "(root=... or PADDLE_CNN_HOMEWORK=DIR)")
    key = run_key(spec.name, implementation)
    entry = _run_entry(result, spec)
    entry["implementation"] = implementation
    entry["student"] = {"id": sid, "seed": result.config.seed} if sid else None
    if implementation == "student":
        entry["source"] = {"sha256": source_sha256(text), "file": f"{SOURCE_DIR}/{key}.py",
                           "normalised": "python ast, comments and docstrings dropped"}
        entry["exercise"] = _outcome(exercise, spec.section, (result.run_info or {}).get("student_exercise"))
    if program:
        entry["program"] = programs.save(result, folder, key, log=log)
        programs.update_gitignore(homework_root(root), spec.section, key, entry["program"]["committed"])
    entry["sha256"] = entry_sha256(entry)
    if sid:
        doc["student"] = {"id": sid, "seed": seed_for(sid)}
    doc["runs"][key] = entry
    doc["runs"] = {k: doc["runs"][k] for k in _course_order(doc["runs"])}
    if text is not None:
        atomic.write_text(folder / SOURCE_DIR / f"{key}.py", text if text.endswith("\n") else text + "\n")
    # Figure and table first: if drawing fails, the old results.json still matches the old README.
    save_section_figure(doc, result, folder / "curves.png")
    # What ties the figure to these runs (``homework check`` compares both): read back from the disk.
    doc["curves"] = {"sha256": sha256_of(read_bytes(folder / "curves.png", FIGURE_MAX_BYTES, folder)),
                     "runs_sha256": runs_sha256(doc)}
    write_section_readme(doc, folder / "README.md")
    atomic.write_json(path, doc)
    return doc


def _course_order(names):
    from ..models import REGISTRY

    order = list(REGISTRY)

    def place(key):
        model, _, kind = key.partition(".")
        return (order.index(model) if model in order else len(order), kind == "student")

    return sorted(names, key=place)

