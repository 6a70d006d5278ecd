"""benchmarks/throughput.py: one tiny run end to end (schema, clean d2l environment) and its architectures.

No speed is asserted: CI machines differ and are shared. PyTorch is optional;
without it the JSON must say that the torch contender was skipped.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import throughput
from conftest import REPO
from paddle_cnn.models import get_model


@pytest.mark.parametrize("model, size", [("lenet", 28), ("lenet_relu", 28), ("alexnet", 96), ("resnet18", 96)])
def test_d2l_architecture_matches_registry(model, size):
    """The d2l contender's nn.Sequential has exactly our model's trainable parameters and output shape."""
    import paddle

    ours = get_model(model, input_size=size)
    theirs = throughput.build_paddle(throughput.architecture(model, size))
    count = lambda net: sum(int(np.prod(p.shape)) for p in net.parameters() if not p.stop_gradient)  # noqa: E731
    assert count(theirs) == count(ours)
    shapes = lambda net: sorted(tuple(p.shape) for p in net.parameters())  # noqa: E731
    assert shapes(theirs) == shapes(ours)
    theirs.eval()
    assert theirs(paddle.zeros([2, 1, size, size])).shape == [2, 10]


def test_unknown_contender_is_rejected():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--contenders", "d2l_paddle,tensorflow"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "tensorflow" in proc.stderr


def test_thread_ab_runs_single_and_dict_output_models():
    """benchmarks/threads.py times both settings for a classifier and for DenseBox (dict output)."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.threads", "lenet", "densebox", "--steps", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert [line.split(":")[0] for line in lines] == ["lenet", "densebox"]
    for line in lines:
        rates = [float(word) for word in line.replace(",", " ").split() if word.replace(".", "").isdigit()]
        assert len(rates) == 4 and rates[0] == 1 and all(r > 0 for r in rates), line


@pytest.mark.slow
def test_tiny_benchmark_run_writes_json_and_table(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--model", "lenet_relu", "--resize", "28",
           # Batch 128 as in the course: at batch 32, Paddle 3.3.1's DataLoader workers (d2l's 4)
           # segfaulted in most tries on our machine (benchmarks/README.md).
           "--batch-size", "128", "--steps", "3", "--warmup", "1", "--repeats", "1",
           "--contenders", "d2l_paddle,paddle_cnn", "--ceiling", "small", "--ceiling-repeats", "1",
           "--data-dir", str(data_dir), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "lenet_relu-28-bs128.json").read_text())
    assert (tmp_path / "lenet_relu-28-bs128.md").read_text().startswith("# Training throughput: lenet_relu")

    for key in ("model", "resize", "batch_size", "steps", "environment", "contenders", "ratios",
                "gflops_per_example", "ceiling_gflops", "fraction_of_ceiling"):
        assert key in report, key
    assert (report["model"], report["resize"], report["batch_size"], report["steps"]) == ("lenet_relu", 28, 128, 3)
    env = report["environment"]
    for key in ("cpu_model", "cores", "versions", "env_per_contender", "date", "device"):
        assert key in env, key
    assert env["device"] == "cpu"
    for name in ("d2l_paddle", "paddle_cnn"):
        entry = report["contenders"][name]
        assert entry["errors"] == []
        assert isinstance(entry["dataloader_crashes_retried"], list)  # d2l's DataLoader crashes, re-run and listed
        assert entry["end_to_end"] > 0 and entry["d2l_timed"] > 0
        assert len(entry["rounds_end_to_end"]) == 1
        assert entry["params"] == report["params"]
    # The d2l contender ran without our tuning and without importing paddle_cnn.
    assert "MKL_DEBUG_CPU_TYPE" not in env["env_per_contender"]["d2l_paddle"]
    assert report["contenders"]["d2l_paddle"]["paddle_cnn_imported"] is False
    assert report["contenders"]["d2l_paddle"]["num_workers"] == 4
    assert set(report["ratios"]) == {"vs_d2l", "vs_torch"} and report["ratios"]["vs_d2l"] > 0
    assert report["gflops_per_example"] > 0 and report["ceiling_gflops"] > 0
    if "torch" in report["contenders"]:  # only present as a skip when torch is missing
        assert "skipped" in report["contenders"]["torch"]
