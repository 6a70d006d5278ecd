"""Build and load the oneDNN convolution operator (conv_onednn.cc).

The operator is compiled on first use with ``paddle.utils.cpp_extension``
and cached per Paddle version under ``~/.cache/paddle_cnn/accel/<version>/``
(``PADDLE_CNN_ACCEL_CACHE`` moves the root). A file lock serialises
processes that build at the same time; later processes only load the cached
library.

What it needs, all checked before compiling, each missing piece reported in
one sentence (:class:`Unavailable`):

* Linux and a CPU build of Paddle that bundles oneDNN (``paddle/libs/libdnnl.so.3``):
  the operator links against that very library, so the process never holds
  two oneDNN copies.
* A C++ compiler (``c++``/``g++``).
* oneDNN v3 headers: the ``onednn-devel`` wheel (requirements.txt pins the
  version). Its ``dnnl_config.h`` describes Intel's SYCL/TBB build, while
  Paddle's library uses OpenMP, so a patched copy of the headers goes into
  the build directory; site-packages stays untouched.
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
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

NAME = "paddle_cnn_conv_onednn"
SOURCE = Path(__file__).with_name("conv_onednn.cc")
ONEDNN_DEVEL = "onednn-devel==2025.0.0"  # the headers requirements.txt installs
DNNL_RUNTIME_OMP = 2  # DNNL_RUNTIME_OMP in dnnl_config.h
BUILD_TIMEOUT_S = 1200
# Plans (primitives + reorders) kept per kind: forward, backward-data, backward-weights. A plan
# costs ~10 KB; ResNet-18 needs 11 per batch size (train, last partial batch, evaluation).
CACHE_CAPACITY = 48


class Unavailable(RuntimeError):
    """The operator cannot be built or loaded here; the message says why in one sentence."""


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
    import paddle

    return cache_root() / paddle.__version__


def find_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def find_headers() -> Path | None:
    """The include directory holding ``oneapi/dnnl/dnnl.hpp`` (onednn-devel first)."""
    candidates = []
    env = os.environ.get("PADDLE_CNN_ONEDNN_INCLUDE")
    if env:
        candidates.append(Path(env))
    try:
        from importlib import metadata

        for f in metadata.distribution("onednn-devel").files or ():
            if str(f).replace("\\", "/").endswith("include/oneapi/dnnl/dnnl.hpp"):
                candidates.append(Path(f.locate()).resolve().parents[2])
    except Exception:  # not installed, or metadata without a file list
        pass
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
    """dnnl_config.h for Paddle's oneDNN: OpenMP on the CPU, no GPU, no SYCL."""
    rules = [
        (r"(#define DNNL_CPU_THREADING_RUNTIME\s+)DNNL_RUNTIME_\w+", r"\1DNNL_RUNTIME_OMP"),
        (r"(#define DNNL_CPU_RUNTIME\s+)DNNL_RUNTIME_\w+", r"\1DNNL_RUNTIME_OMP"),
        (r"(#define DNNL_GPU_RUNTIME\s+)DNNL_RUNTIME_\w+", r"\1DNNL_RUNTIME_NONE"),
        (r"(#define DNNL_GPU_VENDOR\s+)DNNL_VENDOR_\w+", r"\1DNNL_VENDOR_NONE"),
        (r"^(#define (DNNL_WITH_SYCL|DNNL_WITH_LEVEL_ZERO|DNNL_SYCL_\w+)\b.*)$", r"/* \1 (off for Paddle's build) */"),
    ]
    for pattern, replacement in rules[:3]:
        if not re.search(pattern, text):
            raise Unavailable("the oneDNN headers' dnnl_config.h has an unexpected form (no DNNL_*_RUNTIME)")
    for pattern, replacement in rules:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text


def prepare_sources(include: Path, build_dir: Path) -> Path:
    """Copy the operator source and the (patched) headers into the build directory."""
    dst = build_dir / "include" / "oneapi" / "dnnl"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in (include / "oneapi" / "dnnl").iterdir():
        if f.suffix in (".h", ".hpp") and f.is_file():
            shutil.copyfile(f, dst / f.name)
    config = dst / "dnnl_config.h"
    config.write_text(patched_config(config.read_text()))
    source = build_dir / SOURCE.name
    shutil.copyfile(SOURCE, source)
    return source


def fingerprint(include: Path, compiler: str) -> dict:
    """What the built library depends on. Not Python's version: the operator does not link libpython,
    so venvs of one Paddle version share a build instead of rebuilding it in turn."""
    import paddle

    digest = hashlib.sha256(SOURCE.read_bytes())
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


