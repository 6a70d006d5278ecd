"""The worker processes of the throughput benchmark: one contender, one measurement, one JSON file.

    python -m benchmarks.contenders NAME --config JSON --result PATH

``benchmarks.throughput`` starts every worker in its own subprocess, with an
environment from which the CPU-tuning variables have been removed. A worker
times one contender (``d2l_paddle``, ``paddle_cnn``, ``torch``), or reports
the model's facts (``info``), the trainable parameters of the model one
contender will time (``params``, run once before any timing), or one
framework's GFLOP/s ceiling (``ceiling``).

``cfg["precision"]`` is ``fp32`` or ``bf16``: the ``torch+bf16`` contender
runs forward and loss under ``torch.autocast("cpu", dtype=torch.bfloat16)``
(fp32 weights, optimizer and gradients, as PyTorch's mixed precision does),
``paddle_cnn+bf16`` runs our trainer with ``amp="bf16"`` (its CPU bf16 step).
``cfg["compile"]`` (the ``torch+compile`` contenders) runs the torch model
through ``torch.compile`` (inductor): its first warm-up step compiles, and
that step's wall time is recorded as ``compile_s``, outside the timed steps.

This module imports neither ``paddle`` nor ``paddle_cnn`` at import time: the
d2l contender must run Paddle as d2l does, without our CPU tuning, and it
asserts that ``paddle_cnn`` never got imported.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks.reference_layers import architecture, build, trainable_parameters

# Variables that change how Paddle's/PyTorch's MKL and OpenMP run. The parent removes them
# from every contender's environment (each then uses its own defaults, or its own tuning);
# --env puts one back for one contender, and the JSON records what each saw.
TUNING_VARS = ("MKL_DEBUG_CPU_TYPE", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY", "KMP_AFFINITY", "KMP_BLOCKTIME",
               "KMP_HW_SUBSET", "FLAGS_use_mkldnn", "FLAGS_use_onednn", "FLAGS_paddle_num_threads",
               "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DATALOADER_CRASH = "DataLoader"  # in the error tail when a paddle.io.DataLoader worker process died
MEAN, STD = 0.2860, 0.3530  # as paddle_cnn.data: normalisation costs the same in every contender
CEILING_SHAPES = {  # matmul side; conv (N, C_in, C_out, H=W), 3x3, padding 1
    "full": {"matmul": 4096, "conv": (32, 256, 256, 28)},
    "small": {"matmul": 512, "conv": (4, 32, 32, 14)},
}


# --------------------------------------------------------------------------- helpers
def read_idx(path: Path):
    """uint8 array of an IDX gz file (header checked loosely: paddle_cnn.data validates fully)."""
    import numpy as np

    data = gzip.decompress(Path(path).read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _paddle_device(paddle, device: str):
    """Make ``device`` current for Paddle without paddle_cnn (the d2l contender may not import it)."""
    if device == "gpu":
        paddle.set_device("gpu:0")
        return paddle.CUDAPlace(0)
    paddle.set_device("cpu")
    return paddle.CPUPlace()


def _sync(device: str) -> None:
    """Wait for queued GPU work at a timer edge (no-op on the CPU, where Paddle runs eagerly).

    A copy of ``paddle_cnn.runtime.synchronize``, which the d2l contender cannot import.
    """
    if device != "gpu":
        return
    import paddle

    sync = getattr(paddle.device, "synchronize", None) or paddle.device.cuda.synchronize
    sync()


def _paddle_tf32(device: str):
    """Whether Paddle's fp32 GEMMs (cuBLAS) and convolutions (cuDNN) may use TF32; None off the GPU."""
    if device != "gpu":
        return None
    from paddle.base import core

    get = lambda name: bool(getattr(core, name)()) if hasattr(core, name) else None  # noqa: E731
    return {"matmul": get("get_cublas_switch"), "conv": get("get_cudnn_switch")}


# --------------------------------------------------------------------------- the models, built the same way
# for the untimed parameter check and for the timed run
def d2l_model(cfg: dict):
    """The d2l contender's ``nn.Sequential`` (Paddle; the device must be set already)."""
    import paddle

    paddle.seed(cfg["seed"])
    return build(architecture(cfg["model"], cfg["resize"]), "paddle")


