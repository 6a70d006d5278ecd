"""What is written is read back before it replaces anything; a run folder has one user at a time; the
checkpoint format and the configs every profile makes are unchanged by moving who writes them (issues 36, 40)."""
import builtins
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import asdict, fields

import paddle_cnn  # noqa: F401  (CPU tuning before paddle)
import numpy as np
import pytest

from paddle_cnn import atomic, checkpoint
from paddle_cnn.config import TrainConfig, config_for
from paddle_cnn.data import FashionMNIST
from paddle_cnn.models import REGISTRY
from paddle_cnn.models.factory import build_model
from paddle_cnn.trainer import Trainer, run

from conftest import make_fake_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLD = """
import sys
from paddle_cnn import atomic
with atomic.locked(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()            # until the test closes our stdin
"""


@pytest.fixture
def held(tmp_path):
    """A folder whose lock another process holds (what a running training does to its run folder)."""
    folder = tmp_path / "run"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield folder
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


# --------------------------------------------------------------------------- locks
def test_a_locked_folder_is_refused_at_once_and_free_again_after(held):
    with pytest.raises(atomic.FolderBusy, match="is in use by another paddle-cnn command"):
        with atomic.locked(held, "the run folder"):
            pass
    with pytest.raises(atomic.FolderBusy):
        atomic.check_unlocked(held)
    with atomic.locked(held / "elsewhere"):          # another folder is another lock
        pass


def test_the_lock_goes_with_its_holder(tmp_path):
    with atomic.locked(tmp_path / "run"):
        with pytest.raises(atomic.FolderBusy):     # even the same process cannot take it twice
            with atomic.locked(tmp_path / "run"):
                pass
    assert list((tmp_path / "run").iterdir()) == []   # released and removed: nothing left in the folder
    atomic.check_unlocked(tmp_path / "run")
    with atomic.locked(tmp_path / "run"):
        pass


def test_train_resume_on_a_running_folder_refuses_and_touches_nothing(held, tmp_path):
    """A second ``train --resume`` on the folder of a running training: one line, exit 2, and the running
    run's files (its checkpoint, a .part file it is writing) are left alone."""
    make_fake_dataset(tmp_path / "d", n_train=40, n_test=20)
    (held / checkpoint.CHECKPOINT).write_bytes(b"the running training's checkpoint")
    (held / ".checkpoint.pdckpt.abc.part").write_bytes(b"being written")
    before = {p.name: p.read_bytes() for p in held.iterdir()}
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "paddle_cnn", "train", "lenet_relu", "--profile", "smoke",
                           "--data-dir", str(tmp_path / "d"), "--out", str(held), "--resume", "--no-progress"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "is in use by another paddle-cnn command" in lines[0] and str(held) in lines[0]
    assert {p.name: p.read_bytes() for p in held.iterdir()} == before


def test_trainer_run_takes_the_lock_before_it_removes_leftovers(held, tmp_path):
    """The path without the CLI (a notebook's ``train(out=...)``, a worker of an N-process run)."""
    make_fake_dataset(tmp_path / "d", n_train=40, n_test=20)
    (held / ".results.json.abc.part").write_bytes(b"being written")
    cfg = TrainConfig(model="lenet_relu", epochs=1, batch_size=20, device="cpu", accel="off")
    with pytest.raises(atomic.FolderBusy):
        run(cfg, held, data_dir=tmp_path / "d", progress=False, log=None)
    assert (held / ".results.json.abc.part").read_bytes() == b"being written"


