"""The candidate runs in a child process: a time limit, no way to end the caller, no way to patch the checker.

Issue 40 item 5: each finding (an endless candidate, ``sys.exit(0)``, ``os._exit``,
``KeyboardInterrupt``, a candidate that patches the comparison or the reference)
ends in one failing line, and the caller's process carries on.
"""
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import paddle
import pytest
from paddle import nn

from paddle_cnn import exercises
from paddle_cnn.exercises import engine, sandbox

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sandbox.unavailable_reason() != "", reason="no fork on this platform")


def vgg_block_right(num_convs, in_channels, out_channels):
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2D(in_channels, out_channels, 3, padding=1), nn.ReLU()]
        in_channels = out_channels
    return nn.Sequential(*layers, nn.MaxPool2D(2, 2))


def vgg_block_no_relu(num_convs, in_channels, out_channels):
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2D(in_channels, out_channels, 3, padding=1))
        in_channels = out_channels
    return nn.Sequential(*layers, nn.MaxPool2D(2, 2))


def _failures(capsys):
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return [line.strip() for line in out.splitlines() if line.strip().startswith("✗")]


@pytest.fixture
def forks(monkeypatch):
    """The pids of the children the checker forks in this test (other tests' children are not ours to count)."""
    pids, real_fork = [], os.fork

    def fork():
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return pids


def _no_child_left(pids):
    """Every child the checker forked is gone and reaped (no zombie left to the caller)."""
    assert pids, "the check forked no child"
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_an_endless_candidate_is_stopped_at_the_time_limit(capsys, forks):
    def endless(num_convs, in_channels, out_channels):
        while True:
            pass

    start = time.monotonic()
    assert exercises.check("vgg_block", endless, time_limit=1.5, journal=exercises.Journal()) is False
    assert time.monotonic() - start < 15
    failures = _failures(capsys)
    assert failures[0] == "✗ 超过时间限制（1.5 秒）：检查已停止（是否有死循环，或计算量过大？）"
    assert failures[1] == "✗ 练习 vgg_block：尚未通过（见上面第一个 ✗）"
    _no_child_left(forks)


@pytest.mark.parametrize("how, expected", [
    ("sys.exit(0)", "✗ 构建时调用了 sys.exit()（SystemExit: 0）：练习代码不能结束检查程序，请删掉这一行"),
    ("raise SystemExit(0)", "✗ 构建时调用了 sys.exit()（SystemExit: 0）"),
    ("raise KeyboardInterrupt", "✗ 构建时抛出了 KeyboardInterrupt：练习代码不能中断检查程序"),
    ("os._exit(0)", "✗ 你的代码结束了运行它的子进程（退出码 0；是否调用了 os._exit() 或关闭了标准输出？）"),
])
def test_a_candidate_cannot_end_the_checker(how, expected, capsys, forks):
    namespace = {"sys": sys, "os": os}
    exec(f"def leaving(num_convs, in_channels, out_channels):\n    {how}\n", namespace)
    assert exercises.check("vgg_block", namespace["leaving"], journal=exercises.Journal()) is False
    failures = _failures(capsys)
    assert len(failures) == 2 and failures[0].startswith(expected), failures
    _no_child_left(forks)


