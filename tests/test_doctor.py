"""``paddle-cnn doctor``: the report's keys, the table's lines, a mocked GPU build, cgroup quotas, failures.

No GPU exists here: the GPU rows are tested by replacing Paddle's device
queries with a V100's and an A100's answers.
"""
import paddle_cnn  # noqa: F401  (first: CPU tuning must precede ``import paddle``)

import json
import os
from types import SimpleNamespace

import paddle
import pytest

from paddle_cnn import doctor, runtime
from paddle_cnn.doctor import cgroup_cpu_limit

KEYS = {"paddle_cnn", "python", "platform", "paddle", "gpus", "cpu", "tuning", "data", "outputs", "optional"}
V100 = SimpleNamespace(name="Tesla V100-SXM2-16GB", major=7, minor=0, total_memory=16 * 2**30,
                       multi_processor_count=80)
A100 = SimpleNamespace(name="NVIDIA A100-SXM4-40GB", major=8, minor=0, total_memory=40 * 2**30,
                       multi_processor_count=108)


def fake_gpu_build(monkeypatch, devices, cuda="11.8", cudnn="8.9.1"):
    cuda_api = paddle.device.cuda
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(cuda_api, "device_count", lambda: len(devices))
    monkeypatch.setattr(cuda_api, "get_device_properties", lambda device=None: devices[device or 0])
    monkeypatch.setattr(cuda_api, "get_device_name", lambda device=None: devices[device or 0].name)
    monkeypatch.setattr(paddle.version, "cuda", lambda: cuda)
    monkeypatch.setattr(paddle.version, "cudnn", lambda: cudnn)


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


def test_cpu_build_has_no_gpu_row():
    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle is a CUDA build")
    rep = doctor.report()
    assert rep["gpus"]["devices"] == [] and rep["paddle"]["cuda"] is None
    assert "(CPU build)" in doctor.one_line(rep)
    assert any(row.startswith("GPU") and "CPU build" in row for row in doctor.format_table(rep).splitlines())


# --------------------------------------------------------------------------- a mocked GPU build
def test_mocked_v100_build_shows_a_gpu_row(monkeypatch):
    fake_gpu_build(monkeypatch, [V100])
    rep = doctor.report()
    assert rep["paddle"]["build"] == "CUDA 11.8" and rep["paddle"]["cudnn"] == "8.9.1"
    gpu = rep["gpus"]["devices"][0]
    assert (gpu["name"], gpu["memory_bytes"], gpu["compute_capability"]) == (V100.name, 16 * 2**30, "7.0")
    assert gpu["fp16"] and gpu["fp16_tensor_cores"] and not gpu["bf16"]
    rows = [r for r in doctor.format_table(rep).splitlines() if r.startswith("GPU")]
    assert len(rows) == 1 and V100.name in rows[0] and "16.0 GiB" in rows[0] and "compute 7.0" in rows[0]
    assert "precision: fp16" in rows[0] and "bf16" not in rows[0]
    assert any(r.startswith("Paddle") and "CUDA 11.8 build" in r and "cuDNN 8.9.1" in r
               for r in doctor.format_table(rep).splitlines())
    assert "Tesla V100-SXM2-16GB 16.0 GiB" in doctor.one_line(rep)
    json.dumps(rep)  # still serialisable


def test_mocked_two_gpus_one_a100_with_bf16(monkeypatch):
    fake_gpu_build(monkeypatch, [V100, A100])
    rows = [r for r in doctor.format_table(doctor.report()).splitlines() if r.startswith("GPU")]
    assert len(rows) == 2 and A100.name in rows[1] and "40.0 GiB" in rows[1] and "fp16, bf16" in rows[1]


def test_gpu_probes_that_fail_are_reported_not_raised(monkeypatch):
    fake_gpu_build(monkeypatch, [V100])

    def broken(device=None):
        raise RuntimeError("cudaErrorInsufficientDriver")

    monkeypatch.setattr(paddle.device.cuda, "get_device_properties", broken)
    monkeypatch.setattr(paddle.device.cuda, "get_device_capability", broken)
    gpu = doctor.report()["gpus"]["devices"][0]
    assert gpu["name"] == V100.name                       # from get_device_name
    assert "cudaErrorInsufficientDriver" in gpu["compute_capability"]
    monkeypatch.setattr(paddle.device.cuda, "device_count", broken)
    rep = doctor.report()
    assert "cudaErrorInsufficientDriver" in rep["gpus"]["error"]
    assert "cudaErrorInsufficientDriver" in doctor.format_table(rep)


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
