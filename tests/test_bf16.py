"""bf16 training on the CPU (issue 24): chosen only when asked, refused in one line where the CPU lacks it,
and, where it runs, a real short training whose convolutions and linear layers compute in bf16.

This machine's CPU may lack AVX512-BF16; oneDNN then emulates bf16 arithmetic (slowly), so the training
test mocks the CPU-feature query to exercise the same code path. Speed lives in benchmarks/.
"""
import numpy as np
import pytest

from paddle_cnn import accel
from paddle_cnn.accel import bf16 as bf16_mod
from paddle_cnn.config import TrainConfig, choose_precision
from paddle_cnn.data import FashionMNIST
from paddle_cnn import build_model, Trainer

from conftest import make_fake_dataset
from helpers import run_cli

NATIVE, WHY = bf16_mod.bf16_supported()


def test_precision_on_the_cpu():
    assert choose_precision("auto", "cpu") == "fp32"        # auto stays fp32: no accuracy evidence measured here
    assert choose_precision("off", "cpu") == "fp32"
    assert choose_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="--amp fp16 needs a GPU; on the CPU use --amp bf16"):
        choose_precision("fp16", "cpu")


def test_cpu_without_bf16_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(bf16_mod, "bf16_supported", lambda *a: (False, "Test CPU lacks avx512_bf16 and amx_bf16 "
                                                                      "(native bf16 arithmetic); use fp32 on it"))
    with pytest.raises(ValueError, match="--amp bf16 on the CPU: Test CPU lacks avx512_bf16"):
        Trainer(TrainConfig(model="lenet_relu", amp="bf16", device="cpu"), log=None)
    with pytest.raises(ValueError, match="drop --accel off"):
        Trainer(TrainConfig(model="lenet_relu", amp="bf16", device="cpu", accel="off"), log=None)


@pytest.mark.skipif(NATIVE, reason=f"this CPU has native bf16 ({WHY}): the refusal is for CPUs without it")
def test_cli_refuses_bf16_on_this_cpu_naming_the_feature(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    proc = run_cli("train", "lenet_relu", "--profile", "smoke", "--amp", "bf16", "--data-dir", str(tmp_path / "d"),
                   "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "avx512_bf16" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "o" / "results.json").exists()


def test_bf16_run_trains_through_onednn_and_records_its_precision(tmp_path, monkeypatch):
    if not accel.available()[0]:
        pytest.skip(f"the oneDNN accelerator is not available here: {accel.available()[1]}")
    monkeypatch.setattr(bf16_mod, "bf16_supported", lambda *a: (True, "avx512_bf16 (mocked)"))
    monkeypatch.setattr(bf16_mod, "_BF16_CHECKED", None)
    make_fake_dataset(tmp_path / "d", n_train=400, n_test=100)
    data = FashionMNIST(28, tmp_path / "d")
    runs = {}
    for amp in ("off", "bf16"):
        cfg = TrainConfig(model="lenet_relu", epochs=3, batch_size=50, lr=0.01, momentum=0.9, device="cpu", amp=amp)
        runs[amp] = Trainer(cfg, progress=False, log=None).fit(build_model(cfg), data)
    info = runs["bf16"].run_info
    assert info["precision"] == "bf16" and runs["off"].run_info["precision"] == "fp32"
    assert info["accel"]["bf16"]["Conv2D"] == 2 and info["accel"]["bf16"]["Linear"] == 3
    losses = {amp: [h["train_loss"] for h in r.history] for amp, r in runs.items()}
    assert losses["bf16"][0] > losses["bf16"][1] > losses["bf16"][2]              # it learns
    assert losses["bf16"] != losses["off"]                                        # and really computed in bf16
    np.testing.assert_allclose(losses["bf16"], losses["off"], rtol=0.05)           # close to fp32
    assert runs["bf16"].final["test_acc"] >= runs["off"].final["test_acc"] - 0.1
    # float32 master weights: the state dict is the fp32 model's
    assert all(str(v.dtype).endswith("float32") for v in runs["bf16"].model.state_dict().values())
