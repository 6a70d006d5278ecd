"""Crafted checkpoints whose SHA-256 is recomputed reach the loader; each ends in one line, fast, small (issue 40).

Every file is built here with its checksum recomputed (a checksum is not a signature), so the refusal
tested is the loader's own check, not the SHA-256 comparison.
"""
import hashlib
import io
import json
import pickle
import time
import tracemalloc
import zipfile
from dataclasses import asdict

import numpy as np
import pytest

from paddle_cnn import checkpoint, checkpoint_bounds
from paddle_cnn.checkpoint import CheckpointError
from paddle_cnn.config import config_for
from paddle_cnn.models import list_models
from paddle_cnn.models.factory import build_model, declared_shapes

from helpers import run_cli


def _state(**changes) -> dict:
    """A run's state as the trainer writes it (lenet_relu, one epoch), its weights all 0.1."""
    cfg = config_for("lenet_relu", "smoke", device="cpu")
    state = {"format": checkpoint.FORMAT, "model_name": "lenet_relu", "config": asdict(cfg), "device": "cpu",
             "model": {k: np.full(shape, 0.1, "float32") for k, shape in declared_shapes(cfg).items()},
             "optimizer": {"features.0.weight_velocity_0": np.zeros((6, 1, 5, 5), "float32"),
                           "LR_Scheduler": {"last_epoch": 3, "last_lr": 0.1}},
             "scaler": None, "ema": None,
             "history": [{"epoch": 1, "train_loss": 0.9, "train_metric": 0.7, "examples": 100, "timed_examples": 40,
                          "train_time": 0.1, "examples_per_sec": 400.0, "lr_end": 0.1, "test_acc": 0.6,
                          "wall_time": 0.3}]}
    state.update(changes)
    return state


def _archive(doc: bytes, members, compress=zipfile.ZIP_STORED) -> bytes:
    """A checkpoint archive of ``doc`` (state.json) and ``members`` with a correct SHA-256."""
    digest = hashlib.sha256(doc)
    for m in members:
        digest.update(m)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as z:
        z.writestr("state.json", doc)
        for i, m in enumerate(members):
            z.writestr(f"tensors/{i}.npy", m)
        z.writestr("sha256", digest.hexdigest())
    return buf.getvalue()


def _refused(path, *words, seconds=5.0, megabytes=100):
    """The CheckpointError of loading ``path``: one line holding ``words``, quick, without large memory."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(CheckpointError) as e:
            checkpoint.load(path)
        took = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert took < seconds, f"{took:.1f} s"
    assert peak < megabytes * 2**20, f"{peak / 2**20:.0f} MB"
    return message


@pytest.fixture
def ckpt(tmp_path):
    return tmp_path / checkpoint.CHECKPOINT


def test_the_untampered_state_loads(ckpt):
    """The state every test below alters is accepted as it is (so each refusal is the alteration's)."""
    checkpoint.save(ckpt, _state())
    state = checkpoint.load(ckpt)
    assert state["history"][0]["test_acc"] == 0.6 and state["model"]["features.0.weight"].dtype == np.float32


def test_npy_header_declaring_ten_billion_elements(ckpt):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**10,)})
    member = header.getvalue() + b"\0" * 16
    tensor = {"__tensor__": 0, "dtype": "float32"}
    doc = json.dumps({"format": 2, "state": {"__dict__": [["model", {"__dict__": [["w", tensor]]}]]}}).encode()
    ckpt.write_bytes(_archive(doc, [member]))
    _refused(ckpt, "10,000,000,000 elements", "tensors/0.npy")


def test_npy_header_larger_than_its_bytes(ckpt):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1000, 1000)})
    doc = json.dumps({"format": 2, "state": None}).encode()
    ckpt.write_bytes(_archive(doc, [header.getvalue() + b"\0" * 64]))
    _refused(ckpt, "declares [1000, 1000] float32 (4,000,000 bytes) but holds 64 bytes")


@pytest.mark.parametrize("dtype", ["float64", "int64"])
def test_model_weights_that_are_not_float32(ckpt, dtype):
    checkpoint.save(ckpt, _state(model={"features.0.weight": np.ones((6, 1, 5, 5), dtype)}))
    _refused(ckpt, f"model weight features.0.weight as {dtype}", "float32")


def test_object_arrays_are_refused_in_the_header(ckpt):
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    ckpt.write_bytes(_archive(json.dumps({"format": 2, "state": None}).encode(), [member.getvalue() + b"\0" * 8]))
    _refused(ckpt, "holds object values", "numbers only")


