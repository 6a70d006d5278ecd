"""The candidate's side of a check: build it, run it, and report what it produced.

This is the only module that calls the student's code. It runs in the
sandbox's child process (see ``sandbox.py``), and hands back per argument set
one report: a JSON-able header (what was built, which layer took which of the
package's weights, the shapes and types it returned, the line of any error)
and NumPy arrays (outputs, gradients, moving statistics, the input and output
of each layer). It decides nothing: the judge (``engine.py``) compares the
reports with the reference it runs itself, in the caller's process.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import linecache
import os
from collections import OrderedDict

import numpy as np
import paddle
from paddle import nn

from .catalogue import Rand, case_inputs

# Layers whose presence, order and settings the structure diagnosis compares.
WEIGHTED = {"Conv2D": "conv", "Conv2DTranspose": "convT", "BatchNorm2D": "bn", "BatchNorm1D": "bn",
            "BatchNorm": "bn", "Linear": "linear"}
POOLS = {"MaxPool2D": "maxpool", "AvgPool2D": "avgpool", "AdaptiveAvgPool2D": "avgpool",
         "AdaptiveMaxPool2D": "maxpool"}
ARRAY_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
PRINTED_LIMIT = 4000        # characters of the candidate's own print() output passed back
PERTURB_SEED, GRAD_SEED = 1_000_003, 2_000_003   # offsets of the generators both sides draw from


class NotAttempted(Exception):
    """The candidate raised NotImplementedError: the scaffold is still empty."""


class CandidateError(Exception):
    """The candidate raised (or ended the process); the message is one line for the student."""


# --------------------------------------------------------------------------- helpers shared with the judge
def cpu_generator():
    """Paddle's CPU random generator (``paddle.base`` from 2.6 on, ``paddle.fluid`` before)."""
    try:
        from paddle.base import core
    except ImportError:   # pragma: no cover - Paddle < 2.6
        from paddle.fluid import core
    return core.default_cpu_generator()


@contextlib.contextmanager
def on_cpu():
    """Build and run on the CPU (both sides of a check do), leaving the caller's device and CPU RNG as they were."""
    device = paddle.get_device()
    generator = cpu_generator()
    rng_state = generator.get_state()
    if not device.startswith("cpu"):
        paddle.set_device("cpu")
    try:
        yield
    finally:
        generator.set_state(rng_state)
        if not device.startswith("cpu"):
            paddle.set_device(device)


def seed_cpu(seed: int) -> None:
    """Seed the CPU generator only (a forked child of a GPU process must not touch CUDA)."""
    cpu_generator().manual_seed(int(seed))


def materialize(raw: list, seed: int):
    """(values, grad flags): Rand entries drawn once from ``seed``; the same numbers go to both versions."""
    rng = np.random.RandomState(seed)
    values, grads = [], []
    for item in raw:
        if isinstance(item, Rand):
            values.append(item.draw(rng))
            grads.append(item.grad)
        else:
            values.append(item)
            grads.append(False)
    return values, grads


def as_inputs(values, grads, raw) -> list:
    """Fresh copies for one version: tensors for drawn inputs (with gradients where asked), the rest copied."""
    import copy
    out = []
    for value, grad, item in zip(values, grads, raw):
        if isinstance(item, Rand):
            t = paddle.to_tensor(value)
            t.stop_gradient = not grad
            out.append(t)
        else:
            out.append(copy.deepcopy(value))
    return out


def squeezed(shape) -> tuple:
    return tuple(int(s) for s in shape if int(s) != 1)


def trainable(layer: nn.Layer) -> list:
    return [(n, p) for n, p in layer.named_parameters() if not p.stop_gradient]


def state(layer: nn.Layer) -> list:
    """Moving statistics: Paddle's BatchNorm keeps them as non-trainable parameters, a from-scratch one as buffers."""
    return ([(n, p) for n, p in layer.named_parameters() if p.stop_gradient]
            + [(n, b) for n, b in layer.named_buffers() if b is not None])


def perturb_constants(layer: nn.Layer, seed: int) -> None:
    """Give constant parameters (biases at 0, BN's gamma at 1) random values, so that a forgotten one shows."""
    rng = np.random.RandomState(seed + PERTURB_SEED)
    for _, p in trainable(layer):
        if int(np.prod(p.shape)) and float(p.max()) == float(p.min()):   # on the device: no 25 M-value copies
            value = p.numpy()
            p.set_value((value + rng.standard_normal(value.shape) * 0.5).astype(value.dtype))


