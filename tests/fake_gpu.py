"""A mocked GPU machine for tests, at the one boundary the package asks: ``paddle_cnn.runtime``'s device queries.

No GPU exists where these tests run, and on Paddle's GPU build without a GPU
some of Paddle's own probes abort the whole test process. So tests never mock
Paddle: :func:`fake_gpus` replaces runtime's queries (count, properties,
capability, precision, CUDA versions), and :func:`forbid_cuda` replaces
Paddle's CUDA queries by a tripwire that fails the test (an exception that
``except Exception`` in the doctor cannot swallow) if any code goes around
the boundary.
"""
from types import SimpleNamespace

import paddle

from paddle_cnn import runtime

V100 = runtime.GpuInfo(name="Tesla V100-SXM2-16GB", major=7, minor=0, total_memory=16 * 2**30)
A100 = runtime.GpuInfo(name="NVIDIA A100-SXM4-40GB", major=8, minor=0, total_memory=40 * 2**30)


class RealCudaCall(BaseException):
    """A test reached one of Paddle's CUDA queries instead of runtime's (mocked) ones."""


def forbid_cuda(monkeypatch):
    """Make every CUDA query of Paddle's that the package could reach fail the test."""
    def tripwire(name):
        def call(*args, **kwargs):
            raise RealCudaCall(f"{name}{args} was called: go through paddle_cnn.runtime's device queries")
        return call

    cuda = paddle.device.cuda
    for name in ("device_count", "get_device_properties", "get_device_name", "get_device_capability"):
        monkeypatch.setattr(cuda, name, tripwire(f"paddle.device.cuda.{name}"))
    for name in ("is_float16_supported", "is_bfloat16_supported"):
        if hasattr(paddle.amp, name):
            monkeypatch.setattr(paddle.amp, name, tripwire(f"paddle.amp.{name}"))
    real_set_device = paddle.set_device

    def set_device(device):
        if str(device).startswith("gpu"):
            raise RealCudaCall(f"paddle.set_device({device!r}) was called in a test")
        return real_set_device(device)
    monkeypatch.setattr(paddle, "set_device", set_device)


def fake_gpus(monkeypatch, devices, cuda="11.8", cudnn="8.9.1", precision=None):
    """A CUDA build that sees ``devices`` (GpuInfo); ``precision`` is Paddle's fp16/bf16 answer per device
    (default: by compute capability). Returns a namespace whose ``devices`` list the test may change."""
    state = SimpleNamespace(devices=list(devices))

    def props(index=0):
        if index >= len(state.devices):
            raise RuntimeError(f"no GPU {index}")
        return state.devices[index]

    def said(index=0):
        if precision is not None:
            return dict(precision)
        gpu = props(index)
        return {"fp16": (gpu.major, gpu.minor) >= (5, 3), "bf16": gpu.major >= 8}

    forbid_cuda(monkeypatch)
    monkeypatch.setattr(runtime, "cuda_build", lambda: True)
    monkeypatch.setattr(runtime, "gpu_count", lambda: len(state.devices))
    monkeypatch.setattr(runtime, "gpu_properties", props)
    monkeypatch.setattr(runtime, "gpu_capability", lambda device_id=None: (props(device_id or 0).major,
                                                                           props(device_id or 0).minor))
    monkeypatch.setattr(runtime, "gpu_memory_bytes", lambda index=0: props(index).total_memory)
    monkeypatch.setattr(runtime, "gpu_precision", said)
    monkeypatch.setattr(runtime, "cuda_versions", lambda: {"cuda": cuda, "cudnn": cudnn})
    return state
