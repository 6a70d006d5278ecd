"""Training throughput of one model: d2l-style Paddle vs paddle_cnn vs PyTorch, in one run.

    python -m benchmarks.throughput --model alexnet --resize 96 --batch-size 128 --steps 30

Each contender runs in its own subprocess, started from the environment this
command was given minus the CPU-tuning variables (``MKL_DEBUG_CPU_TYPE``,
``OMP_NUM_THREADS``, ...), so no tuning leaks from one contender to another:

* ``d2l_paddle`` -- d2l's Paddle path as the book runs it: ``paddle.vision``'s
  FashionMNIST with ``Compose([Resize, ToTensor])`` per image, a
  ``paddle.io.DataLoader`` with 4 worker processes, the architecture as an
  ``nn.Sequential`` built here (never imported from paddle_cnn, whose import
  would tune the CPU), plain SGD, timed like ``d2l.train_ch6``.
* ``paddle_cnn`` -- ``import paddle_cnn`` (its CPU tuning), our registry's
  model and one epoch of ``Trainer.fit`` over ``steps * batch`` examples.
* ``torch`` -- the same architecture in PyTorch, fp32, a plain loop on
  in-memory tensors with the same on-device batch preparation as ours.
  Skipped, saying so, when torch cannot be imported.

Two figures per contender, in training examples per second:

* ``end_to_end`` -- wall time of the timed steps including whatever feeds
  them (for d2l: waiting for the DataLoader; its workers compete for the same
  cores). The ratios use this figure.
* ``d2l_timed`` -- what d2l's ``train_ch6`` prints: its Timer starts before
  the forward and stops after the optimizer step and the metric update, so
  fetching the batch is outside it. For paddle_cnn and torch the batch is
  prepared on the device inside the step, so both figures are the same timer.

Warm-up steps are excluded; the contenders are alternated round by round
(d2l, ours, torch, d2l, ours, torch, ...) and the median of the rounds is
reported. The ceiling workers time a large fp32 matmul and a large 3x3
convolution in each framework, so the achieved GFLOP/s of a training step can
be put against what this machine's kernels reach at all.

Results: ``<out>/<model>-<resize>-bs<batch>.json`` and a markdown table
beside it; the table is printed too. Numbers come only from this command.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

# Taken before anything in this process could tune it (nothing here imports paddle_cnn).
CLEAN_ENV = dict(os.environ)

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = ("d2l_paddle", "paddle_cnn", "torch")
# Variables that change how Paddle's/PyTorch's MKL and OpenMP run. They are removed
# from every contender's environment (each then uses its own defaults, or its own
# tuning); --env puts one back for one contender, and the JSON records what each saw.
TUNING_VARS = ("MKL_DEBUG_CPU_TYPE", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY", "KMP_AFFINITY", "KMP_BLOCKTIME",
               "KMP_HW_SUBSET", "FLAGS_use_mkldnn", "FLAGS_use_onednn", "FLAGS_paddle_num_threads",
               "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DATALOADER_CRASH = "DataLoader"  # in the error tail when a paddle.io.DataLoader worker process died
MEAN, STD = 0.2860, 0.3530  # as paddle_cnn.data: normalisation costs the same in every contender


# --------------------------------------------------------------------------- architectures as data
# The d2l and torch contenders build the model from these tables; the layer
# configurations are the ones of paddle_cnn's registry (the parent asserts that
# the trainable parameter counts agree with ours before it times anything).
def _out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def architecture(model: str, resize: int) -> List[tuple]:
    """The layers of ``model`` for ``resize`` x ``resize`` one-channel inputs, as tuples.

    ``("conv", in, out, kernel, stride, padding)``, ``("relu",)``, ``("sigmoid",)``,
    ``("maxpool"|"avgpool", kernel, stride, padding)``, ``("bn", channels)``,
    ``("flatten",)``, ``("linear", in, out)``, ``("dropout", p)``,
    ``("residual", in, out, use_1x1conv, stride)``, ``("gap",)`` (global average pool).
    """
    if model in ("lenet", "lenet_relu"):  # d2l 6.6 (LeNet: sigmoid + avg-pool; the ReLU/max-pool variant)
        act, pool = ("sigmoid", "avgpool") if model == "lenet" else ("relu", "maxpool")
        layers, side, channels = [], resize, 1
        for out, kernel, padding in ((6, 5, 2), (16, 5, 0)):
            layers += [("conv", channels, out, kernel, 1, padding), (act,), (pool, 2, 2, 0)]
            channels, side = out, _out(_out(side, kernel, 1, padding), 2, 2)
        layers.append(("flatten",))
        width = channels * side * side
        for hidden in (120, 84):
            layers += [("linear", width, hidden), (act,)]
            width = hidden
        return layers + [("linear", width, 10)]
    if model == "alexnet":  # d2l 7.1, for one input channel; the flatten width follows the input size
        layers, side, channels = [], resize, 1
        for out, kernel, stride, padding, pool in ((96, 11, 4, 1, True), (256, 5, 1, 2, True), (384, 3, 1, 1, False),
                                                   (384, 3, 1, 1, False), (256, 3, 1, 1, True)):
            layers += [("conv", channels, out, kernel, stride, padding), ("relu",)]
            channels, side = out, _out(side, kernel, stride, padding)
            if pool:
                layers.append(("maxpool", 3, 2, 0))
                side = _out(side, 3, 2)
        layers.append(("flatten",))
        width = channels * side * side  # 6400 at 224 (d2l's constant), 256 at 96
        for hidden in (4096, 4096):
            layers += [("linear", width, hidden), ("relu",), ("dropout", 0.5)]
            width = hidden
        return layers + [("linear", width, 10)]
    if model == "resnet18":  # d2l 7.6: 7x7 stem, four stages of two residuals, global average pool
        layers = [("conv", 1, 64, 7, 2, 3), ("bn", 64), ("relu",), ("maxpool", 3, 2, 1)]
        channels = 64
        for i, out in enumerate((64, 128, 256, 512)):
            first = i == 0
            layers.append(("residual", channels, out, not first, 1 if first else 2))
            layers.append(("residual", out, out, False, 1))
            channels = out
        return layers + [("gap",), ("flatten",), ("linear", channels, 10)]
    raise SystemExit(f"no d2l/torch re-implementation of {model!r} in benchmarks/throughput.py; "
                     "choose one of lenet, lenet_relu, alexnet, resnet18 (or run only --contenders paddle_cnn)")


def _build(arch: List[tuple], nn, F, base, suffix: str):
    """``nn.Sequential`` from :func:`architecture` in either framework: Paddle names its 2-D layers
    ``Conv2D``/``BatchNorm2D``/..., PyTorch ``Conv2d``/``BatchNorm2d``/...; ``suffix`` picks which."""
    conv2d, batchnorm2d = getattr(nn, "Conv" + suffix), getattr(nn, "BatchNorm" + suffix)
    maxpool2d, avgpool2d = getattr(nn, "MaxPool" + suffix), getattr(nn, "AvgPool" + suffix)
    adaptive_avgpool2d = getattr(nn, "AdaptiveAvgPool" + suffix)

    class Residual(base):  # d2l 7.6 (the same code in its Paddle and PyTorch editions)
        def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
            super().__init__()
            self.conv1 = conv2d(input_channels, num_channels, kernel_size=3, padding=1, stride=strides)
            self.conv2 = conv2d(num_channels, num_channels, kernel_size=3, padding=1)
            self.conv3 = conv2d(input_channels, num_channels, kernel_size=1, stride=strides) if use_1x1conv else None
            self.bn1 = batchnorm2d(num_channels)
            self.bn2 = batchnorm2d(num_channels)

        def forward(self, X):
            Y = F.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3 is not None:
                X = self.conv3(X)
            return F.relu(Y + X)

    make = {
        "conv": lambda i, o, k, s, p: conv2d(i, o, kernel_size=k, stride=s, padding=p),
        "relu": nn.ReLU, "sigmoid": nn.Sigmoid,
        "maxpool": lambda k, s, p: maxpool2d(kernel_size=k, stride=s, padding=p),
        "avgpool": lambda k, s, p: avgpool2d(kernel_size=k, stride=s, padding=p),
        "bn": batchnorm2d, "flatten": nn.Flatten, "linear": nn.Linear,
        "dropout": lambda p: nn.Dropout(p=p), "residual": Residual, "gap": lambda: adaptive_avgpool2d((1, 1)),
    }
    return nn.Sequential(*[make[kind](*args) for kind, *args in arch])


def build_paddle(arch: List[tuple]):
    """An ``nn.Sequential`` of Paddle layers from :func:`architecture` (d2l's Paddle code, as data)."""
    from paddle import nn
    import paddle.nn.functional as F

    return _build(arch, nn, F, nn.Layer, "2D")


def build_torch(arch: List[tuple]):
    """The same table as PyTorch layers (d2l's PyTorch code, as data)."""
    from torch import nn
    import torch.nn.functional as F

    return _build(arch, nn, F, nn.Module, "2d")


# --------------------------------------------------------------------------- helpers shared by the workers
def read_idx(path: Path):
    """uint8 array of an IDX gz file (header checked loosely: paddle_cnn.data validates fully)."""
    import numpy as np

    data = gzip.decompress(Path(path).read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------- worker: d2l-style Paddle
def work_d2l_paddle(cfg: dict) -> dict:
    import zlib  # noqa: F401  (before paddle: Paddle 2.6's bundled libz breaks gzip otherwise)

    import numpy as np
    import paddle
    from paddle import nn
    from paddle.vision import transforms as T

    place = _paddle_device(paddle, cfg["device"])
    paddle.seed(cfg["seed"])
    net = build_paddle(architecture(cfg["model"], cfg["resize"]))
    params = sum(int(np.prod(p.shape)) for p in net.parameters() if not p.stop_gradient)
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
            "versions": {"paddle": paddle.__version__}, "threads": None}


def _paddle_device(paddle, device: str):
    if device == "gpu":
        paddle.set_device("gpu:0")
        return paddle.CUDAPlace(0)
    paddle.set_device("cpu")
    return paddle.CPUPlace()


def _sync(device: str) -> None:
    """Wait for queued GPU work at a timer edge (no-op on the CPU, where Paddle runs eagerly)."""
    if device != "gpu":
        return
    import paddle

    sync = getattr(paddle.device, "synchronize", None) or paddle.device.cuda.synchronize
    sync()


# --------------------------------------------------------------------------- worker: paddle_cnn
def _paddle_cnn_config(cfg: dict, train_subset: int):
    """Our trainer's config for this measurement: the profile, with d2l's optimizer and no extras."""
    from paddle_cnn.trainer import config_for

    return config_for(cfg["model"], "auto", resize=cfg["resize"], batch_size=cfg["batch_size"], epochs=1,
                      lr=cfg["lr"], optimizer="sgd", momentum=0.0, weight_decay=0.0, schedule="constant",
                      warmup_epochs=0.0, label_smoothing=0.0, grad_clip=0.0, augment="none", init="xavier",
                      seed=cfg["seed"], device=cfg["device"], train_subset=train_subset,
                      test_subset=cfg["batch_size"], eval_batch_size=cfg["batch_size"], amp=cfg["amp"])


def work_paddle_cnn(cfg: dict) -> dict:
    import paddle_cnn  # noqa: F401  (first: tunes MKL/OpenMP before paddle loads)
    import paddle
    from paddle_cnn import runtime
    from paddle_cnn.data import FashionMNIST, load_fashion_mnist
    from paddle_cnn.trainer import Trainer, build_model

    bs = cfg["batch_size"]
    arrays = load_fashion_mnist(cfg["data_dir"], download_if_missing=False)
    tcfg = _paddle_cnn_config(cfg, cfg["steps"] * bs)
    model = build_model(tcfg)
    if cfg["warmup"]:
        wcfg = _paddle_cnn_config(cfg, cfg["warmup"] * bs)
        warm = FashionMNIST(resize=cfg["resize"], train_subset=wcfg.train_subset, test_subset=bs, arrays=arrays)
        Trainer(wcfg, progress=False, log=None).fit(model, warm)
    data = FashionMNIST(resize=cfg["resize"], train_subset=tcfg.train_subset, test_subset=bs, arrays=arrays)
    trainer = Trainer(tcfg, progress=False, log=None)
    cpu0 = _cpu_seconds()
    result = trainer.fit(model, data)
    epoch = result.history[0]
    speed = epoch["examples"] / epoch["train_time"]  # batch preparation is inside the trainer's timer
    return {"end_to_end": speed, "d2l_timed": speed, "wall_s": epoch["train_time"], "timed_s": epoch["train_time"],
            "cpu_s": _cpu_seconds() - cpu0,
            "params": sum(int(p.size) for p in model.parameters() if not p.stop_gradient),
            "train_loss": epoch["train_loss"], "precision": "fp32" if result.device == "cpu" or cfg["amp"] == "off"
            else "amp", "paddle_cnn_imported": True, "versions": {"paddle": paddle.__version__},
            "tuning": dict(runtime.TUNING), "threads": None}


# --------------------------------------------------------------------------- worker: torch
def work_torch(cfg: dict) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    device = "cuda" if cfg["device"] == "gpu" else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(cfg["seed"])
    net = build_torch(architecture(cfg["model"], cfg["resize"])).to(device)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    data = Path(cfg["data_dir"])
    images = torch.from_numpy(read_idx(data / FILES[0])[:, None].copy()).to(device)  # uint8 [N, 1, 28, 28]
    labels = torch.from_numpy(read_idx(data / FILES[1]).astype("int64")).to(device)
    order = np.random.RandomState(cfg["seed"]).permutation(len(labels))
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    bs, r = cfg["batch_size"], cfg["resize"]
    loss_sum = torch.zeros((), device=device)
    net.train()

    def step(i: int) -> None:
        start = (i * bs) % (len(order) - bs + 1)
        idx = torch.from_numpy(order[start:start + bs]).to(device)
        x = images[idx].float() * (1.0 / 255.0)  # the same on-device preparation as paddle_cnn.data
        if r != 28:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        x = (x - MEAN) * (1.0 / STD)
        optimizer.zero_grad()
        loss = loss_fn(net(x), labels[idx])
        loss.backward()
        optimizer.step()
        loss_sum.add_(loss.detach())

    for i in range(cfg["warmup"]):
        step(i)
    sync()
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    for i in range(cfg["warmup"], cfg["warmup"] + cfg["steps"]):
        step(i)
    sync()
    wall = time.perf_counter() - wall0
    speed = cfg["steps"] * bs / wall
    return {"end_to_end": speed, "d2l_timed": speed, "wall_s": wall, "timed_s": wall, "cpu_s": _cpu_seconds() - cpu0,
            "params": params, "train_loss": float(loss_sum) / (cfg["warmup"] + cfg["steps"]), "precision": "fp32",
            "paddle_cnn_imported": "paddle_cnn" in sys.modules,
            "versions": {"torch": torch.__version__}, "threads": torch.get_num_threads(),
            "mkldnn": torch.backends.mkldnn.is_available()}


# --------------------------------------------------------------------------- worker: model facts
def work_info(cfg: dict) -> dict:
    """Our model's trainable parameters and forward FLOPs, the profile's lr, the environment."""
    import paddle_cnn  # noqa: F401
    import numpy as np
    import paddle
    from paddle import nn
    from paddle_cnn import runtime
    from paddle_cnn.models import get_model
    from paddle_cnn.trainer import config_for

    model = get_model(cfg["model"], input_size=cfg["resize"])
    params = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    try:
        from paddle_cnn.summary import count_flops
    except ImportError:  # older tree: count Conv2D/Linear multiply-accumulates with our own hooks
        count_flops = None
    if count_flops is not None:
        flops = count_flops(model, [1, cfg["resize"], cfg["resize"]])
    else:
        macs = [0]

        def hook(layer, inputs, output):
            if isinstance(layer, nn.Conv2D):
                macs[0] += int(np.prod(output.shape)) * layer._in_channels // layer._groups * int(
                    np.prod(layer._kernel_size))
            else:
                macs[0] += int(np.prod(output.shape)) * layer.weight.shape[0]

        handles = [m.register_forward_post_hook(hook) for m in model.sublayers() if isinstance(m, (nn.Conv2D, nn.Linear))]
        model.eval()
        with paddle.no_grad():
            model(paddle.zeros([1, 1, cfg["resize"], cfg["resize"]]))
        for h in handles:
            h.remove()
        flops = 2 * macs[0]
    lr = config_for(cfg["model"], "course").lr
    return {"params": params, "forward_flops": flops, "lr": lr, "environment": runtime.environment(cfg["device"]),
            "tuning": dict(runtime.TUNING)}


