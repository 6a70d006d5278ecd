"""Data-parallel training in 2 CPU processes (gloo): same numbers on every rank, rank-0 files, bad input, resume.

Stopping a run (signals, a failed or stopped worker, a killed launcher): tests/test_launcher.py.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paddle_cnn import launcher
from paddle_cnn.config import TrainConfig
from paddle_cnn.trainer import run

from conftest import REPO, make_fake_dataset

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Paddle's gloo backend needs Linux")


def _train_and_dump(cfg_dict, data_dir, out, dump):
    """Worker: train, then write this rank's final parameters to dump/rank<R>.npz."""
    from paddle_cnn import distributed as dist
    from paddle_cnn.config import TrainConfig as Cfg
    from paddle_cnn.trainer import run as train_run

    result = train_run(Cfg(**cfg_dict), out, data_dir=data_dir, progress=False, log=None)
    rank = dist.current().rank
    np.savez(Path(dump) / f"rank{rank}.npz", **{k: v.numpy() for k, v in result.model.state_dict().items()})
    return 0


def _cfg(**kw):
    base = dict(model="lenet_relu", resize=28, epochs=2, batch_size=32, lr=0.05, momentum=0.9, device="cpu",
                seed=5, accel="off", eval_batch_size=50)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dp") / "d"
    make_fake_dataset(folder, n_train=128, n_test=40)
    return folder


def test_two_processes_follow_the_one_process_trajectory(small_data, tmp_path):
    """lenet_relu has no batch norm and no dropout: 2 x (B/2) must give the same updates as 1 x B."""
    cfg = _cfg()
    (tmp_path / "dump").mkdir()
    launcher.spawn(_train_and_dump, 2, "cpu", cfg.__dict__, str(small_data), str(tmp_path / "two"),
                      str(tmp_path / "dump"))
    one = run(_cfg(), tmp_path / "one", data_dir=small_data, progress=False, log=None)
    ranks = [dict(np.load(tmp_path / "dump" / f"rank{r}.npz")) for r in (0, 1)]
    for key, value in one.model.state_dict().items():
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])               # ranks hold the same model
        np.testing.assert_allclose(ranks[0][key], value.numpy(), rtol=1e-4, atol=1e-5)  # = one process
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["run"]["world"] == 2 and two["run"]["backend"] == "gloo" and two["run"]["threads_per_process"] >= 1
    for a, b in zip(one.history, two["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_acc"] == b["test_acc"] and a["examples"] == b["examples"] == 128


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "paddle_cnn", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_cli_two_process_smoke_run_writes_once(small_data, tmp_path):
    proc = _cli("train", "lenet_relu", "--profile", "smoke", "--nproc", "2", "--batch-size", "32", "--accel", "off",
                "--data-dir", str(small_data), "--out", str(tmp_path / "run"), "--no-progress")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert out.count("epoch 1/1:") == 1 and "x 2 processes" in out          # rank 0 alone prints
    assert out.startswith("training lenet_relu") and err == "", err        # none of Paddle's start-up lines:
    # "launch.py:289 - find free ports", the "Modified FLAGS detected" banner, glog INFO lines
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pdckpt", "curves.png", "results.json"]


def test_bad_nproc_is_one_line(small_data):
    proc = _cli("train", "lenet_relu", "--profile", "smoke", "--nproc", "0", "--data-dir", str(small_data))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "nproc must be a positive" in err and "Traceback" not in err
    proc = _cli("train", "lenet_relu", "--profile", "smoke", "--nproc", "2", "--batch-size", "33",
                "--data-dir", str(small_data))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "divisible by --nproc 2" in err
    proc = _cli("train", "lenet_bn", "--profile", "smoke", "--nproc", "2", "--sync-bn", "--device", "cpu",
                "--data-dir", str(small_data))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--sync-bn needs GPUs" in err and err.count("error") == 1


def test_two_process_resume_equals_uninterrupted(small_data, tmp_path):
    common = ["train", "lenet_relu", "--profile", "smoke", "--nproc", "2", "--batch-size", "32", "--seed", "3",
              "--accel", "off", "--data-dir", str(small_data), "--no-progress"]
    full = _cli(*common, "--epochs", "3", "--out", str(tmp_path / "full"))
    assert full.wait(timeout=240) == 0, full.communicate()
    part = _cli(*common, "--epochs", "2", "--out", str(tmp_path / "part"))
    assert part.wait(timeout=240) == 0, part.communicate()
    resumed = _cli(*common, "--epochs", "3", "--out", str(tmp_path / "part"), "--resume")
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    assert "epoch 3/3" in out and "epoch 2/3" not in out
    a = json.loads((tmp_path / "full" / "results.json").read_text())["history"]
    b = json.loads((tmp_path / "part" / "results.json").read_text())["history"]
    for x, y in zip(a, b):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6) and x["test_acc"] == y["test_acc"]
