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

import os
import random
import sys
import warnings
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


def physical_cores() -> int:
    """Physical cores usable by this process (hyper-threads counted once)."""
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
    return max(1, min(usable, len(cores) or usable))


def is_amd_cpu() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "AuthenticAMD" in f.read(4096)
    except OSError:
        return "AMD" in cpu_model()


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
    # Paddle warns about a C++ extension cache on every import; irrelevant to this course.
    warnings.filterwarnings("ignore", message="No ccache found")
    # Paddle 3.x announces on every BatchNorm forward that it tracks global statistics: informational.
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")
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


def get_device(device: str = "auto") -> str:
    """Resolve ``auto|cpu|gpu`` to a Paddle place string and make it current."""
    import paddle

    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise ValueError(
            "--device gpu was requested but this Paddle build has no usable GPU "
            f"(paddle {paddle.__version__}, compiled with CUDA: {paddle.is_compiled_with_cuda()}); "
            "use --device cpu, or install paddlepaddle-gpu on a machine with a GPU"
        )
    place = "gpu:0" if device == "gpu" or (device == "auto" and has_gpu) else "cpu"
    paddle.set_device(place)
    return "gpu" if place.startswith("gpu") else "cpu"


def set_cpu_threads(threads: int) -> None:
    """Set the MKL threads of this process now (Paddle reads MKL_NUM_THREADS only at start-up).

    Small networks lose from a second thread: LeNet at 28x28 trains at about
    half the speed on two MKL threads as on one (measured 2026-11-25, our
    2-core EPYC), while AlexNet at 96x96 gains 1.3x (benchmarks/README.md).
    """
    from paddle.base import core  # paddle.base exists from Paddle 2.6 on

    core.set_num_threads(int(threads))


def synchronize(device: str) -> None:
    """Wait for queued GPU work so a timer reads real time (no-op on the CPU).

    Not run here (no GPU on our machine); works on Paddle 2.6 and 3.x.
    """
    if device != "gpu":
        return
    import paddle

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
        "physical_cores": physical_cores(),
        "paddle": paddle.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_tuning": {k: os.environ.get(k) for k in ("MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                          "KMP_BLOCKTIME")},
        "tuning_applied_before_paddle": not TUNING.get("paddle_imported_first", True),
    }
    if device == "gpu":
        env["gpu_name"] = paddle.device.cuda.get_device_name()
    return env
