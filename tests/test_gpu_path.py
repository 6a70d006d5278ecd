"""The GPU path's logic with the device query mocked (no GPU here): profile choice, precision, eval batch,
per-step host copies, warm-up outside the timer, fp16 advice, run records."""
from types import SimpleNamespace

import paddle
import pytest

from paddle_cnn import checkpoint, data, runtime, trainer
from paddle_cnn.models import get_spec
from paddle_cnn import build_model, config_for, TrainConfig, Trainer
from paddle_cnn.config import choose_precision, TrainingError

from conftest import REPO, make_fake_dataset
from fake_gpu import V100, fake_gpus


@pytest.fixture
def fake_gpu(monkeypatch):
    """A machine that reports one GPU of the given compute capability (set .capability), at runtime's boundary."""
    class Gpu:
        capability = (7, 0)
    gpu = Gpu()
    state = fake_gpus(monkeypatch, [V100])
    monkeypatch.setattr(runtime, "gpu_capability", lambda device_id=None: gpu.capability)
    gpu.state = state
    return gpu


def test_auto_profile_follows_the_device(fake_gpu):
    assert config_for("alexnet", "auto").profile == "course"
    assert config_for("alexnet", "auto", device="gpu").profile == "course"
    cfg = config_for("alexnet", "auto", device="cpu")       # --device cpu on a GPU machine
    assert cfg.profile == "cpu" and cfg.resize == get_spec("alexnet").profile("cpu")["resize"] != 224


def test_auto_profile_on_a_cpu_machine():
    if runtime.gpu_count():
        pytest.skip("this machine has a GPU")
    assert config_for("alexnet", "auto").profile == "cpu"
    with pytest.raises(ValueError, match="no usable GPU"):
        config_for("alexnet", "auto", device="gpu")


@pytest.mark.parametrize("capability, amp, expected", [
    ((7, 0), "auto", "fp16"),      # V100: fp16 with a GradScaler
    ((8, 0), "auto", "bf16"),      # A100: bf16, no scaler
    ((8, 0), "fp16", "fp16"),
    ((7, 0), "off", "fp32"),
])
def test_precision_choice_on_a_gpu(fake_gpu, capability, amp, expected):
    fake_gpu.capability = capability
    assert choose_precision(amp, "gpu") == expected


def test_precision_choice_refusals(fake_gpu):
    assert choose_precision("auto", "cpu") == "fp32"
    with pytest.raises(ValueError, match="needs a GPU"):
        choose_precision("fp16", "cpu")
    fake_gpu.capability = (7, 0)
    with pytest.raises(ValueError, match="compute capability 8.0"):
        choose_precision("bf16", "gpu")


def test_scaler_only_for_fp16():
    assert trainer.PrecisionStep("fp16", "gpu").scaling and not trainer.PrecisionStep("bf16", "gpu").scaling
    assert not trainer.PrecisionStep("fp32", "cpu").scaling


def test_eval_batch_fits_the_gpu_budget(monkeypatch):
    """vgg11's course evaluation at batch 1000 and 224 px needs ~25 GiB: the trainer must pick less."""
    from paddle_cnn import memory

    cfg = config_for("vgg11", "course", device="cpu")
    t = Trainer.__new__(Trainer)
    t.cfg, t.device, t.precision = cfg, "gpu", "fp16"
    t.dist = SimpleNamespace(local_rank=0)                   # no GPU visible: the V100 plan (memory.GPU_BUDGET)
    batch = t.eval_batch_size()
    assert 1 <= batch < cfg.eval_batch_size
    assert memory.activation_bytes("vgg11", 224, batch, train=False, dtype_bytes=2) <= memory.GPU_BUDGET
    t.device = "cpu"
    assert t.eval_batch_size() == cfg.eval_batch_size       # the CPU keeps the configured batch


def test_no_host_copy_per_training_step(fake_data, monkeypatch):
    """Index gathers and augmentation stay on the device: a host->device copy per step would stall a GPU."""
    d = data.FashionMNIST(resize=32, data_dir=fake_data, augment="crop+flip")
    batches = d.train_batches(10, epoch=0)
    next(batches)                                            # the epoch's one permutation copy happens here
    calls = []
    real = paddle.to_tensor
    monkeypatch.setattr(paddle, "to_tensor", lambda *a, **k: calls.append(a) or real(*a, **k))
    for x, y in batches:
        assert x.shape == [10, 1, 32, 32]
    assert calls == []


def test_warm_up_steps_are_not_timed(tmp_path):
    make_fake_dataset(tmp_path, n_train=100, n_test=20)
    cfg = TrainConfig(model="lenet_relu", epochs=2, batch_size=10, lr=0.05, device="cpu", accel="off")
    result = Trainer(cfg, progress=False, log=None).fit(build_model(cfg), data.FashionMNIST(28, tmp_path))
    first, second = result.history
    assert first["examples"] == second["examples"] == 100
    assert first["timed_examples"] == 100 - trainer.TIMER_WARMUP_STEPS * 10
    assert second["timed_examples"] == 100                   # only the process's first steps are warm-up
    assert result.examples_per_sec == pytest.approx(
        (first["timed_examples"] + 100) / (first["train_time"] + second["train_time"]))