def test_no_optimizer_state(ckpt):
    state = _state()
    del state["optimizer"]
    checkpoint.save(ckpt, state)
    _refused(ckpt, "no optimizer state")


def test_history_without_train_loss(ckpt):
    state = _state()
    del state["history"][0]["train_loss"]
    checkpoint.save(ckpt, state)
    _refused(ckpt, "no finite 'train_loss' in epoch 1")


def test_history_whose_metric_is_missing_before_the_last_epoch(ckpt):
    state = _state()
    second = {**state["history"][0], "epoch": 2}
    del state["history"][0]["test_acc"]
    state["history"].append(second)
    checkpoint.save(ckpt, state)
    _refused(ckpt, "no 'test_acc' number in epoch 1")
    state["history"][0]["test_acc"] = "0.9"
    checkpoint.save(ckpt, state)
    _refused(ckpt, "no 'test_acc' number in epoch 1")
    del second["test_acc"]          # the last epoch may lack it: saved before its evaluation
    state["history"] = [{**second, "epoch": 1, "test_acc": 0.5}, second]
    checkpoint.save(ckpt, state)
    assert len(checkpoint.load(ckpt)["history"]) == 2


def test_json_nested_a_hundred_thousand_deep(ckpt):
    doc = b'{"format": 2, "state": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    ckpt.write_bytes(_archive(doc, []))
    _refused(ckpt, "nested 100,001 deep")


def test_json_keys_that_cannot_be_keys(ckpt):
    doc = json.dumps({"format": 2, "state": {"__dict__": [[{"__list__": [1]}, 2]]}}).encode()
    ckpt.write_bytes(_archive(doc, []))
    _refused(ckpt, "state.json paddle_cnn never writes")


@pytest.mark.parametrize("key, value, words", [
    ("resize", 100_000, "resize 100000, more than the 1024"),
    ("lr", -1.0, "learning rate must be a positive number"),
    ("optimizer", "lbfgs", "unknown optimizer 'lbfgs'"),
])
def test_config_values_are_checked(ckpt, key, value, words):
    state = _state()
    state["config"][key] = value
    checkpoint.save(ckpt, state)
    _refused(ckpt, words)


def test_config_describing_a_network_of_270_billion_parameters(ckpt):
    """model_args edited to a stage of 100000 channels: refused from a construction that allocates nothing
    (building it took minutes and 14 GB before export gave up)."""
    state = _state(model_name="resnet18")
    state["config"] = {**asdict(config_for("resnet18", "smoke", device="cpu")),
                       "model_args": {"stage_arch": [[64, 2], [100_000, 2]]}}
    checkpoint.save(ckpt, state)
    _refused(ckpt, "lacks model weight stem.0.weight, which its configuration's resnet18 has")
    state["model"] = {k: np.zeros([1] * len(shape), "float32") for k, shape in
                      declared_shapes(config_for("resnet18", "smoke", device="cpu")).items()}
    checkpoint.save(ckpt, state)
    _refused(ckpt, "holds model weight stem.0.weight of shape [1, 1, 1, 1], and its configuration's resnet18 has")


def test_weights_of_another_shape_than_the_configuration_says(ckpt):
    state = _state()
    state["model"]["head.1.weight"] = np.zeros((400, 7), "float32")
    checkpoint.save(ckpt, state)
    _refused(ckpt, "holds model weight head.1.weight of shape [400, 7]", "has [400, 120]")


@pytest.mark.parametrize("name", list_models())
def test_declared_shapes_are_those_of_the_built_model(name):
    """The shapes weights are checked against (a construction that allocates nothing) are the real model's."""
    cfg = config_for(name, "smoke", device="cpu")
    built = {k: list(v.shape) for k, v in build_model(cfg).state_dict().items()}
    assert declared_shapes(cfg) == built


def test_state_json_that_inflates_to_gigabytes(ckpt):
    """A deflated state.json declaring far more than a state holds is refused by its declared size,
    and a small deflated one (paddle_cnn writes members uncompressed) is refused unread."""
    big = b'{"format": 2, "state": null}' + b" " * (64 * 2**20)
    blob = _archive(big, [], compress=zipfile.ZIP_DEFLATED)
    assert len(blob) < 2**20
    ckpt.write_bytes(blob)
    _refused(ckpt, "declares state.json as 64.0 MB unpacked, more than the 8.0 MB", megabytes=20)
    ckpt.write_bytes(_archive(json.dumps({"format": 2, "state": None}).encode(), [], compress=zipfile.ZIP_DEFLATED))
    _refused(ckpt, "holds state.json compressed")


