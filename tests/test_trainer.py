"""The shared trainer: learning, schedules, initialisation, checkpoints and failures."""
import math

import numpy as np
import paddle
import pytest

from paddle_cnn import checkpoint, trainer
from paddle_cnn.data import FashionMNIST
from paddle_cnn import build_model, config_for, TrainConfig, Trainer
from paddle_cnn.config import TrainingError
from paddle_cnn.trainer import lr_at

from conftest import make_fake_dataset


def test_learns_a_separable_problem_perfectly(tmp_path):
    make_fake_dataset(tmp_path, n_train=200, n_test=50)
    cfg = TrainConfig(model="lenet_relu", epochs=8, batch_size=20, lr=0.01, optimizer="adam", device="cpu")
    result = Trainer(cfg, progress=False, log=None).fit(build_model(cfg), FashionMNIST(28, tmp_path))
    assert result.history[-1]["test_acc"] == 1.0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert "test acc 1.000" in result.summary() and result.summary().endswith("examples/sec on cpu")


@pytest.mark.slow
def test_real_lenet_relu_learns_fashion_mnist(arrays):
    cfg = config_for("lenet_relu", "cpu", epochs=1, train_subset=6000, test_subset=2000, device="cpu")
    result = Trainer(cfg, progress=False, log=None).fit(build_model(cfg), FashionMNIST(28, arrays=arrays,
                                                         train_subset=6000, test_subset=2000))
    assert result.history[0]["test_acc"] >= 0.70, result.history


def test_resume_continues_at_the_next_epoch(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=3, batch_size=20, lr=0.05, momentum=0.9, device="cpu", seed=3)
    full = Trainer(cfg, tmp_path / "full", progress=False, log=None).fit(build_model(cfg), data)

    short = TrainConfig(**{**cfg.__dict__, "epochs": 2})
    Trainer(short, tmp_path / "part", progress=False, log=None).fit(build_model(short), data)
    logged = []
    resumed = Trainer(cfg, tmp_path / "part", progress=False, log=logged.append).fit(build_model(cfg), data,
                                                                                   resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    epochs = [line for line in logged if line.startswith("epoch ")]
    assert len(epochs) == 1 and epochs[0].startswith("epoch 3/3")   # only the missing epoch ran
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["test_acc"] == b["test_acc"]


def test_resume_refuses_other_model_or_config(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=40, n_test=20)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=1, batch_size=20, device="cpu")
    with pytest.raises(TrainingError, match="no checkpoint"):
        Trainer(cfg, tmp_path / "run", log=None).fit(build_model(cfg), data, resume=True)
    Trainer(cfg, tmp_path / "run", progress=False, log=None).fit(build_model(cfg), data)
    other = TrainConfig(model="lenet", epochs=2, batch_size=20, device="cpu")
    with pytest.raises(TrainingError, match="belongs to model 'lenet_relu'"):
        Trainer(other, tmp_path / "run", log=None).fit(build_model(other), data, resume=True)
    changed = TrainConfig(model="lenet_relu", epochs=2, batch_size=20, lr=0.5, device="cpu")
    with pytest.raises(TrainingError, match="lr: checkpoint 0.1 vs now 0.5"):
        Trainer(changed, tmp_path / "run", log=None).fit(build_model(changed), data, resume=True)


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path):
    """Epoch 1 trains; a x1e30 step in the learning rate blows epoch 2 up: one clear error, epoch 1's checkpoint kept."""
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=2, batch_size=20, lr=0.05, device="cpu", accel="off",
                      schedule="step", step_every=1, step_gamma=1e30)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"non-finite loss .* in epoch 2, step \d+.*checkpoint of epoch 1"):
        Trainer(cfg, run, progress=False, log=None).fit(build_model(cfg), data)
    state = checkpoint.load(run / checkpoint.CHECKPOINT)
    assert [h["epoch"] for h in state["history"]] == [1] and math.isfinite(state["history"][0]["train_loss"])
    model = build_model(cfg)
    model.set_state_dict(checkpoint.as_tensors(state["model"]))
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())