def test_fp16_overflow_suggests_fp32(tmp_path):
    t = Trainer(TrainConfig(model="lenet_relu", device="cpu", accel="off"), log=None)
    t.precision = "fp16"
    with pytest.raises(TrainingError, match="--amp off"):
        t.check_finite(paddle.to_tensor(float("inf")), 10, 0, 4, 50, 0)
    t.precision = "fp32"
    with pytest.raises(TrainingError) as e:
        t.check_finite(paddle.to_tensor(float("nan")), 10, 0, 4, 1, 0)
    assert "--amp off" not in str(e.value) and "lower the learning rate" in str(e.value)


def test_run_record_names_precision_and_processes(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=40, n_test=20)
    result = trainer.run(TrainConfig(model="lenet_relu", epochs=1, batch_size=20, device="cpu", accel="off"),
                         tmp_path / "out", data_dir=tmp_path / "d", progress=False, log=None)
    info = result.to_dict()["run"]
    assert info["precision"] == "fp32" and info["world"] == 1 and info["threads_per_process"] >= 1
    assert "path" not in result.data_source                  # no machine path in a results file


def test_environment_records_the_gpu(monkeypatch):
    fake_gpus(monkeypatch, [V100], cuda="11.8", cudnn="8.6.0")
    env = runtime.environment("gpu")
    assert env["gpu_name"] == "Tesla V100-SXM2-16GB" and env["gpu_memory_gib"] == 16.0 and env["gpu_count"] == 1
    assert env["gpu_capability"] == "7.0" and env["cuda"] == "11.8" and env["cudnn"] == "8.6.0"


def test_environment_records_the_cpu_vector_features(tmp_path, monkeypatch):
    """The flags that decide bf16 speed, read from /proc/cpuinfo's flags line, in a fixed order; unknown is empty."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\n"
                    "flags\t\t: fpu sse avx2 avx512_bf16 avx512f amx_tile avx512vl\n")
    assert runtime.cpu_features(str(info)) == ["avx2", "avx512f", "avx512_bf16", "amx_tile"]
    info.write_text("flags\t\t: fpu sse sse2\n")
    assert runtime.cpu_features(str(info)) == []
    assert runtime.cpu_features(str(tmp_path / "missing")) == []  # macOS, Windows
    monkeypatch.setattr(runtime, "cpu_features", lambda: ["avx2", "avx512f"])
    assert runtime.environment("cpu")["cpu_features"] == ["avx2", "avx512f"]


def test_results_written_before_the_cpu_features_still_read():
    from paddle_cnn.homework import schema

    path = sorted((REPO / "homework").glob("*/results.json"))[0]
    doc = schema.load_results(path)
    for run in doc["runs"].values():
        run["environment"].pop("cpu_features", None)
    schema.validate(doc, path)


def test_gpu_build_without_a_gpu_trains_on_the_cpu(monkeypatch):
    """AI Studio's GPU image on a CPU instance: auto means the CPU; --device gpu is one clear line."""
    fake_gpus(monkeypatch, [])
    assert runtime.resolve_device("auto") == "cpu"
    assert config_for("alexnet", "auto").profile == "cpu"
    with pytest.raises(ValueError, match="no usable GPU: paddle .* is a GPU build of Paddle and no GPU is visible"):
        runtime.resolve_device("gpu")


def test_resume_on_another_device_is_refused(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=40, n_test=20)
    cfg = TrainConfig(model="lenet_relu", epochs=1, batch_size=20, device="cpu", accel="off")
    d = data.FashionMNIST(28, tmp_path / "d")
    t = Trainer(cfg, tmp_path / "run", progress=False, log=None)
    t.fit(build_model(cfg), d)
    state = checkpoint.load(tmp_path / "run" / checkpoint.CHECKPOINT)
    state["device"] = "gpu"
    checkpoint.save(tmp_path / "run" / checkpoint.CHECKPOINT, state)
    with pytest.raises(TrainingError, match="trained on gpu"):
        Trainer(TrainConfig(**{**cfg.__dict__, "epochs": 2}), tmp_path / "run", log=None).fit(build_model(cfg), d,
                                                                                               resume=True)


def test_cgroup_quota_caps_the_cores(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert runtime.cgroup_cpu_limit(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert runtime.cgroup_cpu_limit(str(tmp_path)) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.cgroup_cpu_limit(str(v1)) == 0.5


def test_every_course_profile_lenet_and_scene_amp_is_fp32():
    """Launch-bound course profiles (28 px LeNets, 64 px scenes) train in fp32 on a GPU (see registry notes)."""
    from paddle_cnn.models import REGISTRY

    for name in ("lenet", "lenet_relu", "lenet_bn", "lenet_bn_scratch", "unet", "densebox"):
        assert REGISTRY[name].profiles["course"].get("amp") == "off", name
    assert all(REGISTRY[n].profiles["course"].get("amp", "auto") == "auto" for n in ("alexnet", "vgg11", "resnet18"))
