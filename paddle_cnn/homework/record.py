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
  run, and the hand-written analysis below it, kept exactly as it is.
"""
from __future__ import annotations

import os
import time
from typing import Optional

from .. import atomic, runtime
from .render import save_section_figure, write_section_readme
from .schema import (FIGURE_MAX_BYTES, ROOT, SCHEMA_VERSION, homework_root, load_results, read_bytes,
                     runs_sha256, sha256_of)

# --------------------------------------------------------------------------- running
def run(model: str, profile: str = "auto", device: str = "auto", root=None, data_dir=None, resume: bool = False,
        progress: Optional[bool] = None, log=print, **overrides) -> Optional[dict]:
    """Train ``model`` with a registry profile and record the run in its section folder.

    ``overrides`` are TrainConfig fields (e.g. ``nproc``, ``accel``); in a
    multi-process run every process trains and rank 0 alone records (the
    others return None).
    """
    from .. import distributed
    from ..models import get_spec
    from ..config import config_for
    from ..trainer import run as train_run

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


def record(result, spec=None, root=None) -> dict:
    """Add ``result`` (a FitResult) to its section's results.json, then redraw and retable.

    The notebooks call this with the result they have just trained, so the
    homework folder holds exactly the run the reader saw; the run's entry also
    says whether the section's exercises passed ``exercises.check`` in this
    process (``"exercises": [{"exercise": name, "passed": bool or "not run"}]``). A smoke-profile
    result is refused when it would land in the repository's ``homework/``. results.json also keeps
    ``"curves": {"sha256": ..., "runs_sha256": ...}``: the SHA-256 of the curves.png just written and of
    the runs it was drawn from, which ``homework check`` compares (a checksum, not a signature: it tells a
    figure of another run or a number edited by hand, not a forger who recomputes both).
    """
    from ..models import get_spec

    _refuse_smoke_in_repo(result.config, root)
    spec = spec or get_spec(result.config.model)
    folder = homework_root(root) / spec.section
    path = folder / "results.json"
    doc = load_results(path, folder) if os.path.lexists(path) else {"section": spec.section, "runs": {}}
    doc["runs"][spec.name] = _run_entry(result, spec)
    doc["runs"] = {k: doc["runs"][k] for k in _course_order(doc["runs"])}
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
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))

