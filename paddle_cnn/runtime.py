"""Runtime: CPU tuning before Paddle loads, device choice, seeding.

Importing :mod:`paddle_cnn` runs :func:`tune_cpu` before anything imports
``paddle``, because the settings below are read once, when Paddle's bundled
MKL and OpenMP start:

* ``MKL_DEBUG_CPU_TYPE=5`` makes the MKL that ships with Paddle take its
  AVX2 code path on AMD processors instead of the generic one. On our 2-core
  AMD EPYC it lifts an fp32 matmul from 57 to 147 GFLOP/s (see benchmarks/).
* ``MKL_NUM_THREADS`` = physical cores. Paddle sets ``OMP_NUM_THREADS=1``
  when it is unset, so by default its MKL (every convolution and matmul)
  runs on one core; MKL_NUM_THREADS overrides that for MKL alone, without
  Paddle's warning about OMP_NUM_THREADS. AlexNet@96 training on our 2 cores:
  90 examples/sec on one thread, 116 on two (benchmarks/README.md).
* ``KMP_BLOCKTIME=0``: idle MKL threads sleep at once instead of spinning for
  200 ms, so a second busy process (or Paddle's own single-threaded ops
  between GEMMs) does not fight a spinning thread for the core; it made the
  two-thread speed steady (113-120 vs 106-134 examples/sec over 5 rounds).
* ``OMP_NUM_THREADS`` = physical cores as well, where the machine has
  hyper-threads: they share the vector units and only add contention.

Nothing is overridden that the user already set. If Paddle was imported
before ``paddle_cnn``, the tuning can no longer apply and we warn once.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import warnings
from dataclasses import dataclass
# Load Python's zlib against the system libz before Paddle can: Paddle 2.6's
# bundled libz otherwise binds first and gzip.decompress segfaults in inflateReset2.
import zlib  # noqa: F401

DEVICES = ("auto", "cpu", "gpu")

#: What :func:`tune_cpu` did, for results.json and the benchmark's environment record.
TUNING: dict = {}


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo (or platform as a fallback)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


#: Vector features that decide how fast training runs on a CPU (bf16 natively or not), in the order they are shown.
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> list:
    """Which of :data:`CPU_FEATURES` this CPU has, from the ``flags`` line of /proc/cpuinfo (Linux).

    Empty where that file does not exist or says nothing (macOS, Windows), so an empty
    list means "not known", not "none".
    """
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [name for name in CPU_FEATURES if name in flags]
    except OSError:
        pass
    return []


def cpu_text(model: str, features=None) -> str:
    """A CPU as a table header names it: the model, then its vector features when they are known.

    >>> cpu_text("AMD EPYC 9R14", ["avx2", "avx512f", "avx512_bf16"])
    'AMD EPYC 9R14 [avx2 avx512f avx512_bf16]'
    >>> cpu_text("AMD EPYC 9R14", None)   # a record written before the features were recorded
    'AMD EPYC 9R14'
    """
    return f"{model} [{' '.join(features)}]" if features else model


def cgroup_cpu_limit(root="/sys/fs/cgroup") -> float | None:
    """CPUs this container may use by its cgroup quota (e.g. 1.5), or None when unlimited or unknown.

    Containers on GPU hosts often see all of the host's cores (affinity and
    /proc/cpuinfo) but may use only a few of them; threads beyond the quota
    are throttled, so :func:`physical_cores` caps its count with this.

    cgroup v2 writes ``"<quota> <period>"`` (or ``"max <period>"``) in
    ``cpu.max``; v1 has ``cpu.cfs_quota_us`` (-1 = unlimited) and
    ``cpu.cfs_period_us`` in the ``cpu`` (or ``cpu,cpuacct``) controller folder.
    Reads the files under ``root`` as a container sees them (its own cgroup is
    mounted there); a process deeper in a host's hierarchy is not followed.
    """
    from pathlib import Path

    root = Path(root)

    def read(path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def ratio(quota: str, period: str) -> float | None:
        try:
            q, p = int(quota), int(period)
        except ValueError:
            return None
        return q / p if q > 0 and p > 0 else None

    v2 = read(root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        return ratio(parts[0], parts[1]) if len(parts) == 2 and parts[0] != "max" else None
    for folder in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu", root):
        quota, period = read(folder / "cpu.cfs_quota_us"), read(folder / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return ratio(quota, period)
    return None


def physical_cores() -> int:
    """Physical cores this process may use: hyper-threads counted once, capped by a cgroup CPU quota."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        usable = os.cpu_count() or 1
    cores = set()
    try:
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not line.strip() and core is not None:
                    cores.add((phys, core))
                    phys = core = None
            if core is not None:
                cores.add((phys, core))
    except OSError:
        pass
    found = min(usable, len(cores) or usable)
    quota = cgroup_cpu_limit()
    if quota is not None:
        found = min(found, math.ceil(quota))
    return max(1, found)


