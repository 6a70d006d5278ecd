"""Every task through the one trainer on synthetic data, the task dispatch, and the CPU tuning at import."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from paddle_cnn import homework
from paddle_cnn.tasks import TASK_CLASSES, get_task, task_of
from paddle_cnn import build_model, TrainConfig, Trainer

from conftest import REPO
from helpers import blob_arrays


def test_dispatch_reads_the_registry():
    from paddle_cnn.models import REGISTRY

    for name, spec in REGISTRY.items():
        assert task_of(name).name == spec.task
    assert set(TASK_CLASSES) == {"classification", "segmentation", "detection"}
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        get_task("ranking")


@pytest.mark.parametrize("model, metric, extra", [
    ("unet", "miou", dict(model_args={"base_width": 4, "depth": 2})),
    ("densebox", "ap50", {}),
])
def test_scene_tasks_learn_through_the_trainer(model, metric, extra):
    """Synthetic blobs (no Fashion-MNIST needed): the training loss falls and the task's metrics come back."""
    cfg = TrainConfig(model=model, resize=32, epochs=3, batch_size=16, lr=3e-3, optimizer="adam", device="cpu",
                      accel="off", seed=1, task_args={"num_train_scenes": 96, "num_test_scenes": 16}, **extra)
    trainer = Trainer(cfg, progress=False, log=None)
    data = trainer.task.build_data(cfg, arrays=blob_arrays())
    result = trainer.fit(build_model(cfg), data)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0], losses
    assert np.isfinite(result.final[metric]) and 0 <= result.final[metric] <= 1
    assert result.metric == metric
    # The homework figure draws the task's curve panels from these history keys.
    for _, lines in trainer.task.curve_panels:
        for key, _ in lines:
            assert all(np.isfinite(h[key]) for h in result.history), key
    if model == "densebox":   # positive-cell recall: starts low, rises (an all-cell accuracy sat at 1.0)
        recall = [h["train_metric"] for h in result.history]
        assert recall[0] < 0.9 and recall[-1] > recall[0], recall


def test_densebox_train_metric_is_recall_of_positive_cells():
    """Hand-made maps: 2 positives, 1 found; an ignored cell and background cells do not count."""
    import paddle

    from paddle_cnn.tasks.detection import T_CONF, T_VALID, DetectionTask

    target = np.zeros([1, 7, 2, 3], "float32")
    target[0, T_VALID] = 1
    target[0, T_CONF, 0, 0] = target[0, T_CONF, 0, 1] = 1     # two positive cells
    target[0, T_CONF, 1, 2], target[0, T_VALID, 1, 2] = 1, 0    # an ignored cell, predicted positive
    conf = np.zeros([1, 1, 2, 3], "float32")
    conf[0, 0, 0, 0] = conf[0, 0, 1, 2] = conf[0, 0, 1, 0] = 0.9  # one positive found, one background wrong
    hits, count = DetectionTask().train_hits({"conf": paddle.to_tensor(conf)}, paddle.to_tensor(target))
    assert float(hits) == 1 and float(count) == 2


def test_homework_refuses_smoke_runs_in_the_repository(monkeypatch):
    monkeypatch.delenv("PADDLE_CNN_HOMEWORK", raising=False)
    monkeypatch.chdir(REPO / "homework")           # a relative spelling of the same folder must not slip through
    with pytest.raises(ValueError, match="homework/ records real measurements"):
        homework.run("lenet_relu", "smoke", device="cpu", root="../homework")


def _import_env(extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MKL_NUM_THREADS", "OMP_NUM_THREADS", "KMP_BLOCKTIME", "MKL_DEBUG_CPU_TYPE")}
    env.update(extra)
    code = ("import json, os, paddle_cnn; from paddle_cnn import runtime; "
            "print(json.dumps({'env': {k: os.environ.get(k) for k in ('MKL_NUM_THREADS', 'KMP_BLOCKTIME')}, "
            "'tuning': runtime.TUNING, 'cores': runtime.physical_cores()}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tune_cpu_sets_what_is_unset_and_keeps_what_the_user_set():
    fresh = _import_env({})
    if fresh["cores"] > 1:
        assert fresh["env"] == {"MKL_NUM_THREADS": str(fresh["cores"]), "KMP_BLOCKTIME": "0"}
        assert fresh["tuning"]["applied"]["MKL_NUM_THREADS"] == str(fresh["cores"])
    mine = _import_env({"MKL_NUM_THREADS": "7"})
    assert mine["env"]["MKL_NUM_THREADS"] == "7" and mine["tuning"]["user_set"] == {"MKL_NUM_THREADS": "7"}
    assert "MKL_NUM_THREADS" not in mine["tuning"]["applied"]
    assert fresh["tuning"]["paddle_imported_first"] is False


def test_paddle_first_is_warned_about():
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_NUM_THREADS", "KMP_BLOCKTIME")}
    proc = subprocess.run([sys.executable, "-W", "always", "-c", "import paddle, paddle_cnn"], capture_output=True,
                          text=True, env=env, cwd=REPO)
    assert proc.returncode == 0 and "imported before paddle_cnn" in proc.stderr


def test_importing_the_package_does_not_load_paddle():
    proc = subprocess.run([sys.executable, "-c", "import sys, paddle_cnn; print('paddle' in sys.modules)"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.strip() == "False", proc.stderr
