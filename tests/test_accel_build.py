"""The accelerator's build: where the headers come from, what the cache remembers, and failures that
end in the one-line fallback instead of a dead process.

These tests fake the compiler step (the real build is tested by test_accel.py) and use a
temporary cache root (``PADDLE_CNN_ACCEL_CACHE``), so they never touch the user's cache.
"""
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import paddle
import pytest
from paddle import nn

from paddle_cnn import accel
from paddle_cnn.accel import build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process that has not tried the accelerator yet, with its cache in tmp_path and a faked compiler.

    Returns a dict counting the compile and child-check calls; ``check`` sets what the child check does.
    """
    monkeypatch.setenv("PADDLE_CNN_ACCEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(build.CHILD_ENV, raising=False)
    forget(monkeypatch)
    monkeypatch.setattr(build, "check_prerequisites", lambda: (tmp_path / "include", "/usr/bin/c++"))
    monkeypatch.setattr(build, "fingerprint", lambda include, compiler: {"sources": "v1"})
    monkeypatch.setattr(build, "prepare_sources", lambda include, build_dir: None)
    calls = {"compile": 0, "check": 0, "open": 0, "compile_error": None, "check_command": None}

    def compile_library(build_dir, log_path):
        calls["compile"] += 1
        log_path.write_text("fake compiler\n")
        if calls["compile_error"] is not None:
            raise calls["compile_error"]
        so = build.library_file(build_dir)
        so.parent.mkdir(parents=True, exist_ok=True)
        so.write_bytes(b"not really a library")

    real_check = build.check_in_child

    def check_in_child(build_dir, log_path, command=None):
        calls["check"] += 1
        return real_check(build_dir, log_path, command=calls["check_command"])

    def open_library(build_dir):
        calls["open"] += 1
        return "library"  # stands for the loaded Library; available() is not asked in these tests

    monkeypatch.setattr(build, "compile_library", compile_library)
    monkeypatch.setattr(build, "check_in_child", check_in_child)
    monkeypatch.setattr(build, "open_library", open_library)
    return calls


def forget(monkeypatch):
    """What a new process knows: nothing loaded, nothing failed, nothing checked."""
    monkeypatch.setattr(build, "_LIBRARY", None)
    monkeypatch.setattr(build, "_FAILURE", None)
    monkeypatch.setattr(build, "_BUILD_NOTE", None)
    monkeypatch.setattr(accel, "_CHECKED", None)


def python_child(code: str) -> list:
    return [sys.executable, "-c", code]


@pytest.fixture(scope="module")
def dies_of_a_missing_symbol(tmp_path_factory):
    """A program that really dies the way the issue's training process died: lazy binding, then
    ``symbol lookup error: ... undefined symbol: pcnn_missing`` at the first call (exit 127)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("symbol")
    (d / "with.c").write_text("int pcnn_missing(void) { return 0; }\n")
    (d / "without.c").write_text("int pcnn_present(void) { return 0; }\n")
    (d / "main.c").write_text("int pcnn_missing(void);\nint main(void) { return pcnn_missing(); }\n")
    (d / "with").mkdir()
    (d / "without").mkdir()
    run = dict(check=True, capture_output=True)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "with" / "libfake.so"), str(d / "with.c")], **run)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "without" / "libfake.so"), str(d / "without.c")], **run)
    subprocess.run([cc, "-o", str(d / "main"), str(d / "main.c"), f"-L{d / 'with'}", "-lfake", "-Wl,-z,lazy",
                    f"-Wl,-rpath,{d / 'without'}"], **run)  # runs against the library without the symbol
    done = subprocess.run([str(d / "main")], capture_output=True, text=True)
    assert done.returncode == 127 and "symbol lookup error" in done.stderr, (done.returncode, done.stderr)
    return [str(d / "main")]


# ------------------------------------------------------------------ failures end in the fallback line

def test_a_library_that_kills_its_loader_gives_the_fallback_line(fresh, dies_of_a_missing_symbol, tmp_path):
    fresh["check_command"] = dies_of_a_missing_symbol
    model = nn.Sequential(nn.Conv2D(1, 2, 3))
    x = paddle.randn([1, 1, 5, 5])
    before = model(x)
    lines = []
    status = accel.apply(model, "auto", log=lines.append)
    assert len(lines) == 1, lines
    assert re.fullmatch(r"accel: using Paddle's convolution \(the built oneDNN operator needs pcnn_missing, "
                        r"which Paddle's oneDNN does not export .*pip install onednn-devel-cpu-gomp==2023\.2\.0.*\)",
                        lines[0]), lines[0]
    assert status["enabled"] is False and status["layers"] == 0 and fresh["open"] == 0
    assert "forward" not in model[0].__dict__ and float((model(x) - before).abs().max()) == 0.0  # still alive
    with pytest.raises(RuntimeError, match="accel=on, but .*pcnn_missing"):
        accel.apply(model, "on")
    failed = json.loads(next((tmp_path / "cache").glob("*/failed.json")).read_text())
    assert "pcnn_missing" in failed["reason"]


