"""What each trick of the best-model recipe adds: the cpu profile, then the same with one trick taken out.

Every row is a real ``paddle-cnn train`` run of the model's cpu profile at a
shorter budget (``--epochs``; the one-cycle schedule is planned over that many
epochs, so each row is a complete run, not a truncated one), scored on the full
10,000-image test set. The two test-time tricks need no run of their own: the
recipe row's last evaluation also scores its network without the weight
average and without flip averaging (``test_acc_without_ema`` /
``test_acc_without_tta``, see ``Trainer.evaluate``).

    python -m benchmarks.ablation                          # every row, 8 epochs each
    python -m benchmarks.ablation --epochs 4 --rows recipe no_erase

Writes ``results/ablation-<model>-<epochs>ep.json`` after every row (a stopped
run keeps the rows it finished; rerunning skips them) and prints the markdown
table. One row at a time, on a quiet machine: the table also reports
examples/sec.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# row name -> (what the row changes, CLI flags that change it)
ROWS = {
    "recipe": ("the cpu profile's recipe (all tricks)", []),
    "no_erase": ("without random erasing", ["--erase", "0"]),
    "no_smoothing": ("without label smoothing", ["--label-smoothing", "0"]),
    "no_augment": ("without crop and flip during training", ["--augment", "none"]),
    "no_onecycle": ("constant learning rate instead of one-cycle", ["--schedule", "constant"]),
    "no_weight_decay": ("without weight decay", ["--weight-decay", "0"]),
}


def run_row(model: str, flags: list, epochs: int, data_dir: str | None) -> dict:
    """One training run; returns its results.json (config, history, final)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "paddle_cnn", "train", model, "--profile", "cpu", "--epochs", str(epochs),
               "--out", out, "--no-progress", *flags] + (["--data-dir", data_dir] if data_dir else [])
        subprocess.run(cmd, check=True)
        return json.loads((Path(out) / "results.json").read_text())


def table(doc: dict) -> str:
    # Difference: a row against the recipe; a "scored without" line against the same network with the trick.
    rows = ["| row | test acc | difference | train loss | examples/sec | wall time |", "|" + " --- |" * 6]
    recipe = doc["rows"].get("recipe", {}).get("test_acc")
    for name, r in doc["rows"].items():
        delta = "–" if recipe is None or name == "recipe" else f"{r['test_acc'] - recipe:+.4f}"
        rows.append(f"| {r['label']} | {r['test_acc']:.4f} | {delta} | {r['train_loss']:.3f} | "
                    f"{r['examples_per_sec']:.0f} | {r['wall_time'] / 60:.1f} min |")
        for trick, key in (("weight average", "test_acc_without_ema"), ("flip at test time", "test_acc_without_tta")):
            if key in r:
                rows.append(f"| {r['label']}, scored without the {trick} (same network) | {r[key]:.4f} | "
                            f"{r[key] - r['test_acc']:+.4f} | – | – | – |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="fashion_resnet")
    p.add_argument("--epochs", type=int, default=8, help="epochs of every row (the shorter budget)")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    path = HERE / "results" / f"ablation-{args.model}-{args.epochs}ep.json"
    doc = json.loads(path.read_text()) if path.exists() else {
        "command": "python -m benchmarks.ablation " + " ".join(sys.argv[1:]), "model": args.model,
        "epochs": args.epochs, "rows": {}}
    for name in args.rows:
        if name in doc["rows"]:
            print(f"{name}: already measured, kept", flush=True)
            continue
        label, flags = ROWS[name]
        print(f"--- {name}: {label}", flush=True)
        result = run_row(args.model, flags, args.epochs, args.data_dir)
        final = result["final"]
        doc["rows"][name] = {"label": label, "flags": flags, **{k: v for k, v in final.items()
                                                               if isinstance(v, (int, float))},
                             "data": result["data"]["name"], "date": result.get("date"), "run": result.get("run")}
        doc["rows"] = {k: doc["rows"][k] for k in ROWS if k in doc["rows"]}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1))
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
