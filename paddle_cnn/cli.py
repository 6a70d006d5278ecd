"""Command line: ``paddle-cnn ...`` or ``python -m paddle_cnn ...``.

    paddle-cnn list                         registered models, sections and profiles
    paddle-cnn train lenet [--profile cpu]  train, print per-epoch lines, save results under --out
    paddle-cnn homework run alexnet         measure a section's homework into homework/alexnet/
    paddle-cnn homework summary             one table over all sections
    paddle-cnn data check                   where the data was found, its sha256 sums

A bad argument or bad data ends with one ``error:`` line and exit code 2
(``--debug`` shows the traceback instead); an interrupted run exits with 130
after saying where its last complete epoch is.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from . import runtime  # noqa: F401  (package import tunes the CPU before paddle loads)

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so the run unwinds like Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered model name (see `paddle-cnn list`)")
    p.add_argument("--profile", default="auto", help="course | cpu | smoke | auto (course on a GPU, else cpu)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--resize", type=int, help="input side in pixels")
    p.add_argument("--optimizer", help="sgd | adam | adamw")
    p.add_argument("--device", default="auto", help="auto | cpu | gpu")
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST IDX files")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paddle-cnn", description="Modern CNNs in PaddlePaddle: train and record.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list registered models")

    p = sub.add_parser("train", help="train a model")
    _add_train_arguments(p)
    p.add_argument("--out", help="output folder (default runs/MODEL-PROFILE)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")

    p = sub.add_parser("homework", help="record measured runs in homework/<section>/")
    hw = p.add_subparsers(dest="action", required=True)
    q = hw.add_parser("run", help="train MODEL with a profile and write its section folder")
    q.add_argument("model")
    q.add_argument("--profile", default="auto", help="cpu | course | auto")
    q.add_argument("--device", default="auto", help="auto | cpu | gpu")
    q.add_argument("--data-dir")
    q.add_argument("--root", help="homework folder (default: the repository's homework/)")
    q.add_argument("--resume", action="store_true", help="continue an interrupted homework run")
    q.add_argument("--no-progress", action="store_true")
    q = hw.add_parser("summary", help="write homework/README.md over all sections")
    q.add_argument("--root")

    p = sub.add_parser("data", help="data tools")
    p.add_argument("action", choices=["check"])
    p.add_argument("--data-dir")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    return parser


def cmd_list(args) -> int:
    from .models import REGISTRY

    print(f"{'model':<18} {'section':<11} {'task':<15} {'min':>4}  profiles (resize/epochs/batch/lr)")
    for name, spec in REGISTRY.items():
        prof = "  ".join(f"{k}:{p.get('resize')}/{p.get('epochs')}/{p.get('batch_size')}/{p.get('lr')}"
                         for k, p in spec.profiles.items())
        print(f"{name:<18} {spec.section:<11} {spec.task:<15} {spec.min_size:>4}  {prof}")
    return 0


def cmd_train(args) -> int:
    from .trainer import config_for, run

    cfg = config_for(args.model, args.profile, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                     resize=args.resize, optimizer=args.optimizer, device=args.device, seed=args.seed)
    out = Path(args.out or f"runs/{cfg.model}-{cfg.profile}")
    print(f"training {cfg.model} ({cfg.profile} profile): resize {cfg.resize}, {cfg.epochs} epochs, "
          f"batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr} ({cfg.schedule}); output in {out}")
    try:
        result = run(cfg, out, resume=args.resume, data_dir=args.data_dir,
                     progress=False if args.no_progress else None)
    except KeyboardInterrupt:
        saved = out / "checkpoint.pdckpt"
        where = (f"the last complete epoch is saved in {saved}; continue with --resume --out {out}"
                 if saved.exists() else "no epoch had finished, nothing was saved")
        print(f"\ninterrupted: {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.summary())
    print(f"saved {out / 'results.json'} and {out / 'curves.png'}")
    return 0


def cmd_homework(args) -> int:
    from . import homework

    if args.action == "summary":
        print(f"wrote {homework.summary(args.root)}")
        return 0
    try:
        doc = homework.run(args.model, args.profile, args.device, root=args.root, data_dir=args.data_dir,
                           resume=args.resume, progress=False if args.no_progress else None)
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with `paddle-cnn homework run {args.model} --resume`", file=sys.stderr)
        return EXIT_INTERRUPTED
    run_ = doc["runs"][args.model]
    folder = homework.homework_root(args.root) / run_["section"]
    print(f"{args.model}: {homework._metric_text(run_)}, {run_['final']['examples_per_sec']:.1f} examples/sec "
          f"on {run_['environment']['device']}; wrote {folder}/results.json, curves.png, README.md")
    return 0


def cmd_data(args) -> int:
    from .data import load_fashion_mnist

    arrays = load_fashion_mnist(args.data_dir, download_if_missing=not args.no_download)
    src = arrays.source
    print(f"{src['name']}\nfound via {src['found_via']}: {src['path']}")
    print(f"train {arrays.train_images.shape[0]} images, test {arrays.test_images.shape[0]} images; all checks passed")
    for name, digest in src["sha256"].items():
        print(f"  {digest}  {name}")
    return 0


COMMANDS = {"list": cmd_list, "train": cmd_train, "homework": cmd_homework, "data": cmd_data}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    from .data import DataError
    from .trainer import TrainingError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, DataError, TrainingError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
