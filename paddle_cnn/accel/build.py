"""Build and load the oneDNN convolution operator (conv_onednn.cc).

The operator is compiled on first use with ``paddle.utils.cpp_extension``
and cached per Paddle version under ``~/.cache/paddle_cnn/accel/<version>/``
(``PADDLE_CNN_ACCEL_CACHE`` moves the root). A file lock serialises
processes that build at the same time; later processes only load the cached
library.

What it needs, all checked before compiling, each missing piece reported in
one sentence (:class:`Unavailable`):

* Linux and a Paddle wheel that bundles oneDNN (``paddle/libs/libdnnl.so.3``;
  the CPU and the GPU wheels both do): the operator links against that very
  library, so the process never holds two oneDNN copies.
* A C++ compiler (``c++``/``g++``).
* oneDNN v3 headers: ``onednn-devel-cpu-gomp`` from requirements.txt (Linux
  x86-64), or an ``onednn-devel`` wheel. Their ``dnnl_config.h`` may describe
  another build than Paddle's (SYCL/TBB, experimental sparse memory), so a
  patched copy of the headers goes into the build directory: OpenMP, no GPU,
  no experimental API (whose symbols Paddle's library does not export);
  site-packages stays untouched.

A fresh build is loaded first in a child process, which runs the
self-check; only a library that passed there is loaded into this process,
so a missing symbol or a crash ends in a one-line reason, never in a dead
training process. The first build says how long it took
(:func:`build_note`). Deterministic failures (a compile error, a library
that does not load or fails its check) are remembered next to the build
until its inputs change; a timeout is not.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NAME = "paddle_cnn_conv_onednn"
SOURCE = Path(__file__).with_name("conv_onednn.cc")
# Every C++ file of the library, compiled together: convolution; batch norm, pooling, ReLU; bf16 conv/linear.
SOURCES = (SOURCE, SOURCE.with_name("norm_pool_onednn.cc"), SOURCE.with_name("bf16_onednn.cc"))
# Headers the sources include from their own folder (one engine, stream and lock for the library); copied beside
# them into the build directory and part of the cache key, like the sources.
HEADERS = (SOURCE.with_name("onednn_common.h"),)
ONEDNN_HEADERS = "onednn-devel-cpu-gomp==2023.2.0"  # the headers requirements.txt installs (Linux x86-64)
HEADER_DISTRIBUTIONS = ("onednn-devel-cpu-gomp", "onednn-devel")  # the latter: 2025.0 headers of earlier installs
INSTALL_HINT = f"pip install {ONEDNN_HEADERS}"
DNNL_RUNTIME_OMP = 2  # DNNL_RUNTIME_OMP in dnnl_config.h
BUILD_TIMEOUT_S = 1200
CHILD_CHECK_TIMEOUT_S = 600  # importing Paddle plus the self-check, on a busy machine
CHILD_ENV = "PADDLE_CNN_ACCEL_CHILD"  # set in the child that checks a build: load that build, no lock
# Plans (primitives + reorders) kept per kind: forward, backward-data, backward-weights. A plan
# costs ~10 KB; ResNet-18 needs 11 per batch size (train, last partial batch, evaluation).
CACHE_CAPACITY = 48


class Unavailable(RuntimeError):
    """The operator cannot be built or loaded here; the message says why in one sentence."""


def verdict(check, ok, what: str = "self-check") -> tuple:
    """(True, ok()) when ``check()`` passes, else (False, one line why): how every self-check reports. Never raises.

    ``check`` runs with gradients on and autocast off, whatever context the caller is in.
    """
    import paddle

    try:
        with paddle.set_grad_enabled(True), paddle.amp.auto_cast(enable=False):
            check()
    except Unavailable as e:
        return False, str(e)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return False, f"{what} raised {type(e).__name__}: {first}"
    return True, ok()


class Transient(Unavailable):
    """A failure that may not happen again (a timeout, a killed process): not remembered in the cache."""


@dataclass
class Library:
    """The loaded operator: Paddle ops plus plain C entry points (ctypes)."""

    ops: object  # module with pcnn_conv2d / pcnn_conv2d_bias
    cdll: ctypes.CDLL
    path: Path

    def dnnl_version(self) -> tuple:
        """(major, minor, patch, cpu_runtime) of the oneDNN this process runs."""
        out = (ctypes.c_int * 4)()
        self.cdll.pcnn_dnnl_version(out)
        return tuple(out)

    def dnnl_library_path(self) -> str:
        return self.cdll.pcnn_dnnl_library_path().decode()

    def header_version(self) -> tuple:
        v = self.cdll.pcnn_header_version()
        return (v // 10000, v // 100 % 100, v % 100)

    def compiled_cpu_runtime(self) -> int:
        return self.cdll.pcnn_compiled_cpu_runtime()

    def cache_size(self) -> int:
        return self.cdll.pcnn_cache_size()

    def workspace_bytes(self) -> int:
        return self.cdll.pcnn_workspace_bytes()

    def set_cache_capacity(self, capacity: int) -> None:
        self.cdll.pcnn_set_cache_capacity(int(capacity))

    def release(self) -> None:
        """Drop cached primitives and free the workspace buffers."""
        self.cdll.pcnn_release()


_LIBRARY: Library | None = None
_FAILURE: str | None = None
_BUILD_NOTE: str | None = None  # what a build in this process did, for one log line (build_note())


def loaded() -> Library | None:
    """The library this process has loaded, or None (not asked for yet, or unavailable); never builds."""
    return _LIBRARY


def paddle_libs_dir() -> Path:
    import paddle

    return Path(paddle.__file__).resolve().parent / "libs"


def cache_root() -> Path:
    root = os.environ.get("PADDLE_CNN_ACCEL_CACHE")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "paddle_cnn" / "accel"


def build_directory() -> Path:
    """One directory per Paddle version and build kind (the CPU and GPU wheels bundle different files)."""
    import paddle

    kind = "-gpu" if paddle.is_compiled_with_cuda() or paddle.is_compiled_with_rocm() else ""
    return cache_root() / f"{paddle.__version__}{kind}"


def find_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def find_headers() -> Path | None:
    """The include directory holding ``oneapi/dnnl/dnnl.hpp``.

    In order: ``PADDLE_CNN_ONEDNN_INCLUDE``, the pip wheels of
    :data:`HEADER_DISTRIBUTIONS` (both put ``include/oneapi/dnnl/`` under the
    environment's prefix, or the user base with ``--user``), then the usual
    system places.
    """
    from importlib import metadata

    candidates = []
    env = os.environ.get("PADDLE_CNN_ONEDNN_INCLUDE")
    if env:
        candidates.append(Path(env))
    for dist in HEADER_DISTRIBUTIONS:
        try:
            files = metadata.distribution(dist).files or ()
        except Exception:  # not installed, or metadata without a file list
            continue
        for f in files:
            if str(f).replace("\\", "/").endswith("include/oneapi/dnnl/dnnl.hpp"):
                candidates.append(Path(f.locate()).resolve().parents[2])
    candidates += [Path(sys.prefix) / "include", Path("/usr/local/include"), Path("/usr/include")]
    for c in candidates:
        if (c / "oneapi" / "dnnl" / "dnnl.hpp").is_file():
            return c
    return None


def header_version(include: Path) -> tuple:
    text = (include / "oneapi" / "dnnl" / "dnnl_version.h").read_text()
    parts = [re.search(rf"#define DNNL_VERSION_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise Unavailable(f"cannot read the oneDNN version from {include}/oneapi/dnnl/dnnl_version.h")
    return tuple(int(p.group(1)) for p in parts)


def patched_config(text: str) -> str:
    """dnnl_config.h for Paddle's oneDNN: OpenMP on the CPU, no GPU, no SYCL, no experimental API.

    Experimental features change the public API (with ``DNNL_EXPERIMENTAL_SPARSE``
    the 2023.2 headers call ``dnnl_memory_create_v2``, which Paddle's library
    does not export), so every ``DNNL_EXPERIMENTAL*`` define is switched off,
    whatever the headers' version.
    """
    rules = [
        (r"(#define DNNL_CPU_THREADING_RUNTIME\s+)DNNL_RUNTIME_\w+", r"\1DNNL_RUNTIME_OMP"),
        (r"(#define DNNL_CPU_RUNTIME\s+)DNNL_RUNTIME_\w+", r"\1DNNL_RUNTIME_OMP"),
        (r"(#define DNNL_GPU_RUNTIME\s+)DNNL_RUNTIME_\w+", r"\1DNNL_RUNTIME_NONE"),
        (r"(#define DNNL_GPU_VENDOR\s+)DNNL_VENDOR_\w+", r"\1DNNL_VENDOR_NONE"),
        (r"^(#define (DNNL_WITH_SYCL|DNNL_WITH_LEVEL_ZERO|DNNL_SYCL_\w+)\b.*)$", r"/* \1 (off for Paddle's build) */"),
        (r"^(#define DNNL_EXPERIMENTAL\w*\b.*)$", r"/* \1 (off: Paddle's library may not export it) */"),
    ]
    for pattern, replacement in rules[:3]:
        if not re.search(pattern, text):
            raise Unavailable("the oneDNN headers' dnnl_config.h has an unexpected form (no DNNL_*_RUNTIME)")
    for pattern, replacement in rules:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text


def prepare_sources(include: Path, build_dir: Path) -> None:
    """Copy the operator sources and the (patched) headers into the build directory."""
    dst = build_dir / "include" / "oneapi" / "dnnl"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in (include / "oneapi" / "dnnl").iterdir():
        if f.suffix in (".h", ".hpp") and f.is_file():
            shutil.copyfile(f, dst / f.name)
    config = dst / "dnnl_config.h"
    config.write_text(patched_config(config.read_text()))
    for source in SOURCES + HEADERS:
        shutil.copyfile(source, build_dir / source.name)


def fingerprint(include: Path, compiler: str) -> dict:
    """What the built library depends on. Not Python's version: the operator does not link libpython,
    so venvs of one Paddle version share a build instead of rebuilding it in turn."""
    import paddle

    digest = hashlib.sha256()
    for source in SOURCES + HEADERS:
        digest.update(source.read_bytes())
    for name in ("dnnl.hpp", "dnnl.h", "dnnl_config.h", "dnnl_types.h", "dnnl_version.h"):
        path = include / "oneapi" / "dnnl" / name
        if path.is_file():
            digest.update(path.read_bytes())
    return {
        "source_and_headers_sha256": digest.hexdigest(),
        "paddle": paddle.__version__,
        "paddle_commit": getattr(paddle.version, "commit", ""),
        "compiler": compiler,
        "headers": ".".join(map(str, header_version(include))),
        "paddle_libdnnl_bytes": (paddle_libs_dir() / "libdnnl.so.3").stat().st_size,
    }


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock between processes (two trainers starting together build once)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def extension_args(build_dir: Path) -> dict:
    """The arguments of ``paddle.utils.cpp_extension.load`` for this library (written once)."""
    libs = paddle_libs_dir()
    return dict(
        name=NAME,
        sources=[str(build_dir / source.name) for source in SOURCES],
        extra_cxx_cflags=["-O2", "-std=c++17"],
        extra_ldflags=[f"-L{libs}", "-l:libdnnl.so.3", f"-Wl,-rpath,{libs}", "-ldl"],
        extra_include_paths=[str(build_dir / "include")],
        build_directory=str(build_dir),
    )


def compile_library(build_dir: Path, log_path: Path) -> None:
    """Run ``paddle.utils.cpp_extension.load`` in a child process, its output into a log file.

    A compiler error raises :class:`Unavailable`; a timeout or a killed compiler :class:`Transient`.
    """
    script = f"from paddle.utils.cpp_extension import load\nload(**{extension_args(build_dir)!r}, verbose=True)\n"
    env = dict(os.environ, PADDLE_EXTENSION_DIR=str(build_dir))
    with open(log_path, "w") as log:
        try:
            done = subprocess.run(
                [sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=str(build_dir), timeout=BUILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise Transient(f"building the oneDNN operator took over {BUILD_TIMEOUT_S} s (log: {log_path})")
    if done.returncode < 0:
        raise Transient(f"the compiler was stopped by signal {-done.returncode} (log: {log_path})")
    if done.returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()
        tail = [line.strip() for line in lines if "error" in line.lower()]
        hint = f": {tail[0][:200]}" if tail else ""
        if _gpu_build() and any("cuda" in line.lower() for line in tail):
            hint += ("; a GPU build of Paddle compiles custom operators against the CUDA toolkit's headers, "
                     "which this machine lacks (Paddle's CPU build, pip install paddlepaddle, needs none)")
        raise Unavailable(f"compiling the oneDNN operator failed{hint} (full log: {log_path})")


def library_file(build_dir: Path) -> Path:
    return build_dir / NAME / f"{NAME}.so"


def open_library(build_dir: Path) -> Library:
    """Load a built library into this process and register its operators with Paddle.

    ctypes opens it first, with every symbol bound at once (``RTLD_NOW``): a
    symbol Paddle's oneDNN lacks is then an ``OSError`` here, not a
    ``symbol lookup error`` that ends the process at the first call. Paddle's
    loader then gets the same handle, so there is one copy.
    """
    from paddle.utils.cpp_extension import extension_utils

    so = library_file(build_dir)
    try:
        cdll = ctypes.CDLL(str(so), mode=os.RTLD_NOW)
    except OSError as e:
        raise Unavailable(_missing_symbol_reason(str(e)) or f"the built oneDNN operator does not load: {_first_line(e)}")
    with _quiet(getattr(extension_utils, "logger", None)):  # it logs "using custom operator only"
        ops = extension_utils._import_module_from_library(NAME, str(build_dir / NAME), False)
    cdll.pcnn_dnnl_library_path.restype = ctypes.c_char_p
    cdll.pcnn_workspace_bytes.restype = ctypes.c_int64
    library = Library(ops=ops, cdll=cdll, path=so)
    library.set_cache_capacity(CACHE_CAPACITY)
    return library


# The child that checks a fresh build: import Paddle on the CPU, load the library, run accel's
# self-check, print the answer after a marker. A crash or a missing symbol only ends this child.
_CHILD_MARK = "PADDLE_CNN_ACCEL_CHECK "
_CHILD_SCRIPT = f"""
import json
from paddle_cnn import accel  # first, as a training script would (it sets CPU threads before Paddle starts)
import paddle
paddle.set_device("cpu")
ok, reason = accel.available()
print({_CHILD_MARK!r} + json.dumps({{"ok": ok, "reason": reason}}), flush=True)
"""


def check_in_child(build_dir: Path, log_path: Path, command: list | None = None) -> None:
    """Load ``build_dir``'s library in a child process and self-check it there; Unavailable if that fails.

    ``command`` replaces the child's command line (tests).
    """
    package_root = str(Path(__file__).resolve().parents[2])  # the paddle_cnn this process imported
    env = dict(os.environ, **{CHILD_ENV: str(build_dir)})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    with open(log_path, "w") as log:
        try:
            done = subprocess.run(command or [sys.executable, "-c", _CHILD_SCRIPT], stdout=subprocess.PIPE,
                                  stderr=log, env=env, cwd=str(build_dir), timeout=CHILD_CHECK_TIMEOUT_S, text=True)
        except subprocess.TimeoutExpired:
            raise Transient(f"checking the built oneDNN operator took over {CHILD_CHECK_TIMEOUT_S} s "
                            f"(log: {log_path})")
    answer = [line[len(_CHILD_MARK):] for line in done.stdout.splitlines() if line.startswith(_CHILD_MARK)]
    if done.returncode == 0 and answer:
        result = json.loads(answer[-1])
        if not result["ok"]:
            raise Unavailable(result["reason"])
        return
    errors = log_path.read_text(errors="replace").splitlines()
    reason = _missing_symbol_reason("\n".join(errors))
    if reason:
        raise Unavailable(f"{reason} (log: {log_path})")
    if done.returncode in (-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT):
        raise Transient(f"the process checking the oneDNN operator was stopped (signal {-done.returncode}; "
                        f"log: {log_path})")
    if done.returncode < 0:
        raise Unavailable(f"the oneDNN operator crashed its check process (signal {-done.returncode}; "
                          f"log: {log_path})")
    last = errors[-1].strip()[:200] if errors else "no output"
    raise Unavailable(f"the process checking the oneDNN operator ended with exit code {done.returncode}: {last} "
                      f"(log: {log_path})")


def _missing_symbol_reason(text: str) -> str | None:
    """A loader's "undefined symbol: X" / "symbol lookup error" as one sentence with the fix, else None."""
    found = re.search(r"undefined symbol: (\S+)", text)
    if not found and "symbol lookup error" not in text:
        return None
    symbol = found.group(1) if found else "a symbol"
    return (f"the built oneDNN operator needs {symbol}, which Paddle's oneDNN does not export (headers newer "
            f"than Paddle's oneDNN? {INSTALL_HINT} installs the headers this package is tested with)")


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _gpu_build() -> bool:
    import paddle

    return bool(paddle.is_compiled_with_cuda() or paddle.is_compiled_with_rocm())


@contextlib.contextmanager
def _quiet(logger):
    if logger is None:
        yield
        return
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_prerequisites() -> tuple:
    """(include dir, compiler) or :class:`Unavailable` naming the first thing missing.

    The one platform check: Linux, and a Paddle wheel with its own oneDNN
    (the CPU build; the GPU build too, when it trains on the CPU).
    """
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"the oneDNN operator is built on Linux only (this is {sys.platform})")
    if not (paddle_libs_dir() / "libdnnl.so.3").is_file():
        instead = "; Paddle's x86-64 Linux CPU build (pip install paddlepaddle) bundles it" if _gpu_build() else ""
        raise Unavailable(f"this Paddle build bundles no oneDNN (no {paddle_libs_dir() / 'libdnnl.so.3'}){instead}")
    compiler = find_compiler()
    if compiler is None:
        raise Unavailable("no C++ compiler found (install g++, e.g. `apt-get install g++`)")
    include = find_headers()
    if include is None:
        raise Unavailable(f"the oneDNN headers are missing ({INSTALL_HINT})")
    major = header_version(include)[0]
    if major != 3:
        raise Unavailable(f"the oneDNN headers in {include} are version {major}.x; v3 is needed ({INSTALL_HINT})")
    return include, compiler


