"""`data check` and `train` look at the content: files with valid headers that are not Fashion-MNIST are refused."""
import json

import numpy as np
import pytest

from paddle_cnn import cli, data
from paddle_cnn.data import ALL_FILES, write_idx

from conftest import make_fake_dataset

TRAIN_X, TRAIN_Y, TEST_X, TEST_Y = ALL_FILES


def _check(folder, capsys):
    """Run `paddle-cnn data check --data-dir folder`: (exit code, stdout, stderr lines)."""
    code = cli.main(["data", "check", "--data-dir", str(folder)])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def test_the_course_copy_passes_with_its_measured_figures(data_dir, capsys):
    arrays = data.load_fashion_mnist(data_dir, allow_unknown=False)
    c = arrays.content
    assert c["problems"] == []
    assert c["sizes"] == {"train": 60000, "test": 10000}
    assert c["class_counts"]["train"] == [6000] * 10 and c["class_counts"]["test"] == [1000] * 10
    # The offline copy's README gives mean 0.2861 and std 0.3528 for the whole training split; the sample agrees.
    assert abs(c["train_pixels"]["mean"] - 0.2861) < 0.005 and abs(c["train_pixels"]["std"] - 0.3528) < 0.005
    # Fashion-MNIST holds a few exact duplicates across the 70,000 images: some, far under the limit.
    assert 0 < c["shared_test_images"] < data.MAX_SHARED * 10000 / 2
    assert c["nearest_mean_accuracy"] > data.MIN_FIT_ACCURACY + 0.15
    code, out, err = _check(data_dir, capsys)
    assert code == 0 and err == [] and "all checks passed" in out


def test_small_synthetic_data_passes(tmp_path, capsys):
    make_fake_dataset(tmp_path, n_train=200, n_test=50)
    code, out, err = _check(tmp_path, capsys)
    assert code == 0, err
    assert "train 200 images, test 50 images" in out and "all checks passed" in out


def _random_pixels(folder):
    rng = np.random.RandomState(0)
    for name, n in ((TRAIN_X, 600), (TEST_X, 100)):
        write_idx(folder / name, rng.randint(0, 256, size=(n, 28, 28)))
    write_idx(folder / TRAIN_Y, np.arange(600) % 10)
    write_idx(folder / TEST_Y, np.arange(100) % 10)


def _shuffled_labels(folder):
    out = make_fake_dataset(folder, n_train=600, n_test=200)
    rng = np.random.RandomState(1)
    write_idx(folder / TRAIN_Y, rng.permutation(out["train"][1]))
    write_idx(folder / TEST_Y, rng.permutation(out["test"][1]))


def _swapped(folder):
    out = make_fake_dataset(folder, n_train=200, n_test=50)
    write_idx(folder / TRAIN_X, out["test"][0])
    write_idx(folder / TRAIN_Y, out["test"][1])
    write_idx(folder / TEST_X, out["train"][0])
    write_idx(folder / TEST_Y, out["train"][1])


def _empty_test(folder):
    make_fake_dataset(folder, n_train=200, n_test=50)
    write_idx(folder / TEST_X, np.zeros((0, 28, 28), np.uint8))
    write_idx(folder / TEST_Y, np.zeros(0, np.uint8))


def _test_inside_train(folder):
    out = make_fake_dataset(folder, n_train=200, n_test=50)
    write_idx(folder / TEST_X, out["train"][0][:50])
    write_idx(folder / TEST_Y, out["train"][1][:50])


def _one_class_missing(folder):
    out = make_fake_dataset(folder, n_train=200, n_test=50)
    labels = out["train"][1].copy()
    labels[labels == 7] = 1
    write_idx(folder / TRAIN_Y, labels)


CASES = {
    "random pixels": (_random_pixels, ["pixels have mean 0.5", "labels do not fit the pictures"]),
    "shuffled labels": (_shuffled_labels, ["labels do not fit the pictures"]),
    "train and test swapped": (_swapped, ["training set (50 images) is not larger than the test set (200)"]),
    "empty test set": (_empty_test, ["the test set is empty"]),
    "test images taken from train": (_test_inside_train, ["50 of the 50 test images (100.0%) are also in the training set"]),
    "a class missing": (_one_class_missing, ["the train labels lack class 7"]),
}


@pytest.mark.parametrize("case", CASES)
def test_data_that_is_not_fashion_mnist_fails_with_one_line(tmp_path, capsys, case):
    make, phrases = CASES[case]
    make(tmp_path)
    code, out, err = _check(tmp_path, capsys)
    assert code == 2 and "all checks passed" not in out
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path}: this is not Fashion-MNIST: ")
    assert err[0].endswith("train on them anyway with --allow-unknown-data")
    for phrase in phrases:
        assert phrase in err[0]


def test_content_check_of_each_case_names_only_its_problem():
    """Unit level: the measured figures of a clean set give no problem; each edit gives its own."""
    rng = np.random.RandomState(0)
    fake = {}
    for split, n in (("train", 400), ("test", 100)):
        labels = np.arange(n) % 10
        images = rng.randint(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, c * 2:c * 2 + 6] = 250
        fake[split] = (images, labels.astype(np.uint8))
    arrays = data.FashionMNISTArrays(*fake["train"], *fake["test"])
    assert data.check_content(arrays) == []
    stats = data.content_stats(arrays)
    assert stats["nearest_mean_accuracy"] == 1.0 and stats["shared_test_images"] == 0
    # Negatives of the same pictures: labels still fit (distances are kept), the pixel statistics do not.
    inverted = data.FashionMNISTArrays(255 - fake["train"][0], fake["train"][1], 255 - fake["test"][0], fake["test"][1])
    problems = data.check_content(inverted)
    assert [p.split(" have mean")[0] for p in problems] == ["train pixels", "test pixels"]
    unbalanced = data.FashionMNISTArrays(*fake["train"], fake["test"][0], np.where(fake["test"][1] < 5, 0,
                                                                                   fake["test"][1]).astype(np.uint8))
    problems = data.check_content(unbalanced)
    assert problems == ["the test labels lack classes 1, 2, 3, 4"]


def _train(folder, out, *extra):
    return cli.main(["train", "lenet_relu", "--profile", "smoke", "--epochs", "1", "--device", "cpu", "--accel", "off",
                     "--data-dir", str(folder), "--out", str(out), "--no-progress", *extra])


def test_train_refuses_unknown_data_with_the_same_line_unless_allowed(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(data.ALLOW_UNKNOWN_ENV, raising=False)  # restored after the test: --allow-unknown-data sets it
    folder = tmp_path / "d"
    folder.mkdir()
    _random_pixels(folder)
    _, _, check_line = _check(folder, capsys)
    assert _train(folder, tmp_path / "refused") == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == check_line
    assert not (tmp_path / "refused" / "results.json").exists()

    assert _train(folder, tmp_path / "allowed", "--allow-unknown-data") == 0
    capsys.readouterr()
    recorded = json.loads((tmp_path / "allowed" / "results.json").read_text())["data"]
    assert "unrecognised copy" in recorded["name"]
    assert any("labels do not fit the pictures" in p for p in recorded["content_problems"])


def test_empty_test_set_is_one_line_even_when_allowed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(data.ALLOW_UNKNOWN_ENV, "1")
    folder = tmp_path / "d"
    folder.mkdir()
    _empty_test(folder)
    assert _train(folder, tmp_path / "run") == 2
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and "the test set is empty" in err and "Traceback" not in err