def test_xavier_init_is_really_applied():
    cfg = TrainConfig(model="lenet_relu", device="cpu")
    model = build_model(cfg)
    for layer in model.sublayers():
        if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Linear)):
            w = layer.weight.numpy()
            fan_in, fan_out = (w.shape if w.ndim == 2 else
                               (w.shape[1] * w[0, 0].size, w.shape[0] * w[0, 0].size))
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert np.abs(w).max() <= bound + 1e-6
            assert np.abs(w).max() > 0.8 * bound        # spread over the whole Xavier range
            assert not layer.bias.numpy().any()
    default = build_model(TrainConfig(model="lenet_relu", init="default"))
    assert default.features[0].bias.numpy().any() or not np.allclose(default.features[0].weight.numpy(),
                                                                 model.features[0].weight.numpy())


def test_learning_rate_schedules():
    cfg = TrainConfig(model="lenet", epochs=10, lr=1.0, schedule="step", step_every=3, step_gamma=0.1)
    assert [lr_at(cfg, e * 5, 5) for e in (0, 2, 3, 6, 9)] == pytest.approx([1, 1, 0.1, 0.01, 0.001])
    cos = TrainConfig(model="lenet", epochs=10, lr=1.0, schedule="cosine")
    assert lr_at(cos, 0, 10) == 1.0 and lr_at(cos, 50, 10) == pytest.approx(0.5) and lr_at(cos, 99, 10) < 0.001
    one = TrainConfig(model="lenet", epochs=10, lr=1.0, schedule="onecycle")
    values = [lr_at(one, s, 10) for s in range(100)]
    assert values[0] == pytest.approx(0.04) and max(values) == pytest.approx(1.0, abs=0.01)
    assert values.index(max(values)) == 30 and values[-1] < 0.01
    warm = TrainConfig(model="lenet", epochs=10, lr=1.0, warmup_epochs=1)
    assert lr_at(warm, 0, 10) == pytest.approx(0.1) and lr_at(warm, 10, 10) == 1.0


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs must be a positive"), ("batch_size", -1, "batch size must be a positive"),
    ("lr", float("nan"), "learning rate must be a positive"), ("lr", 0.0, "learning rate must be a positive"),
    ("optimizer", "rmsprop", "choose one of sgd, adam, adamw"), ("resize", 8, "at least 12x12"),
    ("device", "tpu", "choose one of auto, cpu, gpu"), ("resize", 0, "resize must be a positive"),
])
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(model="lenet", **{field: value}).validate()


def test_profiles_resolve():
    cfg = config_for("lenet", "smoke", epochs=3, lr=None)
    assert cfg.epochs == 3 and cfg.lr == 0.9 and cfg.profile == "smoke"
    from paddle_cnn import runtime

    assert config_for("lenet").profile == ("course" if runtime.gpu_count() else "cpu")
    with pytest.raises(ValueError, match="no profile 'fast'"):
        config_for("lenet", "fast")
    with pytest.raises(ValueError, match="unknown model 'lenet9'"):
        config_for("lenet9")


def _stop_after(epoch: int):
    """A log callback that interrupts training right after epoch ``epoch`` was saved and logged."""
    def log(line):
        if line.startswith(f"epoch {epoch}/"):
            raise KeyboardInterrupt
    return log


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_resume_under_a_schedule_horizon(tmp_path, schedule):
    """Same --epochs: the resumed run equals the uninterrupted one. More --epochs: refused, saying what to do."""
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=3, batch_size=20, lr=0.05, momentum=0.9, device="cpu", seed=2,
                      schedule=schedule, accel="off")
    full = Trainer(cfg, tmp_path / "full", progress=False, log=None).fit(build_model(cfg), data)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tmp_path / "part", progress=False, log=_stop_after(2)).fit(build_model(cfg), data)
    more = TrainConfig(**{**cfg.__dict__, "epochs": 5})
    with pytest.raises(TrainingError, match=f"{schedule} schedule planned over 3 epochs.*--epochs 3"):
        Trainer(more, tmp_path / "part", log=None).fit(build_model(more), data, resume=True)
    resumed = Trainer(cfg, tmp_path / "part", progress=False, log=None).fit(build_model(cfg), data, resume=True)
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6) and a["lr_end"] == b["lr_end"]