@pytest.mark.parametrize("child,message,remembered", [
    ("import os; os.abort()", f"crashed its check process \\(signal {int(signal.SIGABRT)}", True),
    ("import sys; sys.exit(3)", "ended with exit code 3", True),
    ("print('PADDLE_CNN_ACCEL_CHECK ' + '{\"ok\": false, \"reason\": \"self-check failed: dx differs\"}')",
     "^self-check failed: dx differs$", True),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "was stopped \\(signal 9", False),
])
def test_child_check_failures(fresh, tmp_path, monkeypatch, child, message, remembered):
    """Each way the checking child can fail is one sentence; only deterministic ones are remembered."""
    fresh["check_command"] = python_child(child)
    with pytest.raises(build.Unavailable, match=message) as info:
        build.load_library()
    assert "\n" not in str(info.value) and fresh["open"] == 0
    assert (fresh["compile"], fresh["check"]) == (1, 1)
    forget(monkeypatch)  # the next process
    fresh["check_command"] = python_child("print('PADDLE_CNN_ACCEL_CHECK {\"ok\": true, \"reason\": \"\"}')")
    if remembered:
        with pytest.raises(build.Unavailable, match="earlier attempt; delete .* to retry"):
            build.load_library()
        assert (fresh["compile"], fresh["check"]) == (1, 1)
    else:  # a killed child says nothing about the library: the next process checks again, without compiling
        assert build.load_library() == "library"
        assert (fresh["compile"], fresh["check"], fresh["open"]) == (1, 2, 1)


def test_a_compile_timeout_is_not_remembered_but_a_compile_error_is(fresh, monkeypatch, tmp_path):
    fresh["compile_error"] = build.Transient("building the oneDNN operator took over 1200 s")
    with pytest.raises(build.Unavailable, match="took over"):
        build.load_library()
    assert not list((tmp_path / "cache").glob("*/failed.json"))
    forget(monkeypatch)
    fresh["compile_error"] = build.Unavailable("compiling the oneDNN operator failed: error: no member named x")
    with pytest.raises(build.Unavailable, match="no member named x"):
        build.load_library()
    assert fresh["compile"] == 2 and fresh["check"] == 0
    forget(monkeypatch)
    with pytest.raises(build.Unavailable, match="no member named x .*earlier attempt"):
        build.load_library()
    assert fresh["compile"] == 2
    monkeypatch.setattr(build, "fingerprint", lambda include, compiler: {"sources": "v2"})  # e.g. new headers
    forget(monkeypatch)
    fresh["compile_error"] = None
    fresh["check_command"] = python_child("print('PADDLE_CNN_ACCEL_CHECK {\"ok\": true, \"reason\": \"\"}')")
    assert build.load_library() == "library" and fresh["compile"] == 3


def test_a_real_timeout_of_the_compiler_is_transient(monkeypatch, tmp_path):
    def too_slow(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], build.BUILD_TIMEOUT_S)

    monkeypatch.setattr(build.subprocess, "run", too_slow)
    with pytest.raises(build.Transient, match=f"took over {build.BUILD_TIMEOUT_S} s"):
        build.compile_library(tmp_path, tmp_path / "build.log")


# ------------------------------------------------------------------ the cache and the first-use line

def test_first_use_says_it_compiled_once_and_later_processes_only_load(fresh, monkeypatch, tmp_path):
    fresh["check_command"] = python_child("print('PADDLE_CNN_ACCEL_CHECK {\"ok\": true, \"reason\": \"\"}')")
    assert build.load_library() == "library"
    note = build.build_note()
    build_dir = tmp_path / "cache" / build.build_directory().name
    assert re.fullmatch(rf"compiled the oneDNN operators once in \d+ s and self-checked them in a separate "
                        rf"process in \d+ s \(cached in {re.escape(str(build_dir))}\)", note), note
    assert build.build_note() is None  # said once
    stamp = json.loads((build_dir / "stamp.json").read_text())
    assert stamp == {"fingerprint": {"sources": "v1"}, "checked_in_child": True}
    forget(monkeypatch)
    assert build.load_library() == "library" and build.build_note() is None
    assert (fresh["compile"], fresh["check"], fresh["open"]) == (1, 1, 2)


def test_apply_logs_the_first_use_line_before_its_answer(monkeypatch):
    monkeypatch.setattr(build, "_BUILD_NOTE", "compiled the oneDNN operators once in 25 s (cached in /x)")
    monkeypatch.setattr(accel, "available", lambda: (False, "a reason"))
    lines = []
    accel.apply(nn.Sequential(nn.Conv2D(1, 2, 3)), "auto", log=lines.append)
    assert lines == ["accel: compiled the oneDNN operators once in 25 s (cached in /x)",
                     "accel: using Paddle's convolution (a reason)"]


