"""The best-model section's training tricks: random erasing, weight averaging, flip at test time."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_cnn.data import FashionMNIST, random_erase
from paddle_cnn.ema import WeightAverage
from paddle_cnn.tasks.classification import ClassificationTask
from paddle_cnn import build_model, config_for, TrainConfig, Trainer

from conftest import make_fake_dataset


# --------------------------------------------------------------------------- random erasing
def test_random_erase_blanks_one_rectangle_in_the_chosen_fraction():
    paddle.seed(5)
    x = paddle.ones([4000, 1, 28, 28])
    erased = (random_erase(x, 0.5).numpy()[:, 0] == 0)              # [N, H, W] erased pixels
    hit = erased.any(axis=(1, 2))
    assert 0.46 < hit.mean() < 0.54                                  # about half the images, drawn per image
    for mask in erased[hit][:200]:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all() and mask.sum() == box.size                   # one solid rectangle, nothing else
        assert 0.02 * 784 - 8 <= mask.sum() <= 0.4 * 784 + 28          # the paper's area range, rounded sides
        assert 0.3 / 1.5 <= box.shape[0] / box.shape[1] <= 1.5 / 0.3   # aspect within [0.3, 1/0.3], clipped
    assert (random_erase(x, 0.0).numpy() == 1).all()
    assert (random_erase(x[:50], 1.0).numpy() == 0).any(axis=(1, 2, 3)).all()


def test_erase_reaches_training_batches_only(tmp_path):
    make_fake_dataset(tmp_path, n_train=64, n_test=16)
    plain, erased = FashionMNIST(28, tmp_path), FashionMNIST(28, tmp_path, erase=1.0)
    paddle.seed(0)
    xp, _ = next(plain.train_batches(64, epoch=0))
    paddle.seed(0)
    xe, _ = next(erased.train_batches(64, epoch=0))
    changed = (xp.numpy() != xe.numpy()).any(axis=(1, 2, 3))
    assert changed.mean() > 0.9 and ((xe.numpy() == 0) | (xp.numpy() == xe.numpy())).all()
    assert (next(plain.test_batches(16))[0].numpy() == next(erased.test_batches(16))[0].numpy()).all()


# --------------------------------------------------------------------------- weight averaging
def test_weight_average_follows_the_formula_and_restores_the_trained_weights():
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Linear(3, 4), paddle.nn.BatchNorm1D(4))
    start = {n: p.numpy().copy() for n, p in net.named_parameters()}
    avg = WeightAverage(net, decay=0.9)
    expected = dict(start)
    for t in range(1, 30):
        with paddle.no_grad():
            for p in net.parameters():
                p.set_value(p + 0.1)
        avg.update(net)
        d = min(0.9, (1 + t) / (10 + t))
        now = {n: p.numpy() for n, p in net.named_parameters()}
        expected = {n: d * expected[n] + (1 - d) * now[n] for n in expected}
    trained = {n: p.numpy().copy() for n, p in net.named_parameters()}
    with avg.applied(net):
        for n, p in net.named_parameters():   # BN's running statistics are averaged too
            np.testing.assert_allclose(p.numpy(), expected[n], rtol=1e-5, atol=1e-6)
    for n, p in net.named_parameters():
        np.testing.assert_array_equal(p.numpy(), trained[n])
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(net, 1.0)


def _fit(tmp_path, out=None, resume=False, **kw):
    data = FashionMNIST(28, tmp_path / "d")
    cfg = TrainConfig(model="lenet_relu", epochs=3, batch_size=20, lr=0.05, momentum=0.9, device="cpu", seed=3,
                      accel="off", **kw)
    return Trainer(cfg, out, progress=False, log=None).fit(build_model(cfg), data, resume=resume), data


def test_ema_run_scores_the_average_and_reports_what_it_added(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=40)
    result, data = _fit(tmp_path, ema=0.9)
    last = result.history[-1]
    assert "test_acc_without_ema" not in result.history[0]
    # Averaging changes no training step, so "without EMA" is the score of the same run without --ema.
    plain, _ = _fit(tmp_path)
    assert last["test_acc_without_ema"] == plain.final["test_acc"]
    # The returned model holds the average: scoring it again gives the headline figure.
    task = ClassificationTask()
    with paddle.no_grad():
        result.model.eval()
        assert task.bind(result.config).evaluate(result.model, data, 1000)["test_acc"] == last["test_acc"]


def test_ema_resume_equals_the_uninterrupted_run(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=40)
    full, _ = _fit(tmp_path, tmp_path / "full", ema=0.9)
    data = FashionMNIST(28, tmp_path / "d")
    short = TrainConfig(model="lenet_relu", epochs=2, batch_size=20, lr=0.05, momentum=0.9, device="cpu", seed=3,
                        accel="off", ema=0.9)
    Trainer(short, tmp_path / "part", progress=False, log=None).fit(build_model(short), data)
    resumed, _ = _fit(tmp_path, tmp_path / "part", resume=True, ema=0.9)
    for (n, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=n)


# --------------------------------------------------------------------------- flip at test time
def test_flip_tta_sums_the_probabilities_of_both_views():
    paddle.seed(1)
    net = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(28 * 28, 10))
    x = paddle.randn([6, 1, 28, 28])
    cfg = TrainConfig(model="lenet", tta="flip")
    expected = F.softmax(net(x), axis=-1) + F.softmax(net(paddle.flip(x, axis=[3])), axis=-1)
    np.testing.assert_allclose(ClassificationTask(cfg).scores(net, x).numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(ClassificationTask(TrainConfig(model="lenet")).scores(net, x).numpy(),
                                  net(x).numpy())


def test_tta_run_reports_the_score_without_it(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=100, n_test=40)
    result, _ = _fit(tmp_path, tta="flip")
    plain, _ = _fit(tmp_path)                        # test-time flips change no training step
    assert result.final["test_acc_without_tta"] == plain.final["test_acc"]
    assert result.history[-1]["train_loss"] == plain.history[-1]["train_loss"]


# --------------------------------------------------------------------------- settings
def test_tricks_are_validated_with_the_fix():
    with pytest.raises(ValueError, match="erase is the fraction"):
        TrainConfig(model="lenet", erase=1.5).validate()
    with pytest.raises(ValueError, match="ema is a decay"):
        TrainConfig(model="lenet", ema=1.0).validate()
    with pytest.raises(ValueError, match="apply to classification; unet is a segmentation model"):
        config_for("unet", "smoke", tta="flip")
    with pytest.raises(ValueError, match="unknown tta 'vflip'"):
        TrainConfig(model="lenet", tta="vflip").validate()


def test_best_profiles_use_the_tricks_as_config_fields():
    cpu = config_for("fashion_resnet", "cpu")
    assert cpu.erase > 0 and cpu.ema > 0 and cpu.tta == "flip" and cpu.label_smoothing > 0
    assert cpu.augment == "crop+flip" and cpu.schedule == "onecycle" and cpu.test_subset is None