def weights_digest(layer: nn.Layer) -> str:
    """SHA-256 of the trainable weights in order (names, shapes, every k-th value, sums): both sides must agree.

    Every value of small layers, ~4096 of large ones plus their sum: enough to tell a patched or
    differently seeded reference, without hashing AlexNet's 100 MB twice per argument set.
    """
    h = hashlib.sha256()
    for name, p in trainable(layer):
        flat = p.reshape([-1])
        step = max(1, int(flat.shape[0]) // 4096)
        h.update(f"{name}{list(p.shape)}{float(p.sum()):.6e}".encode())
        h.update(np.ascontiguousarray(flat[::step].numpy()).tobytes())
    return h.hexdigest()


def grad_weights(shapes: list, seed: int) -> list:
    """Random weights of the outputs whose weighted sum is differentiated (a plain sum gives BN zero gradients)."""
    rng = np.random.RandomState(seed + GRAD_SEED)
    return [rng.standard_normal(tuple(int(s) for s in shape)).astype(np.float32) for shape in shapes]


def line_up(ref: list, mine: list):
    """Pair the student's tensors with the package's: whole layers by their shapes in order, then tensor by tensor.

    Returns (pairs [(ref_name, ref_t, my_name, my_t)], unmatched package tensors, unmatched student tensors).
    """
    def groups(items):
        out = OrderedDict()
        for name, t in items:
            out.setdefault(name.rpartition(".")[0], []).append((name, t))
        return list(out.values())

    def sig(group):
        return tuple(squeezed(t.shape) for _, t in group)

    ref_groups, used, pairs, left_mine = groups(ref), set(), [], []
    for group in groups(mine):
        match = next((i for i, g in enumerate(ref_groups) if i not in used and sig(g) == sig(group)), None)
        if match is None:
            left_mine += group
            continue
        used.add(match)
        pairs += [(rn, rt, mn, mt) for (rn, rt), (mn, mt) in zip(ref_groups[match], group)]
    left_ref = [item for i, g in enumerate(ref_groups) if i not in used for item in g]
    for name, t in list(left_mine):
        match = next((item for item in left_ref if squeezed(item[1].shape) == squeezed(t.shape)), None)
        if match is not None:
            pairs.append((match[0], match[1], name, t))
            left_ref.remove(match)
            left_mine.remove((name, t))
    return pairs, left_ref, left_mine


def leaves(layer: nn.Layer) -> list:
    """(name, sublayer) of every layer without sublayers, in definition order."""
    return [(n, s) for n, s in layer.named_sublayers() if not list(s.children())]


def layer_kind(layer) -> str:
    """'conv', 'bn', 'maxpool', ... from the nearest Paddle class in the layer's MRO, else ''."""
    for cls in type(layer).__mro__:
        if cls.__module__.startswith("paddle.nn"):
            return WEIGHTED.get(cls.__name__) or POOLS.get(cls.__name__, "")
    return ""


def layer_config(layer) -> dict:
    """What the structure diagnosis compares: channels and kernel from the weights, stride and padding."""
    kind = layer_kind(layer)
    cfg = {"kind": kind}
    w = getattr(layer, "weight", None)
    if kind in ("conv", "convT") and w is not None:
        shape = [int(s) for s in w.shape]
        out_c, in_c = (shape[0], shape[1]) if kind == "conv" else (shape[1], shape[0])
        pad = getattr(layer, "_padding", 0)
        k = shape[2:]
        if isinstance(pad, str):
            pad = [(s - 1) // 2 for s in k] if pad.lower() == "same" else [0, 0]
        pad = [int(p) for p in (pad if isinstance(pad, (list, tuple)) else [pad, pad])]
        if len(pad) == 4:
            pad = pad[::2]
        cfg.update(out=out_c, inp=in_c, kernel=k, stride=[int(s) for s in getattr(layer, "_stride", [1, 1])],
                   padding=pad[:2], bias=getattr(layer, "bias", None) is not None)
    elif kind == "bn" and w is not None:
        cfg.update(features=int(np.prod(w.shape)))
    elif kind == "linear" and w is not None:
        cfg.update(inp=int(w.shape[0]), out=int(w.shape[1]))
    elif kind in ("maxpool", "avgpool"):
        k = getattr(layer, "ksize", getattr(layer, "kernel_size", None))
        cfg.update(kernel=k if isinstance(k, (int, list, tuple)) else None)
    return cfg


def package_part(layer: nn.Layer) -> list:
    """[sublayer name ('' for the layer itself), class] of the first part built from this package's classes, or []."""
    for name, sub in [("", layer)] + list(layer.named_sublayers()):
        for cls in type(sub).__mro__:
            if cls.__module__.split(".")[0] == "paddle_cnn":
                return [name, f"{cls.__module__}.{cls.__qualname__}"]
    return []


# --------------------------------------------------------------------------- one-line errors
_HIDDEN = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (paddle, np)) + (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.dirname(os.path.abspath(os.__file__)) + os.sep)


def where(exc: BaseException) -> str:
    """'（你的代码第 5 行，forward：`x = self.conv(x)`）' of the last frame outside Paddle, NumPy, the stdlib and us."""
    tb, last = exc.__traceback__, None
    while tb is not None:
        if not os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_HIDDEN):
            last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    code = last.tb_frame.f_code
    text = linecache.getline(code.co_filename, last.tb_lineno).strip()
    return f"（你的代码第 {last.tb_lineno} 行，{code.co_name}" + (f"：`{text}`）" if text else "）")