def test_cpu_threads_zero_means_all_cores(monkeypatch):
    from paddle_cnn import runtime

    seen = []
    monkeypatch.setattr("paddle.base.core.set_num_threads", seen.append)
    Trainer(TrainConfig(model="lenet", device="cpu", cpu_threads=1), log=None)
    Trainer(TrainConfig(model="lenet", device="cpu", cpu_threads=0), log=None)
    assert seen == [1, runtime.physical_cores()]


@pytest.mark.parametrize("name, momentum, wd, cls", [
    ("sgd", 0.0, 0.0, "SGD"), ("sgd", 0.9, 1e-4, "Momentum"), ("adam", 0.0, 1e-4, "Adam"), ("adamw", 0.0, 0.05, "AdamW"),
])
def test_optimizer_per_choice(name, momentum, wd, cls):
    cfg = TrainConfig(model="lenet", optimizer=name, momentum=momentum, weight_decay=wd, lr=0.3)
    opt = trainer.make_optimizer(cfg, build_model(cfg))
    assert type(opt).__name__ == cls and opt.get_lr() == pytest.approx(0.3)
    if name == "adamw":
        assert opt._weight_decay == pytest.approx(0.05) or getattr(opt, "_coeff", None) == pytest.approx(0.05)


def test_label_smoothing_against_a_hand_computation():
    from paddle_cnn.metrics import cross_entropy

    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], "float32")
    y = np.array([0, 2])
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    eps = 0.1
    target = np.full((2, 3), eps / 3) + (1 - eps) * np.eye(3)[y]
    expected = -(target * logp).sum(1).mean()
    got = float(cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(y), eps))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(y), 0.0)) == pytest.approx(
        -logp[[0, 1], y].mean(), rel=1e-5)


def test_visualdl_scalars_or_one_notice(tmp_path, monkeypatch):
    make_fake_dataset(tmp_path / "d", n_train=40, n_test=20)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=2, batch_size=20, device="cpu", accel="off",
                      log_dir=str(tmp_path / "vdl"))
    try:
        import visualdl  # noqa: F401
    except ImportError:
        pytest.skip("visualdl is not installed (requirements.txt installs it)")
    result = Trainer(cfg, progress=False, log=None).fit(build_model(cfg), data)
    from visualdl import LogReader

    (log_file,) = [p for p in (tmp_path / "vdl").rglob("*") if p.is_file()]
    reader = LogReader(file_path=str(log_file))
    keys = ("train_loss", "train_metric", "examples_per_sec", "lr_end", result.metric)
    assert sorted(reader.get_tags()["scalar"]) == sorted(f"lenet_relu/{k}" for k in keys)
    for key in keys:  # one scalar per epoch, the history's value (stored as float32)
        points = [(r.id, r.value) for r in reader.get_data("scalar", f"lenet_relu/{key}")]
        assert [step for step, _ in points] == [1, 2]
        assert [v for _, v in points] == pytest.approx([h[key] for h in result.history], rel=1e-6)
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "visualdl" else real_import(name, *a, **k))
    logged = []
    Trainer(cfg, progress=False, log=logged.append).fit(build_model(cfg), data)
    assert sum("visualdl is not installed" in line for line in logged) == 1


def test_evaluate_scores_the_model_it_is_given_after_an_ema_fit(tmp_path):
    """Regression: a Trainer that ran an EMA fit once swapped that run's averaged weights into any model it
    evaluated later. Now a used Trainer and a fresh one score an untrained model alike."""
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=40)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=2, batch_size=20, lr=0.05, device="cpu", accel="off", ema=0.9)
    used = Trainer(cfg, progress=False, log=None)
    used.fit(build_model(cfg), data)
    untrained = build_model(TrainConfig(**{**cfg.__dict__, "seed": 5}))
    fresh = Trainer(cfg, progress=False, log=None).evaluate(untrained, data)
    again = used.evaluate(untrained, data)
    assert again == fresh
    # and the untrained weights were not touched by the evaluation
    before = {k: v.numpy().copy() for k, v in untrained.state_dict().items()}
    used.evaluate(untrained, data)
    assert all((v.numpy() == before[k]).all() for k, v in untrained.state_dict().items())


