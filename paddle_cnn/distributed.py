"""Data-parallel training through ``paddle.distributed``: processes, ranks, reductions, rank-0 I/O.

The one trainer runs unchanged in 1 or N processes; this module is the only
place that knows about more than one. ``paddle-cnn train MODEL --nproc N``
starts N workers with ``paddle.distributed.spawn`` (gloo on CPU builds, NCCL
on GPU builds, one GPU per process); each worker runs the same
:func:`paddle_cnn.trainer.run` and wraps the model in ``paddle.DataParallel``,
which averages the gradients after every backward pass.

Why spawn rather than ``paddle.distributed.launch``: spawn keeps the whole
run one process tree owned by our CLI, so a worker that raises or is killed
ends the run at once with one message and a non-zero exit code (the others are
terminated), with no log folders and no automatic restarts. Users who prefer
the launcher can still run ``python -m paddle.distributed.launch
--nproc_per_node N $(which paddle-cnn) train MODEL``: workers started either
way find their rank in the environment (:func:`context`).

Semantics (see README): ``batch_size`` is the global batch; every rank takes
its slice of the same (seed, epoch) permutation; losses and metrics are
reduced so every rank holds the same numbers; rank 0 alone writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

#: Environment variables the launcher and spawn set in every worker.
RANK_ENV, WORLD_ENV = "PADDLE_TRAINER_ID", "PADDLE_TRAINERS_NUM"


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank, the number of processes and the backend."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Context()
_CONTEXT: Context | None = None


def env_world() -> int:
    """The number of processes the launcher started (1 outside a launch)."""
    return int(os.environ.get(WORLD_ENV, "1") or 1)


def env_rank() -> int:
    """This process's rank as the launcher set it (0 outside a launch); readable before Paddle starts."""
    return int(os.environ.get(RANK_ENV, "0") or 0)


def context(device: str = "cpu") -> Context:
    """Initialise the process group once (when launched as one of N) and return this process's place."""
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    if env_world() <= 1:
        _CONTEXT = SINGLE
        return _CONTEXT
    import paddle.distributed as dist

    env = dist.ParallelEnv()
    backend = "nccl" if device == "gpu" else "gloo"
    dist.init_parallel_env()
    _CONTEXT = Context(rank=int(env.rank), world=int(env.world_size),
                       local_rank=int(getattr(env, "local_rank", env.rank)), backend=backend)
    return _CONTEXT


def current() -> Context:
    """The context set up by :func:`context` (single-process before that)."""
    return _CONTEXT or SINGLE


def wrap(model, ctx: Context, sync_bn: bool = False):
    """``paddle.DataParallel(model)`` in a multi-process run (the model itself otherwise).

    ``sync_bn`` converts BatchNorm layers to ``nn.SyncBatchNorm`` first. Paddle
    implements SyncBatchNorm for GPUs only, so on the CPU it is refused with a
    message (per-process batch statistics, the default, are what d2l-style
    multi-GPU training uses anyway).
    """
    if not ctx.active:
        return model
    import paddle
    from paddle import nn

    if sync_bn:
        if ctx.backend != "nccl":
            raise ValueError(SYNC_BN_ON_CPU)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return paddle.DataParallel(model)


def unwrap(model):
    """The model inside a ``paddle.DataParallel`` (its state dict has no wrapper prefix)."""
    return getattr(model, "_layers", model)


def all_reduce_sum(tensor):
    """Sum ``tensor`` over all processes, in place, and return it (no-op in one process)."""
    if current().active:
        import paddle.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (picklable Python objects; no-op in one process)."""
    if not current().active:
        return obj
    import paddle.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if current().active:
        import paddle.distributed as dist

        dist.barrier()


def reset() -> None:
    """Forget the context (tests)."""
    global _CONTEXT
    _CONTEXT = None


# --------------------------------------------------------------------------- starting workers
SYNC_BN_ON_CPU = ("--sync-bn needs GPUs: Paddle registers no CPU kernel for SyncBatchNorm; drop --sync-bn "
                  "(each process then normalises with its own batch statistics)")


def check_nproc(nproc, device: str, sync_bn: bool = False) -> int:
    """Validate ``--nproc`` (and ``--sync-bn``) for this machine before any worker starts; one clear error."""
    from . import runtime

    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"--nproc must be a whole number >= 1, got {nproc!r}")
    kind = runtime.resolve_device(device)
    if sync_bn and kind != "gpu":
        raise ValueError(SYNC_BN_ON_CPU)
    if kind == "gpu":
        gpus = runtime.gpu_count()
        if nproc > gpus:
            raise ValueError(f"--nproc {nproc} asks for one GPU per process but this machine has {gpus}; "
                             f"use --nproc {gpus} or fewer")
    else:
        import sys

        if sys.platform != "linux":
            raise ValueError("--nproc > 1 on the CPU needs Linux (Paddle's gloo backend); use --nproc 1")
    return nproc


def _worker(fn, args, kwargs):
    # The worker's first import of paddle_cnn tunes its CPU before Paddle loads (spawned interpreters are new).
    import sys

    import paddle_cnn  # noqa: F401

    code = fn(*args, **kwargs)
    if isinstance(code, int) and code:
        sys.exit(code)  # a failed command fails its process, so spawn stops the others
    return code


def spawn(fn, nproc: int, device: str, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in ``nproc`` worker processes and return rank 0's result.

    A worker that raises ends the run: the others are terminated and the first
    error comes back as one :class:`WorkerError` line (its traceback kept).
    """
    import warnings

    import paddle.distributed as dist

    backend = "nccl" if device == "gpu" else "gloo"
    os.environ.setdefault("GLOG_minloglevel", "2")  # the workers' C++ INFO lines (TCP store, ports) are noise here
    warnings.filterwarnings("ignore", message="Your model will be trained under CPUONLY mode")
    # A spawned interpreter unpickles Paddle's process wrapper, and so imports Paddle, before our function;
    # naming our own main module makes it import paddle_cnn (zlib, CPU tuning) first.
    import importlib
    import sys

    main = sys.modules["__main__"]
    sys.modules["__main__"] = importlib.import_module("paddle_cnn._spawn_main")
    try:
        ctx = dist.spawn(_worker, args=(fn, args, kwargs), nprocs=nproc, backend=backend, join=False)
    finally:
        sys.modules["__main__"] = main
    try:
        while not ctx.join():
            pass
    except Exception as e:  # join raises a plain Exception carrying the worker's traceback
        raise WorkerError(_last_line(str(e)), str(e)) from None
    results = [q.get() for q in ctx.return_queues if not q.empty()] if ctx is not None else []
    return results[0] if results else None


class WorkerError(RuntimeError):
    """A worker process failed; ``str()`` is one line, ``.detail`` the worker's traceback."""

    def __init__(self, line: str, detail: str):
        super().__init__(line)
        self.detail = detail


def _last_line(text: str) -> str:
    """The most telling line of a worker's failure: its exception line, or spawn's own summary."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "Exception" in ln or "terminated" in ln or "signal" in ln:
            return ln
    return lines[-1] if lines else "a worker process failed"
