"""``paddle-cnn doctor``: the report's keys, the table's lines, a mocked GPU build, cgroup quotas, failures.

No GPU exists here: the GPU rows are tested by replacing runtime's device
queries with a V100's and an A100's answers (tests/fake_gpu.py); Paddle's own
CUDA queries are tripwires in those tests.
"""
import paddle_cnn  # noqa: F401  (first: CPU tuning must precede ``import paddle``)

import json
import os

import paddle
import pytest

from paddle_cnn import doctor, runtime
from paddle_cnn.doctor import cgroup_cpu_limit

from fake_gpu import A100, V100, RealCudaCall, fake_gpus, forbid_cuda

KEYS = {"paddle_cnn", "python", "platform", "paddle", "gpus", "cpu", "tuning", "data", "outputs", "optional"}


# --------------------------------------------------------------------------- the report
def test_json_output_has_every_section(capsys, tmp_path):
    assert doctor.main(["--json", "--data-dir", str(tmp_path / "none")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep) >= KEYS
    assert rep["paddle"]["version"] == paddle.__version__
    assert rep["paddle"]["build"] == ("CPU" if not paddle.is_compiled_with_cuda() else rep["paddle"]["build"])
    assert rep["cpu"]["physical_cores"] == runtime.physical_cores()
    assert set(rep["tuning"]["environment"]) == set(doctor.TUNING_VARIABLES)
    assert [o["path"] for o in rep["outputs"]] == [os.path.abspath("runs"), os.path.abspath("homework")]
    assert set(rep["optional"]) == {"visualdl", "torch"}


def test_table_names_the_data_and_its_checksums(fake_data, capsys):
    doctor.main(["--data-dir", str(fake_data)])
    table = capsys.readouterr().out
    line = next(row for row in table.splitlines() if row.startswith("Data"))
    assert str(fake_data.resolve()) in line and "match no known copy" in line  # fake files: unrecognised
    rep = doctor.report(fake_data)
    assert rep["data"]["found"] and not rep["data"]["verified"] and len(rep["data"]["sha256"]) == 4
    assert "data: unrecognised ✗" in doctor.one_line(rep)


def test_real_data_is_recognised(data_dir):
    rep = doctor.report(data_dir)
    assert rep["data"]["verified"] and rep["data"]["copy"] in ("official", "offline copy")
    assert f"data: {rep['data']['copy']} ✓" in doctor.one_line(rep)


def test_missing_data_is_a_readable_line_not_a_traceback(tmp_path):
    missing = tmp_path / "no-such-folder"
    rep = doctor.report(missing)
    assert rep["data"]["found"] is False and str(missing) in rep["data"]["error"]
    table = doctor.format_table(rep)
    assert "Traceback" not in table
    assert any(row.startswith("Data") and "not found" in row for row in table.splitlines())
    assert "data: not found ✗" in doctor.one_line(rep)


def test_this_build_without_a_gpu_has_no_gpu_row():
    """Unmocked: the CPU build says so; the GPU build here (AI Studio's install, no card) says no GPU is visible."""
    if runtime.gpu_count():
        pytest.skip("this machine has a GPU")
    rep = doctor.report()
    row = next(r for r in doctor.format_table(rep).splitlines() if r.startswith("GPU"))
    assert rep["gpus"]["devices"] == []
    if paddle.is_compiled_with_cuda():
        assert rep["paddle"]["build"].startswith("CUDA ") and rep["paddle"]["cuda"]
        assert "GPU build, no GPU visible" in row and "no GPU visible" in doctor.one_line(rep)
    else:
        assert rep["paddle"]["cuda"] is None and "CPU build" in row and "(CPU build)" in doctor.one_line(rep)


# --------------------------------------------------------------------------- a mocked GPU build
def test_mocked_v100_build_shows_a_gpu_row(monkeypatch):
    fake_gpus(monkeypatch, [V100])
    rep = doctor.report()
    assert rep["paddle"]["build"] == "CUDA 11.8" and rep["paddle"]["cudnn"] == "8.9.1"
    gpu = rep["gpus"]["devices"][0]
    assert (gpu["name"], gpu["memory_bytes"], gpu["compute_capability"]) == (V100.name, 16 * 2**30, "7.0")
    assert gpu["fp16"] and gpu["fp16_tensor_cores"] and not gpu["bf16"]
    assert gpu["paddle_says_fp16"] is True and gpu["paddle_says_bf16"] is False
    rows = [r for r in doctor.format_table(rep).splitlines() if r.startswith("GPU")]
    assert len(rows) == 1 and V100.name in rows[0] and "16.0 GiB" in rows[0] and "compute 7.0" in rows[0]
    assert "precision: fp16" in rows[0] and "bf16" not in rows[0]
    assert any(r.startswith("Paddle") and "CUDA 11.8 build" in r and "cuDNN 8.9.1" in r
               for r in doctor.format_table(rep).splitlines())
    assert "Tesla V100-SXM2-16GB 16.0 GiB" in doctor.one_line(rep)
    json.dumps(rep)  # still serialisable


def test_mocked_two_gpus_one_a100_with_bf16(monkeypatch):
    fake_gpus(monkeypatch, [V100, A100])
    rows = [r for r in doctor.format_table(doctor.report()).splitlines() if r.startswith("GPU")]
    assert len(rows) == 2 and A100.name in rows[1] and "40.0 GiB" in rows[1] and "fp16, bf16" in rows[1]


def test_gpu_build_without_a_visible_gpu(monkeypatch):
    """AI Studio's GPU image on a CPU instance: the report says so, and no GPU probe is asked."""
    fake_gpus(monkeypatch, [])
    rep = doctor.report()
    assert rep["gpus"]["count"] == 0 and rep["paddle"]["build"] == "CUDA 11.8"
    row = next(r for r in doctor.format_table(rep).splitlines() if r.startswith("GPU"))
    assert "GPU build, no GPU visible" in row
    assert "(CUDA 11.8 build)" in doctor.one_line(rep) and "no GPU visible" in doctor.one_line(rep)


def test_gpu_probes_that_fail_are_reported_not_raised(monkeypatch):
    state = fake_gpus(monkeypatch, [V100])

    def broken(*args, **kwargs):
        raise RuntimeError("cudaErrorInsufficientDriver")

    monkeypatch.setattr(runtime, "gpu_properties", broken)
    gpu = doctor.report()["gpus"]["devices"][0]
    assert gpu["index"] == 0 and "cudaErrorInsufficientDriver" in gpu["compute_capability"]
    assert "cudaErrorInsufficientDriver" in doctor.format_table(doctor.report())
    state.devices = [V100]
    monkeypatch.setattr(runtime, "gpu_count", broken)
    rep = doctor.report()
    assert "cudaErrorInsufficientDriver" in rep["gpus"]["error"]
    assert "cudaErrorInsufficientDriver" in doctor.format_table(rep)


def test_aborting_probes_are_never_asked_without_a_visible_gpu(monkeypatch):
    """Paddle's fp16/bf16 probes abort a GPU build's process when no GPU is visible: runtime asks them only
    after Paddle's own count (not a mocked one) sees the GPU; here Paddle sees none, on either build."""
    if runtime.gpu_count():
        pytest.skip("this machine has a GPU")
    called = []
    for name in ("is_float16_supported", "is_bfloat16_supported"):
        monkeypatch.setattr(paddle.amp, name, lambda *a, _n=name: called.append(_n), raising=False)
    monkeypatch.setattr(runtime, "cuda_build", lambda: True)
    monkeypatch.setattr(runtime, "gpu_count", lambda: 1)  # a wrong count must not reach the probes either
    said = runtime.gpu_precision(0)
    assert called == [] and said["fp16"].startswith("unknown (no GPU 0 visible")
    with pytest.raises(RuntimeError, match="no GPU 0 visible"):
        runtime.gpu_properties(0)
    with pytest.raises(RuntimeError, match="no GPU 0 visible"):
        runtime.get_device("gpu")                       # never paddle.set_device("gpu:0"), which aborts
    gpu = doctor.report()["gpus"]["devices"][0]
    assert called == [] and "no GPU 0 visible" in gpu["compute_capability"]


def test_the_tripwire_catches_a_real_cuda_call(monkeypatch):
    forbid_cuda(monkeypatch)
    with pytest.raises(RealCudaCall):
        paddle.device.cuda.get_device_properties(0)
    with pytest.raises(RealCudaCall):
        paddle.set_device("gpu:0")
    paddle.set_device("cpu")


def test_any_failing_probe_becomes_unknown(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(runtime, "cpu_model", boom)
    from paddle_cnn import data

    monkeypatch.setattr(data, "find_data", boom)
    rep = doctor.report(tmp_path)
    assert rep["cpu"]["model"] == "unknown (OSError: no /proc here)"
    assert rep["data"]["error"] == "unknown (OSError: no /proc here)"
    table = doctor.format_table(rep)
    assert "unknown (OSError: no /proc here)" in table and "data: unknown" in doctor.one_line(rep)


# --------------------------------------------------------------------------- output folders
def test_unwritable_folder_is_reported(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rep = doctor.report(tmp_path, out_dirs=(blocker / "runs", tmp_path / "fine"))
    bad, good = rep["outputs"]
    assert bad["writable"] is False and "is a file" in bad["reason"]
    assert good["writable"] is True and not good["exists"]
    assert not (tmp_path / "fine").exists()                       # checked, not created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no probe file left behind
    assert any("NOT writable" in r for r in doctor.format_table(rep).splitlines() if r.startswith("Output"))
    assert f"not writable: {blocker / 'runs'}" in doctor.one_line(rep)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_folder_is_reported(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert doctor.writable(folder)["writable"] is False
    finally:
        folder.chmod(0o700)


# --------------------------------------------------------------------------- cgroup quota
def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert cgroup_cpu_limit(tmp_path) is None


@pytest.mark.parametrize("folder", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_quota(tmp_path, folder):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / folder / "cpu.cfs_quota_us").write_text("50000\n")
    assert cgroup_cpu_limit(tmp_path) == 0.5
    (tmp_path / folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None


# --------------------------------------------------------------------------- console scripts and the environment
NUMPY2 = '''
import importlib.metadata as m
real = m.version
def version(name):
    return {"numpy": "2.1.0", "paddlepaddle": "2.6.2"}.get(name) or real(name)
m.version = version
'''


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_numpy_2_beside_paddle_2_is_one_line(tmp_path, how):
    """A fresh `pip install paddlepaddle-gpu==2.6.2` brings NumPy 2: the command says what to run, no traceback."""
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(NUMPY2)  # the installed versions as metadata reports them
    script = tmp_path / "paddle-cnn"
    script.write_text("import sys\nfrom paddle_cnn.cli import main\nsys.exit(main())\n")  # what pip writes
    command = [str(script)] if how == "console script" else ["-m", "paddle_cnn"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(runtime_root())])}
    proc = subprocess.run([sys.executable, *command, "doctor"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ['error: Paddle 2.6.2 needs NumPy 1.x but NumPy 2.1.0 is installed; '
                                        'run: pip install "numpy<2"']
    imported = subprocess.run([sys.executable, "-c", "import paddle_cnn"], capture_output=True, text=True, env=env,
                              timeout=120)
    assert imported.returncode == 1 and "EnvironmentProblem: Paddle 2.6.2 needs NumPy 1.x" in imported.stderr


def runtime_root():
    from pathlib import Path

    return Path(runtime.__file__).resolve().parents[1]


def test_environment_import_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    from paddle_cnn import cli

    def missing(args):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
    monkeypatch.setitem(cli.COMMANDS, "list", missing)
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: the package 'matplotlib' cannot be imported")

    def ours(args):
        raise ImportError("cannot import name 'nothing' from 'paddle_cnn.models'", name="paddle_cnn.models")
    monkeypatch.setitem(cli.COMMANDS, "list", ours)
    with pytest.raises(ImportError, match="nothing"):
        cli.main(["list"])


def test_warnings_reach_the_cli_as_one_line_and_paddle_noise_not_at_all(capsys):
    import warnings

    from paddle_cnn import console

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        runtime.quiet_paddle_warnings()
        warnings.showwarning = console.warning_line
        warnings.warn("You are using GPU version Paddle, but your CUDA device is not set properly. CPU device "
                      "will be used by default.", UserWarning)
        warnings.warn("this one matters\nand has a second line", UserWarning)
    assert capsys.readouterr().err == "warning: this one matters\n"
