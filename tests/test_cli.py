"""The command line, end to end in subprocesses (as a student runs it)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, make_fake_dataset


def run_cli(*args, env=None, cwd=None, timeout=300):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "paddle_cnn", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


def test_list_shows_registered_models():
    proc = run_cli("list")
    assert proc.returncode == 0, proc.stderr
    assert "lenet_relu" in proc.stdout and "lenet " in proc.stdout


def test_train_end_to_end(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=200, n_test=50)
    out = tmp_path / "run"
    proc = run_cli("train", "lenet_relu", "--profile", "smoke", "--epochs", "2", "--data-dir", str(tmp_path / "d"),
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("epoch 2/2: loss") for line in lines)
    assert any(line.startswith("loss ") and line.endswith("examples/sec on cpu") for line in lines)
    results = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2]
    assert results["config"]["epochs"] == 2 and results["environment"]["device"] == "cpu"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # resume with more epochs runs only the third
    proc = run_cli("train", "lenet_relu", "--profile", "smoke", "--epochs", "3", "--data-dir", str(tmp_path / "d"),
                   "--out", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "epoch 3/3" in proc.stdout and "epoch 1/3" not in proc.stdout


def test_data_check(tmp_path):
    make_fake_dataset(tmp_path)
    proc = run_cli("data", "check", "--data-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "unrecognised copy" in proc.stdout and "train 60 images, test 20 images" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "lenet9"], "unknown model 'lenet9'; choose one of"),
    (["train", "lenet", "--profile", "fast"], "no profile 'fast'"),
    (["train", "lenet", "--epochs", "0"], "epochs must be a positive"),
    (["train", "lenet", "--lr", "-1"], "learning rate must be a positive"),
    (["train", "lenet", "--resize", "4"], "at least 12x12"),
])
def test_bad_arguments_give_one_clear_line(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_missing_data_folder(tmp_path):
    proc = run_cli("data", "check", "--data-dir", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