def load_library() -> Library:
    """Build (once per Paddle version) and load the operator; :class:`Unavailable` if it cannot be.

    The outcome is remembered for the process, failures included, so a
    missing compiler costs one check, not one per model.
    """
    global _LIBRARY, _FAILURE
    if _LIBRARY is not None:
        return _LIBRARY
    if _FAILURE is not None:
        raise Unavailable(_FAILURE)
    try:
        _LIBRARY = _load()
        return _LIBRARY
    except Unavailable as e:
        _FAILURE = str(e)
        raise
    except Exception as e:  # anything else still becomes a one-line reason
        _FAILURE = f"loading the oneDNN operator failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise Unavailable(_FAILURE) from e


def _read_json(path: Path):
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def build_note() -> str | None:
    """The line to show once after this process built the library (then None): how long, where."""
    global _BUILD_NOTE
    note, _BUILD_NOTE = _BUILD_NOTE, None
    return note


def _remember(failed_path: Path, wanted: dict, error: Unavailable) -> None:
    """Keep a deterministic failure beside the build, so other processes report it without retrying."""
    if not isinstance(error, Transient):
        failed_path.write_text(json.dumps({"fingerprint": wanted, "reason": str(error)}, indent=1))


def _load() -> Library:
    global _BUILD_NOTE
    child_dir = os.environ.get(CHILD_ENV)
    if child_dir:  # the child that checks a fresh build: its parent built it and holds the lock
        return open_library(Path(child_dir))
    include, compiler = check_prerequisites()
    build_dir = build_directory()
    stamp_path, failed_path = build_dir / "stamp.json", build_dir / "failed.json"
    compiled_s = checked_s = None
    with file_lock(build_dir / ".lock"):
        wanted = fingerprint(include, compiler)
        so = library_file(build_dir)
        stamp, failed = _read_json(stamp_path), _read_json(failed_path)
        if failed and failed.get("fingerprint") == wanted:
            # The same inputs failed before: say so at once instead of compiling again in every process.
            raise Unavailable(f"{failed['reason']} [earlier attempt; delete {build_dir} to retry]")
        if not (isinstance(stamp, dict) and stamp.get("fingerprint") == wanted and so.is_file()):
            for stale in (build_dir / NAME, stamp_path, failed_path):
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.exists():
                    stale.unlink()
            start = time.monotonic()
            try:
                prepare_sources(include, build_dir)
                compile_library(build_dir, build_dir / "build.log")
                if not so.is_file():
                    raise Unavailable(f"the build finished without {so} (log: {build_dir / 'build.log'})")
            except Unavailable as e:
                _remember(failed_path, wanted, e)
                raise
            compiled_s = time.monotonic() - start
            stamp = {"fingerprint": wanted, "checked_in_child": False}
            stamp_path.write_text(json.dumps(stamp, indent=1))
        if not stamp.get("checked_in_child"):
            start = time.monotonic()
            try:
                check_in_child(build_dir, build_dir / "check.log")
            except Unavailable as e:
                _remember(failed_path, wanted, e)
                raise
            checked_s = time.monotonic() - start
            stamp["checked_in_child"] = True
            stamp_path.write_text(json.dumps(stamp, indent=1))
        library = open_library(build_dir)
    if compiled_s is not None:
        _BUILD_NOTE = (f"compiled the oneDNN operators once in {compiled_s:.0f} s and self-checked them in a "
                       f"separate process in {checked_s:.0f} s (cached in {build_dir})")
    elif checked_s is not None:
        _BUILD_NOTE = f"self-checked the cached oneDNN operators in a separate process in {checked_s:.0f} s"
    return library
