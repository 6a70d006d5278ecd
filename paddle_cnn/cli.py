"""Command line: ``paddle-cnn ...`` or ``python -m paddle_cnn ...``.

    paddle-cnn list                         registered models, sections and profiles
    paddle-cnn train lenet [--profile cpu]  train, print per-epoch lines, save results under --out
    paddle-cnn train resnet18 --nproc 2     the same, data-parallel in 2 processes
    paddle-cnn homework run alexnet         measure a section's homework into homework/alexnet/
    paddle-cnn homework summary             one table over all sections
    paddle-cnn homework verify homework/lenet  re-run each recorded run's first epoch and compare
    paddle-cnn homework pack --student ID   the archive a student hands in (results, figures, programs, manifest)
    paddle-cnn homework grade SUBMISSIONS/ --out grades.csv   re-score a class from its archives
    paddle-cnn data check                   where the data was found, its sha256 sums, its content checked
    paddle-cnn doctor [--json]              versions, devices, data and tuning: paste it into a question
    paddle-cnn export runs/lenet-cpu [--format onnx]  the run as a Paddle Inference (or ONNX) model
    paddle-cnn predict RUN_OR_EXPORT shirt.png       top-3 classes (masks or boxes: a picture) of your pictures

Every field of :class:`paddle_cnn.config.TrainConfig` is a ``train`` flag
(``--batch-size``, ``--augment``, ``--schedule`` ...), generated from the
dataclass; ``--set KEY=VALUE`` sets a model or task argument
(``--set base_width=16`` or ``--set model_args.base_width=16``).

A bad argument, bad data or an environment variable we cannot use ends with
one ``error:`` line and exit code 2 (``--debug`` shows the traceback instead).
Ctrl-C at any moment, even while Paddle is still loading, ends with one line
and exit code 130; an interrupted run first says where its last complete epoch
is. Output never fails on a stdout that cannot encode a character (it prints
``?``), and Paddle's and matplotlib's INFO lines stay out of it. Those promises
live in :mod:`paddle_cnn.console`; this module holds the parser and the commands.
"""
from __future__ import annotations

import argparse
import ast
import signal
import sys
import warnings
from dataclasses import MISSING, fields
from pathlib import Path

from . import console
from . import command
from .command import EXIT_INTERRUPTED  # 130

EXIT_USAGE = 2
_TYPES = {"int": int, "float": float, "str": str, "Optional[int]": int, "Optional[str]": str}


def _config_fields():
    from .config import TrainConfig

    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]


