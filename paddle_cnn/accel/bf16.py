"""Whether this CPU runs bfloat16 arithmetic natively (issue #24).

oneDNN's bf16 kernels are fast only where the CPU has AVX512-BF16 (Zen 4,
Cooper Lake and later Xeons) or AMX-BF16 (Sapphire Rapids); elsewhere they
emulate bf16 in fp32 and run slower than fp32 itself, so bf16 training is
offered only on those CPUs.
"""
from __future__ import annotations

import platform
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names


def cpu_flags(cpuinfo: str) -> set:
    """The feature flags of the first processor in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def bf16_supported(cpuinfo_path: str = "/proc/cpuinfo") -> tuple:
    """(True, "avx512_bf16") if the CPU has a native bf16 instruction set, else (False, why not).

    Reads the CPU flags from ``/proc/cpuinfo`` (Linux); the reason names the
    missing feature, so a caller can print it as it is.
    """
    path = Path(cpuinfo_path)
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False, (f"cannot read {path} to look for the CPU's bf16 support ({' or '.join(BF16_FLAGS)}); "
                       f"bf16 training on the CPU needs Linux ({platform.system()} here)")
    flags = cpu_flags(text)
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return True, "+".join(found)
    model = next((line.partition(":")[2].strip() for line in text.splitlines()
                  if line.startswith("model name")), "this CPU")
    return False, f"{model} lacks {' and '.join(BF16_FLAGS)} (native bf16 arithmetic); use fp32 on it"