def test_file_larger_than_any_checkpoint_is_not_read(ckpt, monkeypatch):
    checkpoint.save(ckpt, _state())
    monkeypatch.setattr(checkpoint_bounds, "MAX_FILE_BYTES", 1000)
    _refused(ckpt, "more than the 1,000 bytes a checkpoint can be")


def _legacy(payload: bytes) -> bytes:
    """A protocol-4 pickle of {"format": 1, <payload's items>} where payload is raw SETITEMS content."""
    return b"\x80\x04}(\x8c\x06format" + b"K\x01" + payload + b"u."


@pytest.mark.parametrize("levels, words", [(80, "nests deeper than the 64 levels"),
                                           (60, "more than 100,000 values")])
def test_old_format_pickle_of_shared_lists(ckpt, levels, words):
    """A kilobyte standing for 2**80 (or 2**60) lists: the walk counts visits, not objects, and stops."""
    node: list = []
    for _ in range(levels):
        node = [node, node]
    state = {"format": 1, "model_name": "lenet_relu", "config": {}, "model": {}, "history": node}
    blob = pickle.dumps(state, protocol=4)
    assert len(blob) < 2000
    ckpt.write_bytes(blob)
    _refused(ckpt, words, seconds=20, megabytes=60)   # tracemalloc slows the walk about tenfold


def test_old_format_pickle_nested_a_hundred_thousand_deep(ckpt):
    depth = 100_000
    ckpt.write_bytes(_legacy(b"\x8c\x07history" + b"]" * depth + b"a" * (depth - 1)))
    _refused(ckpt, "nests deeper than the 64 levels")


def test_old_format_pickle_asking_numpy_for_a_huge_array(ckpt):
    class Huge:
        def __reduce__(self):
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:   # NumPy 1
                from numpy.core.multiarray import _reconstruct
            return _reconstruct, (np.ndarray, (10**10,), b"b")

    ckpt.write_bytes(pickle.dumps({"format": 1, "model": {"w": Huge()}}, protocol=4))
    _refused(ckpt, "builds an array in a way NumPy never pickles one")


def test_old_format_pickle_of_an_object_array(ckpt):
    weights = np.empty(2, dtype=object)
    weights[:] = [[1], [2]]
    ckpt.write_bytes(pickle.dumps({"format": 1, "model": {"w": weights}}, protocol=4))
    _refused(ckpt, "holds an array of object")


@pytest.mark.parametrize("where", ["model", "ema", "optimizer"])
def test_non_finite_weights(ckpt, where):
    bad = np.full((6, 1, 5, 5), 0.1, "float32")
    bad[0, 0, 0, 0] = np.nan if where != "ema" else np.inf
    state = _state()
    if where == "model":
        state["model"]["features.0.weight"] = bad
    elif where == "ema":
        state["ema"] = {"updates": 5, "shadow": {**state["model"], "features.0.weight": bad}}
    else:
        state["optimizer"]["features.0.weight_velocity_0"] = bad
    checkpoint.save(ckpt, state)
    _refused(ckpt, "NaN or infinite values", "features.0.weight")


@pytest.mark.parametrize("command", ["export", "predict", "resume"])
def test_nan_weights_end_each_command_in_one_line(tmp_path, command):
    """export, predict and train --resume of a run whose weights hold NaN: exit 2, one line, file kept."""
    from conftest import make_fake_dataset
    from PIL import Image

    run = tmp_path / "run"
    state = _state()
    state["model"]["features.0.weight"][0, 0, 0, 0] = np.nan
    checkpoint.save(run / checkpoint.CHECKPOINT, state)
    written = (run / checkpoint.CHECKPOINT).read_bytes()
    if command == "export":
        args = ["export", str(run)]
    elif command == "predict":
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "shirt.png")
        args = ["predict", str(run), str(tmp_path / "shirt.png")]
    else:
        make_fake_dataset(tmp_path / "d", n_train=40, n_test=20)
        args = ["train", "lenet_relu", "--profile", "smoke", "--batch-size", "20", "--no-progress", "--accel", "off",
                "--epochs", "2", "--data-dir", str(tmp_path / "d"), "--out", str(run), "--resume"]
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "NaN or infinite values in model weight features.0.weight" in lines[0], proc.stderr
    assert (run / checkpoint.CHECKPOINT).read_bytes() == written