def _add_config_flags(p: argparse.ArgumentParser, only=None) -> None:
    """One flag per TrainConfig field (or the ``only`` ones): type, choices and help from the dataclass.

    Defaults are None, so a flag left unset keeps the profile's value.
    """
    group = p.add_argument_group("training settings (override the profile)")
    for f in _config_fields():
        if only is not None and f.name not in only:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        choices = f.metadata.get("choices")
        help_ = f"{f.metadata.get('help', '')} (default: profile, else {default})"
        if f.type == "bool":
            group.add_argument(flag, action="store_true", default=None, help=f.metadata.get("help"))
        else:  # choices are checked by TrainConfig.validate, so the error names them the same way everywhere
            group.add_argument(flag, type=_TYPES[str(f.type)], help=help_,
                               metavar="|".join(choices) if choices else f.name.upper())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paddle-cnn", description="Modern CNNs in PaddlePaddle: train and record.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list registered models")

    p = sub.add_parser("train", help="train a model")
    p.add_argument("model", help="registered model name (see `paddle-cnn list`)")
    p.add_argument("--profile", default="auto", help="course | cpu | smoke | auto (course on a GPU, else cpu)")
    p.add_argument("--out", help="output folder (default runs/MODEL-PROFILE)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (without it, a "
                   "folder that holds a run is refused)")
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST IDX files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a model or task argument, e.g. --set base_width=16 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-unknown-data", action="store_true",
                   help="train on files that fail `paddle-cnn data check`'s content checks (recorded in results.json)")
    _add_config_flags(p)

    p = sub.add_parser("homework", help="record measured runs in homework/<section>/")
    hw = p.add_subparsers(dest="action", required=True)
    q = hw.add_parser("run", help="train MODEL with a profile and write its section folder")
    q.add_argument("model")
    q.add_argument("--profile", default="auto", help="cpu | course | auto")
    q.add_argument("--data-dir")
    q.add_argument("--root", help="homework folder (default: the repository's homework/)")
    q.add_argument("--resume", action="store_true", help="continue an interrupted homework run")
    q.add_argument("--student", help="your student id: the run trains with its seed (default: PADDLE_CNN_STUDENT)")
    q.add_argument("--no-progress", action="store_true")
    _add_config_flags(q, only=("device", "nproc", "accel", "cpu_threads"))
    q = hw.add_parser("summary", help="write homework/README.md over all sections")
    q.add_argument("--root")
    q = hw.add_parser("check", help="check a submitted homework folder (or all of homework/)")
    q.add_argument("root", nargs="?", help="a section folder or a homework folder (default: homework/)")
    q = hw.add_parser("verify", help="re-run the first epoch(s) of every recorded run and compare with its history")
    q.add_argument("root", help="a section folder (or a homework folder: every section in it)")
    q.add_argument("--epochs", type=int, default=1, help="epochs to replay per run (default 1)")
    q.add_argument("--data-dir", help="folder with the Fashion-MNIST files the runs recorded")
    q = hw.add_parser("pack", help="zip the homework folder into the archive a student hands in")
    q.add_argument("--student", help="your student id (default: PADDLE_CNN_STUDENT)")
    q.add_argument("--out", help="the archive to write (default: ID.zip here)")
    q.add_argument("--root", help="homework folder (default: PADDLE_CNN_HOMEWORK, else the repository's homework/)")
    q = hw.add_parser("grade", help="re-score a class's archives from their exported programs into a grades CSV")
    q.add_argument("submissions", metavar="SUBMISSIONS_DIR", help="one .zip archive or folder per student")
    q.add_argument("--out", default="grades.csv", help="the CSV to write (default grades.csv); feedback/ beside it")
    q.add_argument("--jobs", type=int, default=1, help="submissions graded at once, each in its own process")
    q.add_argument("--timeout", type=float, default=600.0, help="seconds per submission (default 600)")
    q.add_argument("--test-data", help="a folder with the test set to re-score on (default: the course's)")
    q.add_argument("--feedback", help="folder for feedback/<student>.md (default: feedback/ beside --out)")
    q.add_argument("--accept-smoke", action="store_true",
                   help="grade smoke-profile runs scored on a test subset (for trying the grader)")
    q.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("data", help="data tools")
    p.add_argument("action", choices=["check"])
    p.add_argument("--data-dir")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")

    p = sub.add_parser("export", help="turn a run's checkpoint into a Paddle Inference model (or ONNX)")
    p.add_argument("run", metavar="RUN_DIR", help="a `paddle-cnn train --out` folder")
    p.add_argument("--out", help="output folder (default RUN_DIR/export)")
    p.add_argument("--format", default="paddle", choices=["paddle", "onnx"],
                   help="paddle: Paddle Inference files; onnx: those plus model.onnx (needs paddle2onnx)")

    p = sub.add_parser("predict", help="your own pictures through a trained run or an export")
    p.add_argument("source", metavar="RUN_DIR_OR_EXPORT", help="a run folder or a `paddle-cnn export` folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG pictures, any size, colour or grey")
    p.add_argument("--out", help="folder for the mask/box pictures of U-Net and DenseBox (default: here)")

    sub.add_parser("doctor", help="versions, devices, data and CPU tuning (paste it into a question); "
                                  "its own options: --json, --data-dir DIR", add_help=False)
    return parser


