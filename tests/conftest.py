"""Shared fixtures. paddle_cnn is imported first so its CPU tuning applies before paddle loads."""
import os
from pathlib import Path

os.environ.pop("PADDLE_CNN_STUDENT", None)  # a tester's own student id would change every run's seed
import paddle_cnn  # noqa: F401  (must precede any paddle import)
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "fashion-mnist"


def real_data_dir():
    """The folder with real Fashion-MNIST files, or None (then real-data tests skip, saying why)."""
    for candidate in (os.environ.get("PADDLE_CNN_DATA"), SHARED_DATA, REPO / "data" / "fashion-mnist"):
        if candidate and all((Path(candidate) / f).is_file() for f in
                             ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")):
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir():
    found = real_data_dir()
    if found is None:
        pytest.skip("real Fashion-MNIST files not found: set PADDLE_CNN_DATA to a folder with the four IDX files "
                    "(CI uses ../shared/data/fashion-mnist)")
    return found


@pytest.fixture(scope="session")
def arrays(data_dir):
    from paddle_cnn.data import load_fashion_mnist

    return load_fashion_mnist(data_dir)


def make_fake_dataset(folder, n_train=60, n_test=20, seed=0):
    """Write four small valid IDX gz files: class c images are bright in row block c."""
    from paddle_cnn.data import ALL_FILES, write_idx

    rng = np.random.RandomState(seed)
    folder = Path(folder)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.randint(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, c * 2:c * 2 + 6, :] = 250
        out[split] = (images, labels.astype(np.uint8))
    names = dict(zip(("train_x", "train_y", "test_x", "test_y"), ALL_FILES))
    write_idx(folder / names["train_x"], out["train"][0])
    write_idx(folder / names["train_y"], out["train"][1])
    write_idx(folder / names["test_x"], out["test"][0])
    write_idx(folder / names["test_y"], out["test"][1])
    return out


@pytest.fixture
def fake_data(tmp_path):
    folder = tmp_path / "fmnist"
    make_fake_dataset(folder)
    return folder


# --------------------------------------------------------------------------- the device switch
#: ``PADDLE_CNN_TEST_DEVICE=gpu`` runs the tests marked ``gpu`` (mixed precision, loss scaling, NCCL) on this
#: machine's GPU; unset or ``cpu``, they are skipped, each saying how to run it.
TEST_DEVICE_ENV = "PADDLE_CNN_TEST_DEVICE"


def gpu_skip_reason():
    """None when the ``gpu`` tests can run here, else the one line a skipped test reports."""
    wanted = os.environ.get(TEST_DEVICE_ENV, "cpu") or "cpu"
    if wanted == "cpu":
        return f"GPU test: run it with {TEST_DEVICE_ENV}=gpu on a machine with a GPU and paddlepaddle-gpu"
    from paddle_cnn import runtime

    if not runtime.cuda_build():
        import paddle

        return f"{TEST_DEVICE_ENV}=gpu, but paddle {paddle.__version__} is a CPU build (install paddlepaddle-gpu)"
    if runtime.gpu_count() < 1:
        return f"{TEST_DEVICE_ENV}=gpu, but this Paddle sees no GPU (CUDA_VISIBLE_DEVICES, driver)"
    return None


def pytest_configure(config):
    wanted = os.environ.get(TEST_DEVICE_ENV, "cpu") or "cpu"
    if wanted not in ("cpu", "gpu"):
        raise pytest.UsageError(f"{TEST_DEVICE_ENV}={wanted!r}: use cpu (the default) or gpu")


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("gpu")]
    reason = gpu_skip_reason() if marked else None
    for item in marked if reason else ():
        item.add_marker(pytest.mark.skip(reason=reason))
