"""The memory model: exact hook counts on tiny nets, linear scaling, and every course profile on a GPU budget.

Expected bytes in the first tests are hand-computed from the shapes, not read
back from the hooks. The course-profile tests are parametrised over the
registry, so a new model's course profile is checked the moment it is registered.
"""
import paddle_cnn  # noqa: F401  (first: CPU tuning must precede ``import paddle``)

import math

import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from paddle_cnn import memory
from paddle_cnn.memory import GPU_BUDGET, activation_bytes, eval_batch_size, measure, step_memory
from paddle_cnn.models import REGISTRY, get_model
from paddle_cnn import build_model, config_for

pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track:UserWarning")
MODELS = list(REGISTRY)


def conv_relu():
    return nn.Sequential(nn.Conv2D(1, 4, 3, padding=1), nn.ReLU())


# --------------------------------------------------------------------------- exact counts
def test_conv_relu_counts_match_a_hand_computation():
    fp = measure(conv_relu(), [2, 1, 8, 8])
    x, conv, relu = 2 * 1 * 8 * 8, 2 * 4 * 8 * 8, 2 * 4 * 8 * 8  # elements: 128, 512, 512
    params = 4 * 1 * 3 * 3 + 4                                      # weight + bias = 40
    assert fp.param_bytes == params * 4 and fp.buffer_bytes == 0
    assert fp.activation_sum(2) == (x + conv + relu) * 4            # 4608
    assert fp.backward_work(2) == (relu + relu) * 4                 # ReLU's in + out is the largest call
    # momentum SGD: weights + grads + 1 velocity
    assert fp.train_bytes(2, 4, optimizer_slots=1) == (x + conv + relu) * 4 + 2 * relu * 4 + 3 * params * 4
    # fp16: activations at 2 bytes, fp32 weights and grads, plus the fp16 weight copies
    assert fp.train_bytes(2, 2, optimizer_slots=0) == (x + conv + relu) * 2 + 2 * relu * 2 + 2 * params * 4 + params * 2
    # evaluation: at the ReLU the batch (held by the caller), its input and its output are alive
    assert fp.eval_bytes(2) == (x + conv + relu) * 4 + params * 4


def test_lifetimes_end_with_the_last_reader():
    # Three convs in a row: conv1's output dies after conv2 reads it, so the peak is
    # at one layer (input + output) plus the batch, not the sum of all outputs.
    net = nn.Sequential(nn.Conv2D(1, 8, 1), nn.Conv2D(8, 8, 1), nn.Conv2D(8, 1, 1))
    fp = measure(net, [2, 1, 4, 4])
    px = 2 * 4 * 4
    params = (8 + 8) + (64 + 8) + (8 + 1)
    assert fp.eval_bytes(2) == (px + 8 * px + 8 * px) * 4 + params * 4
    assert fp.activation_sum(2) == (px + 8 * px + 8 * px + px) * 4


