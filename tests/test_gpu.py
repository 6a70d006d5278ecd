"""What only a GPU runs: fp16 and bf16 training steps, a loss-scaler state surviving a resume, an NCCL step.

Marked ``gpu``: they run under ``PADDLE_CNN_TEST_DEVICE=gpu`` on a machine with a GPU and are skipped,
saying why, everywhere else (conftest.py). The device-choice logic itself is tested without a GPU in
test_gpu_path.py, with mocked device queries.
"""
import json
from pathlib import Path

import paddle_cnn  # noqa: F401  (CPU tuning before paddle)
import numpy as np
import paddle
import pytest

from paddle_cnn import TrainConfig, Trainer, build_model, checkpoint, launcher, runtime
from paddle_cnn.data import FashionMNIST
from paddle_cnn.trainer import train_one_epoch

from conftest import make_fake_dataset

pytestmark = pytest.mark.gpu
LOW = {"fp16": paddle.float16, "bf16": paddle.bfloat16}


def _cfg(**kw):
    base = dict(model="lenet_relu", resize=28, epochs=2, batch_size=20, lr=0.05, device="gpu", accel="off",
                seed=3, eval_batch_size=20)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_mixed_precision_step_computes_in_low_precision_and_updates_fp32_weights(tmp_path, precision):
    if precision == "bf16" and runtime.gpu_precision(0)["bf16"] is not True:
        pytest.skip(f"this GPU has no bf16 (Paddle says {runtime.gpu_precision(0)['bf16']})")
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    cfg = _cfg(amp=precision)
    trainer = Trainer(cfg, progress=False, log=None)
    assert trainer.device == "gpu" and trainer.precision == precision
    data = FashionMNIST(28, tmp_path / "d")
    model = build_model(cfg)
    state = trainer.start(model)
    step = state.step
    assert step.enabled and step.scaling == (precision == "fp16")
    with step.autocast():  # O1: convolutions (white list) compute in the low precision
        probe = paddle.nn.functional.conv2d(paddle.randn([2, 1, 8, 8]), paddle.randn([4, 1, 3, 3]))
    assert probe.dtype == LOW[precision]
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    record = train_one_epoch(trainer, state, data, 0)
    assert np.isfinite(record["train_loss"]) and record["examples"] == 100
    after = model.state_dict()
    assert all(after[k].dtype == paddle.float32 for k in before)  # master weights stay fp32
    assert any(not np.array_equal(before[k], after[k].numpy()) for k in before)
    if precision == "fp16":  # dynamic loss scaling from 2**14: it only shrinks (an overflow) in 5 steps
        scaler = step.scaler.state_dict()
        assert scaler["use_dynamic_loss_scaling"] and 0 < _scale(scaler) <= 2.0 ** 14
        assert 0 <= scaler["incr_count"] <= 5 and (scaler["incr_count"] == 5) == (_scale(scaler) == 2.0 ** 14)
    else:
        assert step.scaler.state_dict() == {}  # bf16 needs no loss scaling: the scaler is off


def _scale(scaler_state) -> float:
    return float(np.asarray(scaler_state["scale"]).reshape(-1)[0])  # a [1] array in Paddle's state_dict


def test_the_loss_scaler_state_survives_a_resume(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    cfg, out = _cfg(amp="fp16"), tmp_path / "run"
    data = FashionMNIST(28, tmp_path / "d")
    Trainer(cfg, out, progress=False, log=None).fit(build_model(cfg), data, stop_after=1)
    saved = checkpoint.load(out / checkpoint.CHECKPOINT)["scaler"]
    assert saved and saved["use_dynamic_loss_scaling"] and 0 < _scale(saved) <= 2.0 ** 14

    state = Trainer(cfg, out, progress=False, log=None).start(build_model(cfg), resume=True)
    restored = state.step.scaler.state_dict()
    assert _scale(restored) == _scale(saved) and restored["incr_count"] == saved["incr_count"]
    result = Trainer(cfg, out, progress=False, log=None).fit(build_model(cfg), data, resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2]
    final = checkpoint.load(out / checkpoint.CHECKPOINT)["scaler"]
    if _scale(final) == _scale(saved):  # no overflow in epoch 2: its 5 steps counted on from the saved count
        assert final["incr_count"] == saved["incr_count"] + 5


def _train_and_dump(cfg_dict, data_dir, out, dump):
    """Worker: train, then write this rank's final parameters to dump/rank<R>.npz."""
    from paddle_cnn import distributed
    from paddle_cnn.config import TrainConfig as Cfg
    from paddle_cnn.trainer import run

    result = run(Cfg(**cfg_dict), out, data_dir=data_dir, progress=False, log=None)
    rank = distributed.current().rank
    np.savez(Path(dump) / f"rank{rank}.npz", **{k: v.numpy() for k, v in result.model.state_dict().items()})
    return 0


def test_two_processes_train_one_model_over_nccl(tmp_path):
    if runtime.gpu_count() < 2:
        pytest.skip(f"a 2-process NCCL step needs 2 GPUs; this machine has {runtime.gpu_count()}")
    make_fake_dataset(tmp_path / "d", n_train=80, n_test=20)
    cfg = _cfg(epochs=1, amp="off")
    (tmp_path / "dump").mkdir()
    launcher.spawn(_train_and_dump, 2, "gpu", cfg.__dict__, str(tmp_path / "d"), str(tmp_path / "out"),
                   str(tmp_path / "dump"))
    ranks = [dict(np.load(tmp_path / "dump" / f"rank{r}.npz")) for r in (0, 1)]
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])  # the all-reduced gradients kept them equal
    run_info = json.loads((tmp_path / "out" / "results.json").read_text())["run"]
    assert run_info["world"] == 2 and run_info["backend"] == "nccl"