# --------------------------------------------------------------------------- worker: ceiling
CEILING_SHAPES = {  # matmul side; conv (N, C_in, C_out, H=W), 3x3, padding 1
    "full": {"matmul": 4096, "conv": (32, 256, 256, 28)},
    "small": {"matmul": 512, "conv": (4, 32, 32, 14)},
}


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
           "info": work_info, "ceiling": work_ceiling}


def worker_main(name: str, config: str, result: str) -> None:
    cfg = json.loads(config)
    given = {k: os.environ[k] for k in TUNING_VARS if k in os.environ}
    out = WORKERS[name](cfg)
    out["env_given"] = given  # what this subprocess was started with
    out["env"] = {k: os.environ[k] for k in TUNING_VARS if k in os.environ}  # after paddle_cnn / Paddle loaded
    out["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    Path(result).write_text(json.dumps(out))


# --------------------------------------------------------------------------- parent
def find_data_dir(explicit: Optional[str]) -> Path:
    """The first folder with the four gz files: --data-dir, PADDLE_CNN_DATA, ./data, Paddle's cache, ../shared."""
    places = [("--data-dir", explicit), ("PADDLE_CNN_DATA", CLEAN_ENV.get("PADDLE_CNN_DATA")),
              ("working directory", "data/fashion-mnist"),
              ("paddle cache", str(Path.home() / ".cache" / "paddle" / "dataset" / "fashion-mnist")),
              ("course shared folder", str(REPO.parent / "shared" / "data" / "fashion-mnist"))]
    for kind, folder in places:
        if folder and all((Path(folder) / f).is_file() for f in FILES):
            return Path(folder).resolve()
        if kind == "--data-dir" and folder:
            raise SystemExit(f"--data-dir {folder} does not hold the four gzip IDX files ({', '.join(FILES)})")
    searched = "\n".join(f"  - {folder} ({kind})" for kind, folder in places if folder)
    raise SystemExit("Fashion-MNIST gzip files not found (the d2l contender reads them with paddle.vision). "
                     f"Searched:\n{searched}\nPass --data-dir DIR or set PADDLE_CNN_DATA=DIR; "
                     "`python -m paddle_cnn data check` downloads them.")


def contender_env(name: str, extra: Dict[str, Dict[str, str]]) -> Dict[str, str]:
    """A clean environment for one subprocess: no tuning variables, plus this contender's --env."""
    env = {k: v for k, v in CLEAN_ENV.items() if k not in TUNING_VARS}
    env.update(extra.get(name, {}))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_worker(name: str, cfg: dict, env: Dict[str, str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.throughput", "--worker", name, "--worker-config", json.dumps(cfg),
               "--worker-result", str(result)]
        try:
            proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0 or not result.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            return {"error": f"exit code {proc.returncode}:\n{tail}"}
        return json.loads(result.read_text())


def torch_available(env: Dict[str, str]) -> Optional[str]:
    """None when torch imports in a clean subprocess, else why not (one line)."""
    proc = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
    return f"torch cannot be imported ({last}); install it with `pip install torch` to add the PyTorch contender"


def physical_cores() -> int:
    cores, phys = set(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "physical id":
                    phys = value.strip()
                elif key.strip() == "core id":
                    cores.add((phys, value.strip()))
    except OSError:
        pass
    return len(cores) or (os.cpu_count() or 1)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_env(values: List[str]) -> Dict[str, Dict[str, str]]:
    out: Dict[str, Dict[str, str]] = {}
    for item in values:
        who, _, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not eq or who.split("+")[0] not in CONTENDERS:
            raise SystemExit(f"--env {item!r}: expected CONTENDER[+VARIANT]:KEY=VALUE with CONTENDER one of "
                             f"{', '.join(CONTENDERS)}")
        out.setdefault(who, {})[key] = value
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="alexnet")
    p.add_argument("--resize", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=30, help="timed training steps per contender and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    p.add_argument("--repeats", type=int, default=3, help="rounds; contenders alternate within each round")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help="comma-separated; NAME+VARIANT runs NAME again with that variant's --env settings")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--amp", choices=("off", "auto"), default="off",
                   help="paddle_cnn on a GPU: off = fp32 like the others; auto = the trainer's default AMP")
    p.add_argument("--num-workers", type=int, default=4, help="d2l's DataLoader workers (d2l uses 4)")
    p.add_argument("--ceiling", choices=("full", "small", "off"), default="full")
    p.add_argument("--ceiling-repeats", type=int, default=5)
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env", action="append", default=[], metavar="CONTENDER:KEY=VALUE",
                   help="extra environment variable for one contender (experiments; recorded in the JSON)")
    p.add_argument("--tag", default="", help="suffix of the result file names (experiments)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--worker-config", help=argparse.SUPPRESS)
    p.add_argument("--worker-result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.worker_config, args.worker_result)
        return 0

    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in contenders if c.split("+")[0] not in CONTENDERS]
    if unknown or not contenders:
        p.error(f"unknown contender(s) {unknown}; choose from {', '.join(CONTENDERS)}")
    for name in ("steps", "batch_size", "resize", "repeats"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if any(not c.startswith("paddle_cnn") for c in contenders):
        architecture(args.model, args.resize)  # fails early, saying which models have a re-implementation
    extra_env = parse_env(args.env)
    out_dir = Path(args.out).resolve()
    data_dir = find_data_dir(args.data_dir)
    log = lambda s: print(s, flush=True)  # noqa: E731

    skipped = {}
    if any(c.startswith("torch") for c in contenders) or args.ceiling != "off":
        reason = torch_available(contender_env("torch", extra_env))
        if reason:
            log(f"torch: skipped -- {reason}")
            skipped.update({c: reason for c in contenders if c.startswith("torch")} or {"torch": reason})
            contenders = [c for c in contenders if not c.startswith("torch")]

    base = {"model": args.model, "resize": args.resize, "batch_size": args.batch_size, "steps": args.steps,
            "warmup": args.warmup, "device": args.device, "seed": args.seed, "data_dir": str(data_dir),
            "num_workers": args.num_workers, "amp": args.amp}
    info = run_worker("info", base, contender_env("paddle_cnn", extra_env), args.timeout)
    if "error" in info:
        raise SystemExit(f"could not inspect {args.model} with paddle_cnn: {info['error']}")
    base["lr"] = info["lr"]
    gflops_per_example = 3 * info["forward_flops"] / 1e9
    log(f"{args.model} @ {args.resize}: {info['params']:,} trainable parameters, "
        f"{info['forward_flops'] / 1e9:.3f} GFLOPs forward, ~{gflops_per_example:.3f} GFLOPs per training example")

    ceiling: Dict[str, dict] = {}
    frameworks = [("paddle_default", "d2l_paddle"), ("paddle_cnn", "paddle_cnn")]
    if "torch" not in skipped:
        frameworks.append(("torch", "torch"))

    def measure_ceiling(when: str) -> None:
        """One ceiling measurement per framework; before and after the rounds, the best one is kept,
        because a busy neighbour can only slow a measurement down."""
        ccfg = {**base, "ceiling": args.ceiling, "ceiling_repeats": args.ceiling_repeats}
        for label, env_of in frameworks:
            framework = "torch" if label == "torch" else label
            res = run_worker("ceiling", {**ccfg, "framework": framework}, contender_env(env_of, extra_env),
                             args.timeout)
            if "error" in res:
                log(f"ceiling {label} ({when}): failed -- {res['error']}")
                ceiling.setdefault(label, res)
                continue
            log(f"ceiling {label:15s} ({when}) matmul {res['matmul_gflops']:7.1f} GFLOP/s, conv forward "
                f"{res['conv_fwd_gflops']:7.1f}, conv forward+backward {res['conv_train_gflops']:7.1f}")
            best = ceiling.get(label, {})
            runs_ = best.get("runs", []) + [res]
            ceiling[label] = {**res, **{k: max(r[k] for r in runs_) for k in
                                        ("matmul_gflops", "conv_fwd_gflops", "conv_train_gflops")}, "runs": runs_}

    if args.ceiling != "off":
        measure_ceiling("before")

    runs: Dict[str, List[dict]] = {c: [] for c in contenders}
    for r in range(args.repeats):
        for name in contenders:
            res = run_worker(name.split("+")[0], base, contender_env(name, extra_env), args.timeout)
            crashes = []
            # Paddle 3.3.1's DataLoader workers (fork, 4 of them) sometimes die with SIGSEGV while
            # starting; that is d2l's path as it is, so the round is run again and the crash recorded.
            while "error" in res and DATALOADER_CRASH in res["error"] and len(crashes) < 3:
                crashes.append(res["error"].splitlines()[-1])
                log(f"round {r + 1} {name}: a DataLoader worker crashed ({crashes[-1][:80]}...); running it again")
                res = run_worker(name.split("+")[0], base, contender_env(name, extra_env), args.timeout)
            res["dataloader_crashes"] = crashes
            res["round"] = r + 1
            runs[name].append(res)
            if "error" in res:
                log(f"round {r + 1} {name}: FAILED -- {res['error']}")
            else:
                log(f"round {r + 1} {name:11s} end-to-end {res['end_to_end']:8.1f} ex/s, "
                    f"d2l-timed {res['d2l_timed']:8.1f} ex/s  (load {res['loadavg_at_end'][0]:.2f})")

    if args.ceiling != "off":
        measure_ceiling("after")
    report = build_report(args, contenders, runs, info, ceiling, gflops_per_example, skipped, extra_env)
    name = f"{args.model}-{args.resize}-bs{args.batch_size}{'-' + args.tag if args.tag else ''}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (out_dir / f"{name}.md").write_text(table)
    log("\n" + table)
    log(f"wrote {out_dir / (name + '.json')} and {name}.md")
    failed = [c for c, rs in runs.items() if any("error" in r for r in rs)]
    for c in failed:  # params are checked here too, so a mismatch fails loudly
        log(f"{c}: at least one round failed (see its 'errors' in the JSON)")
    return 1 if failed else 0


def build_report(args, contenders, runs, info, ceiling, gflops_per_example, skipped, extra_env) -> dict:
    results, environment_env = {}, {}
    for name in contenders:
        ok = [r for r in runs[name] if "error" not in r]
        entry = {"end_to_end": median([r["end_to_end"] for r in ok]), "d2l_timed": median([r["d2l_timed"] for r in ok]),
                 "rounds_end_to_end": [r["end_to_end"] for r in ok], "rounds_d2l_timed": [r["d2l_timed"] for r in ok],
                 "errors": [r["error"] for r in runs[name] if "error" in r],
                 "dataloader_crashes_retried": [c for r in runs[name] for c in r.get("dataloader_crashes", [])]}
        if ok:
            first = ok[0]
            entry.update(params=first["params"], precision=first["precision"], versions=first["versions"],
                         threads=first.get("threads"), cpu_s_per_round=[r["cpu_s"] for r in ok],
                         loadavg_at_end=[r["loadavg_at_end"] for r in ok],
                         train_loss=[r["train_loss"] for r in ok])
            if name.startswith("d2l_paddle"):
                entry["num_workers"] = first["num_workers"]
                entry["paddle_cnn_imported"] = first["paddle_cnn_imported"]
            if first["params"] != info["params"]:
                entry["errors"].append(f"architecture mismatch: {first['params']:,} trainable parameters, "
                                       f"paddle_cnn's {args.model} has {info['params']:,}")
                runs[name].append({"error": entry["errors"][-1]})
            environment_env[name] = first["env"]
            entry["env_given"] = first["env_given"]
        results[name] = entry
    for name, reason in skipped.items():
        if name in contenders or name.startswith("torch"):
            results[name] = {"skipped": reason}
    ceil_ok = {k: v for k, v in ceiling.items() if "error" not in v}
    ceiling_gflops = max((v["conv_train_gflops"] for v in ceil_ok.values()), default=None)
    ours = results.get("paddle_cnn", {}).get("end_to_end")

    def ratio(other):
        theirs = results.get(other, {}).get("end_to_end")
        return ours / theirs if ours and theirs else None

    fraction = {name: (r["end_to_end"] * gflops_per_example / ceiling_gflops if ceiling_gflops and r.get("end_to_end")
                       else None) for name, r in results.items()}
    env_info = info["environment"]
    environment = {
        "device": args.device, "cpu_model": cpu_model(), "cores": physical_cores(), "logical_cpus": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {"paddle": env_info.get("paddle"),
                     "torch": next((r["versions"]["torch"] for r in results.values() if "torch" in r.get("versions", {})),
                                   None)},
        "env_per_contender": environment_env, "paddle_cnn_tuning": info.get("tuning"),
        "extra_env": extra_env, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if args.device == "gpu":
        environment["gpu_name"] = env_info.get("gpu_name")
    return {
        "model": args.model, "resize": args.resize, "batch_size": args.batch_size, "steps": args.steps,
        "warmup": args.warmup, "repeats": args.repeats, "lr": info["lr"], "params": info["params"],
        "environment": environment, "contenders": results,
        "ratios": {"vs_d2l": ratio("d2l_paddle"), "vs_torch": ratio("torch")},
        "gflops_per_example": gflops_per_example,
        "gflops_per_example_note": "3 x forward FLOPs of Conv2D and Linear layers (2 per multiply-accumulate; "
                                   "backward ~ 2 x forward); paddle_cnn.summary.count_flops",
        "ceiling_gflops": ceiling_gflops,
        "ceiling_note": "best framework's GFLOP/s of forward+backward of a 3x3 convolution (3 x forward FLOPs), "
                        "fp32: median of --ceiling-repeats timings, measured before and after the rounds, best kept",
        "ceiling": ceiling, "achieved_gflops": {n: (r["end_to_end"] * gflops_per_example if r.get("end_to_end") else None)
                                                for n, r in results.items()},
        "fraction_of_ceiling": fraction,
    }


def _fmt(x, spec=".1f", none="–"):
    return none if x is None else format(x, spec)


def markdown(rep: dict) -> str:
    env = rep["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [f"# Training throughput: {rep['model']}, {rep['resize']}x{rep['resize']}, batch {rep['batch_size']} "
             f"({env['device']})", "",
             f"Measured {env['date']} on {env['cpu_model']} ({env['cores']} cores), {versions}. "
             f"{rep['steps']} timed steps after {rep['warmup']} warm-up steps per run; {rep['repeats']} rounds with the "
             "contenders alternated; medians. Written by `python -m benchmarks.throughput`. The tuning column shows "
             "the variables as each contender ran with them, after its framework loaded (Paddle itself sets "
             "OMP_NUM_THREADS=1 when it is unset).", "",
             "| contender | end-to-end ex/s | d2l-timed ex/s | end-to-end per round | GFLOP/s | of conv ceiling "
             "| tuning env |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for name, r in rep["contenders"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped | | {r['skipped']} | | | |")
            continue
        rounds = ", ".join(f"{v:.1f}" for v in r["rounds_end_to_end"])
        tuning = " ".join(f"{k}={v}" for k, v in env["env_per_contender"].get(name, {}).items()) or "(none)"
        frac = rep["fraction_of_ceiling"].get(name)
        lines.append(f"| {name} | {_fmt(r['end_to_end'])} | {_fmt(r['d2l_timed'])} | {rounds} "
                     f"| {_fmt(rep['achieved_gflops'].get(name))} | {_fmt(frac and 100 * frac, '.0f')}% | {tuning} |")
    ratios = rep["ratios"]
    lines += ["", f"paddle_cnn vs d2l-style Paddle: **{_fmt(ratios['vs_d2l'], '.2f')}x**; "
                  f"vs PyTorch: **{_fmt(ratios['vs_torch'], '.2f')}x** (end-to-end examples/sec).", "",
              f"{rep['params']:,} trainable parameters; {rep['gflops_per_example']:.3f} GFLOPs per training example "
              "(3 x forward, Conv2D + Linear)."]
    if rep["ceiling"]:
        lines += ["", "Ceiling on this machine (GFLOP/s, fp32; median of repeats, best of the measurements "
                      "before and after the rounds):", "",
                  "| framework | matmul | conv 3x3 forward | conv 3x3 forward+backward |", "| --- | ---: | ---: | ---: |"]
        for label, c in rep["ceiling"].items():
            if "error" in c:
                lines.append(f"| {label} | failed | | |")
            else:
                lines.append(f"| {label} | {c['matmul_gflops']:.1f} | {c['conv_fwd_gflops']:.1f} "
                             f"| {c['conv_train_gflops']:.1f} |")
        shapes = next((c["shapes"] for c in rep["ceiling"].values() if "shapes" in c), None)
        if shapes:
            conv = shapes["conv"]
            lines += ["", f"matmul {'x'.join(map(str, shapes['matmul']))}; conv batch {conv['N']}, "
                          f"{conv['C_in']}->{conv['C_out']} channels, {conv['H']}x{conv['W']}. "
                          "paddle_default: Paddle without our tuning (as d2l runs it); paddle_cnn: after "
                          "`import paddle_cnn`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