def is_amd_cpu() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "AuthenticAMD" in f.read(4096)
    except OSError:
        return "AMD" in cpu_model()


class EnvironmentProblem(ImportError):
    """The installed packages cannot work together (not a bug of ours): one line says how to fix it."""


def check_numpy_for_paddle() -> None:
    """Refuse NumPy 2 beside Paddle 2.x with one line that says how to fix it (read without importing either).

    Paddle 2.6 was built against NumPy 1 and fails in odd places under NumPy 2;
    AI Studio images pin it, but a fresh ``pip install paddlepaddle-gpu==2.6.*``
    does not.
    """
    from importlib import metadata

    versions = {}
    for name in ("paddlepaddle", "paddlepaddle-gpu", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    paddle = versions.get("paddlepaddle-gpu") or versions.get("paddlepaddle")
    numpy = versions.get("numpy", "0")
    if paddle and paddle.startswith("2.") and int(numpy.split(".")[0]) >= 2:
        raise EnvironmentProblem(f"Paddle {paddle} needs NumPy 1.x but NumPy {numpy} is installed; "
                                 'run: pip install "numpy<2"')


#: Paddle's warnings that say nothing a user can act on here, each with the reason it is dropped.
#: Everything else Paddle warns about still reaches the user.
PADDLE_NOISE = (
    # Paddle warns about a C++ extension cache on every import; irrelevant to this course.
    "No ccache found",
    # Paddle 3.x announces on every BatchNorm forward that it tracks global statistics: informational.
    "When training, we now always track global mean",
    # The GPU build on a machine without a visible GPU (AI Studio's CPU instances, a notebook before the card
    # is attached) says so on its first tensor; the doctor reports it ("CUDA build, but no GPU visible").
    "You are using GPU version Paddle, but your CUDA device is not set properly",
)


def quiet_paddle_warnings() -> None:
    """Drop Paddle's warnings listed in :data:`PADDLE_NOISE` (by message start); keep every other one."""
    for message in PADDLE_NOISE:
        warnings.filterwarnings("ignore", message=message)


def tune_cpu() -> dict:
    """Set MKL/OpenMP environment for this CPU; must run before ``import paddle``.

    Returns (and stores in :data:`TUNING`) what was set, what the user had set
    already, and whether Paddle was imported too early for it to apply.
    """
    if TUNING:
        return TUNING
    threads = physical_cores()
    wanted = {}
    if threads > 1:
        # Paddle turns an unset OMP_NUM_THREADS into 1, which leaves MKL on one core.
        wanted = {"MKL_NUM_THREADS": str(threads), "KMP_BLOCKTIME": "0"}
    if threads < (os.cpu_count() or threads):
        # Only where hyper-threads exist: Paddle prints a warning whenever OMP_NUM_THREADS is not 1.
        wanted["OMP_NUM_THREADS"] = str(threads)
    if is_amd_cpu():
        wanted["MKL_DEBUG_CPU_TYPE"] = "5"
    applied, kept = {}, {}
    for key, value in wanted.items():
        if key in os.environ:
            kept[key] = os.environ[key]
        else:
            os.environ[key] = value
            applied[key] = value
    quiet_paddle_warnings()
    too_late = "paddle" in sys.modules
    if too_late and applied:
        warnings.warn(
            "paddle was imported before paddle_cnn, so the CPU tuning "
            f"({', '.join(f'{k}={v}' for k, v in applied.items())}) cannot take effect "
            "in this process; import paddle_cnn first (or set these variables "
            "before starting Python) for full CPU speed.",
            RuntimeWarning,
            stacklevel=3,
        )
    TUNING.update(applied=applied, user_set=kept, paddle_imported_first=too_late)
    return TUNING


# --------------------------------------------------------------------------- device queries
# The one boundary between paddle_cnn and Paddle's CUDA queries: the doctor, the config (profile and
# precision), the trainer and the memory model ask these functions and nothing else, so tests replace
# these functions (tests/fake_gpu.py) and never reach a real CUDA call. On a GPU build with no GPU
# visible some of Paddle's queries do not raise but abort the process (``place.cc: Cannot use GPU
# because there is no GPU detected``): those are asked only after Paddle itself counts a GPU.


@dataclass(frozen=True)
class GpuInfo:
    """What the package needs to know about one GPU."""

    name: str
    major: int            # compute capability, e.g. 7.0 for a V100, 8.0 for an A100
    minor: int
    total_memory: int     # bytes


def cuda_build() -> bool:
    """Is this Paddle a CUDA build (``paddlepaddle-gpu``), whether or not a GPU is visible?"""
    import paddle

    return bool(paddle.is_compiled_with_cuda())


def _visible_gpus() -> int:
    """Paddle's own count of the GPUs it can use: never replaced by tests, so guards can trust it."""
    import paddle

    if not paddle.is_compiled_with_cuda():
        return 0
    return int(paddle.device.cuda.device_count())


def _need_visible_gpu(index: int, what: str) -> None:
    """Raise (instead of letting Paddle abort the process) when GPU ``index`` is not visible."""
    count = _visible_gpus()
    if index >= count:
        raise RuntimeError(f"{what}: no GPU {index} visible to this Paddle ({count} visible)")


def gpu_count() -> int:
    """GPUs this Paddle build can use (0 on a CPU build, and on a GPU build where none is visible)."""
    return _visible_gpus()


def gpu_properties(index: int = 0) -> GpuInfo:
    """Name, compute capability and memory of GPU ``index``; raises when it is not visible."""
    import paddle

    _need_visible_gpu(index, "GPU properties")
    props = paddle.device.cuda.get_device_properties(index)
    name = getattr(props, "name", None) or paddle.device.cuda.get_device_name(index)
    return GpuInfo(name=name.decode() if isinstance(name, bytes) else str(name), major=int(props.major),
                   minor=int(props.minor), total_memory=int(props.total_memory))


def gpu_capability(device_id: int | None = None) -> tuple:
    """(major, minor) compute capability of a GPU (the current one by default), e.g. (7, 0) for a V100."""
    if device_id is None:
        import paddle

        current = paddle.get_device()  # "gpu:1" in a worker on the second GPU; "cpu" before a device is set
        device_id = int(current.split(":")[1]) if current.startswith("gpu:") else 0
    props = gpu_properties(device_id)
    return props.major, props.minor


def gpu_memory_bytes(index: int = 0) -> int:
    """Total memory of GPU ``index`` in bytes."""
    return gpu_properties(index).total_memory


def gpu_precision(index: int = 0) -> dict:
    """Paddle's own answer to "fp16 / bf16 on GPU ``index``?": ``{"fp16": bool, "bf16": bool}``.

    Entries are "unknown (reason)" strings where Paddle has no such query (2.6
    lacks some) or no GPU is visible: Paddle's probes abort the process rather
    than raise when asked about an absent GPU, so they are asked only after
    Paddle counts one.
    """
    import paddle

    count = _visible_gpus()
    if index >= count:
        reason = f"unknown (no GPU {index} visible to this Paddle)"
        return {"fp16": reason, "bf16": reason}
    answers = {}
    for flag, query in (("fp16", "is_float16_supported"), ("bf16", "is_bfloat16_supported")):
        fn = getattr(getattr(paddle, "amp", None), query, None)
        try:
            answers[flag] = bool(fn(f"gpu:{index}")) if fn else "unknown (not in this Paddle)"
        except Exception as e:  # noqa: BLE001  (a failing probe is reported, not raised)
            answers[flag] = f"unknown ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
    return answers


def cuda_versions() -> dict:
    """``{"cuda": "11.8", "cudnn": "8.6.0"}`` of this Paddle build (None on a CPU build)."""
    import paddle

    def version(value):  # a function in 2.6, a callable string in 3.x; "False" on CPU builds
        if callable(value):
            value = value()
        value = str(value)
        return None if value in ("False", "", "None", "0") else value

    return {"cuda": version(getattr(paddle.version, "cuda", None)),
            "cudnn": version(getattr(paddle.version, "cudnn", None))}


def resolve_device(device: str = "auto") -> str:
    """``auto|cpu|gpu`` -> ``cpu`` or ``gpu``, with one clear error when a GPU is asked for and absent."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    has_gpu = gpu_count() > 0
    if device == "gpu" and not has_gpu:
        import paddle

        why = ("a GPU build of Paddle and no GPU is visible (driver, CUDA_VISIBLE_DEVICES?)" if cuda_build()
               else "a CPU build of Paddle")
        raise ValueError(f"--device gpu was requested but there is no usable GPU: paddle {paddle.__version__} is {why}; "
                         "use --device cpu, or run on a machine with a GPU and paddlepaddle-gpu")
    return "gpu" if has_gpu else "cpu"


def get_device(device: str = "auto", local_rank: int = 0) -> str:
    """Resolve ``auto|cpu|gpu`` and make it current: ``gpu:<local_rank>`` (one GPU per process) or ``cpu``."""
    import paddle

    kind = resolve_device(device)
    if kind == "gpu":
        _need_visible_gpu(local_rank, "using the GPU")  # Paddle would abort the process instead
    paddle.set_device(f"gpu:{local_rank}" if kind == "gpu" else "cpu")
    return kind


def memory_bytes() -> int:
    """Physical memory of this machine in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


@contextlib.contextmanager
def evaluating(model):
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def set_cpu_threads(threads: int) -> int:
    """Set the MKL threads of this process now (Paddle reads MKL_NUM_THREADS only at start-up).

    ``threads=0`` means all physical cores (the default of :func:`tune_cpu`), so a
    1-thread run followed by a default run in the same process gets every core back.
    Returns the number set.

    Small networks lose from a second thread: LeNet at 28x28 trains at about
    half the speed on two MKL threads as on one (measured 2026-11-25, our
    2-core EPYC), while AlexNet at 96x96 gains 1.3x (benchmarks/README.md).
    """
    from paddle.base import core  # paddle.base exists from Paddle 2.6 on

    threads = int(threads) or physical_cores()
    core.set_num_threads(threads)
    return threads


def synchronize(device: str) -> None:
    """Wait for queued GPU work so a timer reads real time (no-op on the CPU).

    Not run here (no GPU on our machine); works on Paddle 2.6 and 3.x.
    """
    if device != "gpu":
        return
    import paddle

    _need_visible_gpu(0, "synchronizing the GPU")
    sync = getattr(paddle.device, "synchronize", None) or paddle.device.cuda.synchronize
    sync()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and Paddle (CPU and GPU generators)."""
    import numpy as np
    import paddle

    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


def environment(device: str = "cpu") -> dict:
    """Where a measurement was made: device, CPU or GPU model, versions, tuning."""
    import platform

    import paddle

    env = {
        "device": device,
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),  # optional when reading: records before 2026-12 lack it
        "physical_cores": physical_cores(),
        "paddle": paddle.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_tuning": {k: os.environ.get(k) for k in ("MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                          "KMP_BLOCKTIME")},
        "tuning_applied_before_paddle": not TUNING.get("paddle_imported_first", True),
    }
    if device == "gpu":  # through the device queries above, so tests mock them there
        env["gpu_count"] = gpu_count()
        try:
            gpu = gpu_properties(0)
            env["gpu_name"] = gpu.name
            env["gpu_memory_gib"] = round(gpu.total_memory / 2**30, 1)
            env["gpu_capability"] = f"{gpu.major}.{gpu.minor}"
        except (AttributeError, RuntimeError, ValueError, IndexError):
            pass
        env.update(cuda_versions())
    return env
