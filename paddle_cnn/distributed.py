"""Data-parallel training through ``paddle.distributed``: processes, ranks, reductions, rank-0 I/O.

The one trainer runs unchanged in 1 or N processes; this module is what the
loop knows about more than one: each worker runs the same
:func:`paddle_cnn.trainer.run` and wraps the model in ``paddle.DataParallel``,
which averages the gradients after every backward pass. Starting the N
processes and stopping them as one is :mod:`paddle_cnn.launcher`'s job; workers
started by it or by ``paddle.distributed.launch`` find their rank in the
environment (:func:`context`).

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
    _quiet_flags_banner()
    dist.init_parallel_env()
    _CONTEXT = Context(rank=int(env.rank), world=int(env.world_size), local_rank=local_rank(int(env.rank)),
                       backend=backend)
    return _CONTEXT


def local_rank(rank: int) -> int:
    """This process's GPU on its own machine (``gpu:<local_rank>``): the one spawn or paddle.distributed.launch
    selected for it (``FLAGS_selected_gpus``, counted among the visible GPUs), else the launcher's
    ``PADDLE_LOCAL_RANK``, else ``rank`` (one machine). The rank alone is wrong on the second machine of a
    multi-node run: there rank 2 of 2 x 2 processes uses GPU 0, not GPU 2."""
    for key in ("FLAGS_selected_gpus", "PADDLE_LOCAL_RANK"):
        first = os.environ.get(key, "").split(",")[0].strip()
        if first.isdigit():
            return int(first)
    return rank


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


#: Why --sync-bn is refused without GPUs (checked before workers start and again when wrapping the model).
SYNC_BN_ON_CPU = ("--sync-bn needs GPUs: Paddle registers no CPU kernel for SyncBatchNorm; drop --sync-bn "
                  "(each process then normalises with its own batch statistics)")


#: Flags Paddle itself changes from their defaults, which ``init_parallel_env`` announces in a banner
#: ("Modified FLAGS detected") in every process; a flag a user set still gets the banner.
PADDLE_SET_FLAGS = frozenset({"FLAGS_enable_pir_in_executor"})


def _quiet_flags_banner() -> None:
    """Leave Paddle's own flag changes out of ``init_parallel_env``'s banner (Paddle 2.6 and 3.x)."""
    try:
        from paddle.distributed import parallel
    except ImportError:
        return
    show = getattr(parallel, "_print_modified_flags", None)
    if show is None or getattr(show, "_paddle_cnn", False):
        return

    def print_user_flags(flags):
        return show([f for f in flags if getattr(f, "name", None) not in PADDLE_SET_FLAGS])

    print_user_flags._paddle_cnn = True
    parallel._print_modified_flags = print_user_flags