def torch_model(cfg: dict, device: str = "cpu"):
    """The torch contender's ``nn.Sequential`` on ``device``."""
    import torch

    torch.manual_seed(cfg["seed"])
    return build(architecture(cfg["model"], cfg["resize"]), "torch").to(device)


def _paddle_cnn_config(cfg: dict, train_subset: int):
    """Our trainer's config for this measurement: the profile, with d2l's optimizer and no extras.

    The CPU convolution accelerator follows the trainer's default (``auto``);
    ``--env paddle_cnn+noaccel:PADDLE_CNN_BENCH_ACCEL=off`` times the same
    contender on Paddle's own convolution in the same rounds.
    """
    import os

    from paddle_cnn.config import config_for

    return config_for(cfg["model"], "auto", resize=cfg["resize"], batch_size=cfg["batch_size"], epochs=1,
                      lr=cfg["lr"], optimizer="sgd", momentum=0.0, weight_decay=0.0, schedule="constant",
                      warmup_epochs=0.0, label_smoothing=0.0, grad_clip=0.0, augment="none", init="xavier",
                      seed=cfg["seed"], device=cfg["device"], train_subset=train_subset,
                      test_subset=cfg["batch_size"], eval_batch_size=cfg["batch_size"], amp=_paddle_cnn_amp(cfg),
                      accel=os.environ.get("PADDLE_CNN_BENCH_ACCEL", "auto"))


def precision(cfg: dict) -> str:
    """The precision a contender is asked for: "fp32" (default) or "bf16" (the +bf16 contenders)."""
    value = cfg.get("precision", "fp32")
    if value not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {value!r}")
    return value


def compiled(cfg: dict) -> bool:
    """Whether the torch contender runs its model through ``torch.compile`` (the +compile contenders)."""
    value = cfg.get("compile", False)
    if not isinstance(value, bool):
        raise ValueError(f"compile must be true or false, got {value!r}")
    return value


def _paddle_cnn_amp(cfg: dict) -> str:
    """The trainer's --amp: bf16 for paddle_cnn+bf16, else the command's --amp (off: fp32 like the others)."""
    return "bf16" if precision(cfg) == "bf16" else cfg["amp"]


def paddle_cnn_model(cfg: dict):
    """The model paddle_cnn's contender trains: the registry's, through ``paddle_cnn.build_model``."""
    from paddle_cnn.models.factory import build_model

    return build_model(_paddle_cnn_config(cfg, cfg["steps"] * cfg["batch_size"]))