class TwoHeads(nn.Layer):
    """Returns a dict, one entry made by a functional call outside any layer (as DenseBox does)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(1, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        return {"prob": F.sigmoid(y), "raw": y}


def test_dict_outputs_are_counted_even_when_no_layer_made_them():
    fp = measure(TwoHeads(), [2, 1, 8, 8])
    x, y, prob = 2 * 64, 2 * 2 * 64, 2 * 2 * 64
    assert fp.activation_sum(2) == (x + y + prob) * 4
    assert fp.eval_bytes(2) == (x + y + prob) * 4 + (2 + 2) * 4  # outputs stay alive; conv weight + bias


def test_measure_restores_the_layer_mode():
    net = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    net.eval()
    measure(net, [2, 3], train=True)
    assert not net.training and not net[1].training


# --------------------------------------------------------------------------- scaling
def test_scaled_from_batch_2_equals_measured_at_batch_5():
    net = get_model("lenet_relu")
    small, large = measure(net, [2, 1, 28, 28]), measure(net, [5, 1, 28, 28])
    for dtype in (2, 4):
        assert small.train_bytes(5, dtype) == large.train_bytes(5, dtype)
        assert small.eval_bytes(5, dtype) == large.eval_bytes(5, dtype)


def test_activation_bytes_is_linear_in_batch():
    for train in (True, False):
        b10, b20, b30 = (activation_bytes("lenet", 28, b, train=train) for b in (10, 20, 30))
        assert b30 - b20 == b20 - b10 > 0
    # fp16 halves the per-example part, not the fp32 parameters
    step32 = activation_bytes("lenet", 28, 20, train=False) - activation_bytes("lenet", 28, 10, train=False)
    step16 = (activation_bytes("lenet", 28, 20, train=False, dtype_bytes=2)
              - activation_bytes("lenet", 28, 10, train=False, dtype_bytes=2))
    assert step16 * 2 == step32


def test_footprint_leaves_device_and_random_state_alone():
    paddle.seed(7)
    expected = paddle.rand([3]).numpy()
    paddle.seed(7)
    device = paddle.get_device()
    memory.footprint("lenet_relu", 32, train=True, model_args={"num_classes": 3})  # a new key: builds a model
    assert paddle.get_device() == device
    assert (paddle.rand([3]).numpy() == expected).all()


# --------------------------------------------------------------------------- the course on a GPU
def test_vgg11_course_evaluation_in_fp32_does_not_fit_a_v100():
    cfg = config_for("vgg11", "course")
    assert (cfg.resize, cfg.eval_batch_size) == (224, 1000)
    peak = activation_bytes("vgg11", 224, 1000, train=False, dtype_bytes=4)
    conv1_and_relu = 2 * 64 * 224 * 224 * 4 * 1000   # the two ~12.8 GB maps
    assert conv1_and_relu < peak and peak > GPU_BUDGET
    assert eval_batch_size(cfg, GPU_BUDGET, 4) < 1000


@pytest.mark.parametrize("name", MODELS)
def test_course_training_step_fits_the_budget_in_fp16(name):
    cfg = config_for(name, "course")
    need = activation_bytes(name, cfg.resize, cfg.batch_size, True, 2, cfg.model_args, memory.optimizer_slots(cfg))
    assert need <= GPU_BUDGET, f"{name}: {need / 2**30:.1f} GiB at batch {cfg.batch_size}"


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype_bytes", [2, 4])
def test_course_evaluation_fits_at_the_chosen_batch(name, dtype_bytes):
    cfg = config_for(name, "course")
    batch = eval_batch_size(cfg, GPU_BUDGET, dtype_bytes)
    assert 1 <= batch <= cfg.eval_batch_size
    assert activation_bytes(name, cfg.resize, batch, False, dtype_bytes, cfg.model_args) <= GPU_BUDGET
    if batch < cfg.eval_batch_size:  # and it is the largest that fits
        assert activation_bytes(name, cfg.resize, batch + 1, False, dtype_bytes, cfg.model_args) > GPU_BUDGET


def test_eval_batch_size_follows_the_budget():
    cfg = config_for("vgg11", "course")
    full = eval_batch_size(cfg, GPU_BUDGET, 4)
    assert eval_batch_size(cfg, GPU_BUDGET // 2, 4) < full
    assert eval_batch_size(cfg, 1, 4) == 1                            # nothing fits: still 1
    assert eval_batch_size(cfg, 10**15, 4) == cfg.eval_batch_size     # never above the profile's


def test_step_memory_uses_the_precision_of_amp():
    auto = step_memory(config_for("vgg11", "course"))
    off = step_memory(config_for("vgg11", "course", amp="off"))
    assert set(auto) >= {"train_bytes", "eval_bytes", "eval_batch"}
    assert (auto["dtype_bytes"], off["dtype_bytes"]) == (2, 4)
    assert off["eval_batch"] == eval_batch_size(config_for("vgg11", "course"), GPU_BUDGET, 4)
    assert auto["eval_batch"] > off["eval_batch"] and off["train_bytes"] > auto["train_bytes"]
    assert off["eval_bytes"] <= GPU_BUDGET


# --------------------------------------------------------------------------- every course profile runs
@pytest.mark.parametrize("name", MODELS)
def test_course_profile_builds_and_runs_forward_backward(name):
    cfg = config_for(name, "course")
    model = build_model(cfg)
    channels = cfg.model_args.get("in_channels", 1)
    x = paddle.randn([2, channels, cfg.resize, cfg.resize])
    outputs = model(x)
    parts = list(outputs.values()) if isinstance(outputs, dict) else [outputs]
    loss = sum(p.astype("float32").mean() for p in parts)
    loss.backward()
    assert math.isfinite(float(loss))
    missing = [n for n, p in model.named_parameters() if not p.stop_gradient and p.grad is None]
    assert not missing, f"{name}: parameters without a gradient: {missing[:5]}"


def test_gpu_budget_follows_the_card(monkeypatch):
    """The budget is the visible card's memory less the headroom; with no GPU visible, a V100's plan."""
    from fake_gpu import A100, V100, fake_gpus

    state = fake_gpus(monkeypatch, [A100, V100])
    assert memory.gpu_budget(0) == 40 * 2**30 - memory.GPU_HEADROOM
    assert memory.gpu_budget(1) == GPU_BUDGET == 16 * 2**30 - memory.GPU_HEADROOM
    state.devices = []
    assert memory.gpu_budget() == GPU_BUDGET
    small = paddle_cnn.runtime.GpuInfo(name="a 4 GB card", major=6, minor=1, total_memory=4 * 2**30)
    state.devices = [small]
    assert memory.gpu_budget() == 2**30
    cfg = config_for("vgg11", "course")
    assert eval_batch_size(cfg, memory.gpu_budget(), 4) < eval_batch_size(cfg, GPU_BUDGET, 4)


def test_the_size_check_runs_once_per_command_line_run(tmp_path, monkeypatch):
    """The command line refuses a size before preparing --out; the loop it starts does not check again."""
    from conftest import make_fake_dataset
    from paddle_cnn import cli

    checked, real = [], memory.check_fits_memory
    monkeypatch.setattr(memory, "check_fits_memory", lambda cfg: checked.append((cfg.model, cfg.resize)) or real(cfg))
    make_fake_dataset(tmp_path / "d", n_train=128, n_test=20)
    code = cli.main(["train", "lenet_relu", "--profile", "smoke", "--epochs", "1", "--device", "cpu", "--accel", "off",
                     "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0 and checked == [("lenet_relu", 28)]
    assert (tmp_path / "run" / "results.json").exists()


def test_a_size_that_cannot_fit_is_refused_before_anything_is_built(monkeypatch):
    monkeypatch.setattr(memory.runtime, "memory_bytes", lambda: 2**30)
    with pytest.raises(ValueError, match=r"lenet_relu at --resize 2000 does not fit in memory: .* has 1 GiB"):
        memory.check_fits_memory(config_for("lenet_relu", "smoke", resize=2000))
    memory.check_fits_memory(config_for("lenet_relu", "smoke"))  # a profile's own size is taken as it is
