"""The one-line contract of every command, tried on real processes.

Ctrl-C at any moment (also while Paddle is still loading), an environment
variable we cannot use, a stdout that cannot encode what we print, an error
found before the workers of ``--nproc 2`` start, a first run with matplotlib's
font cache empty: each ends in one clear line (or in normal output with no
INFO lines from the libraries under us), never a traceback.

Exit codes: 130 for Ctrl-C (128 + SIGINT, as a shell reports it), 2 for a bad
argument, variable or data.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_fake_dataset

HANG = 120  # seconds: only a guard against a hang, never a measurement


def command_env(**extra):
    """This checkout first on the path, a non-interactive backend, and ``extra`` (None removes a variable)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(args, timeout=HANG, **env):
    """``python -m paddle_cnn ARGS`` to the end; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "paddle_cnn", *args], cwd=REPO, env=command_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def one_line(stderr: str) -> str:
    """The only non-blank line of ``stderr`` (fails, showing it all, when there are more or none)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract") / "fmnist"
    make_fake_dataset(folder, n_train=600, n_test=100)
    return folder


# --------------------------------------------------------------------------- Ctrl-C at any moment
def console_script():
    script = Path(sys.executable).with_name("paddle-cnn")
    return str(script) if script.is_file() else None


def mapped(pid: int, fragment: str) -> bool:
    """Has process ``pid`` loaded a shared library whose path contains ``fragment``?"""
    try:
        return fragment in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


#: When the Ctrl-C comes, as an event in the process (never a guess of how long a loaded machine takes):
#: numpy mapped = paddle_cnn is running its CLI and Paddle has not started loading (paddle_cnn imports numpy
#: first); libpaddle mapped = Paddle's C++ core is initialising (a KeyboardInterrupt there becomes an
#: ImportError); 3 s = the command is loading data or training.
MOMENTS = {"numpy": "_multiarray_umath", "libpaddle": "libpaddle", "training": None}


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/PID/maps")
@pytest.mark.parametrize("entry, moment", [("module", "numpy"), ("module", "libpaddle"), ("module", "training"),
                                           ("script", "numpy")])
def test_ctrl_c_at_any_moment_is_one_line(fake, tmp_path, entry, moment):
    if entry == "script":
        if console_script() is None:
            pytest.skip("the paddle-cnn console script is not installed beside this Python")
        start = [console_script()]
    else:
        start = [sys.executable, "-m", "paddle_cnn"]
    proc = subprocess.Popen(
        start + ["train", "lenet_relu", "--profile", "smoke", "--epochs", "1000", "--accel", "off",
                 "--data-dir", str(fake), "--out", str(tmp_path / "run"), "--no-progress"],
        cwd=REPO, env=command_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + HANG
        if MOMENTS[moment] is None:
            time.sleep(3.0)
        else:
            while not mapped(proc.pid, MOMENTS[moment]):
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.002)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert one_line(err).startswith("interrupted"), err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_before_the_first_epoch_of_an_overwrite_does_not_offer_the_old_run(fake, tmp_path):
    """--overwrite keeps the previous run's checkpoint until this run's first epoch ends: an interrupt before that
    must not call it "the last complete epoch" and offer --resume (which would continue the old run)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pdckpt").write_bytes(b"the previous run")
    proc = subprocess.Popen(
        [sys.executable, "-m", "paddle_cnn", "train", "lenet_relu", "--profile", "smoke", "--resize", "224",
         "--batch-size", "8", "--accel", "off", "--data-dir", str(fake), "--out", str(out), "--overwrite",
         "--no-progress"],
        cwd=REPO, env=command_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()  # "training lenet_relu ...": the command is running, the epoch not done
        assert first.startswith("training"), (first, proc.communicate())
        proc.send_signal(signal.SIGINT)
        out_text, err = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (out_text, err)
    line = one_line(err)
    assert "previous run" in line and "--resume" not in line, line
    assert (out / "checkpoint.pdckpt").read_bytes() == b"the previous run"


# --------------------------------------------------------------------------- environment variables
@pytest.mark.parametrize("variables, named", [
    ({"PADDLE_TRAINER_ID": "abc"}, "PADDLE_TRAINER_ID='abc'"),
    ({"PADDLE_TRAINER_ID": ""}, "PADDLE_TRAINER_ID=''"),
    ({"PADDLE_TRAINERS_NUM": "two"}, "PADDLE_TRAINERS_NUM='two'"),
    ({"PADDLE_TRAINERS_NUM": "0"}, "PADDLE_TRAINERS_NUM='0'"),
    ({"PADDLE_TRAINERS_NUM": "2"}, "PADDLE_TRAINER_ID (its rank) is not set"),
    ({"PADDLE_TRAINER_ID": "3", "PADDLE_TRAINERS_NUM": "2"}, "PADDLE_TRAINER_ID=3"),
    ({"PADDLE_TRAINER_ID": "1"}, "PADDLE_TRAINER_ID=1"),
    ({"PADDLE_CNN_ALLOW_UNKNOWN_DATA": "maybe"}, "PADDLE_CNN_ALLOW_UNKNOWN_DATA='maybe'"),
])
def test_bad_environment_variable_is_one_line(variables, named):
    """Refused before Paddle loads (Paddle itself turns PADDLE_TRAINER_ID into an int while importing)."""
    done = run(["list"], **{"PADDLE_TRAINER_ID": None, "PADDLE_TRAINERS_NUM": None, **variables})
    assert done.returncode == 2, done
    line = one_line(done.stderr)
    assert line.startswith("error: the environment variable ") and named in line, line


@pytest.mark.parametrize("mirror", ["notaurl/", "ftp://example.org/", "http://example.org/fashion"])
def test_bad_mirror_variable_is_one_line(tmp_path, mirror):
    """Read only when the data must be downloaded (no data anywhere): the "not found" message, which lists every
    place searched, says why the download could not start, naming the variable."""
    done = subprocess.run([sys.executable, "-m", "paddle_cnn", "data", "check"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=HANG, env=command_env(PADDLE_CNN_DATA=None, HOME=str(tmp_path),
                                                                   PADDLE_CNN_MIRROR=mirror))
    assert done.returncode == 2, done
    first = done.stderr.splitlines()[0]
    assert first.startswith("error: ") and f"PADDLE_CNN_MIRROR={mirror!r}" in first, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("rank, world", [("0", None), ("0", "1"), ("1", "2"), ("3", "4"), (None, None)])
def test_launcher_variables_that_make_sense_are_accepted(monkeypatch, rank, world):
    from paddle_cnn.console import bad_environment

    for name, value in (("PADDLE_TRAINER_ID", rank), ("PADDLE_TRAINERS_NUM", world)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("PADDLE_CNN_ALLOW_UNKNOWN_DATA", raising=False)
    assert bad_environment() is None


# --------------------------------------------------------------------------- stdout encodings
@pytest.mark.parametrize("encoding", [
    {"PYTHONIOENCODING": "ascii"},
    {"PYTHONIOENCODING": "gbk"},
    {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": None},
])
def test_doctor_prints_on_any_stdout_encoding(tmp_path, encoding):
    """The data folder's name holds characters neither ASCII nor GBK can encode; the doctor prints it anyway."""
    folder = tmp_path / "数据✓"
    make_fake_dataset(folder)
    done = subprocess.run([sys.executable, "-m", "paddle_cnn", "doctor", "--data-dir", os.fsencode(folder)],
                          cwd=REPO, env=command_env(**encoding), capture_output=True, timeout=HANG)
    stdout, stderr = done.stdout.decode("ascii", "replace"), done.stderr.decode("ascii", "replace")
    assert done.returncode == 0, (stdout, stderr)
    assert "Encode" not in stderr and "codec" not in stderr, stderr
    data_line = next(ln for ln in stdout.splitlines() if ln.startswith("Data"))
    assert str(tmp_path.name) in data_line, data_line