def test_a_grading_script_is_not_ended_with_exit_0_by_a_candidate(tmp_path):
    """The finding of issue 40: ``sys.exit(0)`` (or ``os._exit(0)``) in a candidate ended the grader with exit 0."""
    script = tmp_path / "grade.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        from paddle_cnn import exercises

        def quits(num_convs, in_channels, out_channels):
            sys.exit(0)

        def leaves(num_convs, in_channels, out_channels):
            os._exit(0)

        results = [exercises.check("vgg_block", c) for c in (quits, leaves)]
        print("grader still here", results)
        sys.exit(3)
    """), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "grader still here [False, False]" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_patching_the_comparison_inside_the_candidate_does_not_pass(capsys):
    def cheating(num_convs, in_channels, out_channels):
        from paddle_cnn.exercises import engine as e, runner as r
        e.close = lambda *args, **kwargs: None                 # "everything is close"
        r.line_up.__globals__["squeezed"] = lambda shape: ()    # "every shape matches"
        return vgg_block_no_relu(num_convs, in_channels, out_channels)

    original = engine.close
    assert exercises.check("vgg_block", cheating, journal=exercises.Journal()) is False
    assert engine.close is original                              # the caller's checker is untouched
    failures = _failures(capsys)
    assert failures[0].startswith("✗ 输出值：你的相差最多"), failures


def test_patching_the_reference_inside_the_candidate_is_named(capsys):
    def cheating(num_convs, in_channels, out_channels):
        from paddle_cnn.exercises import catalogue
        object.__setattr__(catalogue.EXERCISES["vgg_block"], "reference", vgg_block_no_relu)
        return vgg_block_no_relu(num_convs, in_channels, out_channels)

    assert exercises.check("vgg_block", cheating, journal=exercises.Journal()) is False
    assert exercises.reference("vgg_block").__module__ == "paddle_cnn.blocks"
    failures = _failures(capsys)
    assert failures[0] == "✗ 子进程里构建的参考实现与本进程的不同：练习代码改动了检查程序或 Paddle 的初始化", failures


def test_what_the_candidate_prints_is_shown(capsys):
    def chatty(num_convs, in_channels, out_channels):
        print("building", num_convs)
        return vgg_block_right(num_convs, in_channels, out_channels)

    assert exercises.check("vgg_block", chatty, journal=exercises.Journal()) is True
    out = capsys.readouterr().out
    assert "  │ building 2" in out and "  │ building 3" in out


def test_without_isolation_the_check_says_so_and_still_catches_sys_exit(monkeypatch, capsys):
    monkeypatch.setenv(sandbox.ENV, "off")

    def quits(num_convs, in_channels, out_channels):
        sys.exit(0)

    assert exercises.check("vgg_block", quits, journal=exercises.Journal()) is False
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("（无法在隔离的子进程中检查：PADDLE_CNN_EXERCISE_ISOLATION=off；改在当前进程中检查，"
                      "没有时间限制，练习代码也能结束或改动检查程序）")
    assert out[2].strip().startswith("✗ 构建时调用了 sys.exit()")
    paddle.seed(123)
    expected = paddle.rand([3]).numpy()
    paddle.seed(123)
    assert exercises.check("vgg_block", vgg_block_right, journal=exercises.Journal()) is True
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), expected)   # the caller's random state left alone


def test_inside_a_jupyter_kernel(tmp_path):
    """What a notebook does: a class defined in a cell reaches the forked child; os._exit there leaves the kernel up."""
    manager = pytest.importorskip("jupyter_client.manager")
    import queue

    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from paddle import nn
        from paddle_cnn import exercises

        def my_vgg_block(num_convs, in_channels, out_channels):
            raise NotImplementedError

        class MyBlock(nn.Layer):
            def __init__(self, n, i, o):
                super().__init__()
                layers = []
                for _ in range(n):
                    layers += [nn.Conv2D(i, o, 3, padding=1), nn.ReLU()]
                    i = o
                self.net = nn.Sequential(*layers, nn.MaxPool2D(2, 2))

            def forward(self, x):
                return self.net(x)

        def quits(n, i, o):
            os._exit(0)

        print([exercises.check("vgg_block", c) for c in (my_vgg_block, MyBlock, quits)], "kernel alive")
    """)
    km, kc = manager.start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        msg_id, out = kc.execute(code), []
        while True:
            msg = kc.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":   # Paddle warns on stderr
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append(f"ERROR {msg['content']['ename']}")
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    except queue.Empty:
        pytest.fail("the kernel did not answer within 120 s")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(out)
    assert text.startswith("exercise vgg_block: not attempted yet (fill in the cell above)\n"), text
    assert "✓ 练习 vgg_block：通过（3 组参数）" in text and "练习代码不能结束检查程序" in text, text
    assert text.rstrip().endswith("[False, True, False] kernel alive"), text