def error_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not set(line.strip()) <= set("-=")]
    # Paddle's messages start with a C++ stack or a banner; its own summary is the "(Kind) ..." line.
    summary = next((line for line in lines if line.startswith("(") and ")" in line[:30]), lines[0] if lines else "")
    if len(summary) > 240:
        summary = summary[:237] + "..."
    return f"{type(exc).__name__}: {summary}" if summary else type(exc).__name__


def call(what: str, fn, *args, **kwargs):
    """Call the student's code: NotImplementedError -> NotAttempted; anything else raised -> one line."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotAttempted() from None
    except SystemExit as exc:
        raise CandidateError(f"{what}调用了 sys.exit()（SystemExit: {exc.code}）：练习代码不能结束检查程序，"
                             f"请删掉这一行{where(exc)}") from None
    except KeyboardInterrupt as exc:
        raise CandidateError(f"{what}抛出了 KeyboardInterrupt：练习代码不能中断检查程序{where(exc)}") from None
    except BaseException as exc:  # noqa: BLE001 - every error in the student's code becomes one line
        raise CandidateError(f"{what}出错：{error_line(exc)}{where(exc)}") from None


# --------------------------------------------------------------------------- the reports
class _Printed(io.TextIOBase):
    """Collects what the candidate prints, up to a limit, to be shown by the caller."""

    def __init__(self):
        self.parts, self.size = [], 0

    def writable(self):
        return True

    def write(self, text):
        if self.size < PRINTED_LIMIT:
            self.parts.append(text[:PRINTED_LIMIT - self.size])
        self.size += len(text)
        return len(text)

    def take(self) -> str:
        text = "".join(self.parts)
        if self.size > PRINTED_LIMIT:
            text += f"\n…（另有 {self.size - PRINTED_LIMIT} 个字符未显示）"
        self.parts, self.size = [], 0
        return text


def _describe(value) -> dict:
    if isinstance(value, paddle.Tensor):
        return {"kind": "tensor", "shape": [int(s) for s in value.shape], "grad": not value.stop_gradient}
    if isinstance(value, np.ndarray):
        if value.dtype.name not in ARRAY_DTYPES:      # e.g. an object array made of a list of arrays
            return {"kind": "other", "type": f"dtype 为 {value.dtype.name} 的 NumPy 数组"}
        return {"kind": "ndarray", "shape": [int(s) for s in value.shape], "grad": False}
    return {"kind": "other", "type": type(value).__name__}


def _numpy(value) -> np.ndarray:
    return value.detach().numpy() if isinstance(value, paddle.Tensor) else np.asarray(value)


def flatten(out, names: tuple) -> list:
    if isinstance(out, dict):
        return [out[k] for k in sorted(out)]
    if isinstance(out, (tuple, list)) and (names or len(out) != 1):
        return list(out)
    return [out]


def reports(ex, candidate, seed: int, printed=None):
    """Yield one (header, arrays) report per argument set of ``ex``; stop after the first that went wrong."""
    for k, case in enumerate(ex.cases):
        head, arrays = {"k": k}, {}
        try:
            _run_case(ex, candidate, case, seed + k, head, arrays)
        except NotAttempted:
            head["not_attempted"] = True
        except CandidateError as exc:
            head["error"] = str(exc)
        except BaseException as exc:  # noqa: BLE001 - an odd object the candidate handed back: one line
            head["error"] = f"检查中断：{error_line(exc)}{where(exc)}"
        if printed is not None:
            head["printed"] = printed.take()
        yield head, arrays
        if head.get("not_attempted") or head.get("error") or head.get("stop"):
            return


def _run_case(ex, candidate, case, seed: int, head: dict, arrays: dict) -> None:
    raw = case_inputs(case, seed)
    values, grads = materialize(raw, seed)
    my_in = as_inputs(values, grads, raw)
    mine = None
    if ex.kind == "layer":
        # The student's first: an unfilled scaffold stops here, before AlexNet's 25 M weights are drawn.
        mine = call("构建时", candidate, *case.args, **case.kwargs)
        if not isinstance(mine, nn.Layer):
            head.update(not_layer=type(mine).__name__, stop=True)
            return
        head["package"] = package_part(mine)   # the judge refuses it (the self-check allows it)
        head["layers"] = [[n, type(s).__name__, layer_config(s)] for n, s in leaves(mine)]
        head["params"] = [[n, [int(s) for s in p.shape]] for n, p in trainable(mine)]
        seed_cpu(seed)
        ref = ex.reference(*case.args, **case.kwargs)
        perturb_constants(ref, seed)
        head["ref_digest"] = weights_digest(ref)
        for layer in (ref, mine):
            layer.train() if ex.train else layer.eval()
        pairs, left_ref, left_mine = line_up(trainable(ref), trainable(mine))
        head["pairs"] = [[rn, mn] for rn, _, mn, _ in pairs]
        head["left_ref"] = [[n, [int(s) for s in t.shape]] for n, t in left_ref]
        head["left_mine"] = [[n, [int(s) for s in t.shape]] for n, t in left_mine]
        if left_ref or left_mine or sum(int(np.prod(p.shape)) for _, p in trainable(ref)) != sum(
                int(np.prod(p.shape)) for _, p in trainable(mine)):
            head["stop"] = True
            return
        _copy(pairs)
        state_pairs, left_ref, left_mine = line_up(state(ref), state(mine))
        head["state"] = [[n, [int(s) for s in t.shape]] for n, t in state(mine)]
        head["state_pairs"] = [[rn, mn] for rn, _, mn, _ in state_pairs]
        if left_ref or left_mine:
            head["state_left"] = True
            head["stop"] = True
            return
        _copy(state_pairs)
        del ref
        trace, hooks = [], []
        for name, sub in leaves(mine):
            if layer_kind(sub):
                hooks.append(sub.register_forward_post_hook(_recorder(trace, name, sub)))
        try:
            out = call("前向计算", mine, *my_in)
        finally:
            for h in hooks:
                h.remove()
        head["trace"] = [[name, kind] for name, kind, _, _ in trace]
        for i, (_, _, x, y) in enumerate(trace):
            arrays[f"trace.{i}.in"], arrays[f"trace.{i}.out"] = x, y
    else:
        pairs = state_pairs = []
        out = call("你的函数", candidate, *my_in)

    outs = flatten(out, ex.outputs)
    head["outputs"] = [_describe(v) for v in outs]
    for i, (v, d) in enumerate(zip(outs, head["outputs"])):
        if d["kind"] != "other":
            arrays[f"out.{i}"] = _numpy(v)
    if any(d["kind"] == "other" for d in head["outputs"]) or len(outs) != max(len(ex.outputs), 1):
        head["stop"] = True
        return

    live = [i for i in ex.grad_outputs if i < len(outs)]
    if live and all(isinstance(outs[i], paddle.Tensor) and not outs[i].stop_gradient for i in live):
        weights = grad_weights([outs[i].shape for i in live], seed)
        call("反向传播", lambda: sum((outs[i] * paddle.to_tensor(w)).sum() for i, w in zip(live, weights)).backward())
        head["no_grad"] = []
        for j, (t, g) in enumerate(zip(my_in, grads)):
            if g:
                if t.grad is None:
                    head["no_grad"].append(f"in.{j}")
                else:
                    arrays[f"grad.in.{j}"] = t.grad.numpy()
        for rn, _, mn, mt in pairs:
            if mt.grad is None:
                head["no_grad"].append(rn)
            else:
                arrays[f"grad.{rn}"] = mt.grad.numpy()
    for rn, _, mn, mt in state_pairs:
        arrays[f"state.{rn}"] = _numpy(mt)
    if state_pairs and ex.train and mine is not None:
        mine.eval()
        with paddle.no_grad():
            e = flatten(call("预测模式下的前向计算", mine, *my_in), ex.outputs)[0]
        head["eval"] = _describe(e)
        if isinstance(e, (paddle.Tensor, np.ndarray)):
            arrays["eval"] = _numpy(e)


def _copy(pairs) -> None:
    for _, ref_t, _, my_t in pairs:
        value = ref_t.numpy().reshape(tuple(int(s) for s in my_t.shape))
        paddle.assign(paddle.to_tensor(value, dtype=my_t.dtype), my_t)


def _recorder(trace: list, name: str, layer):
    kind = layer_kind(layer)

    def hook(_layer, inputs, output):
        x = inputs[0] if isinstance(inputs, (tuple, list)) and inputs else inputs
        if isinstance(x, paddle.Tensor) and isinstance(output, paddle.Tensor):
            trace.append((name, kind, _numpy(x).copy(), _numpy(output).copy()))
    return hook