# --------------------------------------------------------------------------- errors before the workers start
def test_missing_data_under_nproc_2_is_printed_once(tmp_path):
    """Offline with no data anywhere: the launcher finds out before starting workers and says it once."""
    done = subprocess.run(
        [sys.executable, "-m", "paddle_cnn", "train", "lenet_relu", "--profile", "smoke", "--nproc", "2",
         "--accel", "off", "--out", str(tmp_path / "run"), "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG,
        env=command_env(PADDLE_CNN_DATA=None, HOME=str(tmp_path / "home"), no_proxy="127.0.0.1",
                        PADDLE_CNN_MIRROR="http://127.0.0.1:9/"))
    assert done.returncode == 2, done
    assert done.stderr.count("error") == 1 and done.stderr.startswith("error: Fashion-MNIST files not found"), \
        done.stderr
    assert done.stderr.endswith("PADDLE_CNN_DATA=DIR.\n"), done.stderr  # the message ends with its line break
    assert "Traceback" not in done.stderr and "process" not in done.stderr, done.stderr
    assert not (tmp_path / "run" / "checkpoint.pdckpt").exists()


def test_data_that_is_not_fashion_mnist_under_nproc_2_is_printed_once(tmp_path):
    from paddle_cnn.data import ALL_FILES, write_idx
    import numpy as np

    folder = tmp_path / "blank"
    images, labels = np.zeros((100, 28, 28), np.uint8), np.zeros(100, np.uint8)
    for name, array in zip(ALL_FILES, (images, labels, images[:20], labels[:20])):
        write_idx(folder / name, array)
    done = run(["train", "lenet_relu", "--profile", "smoke", "--nproc", "2", "--accel", "off", "--data-dir",
                str(folder), "--out", str(tmp_path / "run"), "--no-progress"])
    assert done.returncode == 2, done
    assert "this is not Fashion-MNIST" in one_line(done.stderr)


# --------------------------------------------------------------------------- no INFO lines
GLOG_LINE = re.compile(r"^[IW]\d{4} \d\d:\d\d:\d\d")  # glog: I1207 23:27:06.548 ...


def test_first_run_prints_no_info_lines(fake, tmp_path):
    """An empty matplotlib cache (a first run): its "generated new fontManager" INFO line stays out, and so do
    Paddle's C++ INFO lines."""
    cache = tmp_path / "mpl"
    cache.mkdir()
    done = run(["train", "lenet_relu", "--profile", "smoke", "--accel", "off", "--data-dir", str(fake), "--out",
                str(tmp_path / "run"), "--no-progress"], MPLCONFIGDIR=str(cache), GLOG_minloglevel=None)
    assert done.returncode == 0, done
    assert any(cache.iterdir()), "matplotlib did not build its font cache: the test did not test a first run"
    for line in (done.stdout + done.stderr).splitlines():
        assert "INFO" not in line and not GLOG_LINE.match(line), done.stdout + done.stderr
    assert done.stderr == "", done.stderr