# --------------------------------------------------------------------------- worker: d2l-style Paddle
def work_d2l_paddle(cfg: dict) -> dict:
    import zlib  # noqa: F401  (before paddle: Paddle 2.6's bundled libz breaks gzip otherwise)

    import paddle
    from paddle import nn
    from paddle.vision import transforms as T

    place = _paddle_device(paddle, cfg["device"])
    net = d2l_model(cfg)
    params = trainable_parameters(net, "paddle")
    data = Path(cfg["data_dir"])
    # d2l.load_data_fashion_mnist: Resize only when a size is asked for, then ToTensor, per image (PIL).
    trans = [T.ToTensor()]
    if cfg["resize"] != 28:
        trans.insert(0, T.Resize(cfg["resize"]))
    train = paddle.vision.datasets.FashionMNIST(
        image_path=str(data / FILES[0]), label_path=str(data / FILES[1]), mode="train",
        transform=T.Compose(trans), download=False)
    # d2l.get_dataloader_workers() returns 4.
    loader = paddle.io.DataLoader(train, batch_size=cfg["batch_size"], shuffle=True, return_list=True,
                                  num_workers=cfg["num_workers"])

    def batches():
        while True:
            yield from loader

    def accuracy(y_hat, y):  # d2l.accuracy, Paddle version
        if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
            y_hat = y_hat.argmax(axis=1)
        if len(y_hat.shape) < len(y.shape):
            cmp = y_hat.astype(y.dtype) == y.squeeze()
        else:
            cmp = y_hat.astype(y.dtype) == y
        return float(cmp.astype(y.dtype).sum())

    optimizer = paddle.optimizer.SGD(learning_rate=cfg["lr"], parameters=net.parameters())
    loss = nn.CrossEntropyLoss()
    metric = [0.0, 0.0, 0.0]  # d2l.Accumulator(3): loss sum, correct, examples
    net.train()

    def step(X, y) -> float:
        """One d2l train_ch6 iteration; returns what d2l's Timer measures for it."""
        _sync(cfg["device"])
        start = time.perf_counter()  # timer.start()
        optimizer.clear_grad()
        X, y = paddle.to_tensor(X, place=place), paddle.to_tensor(y, place=place)
        y_hat = net(X)
        l = loss(y_hat, y)
        l.backward()
        optimizer.step()
        with paddle.no_grad():
            n = X.shape[0]
            metric[0] += float(l) * n
            metric[1] += accuracy(y_hat, y)
            metric[2] += n
        _sync(cfg["device"])
        return time.perf_counter() - start  # timer.stop()

    it = batches()
    for _ in range(cfg["warmup"]):
        step(*next(it))
    _sync(cfg["device"])
    cpu0, wall0, timed = _cpu_seconds(), time.perf_counter(), 0.0
    for _ in range(cfg["steps"]):
        X, y = next(it)
        timed += step(X, y)
    _sync(cfg["device"])
    wall = time.perf_counter() - wall0
    examples = cfg["steps"] * cfg["batch_size"]
    del it  # stop the DataLoader's workers before the report
    assert "paddle_cnn" not in sys.modules, "the d2l contender must not import paddle_cnn"
    return {"end_to_end": examples / wall, "d2l_timed": examples / timed, "wall_s": wall, "timed_s": timed,
            "cpu_s": _cpu_seconds() - cpu0, "params": params, "train_loss": metric[0] / max(1, metric[2]),
            "precision": "fp32", "num_workers": cfg["num_workers"], "paddle_cnn_imported": False,
            "versions": {"paddle": paddle.__version__}, "threads": None, "tf32": _paddle_tf32(cfg["device"])}


# --------------------------------------------------------------------------- worker: paddle_cnn
def work_paddle_cnn(cfg: dict) -> dict:
    import paddle_cnn  # noqa: F401  (first: tunes MKL/OpenMP before paddle loads)
    from paddle_cnn import runtime

    # The device first: the model and the warm-up data are allocated on the current device, and
    # a GPU build makes GPU 0 current by default, so `--device cpu` would otherwise time GPU 0.
    device = runtime.get_device(cfg["device"])
    import paddle
    from paddle_cnn.data import FashionMNIST, load_fashion_mnist
    from paddle_cnn.trainer import TIMER_WARMUP_STEPS, Trainer

    bs = cfg["batch_size"]
    arrays = load_fashion_mnist(cfg["data_dir"], download_if_missing=False)
    model = paddle_cnn_model(cfg)
    if cfg["warmup"]:
        wcfg = _paddle_cnn_config(cfg, cfg["warmup"] * bs)
        warm = FashionMNIST(resize=cfg["resize"], train_subset=wcfg.train_subset, test_subset=bs, arrays=arrays)
        Trainer(wcfg, progress=False, log=None).fit(model, warm)
    # Every fit leaves its first TIMER_WARMUP_STEPS steps out of its timer: train that many more, so
    # that exactly `steps` steps are timed, and count only the timed examples.
    tcfg = _paddle_cnn_config(cfg, (cfg["steps"] + TIMER_WARMUP_STEPS) * bs)
    data = FashionMNIST(resize=cfg["resize"], train_subset=tcfg.train_subset, test_subset=bs, arrays=arrays)
    trainer = Trainer(tcfg, progress=False, log=None)
    cpu0 = _cpu_seconds()
    result = trainer.fit(model, data)
    epoch = result.history[0]
    speed = epoch["timed_examples"] / epoch["train_time"]  # batch preparation is inside the trainer's timer
    return {"end_to_end": speed, "d2l_timed": speed, "wall_s": epoch["train_time"], "timed_s": epoch["train_time"],
            "cpu_s": _cpu_seconds() - cpu0, "params": trainable_parameters(model, "paddle"),
            # What ran: fp32, or the trainer's choice under --amp auto (fp16/bf16 on a GPU).
            "precision": result.run_info["precision"], "train_loss": epoch["train_loss"],
            "paddle_cnn_imported": True, "versions": {"paddle": paddle.__version__},
            "tuning": dict(runtime.TUNING), "threads": None, "tf32": _paddle_tf32(device)}