def test_the_child_loads_the_build_its_parent_names(monkeypatch, tmp_path):
    """In the checking child, load_library opens the parent's build without the lock or a compiler."""
    opened = []
    monkeypatch.setenv(build.CHILD_ENV, str(tmp_path))
    forget(monkeypatch)
    monkeypatch.setattr(build, "check_prerequisites", lambda: pytest.fail("the child must not check or build"))
    monkeypatch.setattr(build, "open_library", lambda d: opened.append(d) or "library")
    assert build.load_library() == "library" and opened == [tmp_path]


# ------------------------------------------------------------------ headers and requirements

def test_requirements_bring_the_headers_the_messages_name():
    """requirements-aistudio.txt holds the header line, and requirements.txt includes that file."""
    assert "-r requirements-aistudio.txt" in (ROOT / "requirements.txt").read_text().splitlines()
    lines = [line.strip() for line in (ROOT / "requirements-aistudio.txt").read_text().splitlines()]
    (line,) = [x for x in lines if x.startswith("onednn-devel")]
    spec, marker = (part.strip() for part in line.split(";"))
    assert spec == build.ONEDNN_HEADERS and build.INSTALL_HINT == f"pip install {spec}"
    assert marker == 'sys_platform == "linux" and platform_machine == "x86_64"'
    assert not any("--no-deps" in x for x in lines)


def test_headers_are_found_where_the_wheels_put_them(monkeypatch, tmp_path):
    """onednn-devel-cpu-gomp and onednn-devel both install ``<prefix>/include/oneapi/dnnl/``."""
    from importlib import metadata

    include = tmp_path / "prefix" / "include"
    (include / "oneapi" / "dnnl").mkdir(parents=True)
    (include / "oneapi" / "dnnl" / "dnnl.hpp").write_text("// headers\n")

    class File(str):
        def locate(self):
            return tmp_path / "prefix" / "lib" / "python3" / "site-packages" / self

    class Distribution:
        files = [File("../../../include/oneapi/dnnl/dnnl.h"), File("../../../include/oneapi/dnnl/dnnl.hpp")]

    asked = []

    def distribution(name):
        asked.append(name)
        if name != "onednn-devel-cpu-gomp":
            raise metadata.PackageNotFoundError(name)
        return Distribution()

    monkeypatch.delenv("PADDLE_CNN_ONEDNN_INCLUDE", raising=False)
    monkeypatch.setattr(metadata, "distribution", distribution)
    assert build.find_headers() == include.resolve()
    assert asked[0] == "onednn-devel-cpu-gomp"
    monkeypatch.setenv("PADDLE_CNN_ONEDNN_INCLUDE", str(include))  # an explicit place comes first
    assert build.find_headers() == include


# ------------------------------------------------------------------ the shared header

def test_the_shared_header_is_built_with_the_sources_and_keys_the_cache(monkeypatch, tmp_path):
    """onednn_common.h goes beside the sources into the build directory, ships in the wheel, and a change to it
    changes the build's fingerprint (so a cached library built from the old header is rebuilt)."""
    include = tmp_path / "include"
    (include / "oneapi" / "dnnl").mkdir(parents=True)
    (include / "oneapi" / "dnnl" / "dnnl_config.h").write_text("#define DNNL_CPU_RUNTIME DNNL_RUNTIME_OMP\n")
    (include / "oneapi" / "dnnl" / "dnnl_version.h").write_text(
        "#define DNNL_VERSION_MAJOR 3\n#define DNNL_VERSION_MINOR 2\n#define DNNL_VERSION_PATCH 0\n")
    monkeypatch.setattr(build, "patched_config", lambda text: text)
    build.prepare_sources(include, tmp_path / "b")
    for source in build.SOURCES:
        assert '#include "onednn_common.h"' in source.read_text()
        assert (tmp_path / "b" / source.name).read_bytes() == source.read_bytes()
    header = build.SOURCE.with_name("onednn_common.h")
    assert build.HEADERS == (header,) and (tmp_path / "b" / header.name).read_bytes() == header.read_bytes()

    (line,) = [x for x in (ROOT / "pyproject.toml").read_text().splitlines() if x.startswith('"paddle_cnn.accel" =')]
    globs = json.loads(line.split("=", 1)[1])  # package-data (tomllib is Python 3.11+)
    assert all(any(p.match(g) for g in globs) for p in build.SOURCES + build.HEADERS)

    copy = tmp_path / "onednn_common.h"
    copy.write_bytes(header.read_bytes())
    monkeypatch.setattr(build, "HEADERS", (copy,))
    before = build.fingerprint(include, "c++")
    assert build.fingerprint(include, "c++") == before
    copy.write_bytes(header.read_bytes() + b"// changed\n")
    assert build.fingerprint(include, "c++")["source_and_headers_sha256"] != before["source_and_headers_sha256"]


def test_loaded_names_the_library_without_building_it(monkeypatch):
    monkeypatch.setattr(build, "_LIBRARY", None)
    monkeypatch.setattr(build, "_load", lambda: pytest.fail("loaded() must not build"))
    assert build.loaded() is None and accel.onednn_version() is None
