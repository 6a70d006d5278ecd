"""Several machines through Paddle's launcher, as the README's commands run them, on one machine.

Two ``python -m paddle.distributed.launch --master 127.0.0.1:PORT --nnodes 2
--rank R --nproc_per_node 1 $(which paddle-cnn) train ...`` processes stand for
two machines. They must train one run (world 2, rank 0 alone writes) and end
with the same weights as ``paddle-cnn train ... --nproc 2`` with the same
seed: the same global batch, split the same way, gradients averaged the same
way. Every process started here is in a process group of its own and is
killed with it, pass or fail.
"""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paddle_cnn import checkpoint

from conftest import REPO, make_fake_dataset

HANG = 240  # seconds: only a guard against a hang, never a measurement
TRAIN = ["train", "lenet_relu", "--profile", "smoke", "--epochs", "1", "--seed", "3", "--accel", "off",
         "--no-progress"]


def console_script() -> str:
    """``$(which paddle-cnn)`` of this Python's environment (what the README hands the launcher)."""
    script = Path(sys.executable).with_name("paddle-cnn")
    if not script.is_file():
        pytest.skip("the paddle-cnn console script is not installed beside this Python (pip install -e .)")
    return str(script)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, cwd):
    return subprocess.Popen(args, cwd=cwd, env=dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def descendants(pid: int) -> list:
    """Every living process below ``pid`` (read from /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def finish(procs):
    """Wait for every process (each at most HANG seconds); then kill whatever is left of them, always.

    Paddle's launcher starts each worker in a session of its own (``os.setsid``), so killing the
    launcher's process group would not reach them: they are found as its descendants and killed too.
    """
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=HANG)[0])
    finally:
        for proc in procs:
            for pid in descendants(proc.pid) + [proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return outputs


def weights(run: Path) -> dict:
    return checkpoint.load(run / "checkpoint.pdckpt")["model"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="Paddle's gloo backend needs Linux")
def test_two_nodes_train_one_run_like_two_processes(tmp_path):
    data = tmp_path / "fmnist"
    make_fake_dataset(data, n_train=600, n_test=100)
    script, port = console_script(), free_port()
    nodes = [start([sys.executable, "-m", "paddle.distributed.launch", "--master", f"127.0.0.1:{port}",
                    "--nnodes", "2", "--rank", str(rank), "--nproc_per_node", "1",
                    "--log_dir", str(tmp_path / f"log{rank}"),
                    script, *TRAIN, "--data-dir", str(data), "--out", str(tmp_path / "nodes")], tmp_path)
             for rank in (0, 1)]
    outputs = finish(nodes)
    for rank, (node, out) in enumerate(zip(nodes, outputs)):
        logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / f"log{rank}").glob("workerlog.*"))
        assert node.returncode == 0, f"node {rank}:\n{out}\n{logs}"

    one = start([sys.executable, "-m", "paddle_cnn", *TRAIN, "--nproc", "2", "--data-dir", str(data),
                 "--out", str(tmp_path / "nproc")], REPO)
    out, = finish([one])
    assert one.returncode == 0, out

    results = json.loads((tmp_path / "nodes" / "results.json").read_text())
    assert results["run"]["world"] == 2 and results["config"]["seed"] == 3, results["run"]
    assert sorted(p.name for p in (tmp_path / "nodes").iterdir()) == ["checkpoint.pdckpt", "curves.png",
                                                                      "results.json"]
    nodes_w, nproc_w = weights(tmp_path / "nodes"), weights(tmp_path / "nproc")
    assert sorted(nodes_w) == sorted(nproc_w)
    for name in nodes_w:
        np.testing.assert_array_equal(nodes_w[name], nproc_w[name], err_msg=name)
    nproc_results = json.loads((tmp_path / "nproc" / "results.json").read_text())
    assert results["history"][0]["train_loss"] == nproc_results["history"][0]["train_loss"]


@pytest.mark.parametrize("variables, rank, gpu", [
    ({}, 3, 3),                                                    # one machine: the rank
    ({"PADDLE_LOCAL_RANK": "1"}, 3, 1),                            # second machine of 2 x 2: its second GPU
    ({"FLAGS_selected_gpus": "2", "PADDLE_LOCAL_RANK": "0"}, 2, 2),  # the launcher's --devices 2,3
    ({"FLAGS_selected_gpus": "0,1", "PADDLE_LOCAL_RANK": "0"}, 1, 0),
])
def test_each_process_uses_a_gpu_of_its_own_machine(monkeypatch, variables, rank, gpu):
    """The launcher numbers ranks across machines; the GPU index is counted on the machine."""
    from paddle_cnn import distributed

    for name in ("FLAGS_selected_gpus", "PADDLE_LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert distributed.local_rank(rank) == gpu