def parse_sets(items, model: str) -> dict:
    """``["base_width=16", "task_args.max_items=6"]`` -> ``{"model_args": {...}, "task_args": {...}}``.

    A bare key goes to the model if its constructor takes it, else to the task;
    an unknown key is an error that lists the known ones.
    """
    import inspect

    from .models import get_spec
    from .tasks import task_of

    spec = get_spec(model)
    model_keys = [n for n in inspect.signature(spec.constructor).parameters if n != "input_size"]
    task = task_of(model)
    task_keys = sorted(task.args()) if hasattr(task, "args") else []
    out = {"model_args": {}, "task_args": {}}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. --set base_width=16")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a plain word stays a string
        where, _, name = key.rpartition(".")
        if where and where not in out:
            raise ValueError(f"--set {item!r}: the prefix must be model_args or task_args, got {where!r}")
        if not where:
            where = "model_args" if name in model_keys else "task_args" if name in task_keys else ""
        known = model_keys if where == "model_args" else task_keys
        if name not in known:
            raise ValueError(f"--set {item!r}: {model} has no argument {name!r}; model arguments: "
                             f"{', '.join(model_keys)}; task arguments: {', '.join(task_keys) or 'none'}")
        out[where][name] = value
    return {k: v for k, v in out.items() if v}


def _overrides(args) -> dict:
    return {f.name: getattr(args, f.name) for f in _config_fields() if hasattr(args, f.name)}


RUN_FILES = ("checkpoint.pdckpt", "results.json")