def compile_library(source: Path, build_dir: Path, log_path: Path) -> None:
    """Run ``paddle.utils.cpp_extension.load`` in a child process, its output into a log file."""
    libs = paddle_libs_dir()
    script = textwrap.dedent(
        f"""
        from paddle.utils.cpp_extension import load
        load(
            name={NAME!r},
            sources=[{str(source)!r}],
            extra_cxx_cflags=["-O2", "-std=c++17"],
            extra_ldflags=["-L{libs}", "-l:libdnnl.so.3", "-Wl,-rpath,{libs}", "-ldl"],
            extra_include_paths=[{str(build_dir / "include")!r}],
            build_directory={str(build_dir)!r},
            verbose=True,
        )
        """
    )
    env = dict(os.environ, PADDLE_EXTENSION_DIR=str(build_dir))
    with open(log_path, "w") as log:
        try:
            done = subprocess.run(
                [sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=str(build_dir), timeout=BUILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise Unavailable(f"building the oneDNN operator took over {BUILD_TIMEOUT_S} s (log: {log_path})")
    if done.returncode != 0:
        tail = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if "error" in line.lower()]
        hint = f": {tail[0][:200]}" if tail else ""
        raise Unavailable(f"compiling the oneDNN operator failed{hint} (full log: {log_path})")


def library_file(build_dir: Path) -> Path:
    return build_dir / NAME / f"{NAME}.so"


def import_ops(build_dir: Path):
    """Register the built operators with Paddle and return the generated Python module."""
    from paddle.utils.cpp_extension import extension_utils

    importer = getattr(extension_utils, "_import_module_from_library", None)
    if importer is not None:
        with _quiet(getattr(extension_utils, "logger", None)):  # it logs "using custom operator only"
            return importer(NAME, str(build_dir / NAME), False)
    # Without that helper, load() itself re-runs the (up-to-date) build and imports.
    from paddle.utils.cpp_extension import load

    libs = paddle_libs_dir()
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        return load(
            name=NAME, sources=[str(build_dir / SOURCE.name)],
            extra_cxx_cflags=["-O2", "-std=c++17"],
            extra_ldflags=[f"-L{libs}", "-l:libdnnl.so.3", f"-Wl,-rpath,{libs}", "-ldl"],
            extra_include_paths=[str(build_dir / "include")], build_directory=str(build_dir),
        )


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
    """(include dir, compiler) or :class:`Unavailable` naming the first thing missing."""
    import paddle

    if not sys.platform.startswith("linux"):
        raise Unavailable(f"the oneDNN operator is built on Linux only (this is {sys.platform})")
    if paddle.is_compiled_with_cuda() or paddle.is_compiled_with_rocm():
        raise Unavailable("this is a GPU build of Paddle; the oneDNN operator is for CPU-only builds")
    if not (paddle_libs_dir() / "libdnnl.so.3").is_file():
        raise Unavailable(f"this Paddle build bundles no oneDNN (no {paddle_libs_dir() / 'libdnnl.so.3'})")
    compiler = find_compiler()
    if compiler is None:
        raise Unavailable("no C++ compiler found (install g++, e.g. `apt-get install g++`)")
    include = find_headers()
    if include is None:
        raise Unavailable(f"the oneDNN headers are missing (pip install {ONEDNN_DEVEL})")
    major = header_version(include)[0]
    if major != 3:
        raise Unavailable(f"the oneDNN headers in {include} are version {major}.x; v3 is needed ({ONEDNN_DEVEL})")
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


def _load() -> Library:
    include, compiler = check_prerequisites()
    build_dir = build_directory()
    stamp_path, failed_path = build_dir / "stamp.json", build_dir / "failed.json"
    with file_lock(build_dir / ".lock"):
        wanted = fingerprint(include, compiler)
        so = library_file(build_dir)
        built, failed = _read_json(stamp_path), _read_json(failed_path)
        if failed and failed.get("fingerprint") == wanted:
            # The same sources failed before: say so at once instead of compiling again in every process.
            raise Unavailable(f"{failed['reason']} [earlier attempt; delete {build_dir} to retry]")
        if built != wanted or not so.is_file():
            for stale in (build_dir / NAME, stamp_path, failed_path):
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.exists():
                    stale.unlink()
            try:
                source = prepare_sources(include, build_dir)
                compile_library(source, build_dir, build_dir / "build.log")
                if not so.is_file():
                    raise Unavailable(f"the build finished without {so} (log: {build_dir / 'build.log'})")
            except Unavailable as e:
                failed_path.write_text(json.dumps({"fingerprint": wanted, "reason": str(e)}, indent=1))
                raise
            stamp_path.write_text(json.dumps(wanted, indent=1))
        ops = import_ops(build_dir)
    cdll = ctypes.CDLL(str(so))  # the same handle Paddle opened: no second copy
    cdll.pcnn_dnnl_library_path.restype = ctypes.c_char_p
    cdll.pcnn_workspace_bytes.restype = ctypes.c_int64
    library = Library(ops=ops, cdll=cdll, path=so)
    library.set_cache_capacity(CACHE_CAPACITY)
    return library
