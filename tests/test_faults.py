"""Faults a class of students will hit: nothing lost, nothing executed from a file, one line each (issue 27)."""
import errno
import json
import os
import pickle
import stat

import numpy as np
import paddle
import pytest

from paddle_cnn import atomic, checkpoint
from paddle_cnn.config import TrainConfig, config_for
from paddle_cnn.data import FashionMNIST
from paddle_cnn import build_model, Trainer
from paddle_cnn.config import TrainingError

from conftest import make_fake_dataset
from helpers import run_cli

SMOKE = ["--profile", "smoke", "--batch-size", "20", "--no-progress", "--accel", "off"]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def small_run(tmp_path):
    """A one-epoch lenet_relu run folder (checkpoint + results) on fake data."""
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    out = tmp_path / "run"
    proc = run_cli("train", "lenet_relu", *SMOKE, "--epochs", "2", "--data-dir", str(tmp_path / "d"),
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "d", out


# --------------------------------------------------------------------------- 1. no silent overwrite
def test_train_into_a_run_refuses_without_resume_or_overwrite(small_run):
    data, out = small_run
    before = _snapshot(out)
    proc = run_cli("train", "lenet_relu", *SMOKE, "--epochs", "1", "--data-dir", str(data), "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "already holds a run" in proc.stderr and "--resume" in proc.stderr and "--overwrite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert _snapshot(out) == before                                  # the folder's files are untouched
    proc = run_cli("train", "lenet_relu", *SMOKE, "--epochs", "1", "--data-dir", str(data), "--out", str(out),
                   "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((out / "results.json").read_text())["history"]) == 1


# --------------------------------------------------------------------------- 2. checkpoints hold no code
def test_checkpoint_round_trip_keeps_every_tensor_and_value():
    state = {"model_name": "x", "config": {"lr": 0.1, "stage_arch": ((64, 2),)}, "model": {"w": np.arange(6.0)
             .reshape(2, 3).astype("float32")}, "history": [{"epoch": 1, "train_loss": 0.5}],
             "optimizer": {"m": paddle.ones([3]), "LR_Scheduler": {"last_lr": 0.01}}, "scaler": None}
    back = checkpoint.loads(checkpoint.dumps(state))
    assert back["config"] == state["config"] and back["history"] == state["history"]
    np.testing.assert_array_equal(back["model"]["w"], state["model"]["w"])
    np.testing.assert_array_equal(back["optimizer"]["m"], np.ones(3, "float32"))
    assert back["optimizer"]["LR_Scheduler"] == {"last_lr": 0.01} and back["scaler"] is None


def test_crafted_pickle_checkpoint_runs_no_code(small_run, tmp_path):
    data, out = small_run
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    (out / "checkpoint.pdckpt").write_bytes(pickle.dumps({"format": 1, "x": Evil()}, protocol=4))
    proc = run_cli("train", "lenet_relu", *SMOKE, "--epochs", "3", "--data-dir", str(data), "--out", str(out),
                   "--resume")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "refused" in proc.stderr and ("posix.system" in proc.stderr or "os.system" in proc.stderr)
    assert not marker.exists()


def test_flipped_byte_is_found_and_the_file_kept(small_run):
    data, out = small_run
    path = out / "checkpoint.pdckpt"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x40                                     # inside a tensor, past the header
    path.write_bytes(bytes(blob))
    proc = run_cli("train", "lenet_relu", *SMOKE, "--epochs", "3", "--data-dir", str(data), "--out", str(out),
                   "--resume")
    assert proc.returncode == 2 and "checkpoint damaged" in proc.stderr and "Traceback" not in proc.stderr
    assert path.read_bytes() == bytes(blob)                          # the evidence stays for the user


def test_old_format_checkpoint_still_resumes(tmp_path):
    """A checkpoint of the first format (a paddle.save pickle of arrays) resumes through the arrays-only reader."""
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=2, batch_size=20, device="cpu", accel="off", optimizer="adam",
                      lr=0.01)
    full = Trainer(cfg, tmp_path / "full", log=None, progress=False).fit(build_model(cfg), data).history
    one = TrainConfig(**{**cfg.__dict__, "epochs": 1})
    first = Trainer(one, tmp_path / "old", log=None, progress=False)
    first.fit(build_model(one), data)
    state = checkpoint.load(tmp_path / "old" / checkpoint.CHECKPOINT)
    state["format"] = 1
    paddle.save({**state, "model": {k: paddle.to_tensor(v) for k, v in state["model"].items()},
                 "optimizer": {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v
                               for k, v in state["optimizer"].items()}},
                str(tmp_path / "old" / checkpoint.CHECKPOINT))
    resumed = Trainer(TrainConfig(**{**cfg.__dict__, "epochs": 2}), tmp_path / "old", log=None,
                      progress=False).fit(build_model(cfg), data, resume=True).history
    assert [h["epoch"] for h in resumed] == [1, 2]
    assert resumed[1]["train_loss"] == pytest.approx(full[1]["train_loss"], rel=1e-6)
    assert resumed[1]["test_acc"] == full[1]["test_acc"]


def test_foreign_and_truncated_files_are_one_line(tmp_path):
    path = tmp_path / "c.pdckpt"
    for blob, words in ((b"hello", "unknown file type"), (checkpoint.dumps({"a": 1})[:50], "damaged"),
                        (checkpoint.dumps({"a": 1}), "no valid 'model_name'")):
        path.write_bytes(blob)
        with pytest.raises(checkpoint.CheckpointError, match=words) as e:
            checkpoint.load(path)
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- 6. user errors, one line each
@pytest.mark.parametrize("model, args, message", [
    ("densebox", ["--set", "task_args.max_items=abc"], "max_items='abc': expected a whole number"),
    ("densebox", ["--set", "task_args.max_items=2.5"], "max_items=2.5: expected a whole number"),
    ("resnet18", ["--set", "stage_arch=-1"], "stage_arch=-1: expected a non-empty tuple"),
    ("resnet18", ["--set", "residual=abc"], "residual='abc': expected True or False"),
    ("lenet_relu", ["--set", "num_classes=3"], "fix num_classes at 10"),
    ("lenet_relu", ["--set", "num_classes=abc"], "fix num_classes at 10"),
    ("lenet_relu", ["--set", "in_channels=3"], "fix in_channels at 1"),
    ("lenet_relu", ["--resize", "3000"], "does not fit in memory"),
    ("lenet_relu", ["--resize", "100000"], "does not fit in memory"),
    ("lenet_relu", ["--log-dir", "FILE"], "must name a folder"),
])
def test_bad_settings_end_in_one_line_and_write_nothing(tmp_path, model, args, message):
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    proc = run_cli("train", model, "--profile", "smoke", "--data-dir", str(tmp_path / "d"), "--out",
                   str(tmp_path / "o"), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_resume_with_fewer_epochs_than_done_is_refused(small_run):
    data, out = small_run
    before = _snapshot(out)
    proc = run_cli("train", "lenet_relu", *SMOKE, "--epochs", "1", "--data-dir", str(data), "--out", str(out),
                   "--resume")
    assert proc.returncode == 2 and "already holds 2 epochs, more than --epochs 1" in proc.stderr
    assert _snapshot(out) == before


# --------------------------------------------------------------------------- 7. leftovers, modes, full disks
def test_part_files_go_and_outputs_keep_the_umask(small_run):
    data, out = small_run
    (out / ".checkpoint.pdckpt.abc123.part").write_bytes(b"half a file")
    old = os.umask(0o022)
    try:
        proc = run_cli("train", "lenet_relu", *SMOKE, "--epochs", "3", "--data-dir", str(data), "--out", str(out),
                       "--resume")
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    assert not list(out.glob(".*.part"))
    for name in ("checkpoint.pdckpt", "results.json", "curves.png"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=2, batch_size=20, device="cpu", accel="off")
    Trainer(cfg, tmp_path / "run", log=None, progress=False).fit(build_model(cfg), data, stop_after=1)
    kept = (tmp_path / "run" / checkpoint.CHECKPOINT).read_bytes()
    real = atomic.write_bytes

    def full(path, blob):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic, "write_bytes", full)
    with pytest.raises(TrainingError, match=r"disk holding .*run is full: a checkpoint needs [\d.]+ MB.*previous "
                                            r"checkpoint is kept"):
        Trainer(cfg, tmp_path / "run", log=None, progress=False).fit(build_model(cfg), data, resume=True)
    monkeypatch.setattr(atomic, "write_bytes", real)
    assert (tmp_path / "run" / checkpoint.CHECKPOINT).read_bytes() == kept


def test_stop_after_trains_the_first_epochs_of_the_planned_schedule(tmp_path):
    """What `homework verify` replays: the first epoch of a 3-epoch one-cycle run, equal to the full run's."""
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = config_for("lenet_relu", "smoke", epochs=3, batch_size=20, device="cpu", accel="off",
                     schedule="onecycle", train_subset=None, test_subset=None)
    full = Trainer(cfg, log=None, progress=False).fit(build_model(cfg), data).history
    first = Trainer(cfg, log=None, progress=False).fit(build_model(cfg), data, stop_after=1).history
    assert len(first) == 1 and first[0]["train_loss"] == full[0]["train_loss"]
    assert first[0]["lr_end"] == full[0]["lr_end"]