# --------------------------------------------------------------------------- worker: torch
def work_torch(cfg: dict) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    device = "cuda" if cfg["device"] == "gpu" else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = torch_model(cfg, device)
    params = trainable_parameters(model, "torch")
    backend = cfg.get("compile_backend", "inductor") if compiled(cfg) else None
    # torch+compile: the same module through TorchDynamo + inductor (forward and, through AOTAutograd,
    # backward); the loss and SGD stay eager, as in the plain contender. Compilation happens lazily, in
    # the first step, which is therefore a warm-up step (the parent asks for at least one).
    if backend and cfg["warmup"] < 1:
        raise ValueError("a compiled torch contender needs at least one warm-up step (its first step compiles)")
    net = torch.compile(model, backend=backend) if backend else model
    data = Path(cfg["data_dir"])
    images = torch.from_numpy(read_idx(data / FILES[0])[:, None].copy()).to(device)  # uint8 [N, 1, 28, 28]
    labels = torch.from_numpy(read_idx(data / FILES[1]).astype("int64")).to(device)
    order = np.random.RandomState(cfg["seed"]).permutation(len(labels))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    bs, r = cfg["batch_size"], cfg["resize"]
    loss_sum = torch.zeros((), device=device)
    bf16 = precision(cfg) == "bf16"
    net.train()

    def step(i: int) -> None:
        start = (i * bs) % (len(order) - bs + 1)
        idx = torch.from_numpy(order[start:start + bs]).to(device)
        x = images[idx].float() * (1.0 / 255.0)  # the same on-device preparation as paddle_cnn.data
        if r != 28:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        x = (x - MEAN) * (1.0 / STD)
        optimizer.zero_grad()
        # torch+bf16: PyTorch's CPU mixed precision (convolutions and linear layers in bf16, the loss in fp32).
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), labels[idx])
        loss.backward()
        optimizer.step()
        loss_sum.add_(loss.detach())

    compile_s = None
    for i in range(cfg["warmup"]):
        first = time.perf_counter()
        step(i)
        if i == 0 and backend:
            sync()
            compile_s = time.perf_counter() - first  # tracing + code generation + the first step itself
    sync()
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    for i in range(cfg["warmup"], cfg["warmup"] + cfg["steps"]):
        step(i)
    sync()
    wall = time.perf_counter() - wall0
    speed = cfg["steps"] * bs / wall
    tf32 = ({"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "conv": bool(torch.backends.cudnn.allow_tf32)}
            if device == "cuda" else None)
    return {"end_to_end": speed, "d2l_timed": speed, "wall_s": wall, "timed_s": wall, "cpu_s": _cpu_seconds() - cpu0,
            "params": params, "train_loss": float(loss_sum) / (cfg["warmup"] + cfg["steps"]),
            "precision": "bf16" if bf16 else "fp32", "compile": backend, "compile_s": compile_s,
            "paddle_cnn_imported": "paddle_cnn" in sys.modules,
            "versions": {"torch": torch.__version__}, "threads": torch.get_num_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(), "tf32": tf32}


# --------------------------------------------------------------------------- worker: before any timing
def work_info(cfg: dict) -> dict:
    """Our registry model's trainable parameters and forward FLOPs, the course lr, the environment."""
    import paddle_cnn  # noqa: F401  (first: tunes MKL/OpenMP before paddle loads)
    from paddle_cnn import runtime

    runtime.get_device(cfg["device"])  # before the model exists, as in work_paddle_cnn
    from paddle_cnn.models import get_model
    from paddle_cnn.summary import count_flops
    from paddle_cnn.config import config_for

    model = get_model(cfg["model"], input_size=cfg["resize"])
    return {"params": trainable_parameters(model, "paddle"),
            "forward_flops": count_flops(model, [1, cfg["resize"], cfg["resize"]]),
            "lr": config_for(cfg["model"], "course").lr, "environment": runtime.environment(cfg["device"]),
            "tuning": dict(runtime.TUNING)}


def work_params(cfg: dict) -> dict:
    """Trainable parameters of the model contender ``cfg["contender"]`` times: built once, nothing timed.

    The parent compares these with :func:`work_info`'s count before the first timed round.
    """
    who = cfg["contender"]
    if who == "torch":
        return {"params": trainable_parameters(torch_model(cfg), "torch")}
    if who == "paddle_cnn":
        import paddle_cnn  # noqa: F401  (first: tunes MKL/OpenMP before paddle loads)
        from paddle_cnn import runtime

        runtime.get_device(cfg["device"])
        return {"params": trainable_parameters(paddle_cnn_model(cfg), "paddle")}
    if who == "d2l_paddle":
        import paddle

        _paddle_device(paddle, cfg["device"])
        return {"params": trainable_parameters(d2l_model(cfg), "paddle")}
    raise ValueError(f"no contender {who!r}")


# --------------------------------------------------------------------------- worker: ceiling
def _timeit(fn, repeats: int) -> float:
    fn()  # warm-up: kernel selection, allocation
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def work_ceiling(cfg: dict) -> dict:
    """Median GFLOP/s of a square fp32 matmul and of a 3x3 convolution (forward; forward + backward)."""
    shapes = CEILING_SHAPES[cfg["ceiling"]]
    n = shapes["matmul"]
    N, ci, co, hw = shapes["conv"]
    conv_flops = 2 * N * co * hw * hw * ci * 9
    reps, gpu = cfg["ceiling_repeats"], cfg["device"] == "gpu"
    if cfg["framework"] == "torch":
        import torch

        dev = "cuda" if gpu else "cpu"
        sync = torch.cuda.synchronize if gpu else (lambda: None)
        a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
        conv = torch.nn.Conv2d(ci, co, 3, padding=1).to(dev)
        x = torch.randn(N, ci, hw, hw, device=dev, requires_grad=True)

        def forward():
            with torch.no_grad():
                conv(x)

        def train():
            y = conv(x)
            y.backward(torch.ones_like(y))

        def mm():
            torch.matmul(a, b)

        version = {"torch": torch.__version__}
    else:
        if cfg["framework"] == "paddle_cnn":
            import paddle_cnn  # noqa: F401
        import paddle

        _paddle_device(paddle, cfg["device"])
        sync = (lambda: _sync("gpu")) if gpu else (lambda: None)
        a, b = paddle.randn([n, n]), paddle.randn([n, n])
        conv = paddle.nn.Conv2D(ci, co, 3, padding=1)
        x = paddle.randn([N, ci, hw, hw])
        x.stop_gradient = False

        def forward():
            with paddle.no_grad():
                conv(x)

        def train():
            y = conv(x)
            y.backward(paddle.ones_like(y))

        def mm():
            paddle.matmul(a, b)

        version = {"paddle": paddle.__version__}

    def timed(fn):
        def run():
            fn()
            sync()
        return _timeit(run, reps)

    return {"matmul_gflops": 2 * n ** 3 / timed(mm) / 1e9, "conv_fwd_gflops": conv_flops / timed(forward) / 1e9,
            "conv_train_gflops": 3 * conv_flops / timed(train) / 1e9, "versions": version,
            "shapes": {"matmul": [n, n, n], "conv": {"N": N, "C_in": ci, "C_out": co, "H": hw, "W": hw, "kernel": 3}}}


WORKERS = {"d2l_paddle": work_d2l_paddle, "paddle_cnn": work_paddle_cnn, "torch": work_torch,
           "info": work_info, "params": work_params, "ceiling": work_ceiling}


def worker_main(name: str, config: str, result: str) -> None:
    """Run worker ``name`` on the JSON ``config`` and write what it returns, with its environment, to ``result``."""
    cfg = json.loads(config)
    given = {k: os.environ[k] for k in TUNING_VARS if k in os.environ}
    out = WORKERS[name](cfg)
    out["env_given"] = given  # what this subprocess was started with
    out["env"] = {k: os.environ[k] for k in TUNING_VARS if k in os.environ}  # after paddle_cnn / Paddle loaded
    out["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    Path(result).write_text(json.dumps(out))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.contenders",
                                description="One worker of benchmarks.throughput (started by it, not by hand).")
    p.add_argument("name", choices=sorted(WORKERS))
    p.add_argument("--config", required=True, help="the worker's settings as JSON")
    p.add_argument("--result", required=True, help="file the worker writes its JSON result to")
    args = p.parse_args(argv)
    worker_main(args.name, args.config, args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