def _prepare_out(out: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse an --out that is a file, cannot be written, or holds a run that neither --resume nor
    --overwrite names; nothing in the folder is touched when refused."""
    import os
    import tempfile

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; name a folder (it is created if missing)")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not (resume or overwrite):
        raise ValueError(f"--out {out} already holds a run ({', '.join(held)}); continue it with --resume or "
                         "replace it with --overwrite (or choose another --out)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test.", suffix=".part")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"--out {out} cannot be written ({e.strerror or e}); choose a folder you can write to")


def cmd_list(args) -> int:
    from .models import REGISTRY

    print(f"{'model':<18} {'section':<11} {'task':<15} {'min':>4}  profiles (resize/epochs/batch/lr)")
    for name, spec in REGISTRY.items():
        prof = "  ".join(f"{k}:{p.get('resize')}/{p.get('epochs')}/{p.get('batch_size')}/{p.get('lr')}"
                         for k, p in spec.profiles.items())
        print(f"{name:<18} {spec.section:<11} {spec.task:<15} {spec.min_size:>4}  {prof}")
    return 0


def cmd_train(args) -> int:
    from . import distributed
    from .config import config_for
    from .trainer import run

    if args.allow_unknown_data:  # read by data.load_fashion_mnist, here and in the workers (they inherit it)
        import os

        from .data import ALLOW_UNKNOWN_ENV

        os.environ[ALLOW_UNKNOWN_ENV] = "1"
    cfg = config_for(args.model, args.profile, **_overrides(args), **parse_sets(args.set, args.model))
    out = Path(args.out or f"runs/{cfg.model}-{cfg.profile}")
    if distributed.env_rank() == 0:
        from .atomic import check_unlocked
        from .memory import check_fits_memory

        check_fits_memory(cfg)  # before the folder is prepared; run() below is told it was done
        check_unlocked(out, "the run folder")   # a running training's folder: refused before anything is touched
        _prepare_out(out, args.resume, args.overwrite)
    args.checkpoint_before = _checkpoint_stamp(out)  # the checkpoint --overwrite is replacing is not this run's
    code = _spawn_workers(args, cfg)
    if code is not None:
        return code
    main_rank = distributed.env_rank() == 0
    try:  # from the first line on, Ctrl-C is answered with where this run's epochs are
        if main_rank:
            procs = f", {cfg.nproc} processes" if cfg.nproc > 1 else ""
            print(f"training {cfg.model} ({cfg.profile} profile): resize {cfg.resize}, {cfg.epochs} epochs, "
                  f"batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr} ({cfg.schedule}){procs}; output in {out}",
                  flush=True)
        result = run(cfg, out, resume=args.resume, data_dir=args.data_dir,
                     progress=False if args.no_progress else None, check_memory=False)
    except KeyboardInterrupt:
        if main_rank:
            print(f"\ninterrupted: {_saved_line(args, out) or 'no epoch had finished, nothing was saved'}",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    if main_rank:
        print(result.summary())
        print(f"saved {out / 'results.json'} and {out / 'curves.png'}")
    return 0


def cmd_homework(args) -> int:
    from . import distributed, homework
    from .config import config_for

    if args.action == "summary":
        print(f"wrote {homework.summary(args.root)}")
        return 0
    if args.action == "check":
        problems = homework.check(args.root)
        for line in problems:
            print(line)
        # 2: the folder cannot be a genuine record (unsafe files, impossible values): that one line alone;
        # 1: it is inconsistent
        if any(isinstance(p, homework.Refusal) for p in problems):
            return 2
        from .homework.check import missing_student_runs

        for line in missing_student_runs(args.root):
            print(f"note: {line}")
        if not problems:
            print(f"{homework.homework_root(args.root)}: every check holds")
        return 1 if problems else 0
    if args.action == "pack":
        from .homework.pack import pack

        pack(args.student, args.root, args.out)
        return 0
    if args.action == "grade":
        from .homework.grade import grade

        grade(args.submissions, args.out, args.jobs, args.timeout, args.test_data, args.feedback,
              accept_smoke=args.accept_smoke, progress=False if args.no_progress else None)
        return 0
    if args.action == "verify":  # 0: every run reproduces, 1: a mismatch, 2 (ValueError/DataError): bad input
        return 0 if homework.verify(args.root, args.epochs, data_dir=args.data_dir) else 1
    overrides = _overrides(args)
    cfg = config_for(args.model, args.profile, **overrides)
    code = _spawn_workers(args, cfg)
    if code is not None:
        return code
    try:
        doc = homework.run(args.model, args.profile, root=args.root, data_dir=args.data_dir, resume=args.resume,
                           progress=False if args.no_progress else None, student=args.student, **overrides)
    except KeyboardInterrupt:
        if distributed.env_rank() == 0:
            print(f"\ninterrupted: continue with `paddle-cnn homework run {args.model} --resume`", file=sys.stderr)
        return EXIT_INTERRUPTED
    if doc is None:  # not rank 0
        return 0
    run_ = doc["runs"][args.model]
    folder = homework.homework_root(args.root) / run_["section"]
    from .tasks import get_task

    headline = get_task(run_["task"]).metric_text(run_["final"], run_["config"].get("test_subset"))
    print(f"{args.model}: {headline}, {run_['final']['examples_per_sec']:.1f} examples/sec "
          f"on {run_['environment']['device']}; wrote {folder}/results.json, curves.png, README.md")
    return 0


def _spawn_workers(args, cfg):
    """With ``--nproc N`` > 1 in a process no launcher started: run this same command in N workers.

    Returns the workers' exit code when they ran, None when this process should
    train itself (one process, or already a worker).
    """
    from . import distributed, launcher

    world = distributed.env_world()
    if world > 1:  # a worker (ours or paddle.distributed.launch's): train here
        if cfg.nproc not in (1, world):
            raise ValueError(f"--nproc {cfg.nproc} but the launcher started {world} processes; drop --nproc "
                             "or make the two agree")
        return None
    if cfg.nproc == 1:
        return None
    launcher.check_nproc(cfg.nproc, cfg.device, cfg.sync_bn)
    # Found (or downloaded) and checked here, once: missing or wrong data is one error line, not one per worker
    # plus the launcher's.
    from .data import load_fashion_mnist

    load_fashion_mnist(getattr(args, "data_dir", None))
    argv = list(args.argv)  # this very command, replayed in each worker
    try:  # the workers stop as one: a failed or stopped worker, Ctrl-C or SIGTERM here ends them all
        code = launcher.spawn(main, cfg.nproc, "gpu" if _is_gpu(cfg) else "cpu", argv)
    except launcher.WorkerError as e:
        print(f"error: the run stopped: {e}; {_where_saved(args, cfg)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the workers are gone already (launcher.spawn killed them)
        print(f"\ninterrupted: {_where_saved(args, cfg)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(code or 0)


def _is_gpu(cfg) -> bool:
    from . import runtime

    return runtime.resolve_device(cfg.device) == "gpu"


def _where_saved(args, cfg) -> str:
    out = Path(getattr(args, "out", None) or f"runs/{cfg.model}-{cfg.profile}")
    if getattr(args, "command", "") == "train":
        return _saved_line(args, out) or "no checkpoint of a complete epoch was written"
    return f"continue with `paddle-cnn homework run {cfg.model} --resume` once the cause is fixed"


def _checkpoint_stamp(out: Path):
    """(inode, size, mtime) of the checkpoint in ``out``, None when there is none (each save is a new file)."""
    try:
        st = (out / "checkpoint.pdckpt").stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _saved_line(args, out: Path):
    """Where this run's last complete epoch is and how to continue it; None if it saved none. The checkpoint
    of the run that --overwrite is replacing stays until the first epoch ends, and is not this run's."""
    stamp = _checkpoint_stamp(out)
    if stamp is None:
        return None
    if not args.resume and stamp == getattr(args, "checkpoint_before", None):
        return (f"no epoch had finished; {out} still holds the previous run's checkpoint (--overwrite replaces it "
                "when the first epoch ends)")
    return f"the last complete epoch is saved in {out / 'checkpoint.pdckpt'}; continue with --resume --out {out}"


def cmd_data(args) -> int:
    from .data import load_fashion_mnist

    # Content that is not Fashion-MNIST raises DataError: one line, exit 2 (see data.check_content).
    arrays = load_fashion_mnist(args.data_dir, download_if_missing=not args.no_download, allow_unknown=False)
    src, c = arrays.source, arrays.content
    print(f"{src['name']}\nfound via {src['found_via']}")
    print(f"train {c['sizes']['train']} images, test {c['sizes']['test']} images, ten classes "
          f"({min(c['class_counts']['train'])}-{max(c['class_counts']['train'])} training images each); "
          f"train pixels mean {c['train_pixels']['mean']:.3f} std {c['train_pixels']['std']:.3f}; "
          f"{c['shared_test_images']} test images also in train; nearest-class-mean accuracy "
          f"{c['nearest_mean_accuracy']:.2f} on a test sample; all checks passed")
    for name, digest in src["sha256"].items():
        print(f"  {digest}  {name}")
    return 0


def cmd_doctor(args) -> int:
    from . import doctor

    return doctor.main(args.rest)  # doctor parses its own options (--json, --data-dir DIR, -h)


def cmd_export(args) -> int:
    from .export import export_run, summary_line

    meta, out = export_run(args.run, args.out, args.format)
    print(summary_line(meta, out))
    return 0


def cmd_predict(args) -> int:
    from .predict import predict

    for line in predict(args.source, args.images, args.out):
        print(line)
    return 0


COMMANDS = {"list": cmd_list, "train": cmd_train, "homework": cmd_homework, "data": cmd_data, "doctor": cmd_doctor,
            "export": cmd_export, "predict": cmd_predict}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    ours, rank = False, 0
    try:
        console.safe_streams()
        if not debug:
            console.quiet_libraries()
        bad = console.bad_environment()  # before Paddle loads: it reads PADDLE_TRAINER_ID while importing
        if bad:
            print(f"error: {bad}", file=sys.stderr)
            return EXIT_USAGE
        from . import distributed

        rank = distributed.env_rank()
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        args.argv = argv
        if rest and args.command != "doctor":
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.rest = rest
        # Until here (Paddle loaded, arguments read) Ctrl-C ends the command at once in one line
        # (command.exit_on_interrupt): a KeyboardInterrupt inside Paddle's C++ start-up turns into an ImportError.
        # From here on it is a KeyboardInterrupt, so a run can stop its workers and say where its epochs are.
        ours = command.raise_on_interrupt()
        signal.signal(signal.SIGTERM, console.on_sigterm)
        if not debug:
            warnings.showwarning = console.warning_line
        return _run_command(args, rank)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM outside a training loop (which says where its epochs are)
        if ours:
            command.exit_on_interrupt()  # a second Ctrl-C while this is said ends at once, in one line too
        if debug:
            raise
        print("\ninterrupted" if rank == 0 else f"\ninterrupted (process {rank})", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ImportError, OSError) as e:
        if debug or not console.environment_problem(e):
            raise
        print(f"error: {console.environment_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if ours:
            command.exit_on_interrupt()


def _run_command(args, rank: int) -> int:
    """The command, with a user's mistake (bad argument, bad data, a failed run) as one ``error:`` line."""
    from .config import TrainingError
    from .data import DataError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, DataError, TrainingError) as e:
        if args.debug:
            raise
        # One write, so that another process's line cannot land between the message and its line break.
        sys.stderr.write((f"error: {e}" if rank == 0 else f"error (process {rank}): {e}") + "\n")
        sys.stderr.flush()
        return EXIT_USAGE
