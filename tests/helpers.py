"""Helpers several test files share (fixtures live in conftest.py); a test file imports from here, never
from another test file.

Paddle is imported inside the functions, after ``paddle_cnn`` (its CPU tuning must come first).
"""
import os
import subprocess
import sys
from dataclasses import asdict

import paddle_cnn  # noqa: F401  (CPU tuning before paddle)

from conftest import REPO

#: Pixel values of the blob items in the training and the test split (:func:`blob_arrays`).
TRAIN_VALUE, TEST_VALUE = 100, 200


def run_cli(*args, env=None, cwd=None, timeout=300):
    """``python -m paddle_cnn ARGS`` in a subprocess, as a student runs it; the CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "paddle_cnn", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


def blob_arrays(n_train=300, n_test=100, seed=0):
    """Fashion-MNIST-shaped arrays whose items are solid rectangles: value 100 in the training split, 200 in
    the test split (so a scene shows which split it came from)."""
    import numpy as np

    from paddle_cnn.data import FashionMNISTArrays

    rng = np.random.RandomState(seed)

    def split(n, value):
        images = np.zeros((n, 28, 28), np.uint8)
        for img in images:
            h, w = rng.randint(8, 25, size=2)
            y, x = rng.randint(0, 29 - h), rng.randint(0, 29 - w)
            img[y:y + h, x:x + w] = value
        return images, (np.arange(n) % 10).astype(np.uint8)

    return FashionMNISTArrays(*split(n_train, TRAIN_VALUE), *split(n_test, TEST_VALUE),
                              source={"name": "blobs", "sha256": {}})


def make_run(folder, name: str = "lenet_relu", metric: float = 0.5, **overrides):
    """A run folder as ``paddle-cnn train --out`` leaves it, without training: a checkpoint of the freshly
    initialised model (seeded) with a one-epoch history."""
    from paddle_cnn import build_model, checkpoint, config_for
    from paddle_cnn.models import get_spec
    from paddle_cnn.tasks import get_task

    cfg = config_for(name, "smoke", **overrides)
    model = build_model(cfg)
    history = [{"epoch": 1, "train_loss": 1.0, "train_metric": 0.5, "examples": 60, "examples_per_sec": 100.0,
                get_task(get_spec(name).task).metric: metric}]
    state = {"format": checkpoint.FORMAT, "model_name": name, "config": asdict(cfg), "device": "cpu",
             "model": dict(model.state_dict()), "optimizer": {}, "scaler": None, "ema": None, "history": history}
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.save(folder / checkpoint.CHECKPOINT, state)
    return folder


def saved_op_types(path: str) -> list:
    """The operator types of a program saved by paddle.jit.save (PIR on Paddle 3, ProgramDesc on 2.6)."""
    import paddle

    paddle.enable_static()
    try:
        program, _, _ = paddle.static.load_inference_model(path, paddle.static.Executor(paddle.CPUPlace()))
        ops = program.global_block().ops
        names = [op.name() if callable(getattr(op, "name", None)) else op.type for op in ops]
    finally:
        paddle.disable_static()
    return [n.split(".", 1)[-1] for n in names]  # "pd_op.conv2d" -> "conv2d"