def _one_step(cfg, x, y):
    """Parameters before and after one optimizer step of ``cfg`` on a tiny linear model (plain numbers)."""
    from paddle_cnn.metrics import cross_entropy

    paddle.seed(0)
    net = paddle.nn.Linear(4, 3)
    w0 = net.weight.numpy().copy()
    opt = trainer.make_optimizer(cfg, net)
    loss = cross_entropy(net(paddle.to_tensor(x)), paddle.to_tensor(y), 0.0)
    loss.backward()
    grad = net.weight.grad.numpy().copy()
    opt.step()
    return w0, grad, net.weight.numpy()


def test_gradient_clipping_caps_the_global_norm():
    x = np.full((2, 4), 50.0, "float32")
    y = np.array([0, 1])
    w0, grad, w1 = _one_step(TrainConfig(model="lenet", lr=1.0, optimizer="sgd", grad_clip=0.01), x, y)
    # Plain SGD moves the weight by lr * clipped gradient; the bias shares the global norm, so the weight's
    # step is at most 0.01 and in the gradient's direction.
    step = w0 - w1
    assert np.linalg.norm(step) <= 0.01 + 1e-6 and np.linalg.norm(grad) > 1
    np.testing.assert_allclose(step / np.linalg.norm(step), grad / np.linalg.norm(grad), rtol=1e-4, atol=1e-6)
    w0, grad, w1 = _one_step(TrainConfig(model="lenet", lr=1.0, optimizer="sgd"), x, y)
    np.testing.assert_allclose(w0 - w1, grad, rtol=1e-5, atol=1e-6)          # no clipping: the whole gradient


def test_weight_decay_is_l2_for_sgd_and_decoupled_for_adamw():
    x, y = np.zeros((2, 4), "float32"), np.array([0, 1])        # zero input: the weight's loss gradient is 0
    w0, grad, w1 = _one_step(TrainConfig(model="lenet", lr=0.5, optimizer="sgd", weight_decay=0.1), x, y)
    assert np.abs(grad).max() == 0
    np.testing.assert_allclose(w1, w0 - 0.5 * 0.1 * w0, rtol=1e-5)          # L2: lr * wd * w
    w0, grad, w1 = _one_step(TrainConfig(model="lenet", lr=0.5, optimizer="adamw", weight_decay=0.1), x, y)
    np.testing.assert_allclose(w1, w0 * (1 - 0.5 * 0.1), rtol=1e-5)          # decoupled: w * (1 - lr * wd)


def test_resume_evaluates_an_epoch_saved_before_its_evaluation(tmp_path):
    """A run killed between an epoch's checkpoint and its evaluation resumes by scoring that epoch first."""
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=2, batch_size=20, device="cpu", accel="off")
    full = Trainer(cfg, tmp_path / "full", progress=False, log=None).fit(build_model(cfg), data).history
    Trainer(cfg, tmp_path / "cut", progress=False, log=None).fit(build_model(cfg), data, stop_after=1)
    path = tmp_path / "cut" / checkpoint.CHECKPOINT
    state = checkpoint.load(path)
    del state["history"][0]["test_acc"]                            # as saved before the evaluation
    checkpoint.save(path, state)
    resumed = Trainer(cfg, tmp_path / "cut", progress=False, log=None).fit(build_model(cfg), data, resume=True)
    assert [h["test_acc"] for h in resumed.history] == [h["test_acc"] for h in full]


def test_nothing_to_train_says_so_and_returns_the_checkpoint_history(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=20)
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=1, batch_size=20, device="cpu", accel="off")
    first = Trainer(cfg, tmp_path / "run", progress=False, log=None).fit(build_model(cfg), data)
    lines = []
    again = Trainer(cfg, tmp_path / "run", progress=False, log=lines.append).fit(build_model(cfg), data, resume=True)
    assert lines == ["checkpoint already has 1 epochs (of 1); nothing to train"]
    assert again.history == first.history and again.final == first.final