# --------------------------------------------------------------------------- read back before replacing
def test_a_write_cut_short_keeps_the_previous_file(tmp_path, monkeypatch):
    """A short write the system did not report (simulated: the file keeps half of what was written) is
    found by reading back; the previous file stays and no .part file is left."""
    path = tmp_path / "results.json"
    atomic.write_json(path, {"epochs": 1})
    kept = path.read_bytes()
    real_open = builtins.open

    class Half:
        def __init__(self, f):
            self.f = f

        def write(self, blob):
            return self.f.write(blob[:len(blob) // 2])

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    def short_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Half(f) if "w" in mode else f

    monkeypatch.setattr(atomic, "open", short_open, raising=False)
    with pytest.raises(atomic.ShortWrite, match="was not written whole"):
        atomic.write_json(path, {"epochs": 2, "history": list(range(100))})
    assert path.read_bytes() == kept and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    monkeypatch.undo()
    atomic.write_json(path, {"epochs": 2})
    assert json.loads(path.read_text()) == {"epochs": 2}


# --------------------------------------------------------------------------- the checkpoint format
STATE_KEYS = ["format", "model_name", "config", "device", "model", "optimizer", "scaler", "ema", "history"]


def test_train_state_writes_the_checkpoint_format_of_before(tmp_path):
    """TrainState saves itself now; the archive's members and state.json's keys are those checkpoints
    always held, so a checkpoint written before the move resumes after it (and the other way round)."""
    make_fake_dataset(tmp_path / "d", n_train=40, n_test=20)
    cfg = TrainConfig(model="lenet_relu", epochs=1, batch_size=20, momentum=0.9, ema=0.9, device="cpu", accel="off")
    Trainer(cfg, tmp_path / "run", progress=False, log=None).fit(build_model(cfg), FashionMNIST(28, tmp_path / "d"))
    with zipfile.ZipFile(tmp_path / "run" / checkpoint.CHECKPOINT) as z:
        names = z.namelist()
        doc = json.loads(z.read("state.json"))
    assert names == ["state.json"] + [f"tensors/{i}.npy" for i in range(len(names) - 2)] + ["sha256"]
    assert doc["format"] == checkpoint.FORMAT == 2
    state = dict((k, v) for k, v in doc["state"]["__dict__"])
    assert [k for k, _ in doc["state"]["__dict__"]] == STATE_KEYS
    assert [k for k, _ in state["config"]["__dict__"]] == [f.name for f in fields(TrainConfig)]
    assert state["scaler"] is None and "__dict__" in state["ema"] and "__list__" in state["history"]
    saved = checkpoint.load(tmp_path / "run" / checkpoint.CHECKPOINT)
    assert sorted(saved["model"]) == sorted(build_model(cfg).state_dict())


def test_a_checkpoint_lacking_a_weight_or_of_another_shape_is_refused_before_loading(tmp_path):
    model = build_model(TrainConfig(model="lenet_relu"))
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    first = next(iter(weights))
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(checkpoint.CheckpointError, match=f"lacks {first} of the model"):
        checkpoint.load_weights(model, {k: v for k, v in weights.items() if k != first}, "ckpt")
    with pytest.raises(checkpoint.CheckpointError, match=f"holds {first} of shape \\[1\\]"):
        checkpoint.load_weights(model, {**weights, first: np.zeros(1, np.float32)}, "ckpt")
    assert all(np.array_equal(before[k], v.numpy()) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- TrainConfig.from_dict
@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_profile_survives_a_round_trip_through_json(name):
    for profile in REGISTRY[name].profiles:
        cfg = config_for(name, profile, device="cpu")
        back = TrainConfig.from_dict(json.loads(json.dumps(asdict(cfg))))
        assert back == cfg and asdict(back) == asdict(cfg), profile


def test_from_dict_refuses_or_ignores_unknown_settings_and_fills_new_ones():
    saved = asdict(config_for("resnet18", "smoke", device="cpu"))
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['from_the_future'\]"):
        TrainConfig.from_dict({**saved, "from_the_future": 1})
    assert TrainConfig.from_dict({**saved, "from_the_future": 1}, strict=False) == TrainConfig.from_dict(saved)
    older = {k: v for k, v in saved.items() if k != "erase"}
    assert TrainConfig.from_dict(older).erase == TrainConfig().erase
    with pytest.raises(ValueError, match="batch size must be a positive integer"):
        TrainConfig.from_dict({**saved, "batch_size": "many"})
    with pytest.raises(ValueError, match="not a list"):
        TrainConfig.from_dict([saved])
