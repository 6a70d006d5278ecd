"""A data-parallel run stops as one: real launcher and worker processes, real signals.

``paddle-cnn train ... --nproc 2`` is a launcher with two workers. Ctrl-C or
SIGTERM to the launcher, a killed launcher, and a worker that dies or is
stopped must each end every process, with one line and the resume hint. Each
test waits for an event (the first checkpoint on disk, a process gone), never
for a fixed time; ``communicate(timeout=...)`` only guards against a hang.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paddle_cnn import checkpoint

from conftest import REPO, make_fake_dataset

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Paddle's gloo backend needs Linux")
HANG = 120  # seconds: only a guard against a hang, never a measurement


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("launcher") / "d"
    make_fake_dataset(folder, n_train=3000, n_test=100)
    return folder


def launch(data, out):
    """``paddle-cnn train`` in 2 processes, long enough to be stopped, in its own process group (as a terminal
    runs a command) with Ctrl-C's default action whatever this test process inherited."""
    return subprocess.Popen(
        [sys.executable, "-m", "paddle_cnn", "train", "lenet_relu", "--profile", "smoke", "--nproc", "2",
         "--epochs", "50", "--batch-size", "64", "--accel", "off", "--data-dir", str(data), "--out", str(out),
         "--no-progress"],
        cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_first_epoch(proc, out):
    """Block until the run's first checkpoint exists (the workers are training by then)."""
    deadline = time.monotonic() + HANG
    while not (out / "checkpoint.pdckpt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def workers(launcher: int):
    """PIDs of the worker processes the launcher spawned (not multiprocessing's resource tracker)."""
    found = []
    for child in Path("/proc").iterdir():
        try:
            stat = (child / "stat").read_text().rpartition(")")[2].split()
            cmd = (child / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if int(stat[1]) == launcher and "spawn_main" in cmd:
            found.append(int(child.name))
    return sorted(found)


def state(pid: int) -> str:
    """The process's state letter ("R", "S", "T" stopped, "Z" dead and unreaped), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""


def wait_dead(pids):
    deadline = time.monotonic() + HANG
    while any(state(p) not in ("", "Z") for p in pids):
        assert time.monotonic() < deadline, {p: state(p) for p in pids}
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_stopping_the_launcher_stops_every_worker(data, tmp_path, how):
    out = tmp_path / "run"
    proc = launch(data, out)
    wait_for_first_epoch(proc, out)
    pids = workers(proc.pid)
    assert len(pids) == 2
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:  # a terminal's Ctrl-C reaches the whole process group: launcher and workers
        os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=HANG)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert stderr.count("interrupted") == 1                         # the launcher speaks, the workers do not
    assert f"continue with --resume --out {out}" in stderr
    assert all(state(p) == "" for p in pids)                        # killed and reaped before the launcher left
    assert not (out / "results.json").exists()
    assert checkpoint.load(out / "checkpoint.pdckpt")["history"]    # the last complete epoch is kept


def test_workers_die_with_a_killed_launcher(data, tmp_path):
    """kill -9 leaves the launcher no chance to act: the kernel ends the workers (PR_SET_PDEATHSIG)."""
    out = tmp_path / "run"
    proc = launch(data, out)
    wait_for_first_epoch(proc, out)
    pids = workers(proc.pid)
    assert len(pids) == 2
    proc.kill()
    proc.communicate(timeout=HANG)
    wait_dead(pids)
    assert not (out / "results.json").exists()


def test_a_killed_worker_ends_the_run_naming_its_rank(data, tmp_path):
    out = tmp_path / "run"
    proc = launch(data, out)
    wait_for_first_epoch(proc, out)
    pids = workers(proc.pid)
    os.kill(pids[-1], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=HANG)
    assert proc.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "worker process 1 (of 2) was killed by SIGKILL" in lines[0] and f"--resume --out {out}" in lines[0]
    assert all(state(p) == "" for p in pids)
    assert checkpoint.load(out / "checkpoint.pdckpt")["history"]


@pytest.mark.slow
def test_a_stopped_worker_ends_the_run_after_the_collective_timeout(data, tmp_path):
    """kill -STOP: the other worker waits in its collective until gloo's timeout (about 30 s), then the run ends.
    Paddle's own join would wait forever for the stopped process; the line names the stopped rank."""
    out = tmp_path / "run"
    proc = launch(data, out)
    wait_for_first_epoch(proc, out)
    pids = workers(proc.pid)
    os.kill(pids[-1], signal.SIGSTOP)
    try:
        stdout, stderr = proc.communicate(timeout=HANG)
    finally:
        if state(pids[-1]):
            os.kill(pids[-1], signal.SIGKILL)
    assert proc.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "worker process 1 (of 2) was stopped" in lines[0] and "timed out" in lines[0]
    assert all(state(p) == "" for p in pids)
