"""Interruption, resumption, reproducibility and bad input through the CLI."""
import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from paddle_cnn.data import write_idx

from conftest import REPO, make_fake_dataset
from helpers import run_cli

METRICS = ("train_loss", "train_metric", "test_acc")


def _histories_equal(a, b):
    assert [h["epoch"] for h in a] == [h["epoch"] for h in b]
    for x, y in zip(a, b):
        for key in METRICS:
            assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-7), (key, x, y)


#: The CLI in a child that, once epoch 1 is checkpointed and evaluated, says so and waits: the SIGTERM the
#: test then sends lands at a known point of the run instead of racing the next epochs.
PAUSE_AFTER_EPOCH_1 = """
import sys, time
import paddle_cnn
from paddle_cnn import trainer
write = trainer.Trainer._write_scalars
def write_then_wait(self, writer, record, epoch):
    write(self, writer, record, epoch)
    if epoch == 0:
        print("epoch 1 saved, waiting", flush=True)
        time.sleep(120)
trainer.Trainer._write_scalars = write_then_wait
from paddle_cnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path):
    from paddle_cnn import checkpoint

    make_fake_dataset(tmp_path / "d", n_train=1000, n_test=200)
    common = ["train", "lenet_relu", "--profile", "smoke", "--epochs", "4", "--seed", "7",
              "--data-dir", str(tmp_path / "d"), "--no-progress"]
    assert run_cli(*common, "--out", str(tmp_path / "full")).returncode == 0

    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-c", PAUSE_AFTER_EPOCH_1, *common, "--out", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 1 saved, waiting"):
            break
    else:
        pytest.fail(f"the run ended before its first epoch: {proc.stderr.read()}")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)       # stopped mid-run, and promptly
    assert "continue with --resume" in stderr and "Traceback" not in stderr
    assert not list(out.glob(".*.part"))                  # no half-written file left behind
    saved = checkpoint.load(out / checkpoint.CHECKPOINT)["history"]
    assert [h["epoch"] for h in saved] == [1] and "test_acc" in saved[0]  # exactly the finished epoch
    assert not (out / "results.json").exists()

    resumed = run_cli(*common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 1/4" not in resumed.stdout and "epoch 2/4" in resumed.stdout
    full = json.loads((tmp_path / "full" / "results.json").read_text())["history"]
    _histories_equal(full, json.loads((out / "results.json").read_text())["history"])


@pytest.mark.parametrize("model", ["lenet", "lenet_relu"])
def test_same_seed_same_history(tmp_path, model):
    from paddle_cnn.data import FashionMNIST
    from paddle_cnn import build_model, config_for, Trainer

    make_fake_dataset(tmp_path, n_train=300, n_test=50)
    runs = []
    for _ in range(2):
        cfg = config_for(model, "smoke", epochs=2, device="cpu")
        data = FashionMNIST(cfg.resize, tmp_path, train_subset=cfg.train_subset, test_subset=cfg.test_subset)
        runs.append(Trainer(cfg, progress=False, log=None).fit(build_model(cfg), data).history)
    _histories_equal(*runs)
    for a, b in zip(*runs):
        assert all(a[k] == b[k] for k in METRICS)          # bit-identical on the same CPU


@pytest.mark.parametrize("case, message", [
    ("missing file", "lacks train-labels-idx1-ubyte.gz"),
    ("truncated gz", "damaged or truncated gzip"),
    ("not gzip", "not a gzip file"),
    ("wrong magic", "wrong IDX magic number"),
    ("not 28x28", "images are 32x32"),
    ("count mismatch", "60 train images but 59 train labels"),
    ("label range", "label 10 is outside 0-9"),
])
def test_bad_data_gives_one_clear_line(tmp_path, case, message):
    folder = tmp_path / "d"
    make_fake_dataset(folder)
    labels = folder / "train-labels-idx1-ubyte.gz"
    images = folder / "train-images-idx3-ubyte.gz"
    if case == "missing file":
        labels.unlink()
    elif case == "truncated gz":
        images.write_bytes(images.read_bytes()[:200])
    elif case == "not gzip":
        images.write_bytes(b"<html>404 not found</html>")
    elif case == "wrong magic":
        write_idx(images, np.zeros(60, np.uint8))          # a label file under an image file's name
    elif case == "not 28x28":
        blob = (2051).to_bytes(4, "big") + (60).to_bytes(4, "big") + (32).to_bytes(4, "big") * 2 + bytes(60 * 1024)
        import gzip
        images.write_bytes(gzip.compress(blob))
    elif case == "count mismatch":
        write_idx(labels, np.zeros(59, np.uint8))
    elif case == "label range":
        write_idx(labels, np.full(60, 10, np.uint8))
    proc = run_cli("train", "lenet", "--profile", "smoke", "--data-dir", str(folder), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") <= 2


def test_offline_without_files_lists_places(tmp_path):
    env = {"PADDLE_CNN_DATA": str(tmp_path / "none"), "HOME": str(tmp_path / "home"),
           # an unroutable proxy makes the download fail at once, as on an offline machine
           "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    proc = run_cli("data", "check", env=env, cwd=tmp_path)
    assert proc.returncode == 2
    for words in ("not found and the download failed", "PADDLE_CNN_DATA", "working directory", "paddle cache",
                  "--data-dir"):
        assert words in proc.stderr
    assert not list((tmp_path / "home").rglob("*ubyte*"))


def test_download_with_wrong_md5_is_deleted(tmp_path):
    """A mirror serving damaged files: one clear line, exit 2, nothing saved that looks valid."""
    import functools
    import http.server
    import threading

    served = tmp_path / "mirror"
    make_fake_dataset(served)                       # valid IDX files, but not the official bytes
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"PADDLE_CNN_DATA": str(tmp_path / "none"), "HOME": str(tmp_path / "home"), "no_proxy": "127.0.0.1",
               "PADDLE_CNN_MIRROR": f"http://127.0.0.1:{server.server_address[1]}/"}
        proc = run_cli("data", "check", env=env, cwd=tmp_path)
    finally:
        server.shutdown()
    assert proc.returncode == 2, proc.stderr
    assert "has md5" in proc.stderr and "deleted" in proc.stderr and "Traceback" not in proc.stderr
    assert not [p for p in (tmp_path / "home").rglob("*") if p.is_file()]


@pytest.mark.parametrize("args, message", [
    (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'; choose one of sgd, adam, adamw"),
    (["--device", "tpu"], "unknown device 'tpu'; choose one of auto, cpu, gpu"),
    (["--batch-size", "0"], "batch size must be a positive"),
    (["--lr", "nan"], "learning rate must be a positive"),
    (["--lr", "inf"], "learning rate must be a positive"),
    (["--resume"], "no checkpoint at"),
])
def test_bad_training_arguments(tmp_path, args, message):
    make_fake_dataset(tmp_path / "d")
    proc = run_cli("train", "lenet", "--profile", "smoke", "--data-dir", str(tmp_path / "d"),
                   "--out", str(tmp_path / "o"), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_request_on_cpu_only_paddle(tmp_path):
    from paddle_cnn import runtime

    if runtime.gpu_count():  # the CPU build, or the GPU build with no GPU visible (AI Studio's CPU instances)
        pytest.skip("this machine has a GPU")
    make_fake_dataset(tmp_path / "d")
    proc = run_cli("train", "lenet", "--profile", "smoke", "--device", "gpu", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2 and "no usable GPU" in proc.stderr and "--device cpu" in proc.stderr


def test_resume_of_another_model_is_refused(tmp_path):
    make_fake_dataset(tmp_path / "d")
    base = ["--profile", "smoke", "--batch-size", "20", "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "o")]
    assert run_cli("train", "lenet_relu", *base).returncode == 0
    proc = run_cli("train", "lenet", *base, "--resume")
    assert proc.returncode == 2 and "belongs to model 'lenet_relu'" in proc.stderr
    proc = run_cli("train", "lenet_relu", *base, "--resume", "--lr", "0.3")
    assert proc.returncode == 2 and "another configuration (lr: checkpoint 0.05 vs now 0.3)" in proc.stderr


def test_debug_flag_shows_the_traceback():
    proc = run_cli("--debug", "train", "lenet9")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
