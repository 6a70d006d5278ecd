"""The judge: compare the candidate's reports with the reference, one printed line per property.

For each argument set the judge reads the runner's report (from the sandbox's
child, see ``sandbox.py``), builds the package's reference itself (same seed,
on the CPU, constants perturbed so that a forgotten bias shows), runs it on the
same inputs with the weights the candidate was given, and compares, in order:
parameter count, how the weights line up, output shape, output values,
gradients of the input and of every parameter, and for blocks with batch
normalization the moving statistics and the output in prediction mode.

Weights are lined up layer by layer: each of the student's layers (the
parameters owned by one sub-layer) takes the first unused layer of the
package's version with the same parameter shapes, so layers must be defined
in the order they run. Shapes are compared without their 1-sized axes, so a
``gamma`` of shape ``[C]`` lines up with one of ``[1, C, 1, 1]``.

A failing property is followed by a line naming the part (``diagnose.py``):
which layer, which path, which channels. Nothing the candidate does ends up
as a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import paddle

from . import diagnose, runner, sandbox

OK, BAD = "✓", "✗"
RTOL = 1e-3        # different but correct code (loops vs conv2d, another summation order) differs by ~1e-6
ATOL = 1e-4        # of the largest magnitude of the expected tensor
NOT_ATTEMPTED = "exercise {name}: not attempted yet (fill in the cell above)"   # as the executed notebooks show


@dataclass
class Verdict:
    """What one check found: ``status`` is "passed", "failed" or "not attempted"; ``lines`` as printed."""
    exercise: str
    section: str
    status: str
    lines: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class _Failed(Exception):
    """One property failed; the message is the line already printed."""


class _NotAttempted(Exception):
    pass


def close(mine, expected) -> Optional[str]:
    """None when close, else '相差最多 D（位置 [i, j]：你的 a，应为 b）'."""
    # float32 arithmetic: AlexNet's head has 17 M weights, each of whose gradients gets compared.
    dtype = np.float32 if np.asarray(expected).dtype.kind == "f" else np.float64
    mine, expected = np.asarray(mine, dtype), np.asarray(expected, dtype)
    if mine.shape != expected.shape:
        return f"形状是 {tuple(mine.shape)}，应为 {tuple(expected.shape)}"
    if np.array_equal(mine, expected):   # the usual case: the same weights through the same operations
        return None
    if not np.isfinite(mine).all():
        return "含有 NaN 或 inf"
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    diff = np.abs(mine - expected)
    if np.all(diff <= ATOL * scale + 1e-6 + RTOL * np.abs(expected)):
        return None
    at = np.unravel_index(int(diff.argmax()), diff.shape)
    return f"相差最多 {diff.max():.3g}（位置 {list(map(int, at))}：你的 {mine[at]:.4g}，应为 {expected[at]:.4g}）"


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()) if np.size(a) else 0.0


def _shape_text(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _arg_text(args, kwargs) -> str:
    return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


def _input_text(values) -> str:
    shown = []
    for v in values:
        if isinstance(v, (np.ndarray, paddle.Tensor, runner.Rand)):
            shown.append(f"[{', '.join(str(int(s)) for s in v.shape)}]")
        else:
            shown.append(repr(v))
    return ", ".join(shown)


def package_object(candidate) -> str:
    """'paddle_cnn.blocks.Residual' when the candidate is (a subclass of) one of this package's objects, else ''."""
    classes = candidate.__mro__ if isinstance(candidate, type) else (candidate,)
    for obj in classes:
        module = getattr(obj, "__module__", None) or ""
        if module.split(".")[0] == "paddle_cnn":
            return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
    return ""


def judge(ex, candidate, seed: int = 0, time_limit: float = sandbox.TIME_LIMIT, emit: Callable = print,
          allow_package: bool = False) -> Verdict:
    """Check ``candidate`` against exercise ``ex``; print lines with ``emit``; return the :class:`Verdict`."""
    lines = []

    def out(line):
        lines.append(line)
        emit(line)

    def verdict(status):
        return Verdict(ex.name, ex.section, status, lines)

    if candidate is None:
        out(NOT_ATTEMPTED.format(name=ex.name))
        return verdict("not attempted")
    if not callable(candidate):
        out(f"{BAD} 练习 {ex.name}：应传入一个类或函数，你传入的是 {type(candidate).__name__}")
        return verdict("failed")
    owned = "" if allow_package else package_object(candidate)
    if owned:
        out(f"{BAD} 练习 {ex.name}：你传入的是包里的 {owned}（或它的子类），不是你自己的实现；请在上面的单元格里自己写出来")
        return verdict("failed")

    shown = getattr(candidate, "__name__", ex.name)
    reason = sandbox.unavailable_reason()
    child = None
    if not reason:
        try:
            child = sandbox.Child(ex, candidate, seed)
        except OSError as exc:
            reason = f"fork 失败（{exc.strerror or exc}）"
    if reason:
        out(f"（无法在隔离的子进程中检查：{reason}；改在当前进程中检查，没有时间限制，练习代码也能结束或改动检查程序）")
        local = sandbox.in_process(ex, candidate, seed)

        def next_report(_limit):
            return next(local)
    else:
        next_report = child.next_report
    try:
        for k, case in enumerate(ex.cases):
            raw = runner.case_inputs(case, seed + k)
            call = f"{shown}({_arg_text(case.args, case.kwargs)})，输入 {_input_text(raw)}" if ex.kind == "layer" \
                else f"{shown}({_input_text(raw)})"
            header = [f"参数组 {k + 1}/{len(ex.cases)}：{call}"]
            try:
                head, arrays = next_report(time_limit)
            except sandbox.ChildFailed as exc:
                out(header[0])
                out(f"  {BAD} {exc}")
                raise _Failed(str(exc)) from None
            _Case(ex, case, raw, seed + k, head, arrays, header, out, allow_package).run()
    except _NotAttempted:
        out(NOT_ATTEMPTED.format(name=ex.name))
        return verdict("not attempted")
    except _Failed:
        out(f"{BAD} 练习 {ex.name}：尚未通过（见上面第一个 {BAD}）")
        return verdict("failed")
    finally:
        if child is not None:
            child.close()
    out(f"{OK} 练习 {ex.name}：通过（{len(ex.cases)} 组参数）")
    return verdict("passed")


def _by_call(layers: list, trace: list) -> list:
    """``layers`` reordered by their first call in ``trace``; layers never called keep their place at the end."""
    first = {}
    for i, (name, _) in enumerate(trace):
        first.setdefault(name, i)
    return sorted(layers, key=lambda item: first.get(item[0], len(trace)))


class _Case:
    """One argument set: the reference run here, compared with the candidate's report property by property."""

    def __init__(self, ex, case, raw, seed, head, arrays, header, out, allow_package=False):
        self.ex, self.case, self.raw, self.seed, self.allow_package = ex, case, raw, seed, allow_package
        self.head, self.arrays, self.header, self.out = head, arrays, header, out
        self.ref = self.ref_trace = None
        self.ref_arrays = {}

    def say(self, line: str) -> None:
        if self.header:
            self.out(self.header.pop())
        self.out("  " + line)

    def fail(self, line: str, why: str = "") -> None:
        self.say(f"{BAD} {line}")
        if why:
            self.say(f"  → {why}")
        raise _Failed(line)

    def error_or(self, line: str) -> None:
        """The candidate's own error when it stopped here, else ``line``."""
        self.fail(self.head.get("error") or line)

    def structure(self) -> str:
        """The structure diagnosis, with the layers in the order they ran when both forward passes did."""
        if self.ref is None or "layers" not in self.head:
            return ""
        ref_layers = [[n, type(s).__name__, runner.layer_config(s)] for n, s in runner.leaves(self.ref)]
        my_layers = self.head["layers"]
        if self.ref_trace is not None and "trace" in self.head:
            ref_layers = _by_call(ref_layers, self.ref_trace)
            my_layers = _by_call(my_layers, self.head["trace"])
        return diagnose.structure(ref_layers, my_layers, self.ex.paths)

    # ------------------------------------------------------------------ the properties, in order
    def run(self) -> None:
        head = self.head
        for text in (head.get("printed") or "").splitlines():
            self.say(f"│ {text}")
        if head.get("not_attempted"):
            raise _NotAttempted()
        values, grads = runner.materialize(self.raw, self.seed)
        with runner.on_cpu():
            ref_in = runner.as_inputs(values, grads, self.raw)
            pairs, state_pairs = self.layer_checks() if self.ex.kind == "layer" else ([], [])
            if "outputs" not in head:
                self.error_or("没有收到输出（检查用的子进程没有报告）")
            ref_out = self.forward(ref_in)
            ref_outs = runner.flatten(ref_out, self.ex.outputs)
            self.outputs(ref_outs)
            self.gradients(ref_in, grads, ref_outs, pairs)
            self.moving_statistics(ref_in, state_pairs)

    def layer_checks(self):
        head, ex = self.head, self.ex
        if "not_layer" in head:
            self.fail(f"构建的结果是 {head['not_layer']}，不是 paddle.nn.Layer")
        if head.get("package") and not self.allow_package:
            name, cls = head["package"]
            what = f"构建出的对象是包里的 {cls}" if not name else f"子层 {name} 是包里的 {cls}"
            self.fail(f"{what}：请只用 paddle.nn 的基本层自己搭建，不要用包里的实现")
        if "params" not in head:
            self.error_or("没有收到构建结果（检查用的子进程没有报告）")
        runner.seed_cpu(self.seed)
        self.ref = ref = ex.reference(*self.case.args, **self.case.kwargs)
        runner.perturb_constants(ref, self.seed)
        ref.train() if ex.train else ref.eval()
        if head.get("ref_digest") != runner.weights_digest(ref):
            self.fail("子进程里构建的参考实现与本进程的不同：练习代码改动了检查程序或 Paddle 的初始化")
        ref_params = dict(runner.trainable(ref))
        n_ref = sum(int(np.prod(p.shape)) for p in ref_params.values())
        n_mine = sum(int(np.prod(shape)) for _, shape in head["params"])
        if n_ref != n_mine:
            self.fail(f"参数量：你的 {n_mine:,}，应为 {n_ref:,}", self.structure())
        self.say(f"{OK} 参数量 {n_ref:,}")
        if head.get("left_mine"):
            shapes = "、".join(f"{n} {shape}" for n, shape in head["left_mine"][:3])
            self.fail(f"权重：你的参数 {shapes} 在参考实现中没有同形状的对应", self.structure())
        if head.get("left_ref"):
            shapes = "、".join(f"{shape}" for _, shape in head["left_ref"][:3])
            self.fail(f"权重：参考实现中形状为 {shapes} 的参数在你的实现里没有对应", self.structure())
        mine = {n: tuple(shape) for n, shape in head["params"]}
        pairs = head.get("pairs", [])
        if sorted(rn for rn, _ in pairs) != sorted(ref_params) or any(
                mn not in mine or runner.squeezed(mine[mn]) != runner.squeezed(ref_params[rn].shape)
                for rn, mn in pairs):
            self.fail("子进程的报告与参考实现对不上：练习代码改动了检查程序")
        ref_state = runner.state(ref)
        if head.get("state_left") or ("state_pairs" in head and len(head["state_pairs"]) != len(ref_state)):
            self.fail(f"移动统计量：你的有 {len(head.get('state', []))} 个张量，应为 {len(ref_state)} 个"
                      f"（{'、'.join(n for n, _ in ref_state)}）：请用 nn.BatchNorm2D，或把它们存为 buffer",
                      self.structure())
        if "state_pairs" not in head:
            self.error_or("没有收到构建结果（检查用的子进程没有报告）")
        return pairs, head["state_pairs"]

    def forward(self, ref_in):
        if self.ex.kind != "layer":
            return self.ex.reference(*ref_in)
        trace, hooks = [], []
        for name, sub in runner.leaves(self.ref):
            if runner.layer_kind(sub):
                hooks.append(sub.register_forward_post_hook(runner._recorder(trace, name, sub)))
        try:
            out = self.ref(*ref_in)
        finally:
            for h in hooks:
                h.remove()
        self.ref_trace = [[name, kind] for name, kind, _, _ in trace]
        for i, (_, _, x, y) in enumerate(trace):
            self.ref_arrays[f"trace.{i}.in"], self.ref_arrays[f"trace.{i}.out"] = x, y
        return out

    def outputs(self, ref_outs) -> None:
        ex, described = self.ex, self.head["outputs"]
        if len(described) != len(ref_outs):
            what = f"{len(ref_outs)} 个值（{', '.join(ex.outputs)}）" if ex.outputs else "一个张量"
            self.fail(f"输出：你的返回了 {len(described)} 个值，应为{what}")
        for d, r in zip(described, ref_outs):
            if d["kind"] == "other":
                want = "paddle.Tensor" if isinstance(r, paddle.Tensor) else "NumPy 数组"
                self.fail(f"输出：你的返回了 {d['type']}，应为 {want}")
        ref_shapes = [_shape_text(r.shape) for r in ref_outs]
        my_shapes = [_shape_text(d["shape"]) for d in described]
        ref_np = [runner._numpy(r) for r in ref_outs]
        my_np = [self.arrays[f"out.{i}"] for i in range(len(ref_outs))]
        if ref_shapes != my_shapes:
            why = self.structure() or (ex.explain(ref_np, my_np) if ex.explain else "")
            self.fail(f"输出形状：你的 {', '.join(my_shapes)}，应为 {', '.join(ref_shapes)}", why)
        self.say(f"{OK} 输出形状 {', '.join(ref_shapes)}")
        named = list(zip(ex.outputs or ("输出值",) * len(ref_outs), ref_np, my_np))
        if ex.parts is not None:
            named = [(label, r, m) for (label, r), (_, m) in zip(ex.parts(ref_np[0]), ex.parts(my_np[0]))]
        for what, r, m in named:
            problem = close(m, r)
            if problem:
                why = ex.explain(ref_np, my_np) if ex.explain else ""
                self.fail(f"{what}：你的{problem}", why or self.where_values(r, m))
            self.say(f"{OK} {what}（最大差 {_max_diff(m, r):.2g}）")

    def where_values(self, r, m) -> str:
        if self.ex.kind != "layer":
            return diagnose.axes(r, m, "这个输出")
        why = self.structure()
        if not why and self.ex.channel_parts is not None:
            why = diagnose.channels(r, m, self.ex.channel_parts(self.case))
        if not why and "trace" in self.head:
            why = diagnose.trace(self.ref_trace, self.head["trace"], self.ref_arrays, self.arrays, self.ex.paths)
        return why

    def gradients(self, ref_in, grads, ref_outs, pairs) -> None:
        live = [i for i in self.ex.grad_outputs if i < len(ref_outs)]
        if not live:
            return
        for i in live:
            if not self.head["outputs"][i].get("grad"):
                self.fail("梯度：没有梯度到达你的输出（是否离开了 Paddle，例如用了 .numpy()？）")
        if "no_grad" not in self.head:
            self.error_or("没有收到梯度（检查用的子进程没有报告）")
        weights = runner.grad_weights([ref_outs[i].shape for i in live], self.seed)
        sum((ref_outs[i] * paddle.to_tensor(w)).sum() for i, w in zip(live, weights)).backward()
        checked = [(f"输入 {j + 1}", f"in.{j}", t) for j, (t, g) in enumerate(zip(ref_in, grads)) if g]
        params = dict(runner.trainable(self.ref)) if self.ref is not None else {}
        checked += [(f"参数 {mn}", rn, params[rn]) for rn, mn in pairs]
        missing = set(self.head["no_grad"])
        for what, key, t in checked:
            if t.grad is None:
                continue
            if key in missing or f"grad.{key}" not in self.arrays:
                self.fail(f"{what}的梯度：没有梯度到达它")
            mine = self.arrays[f"grad.{key}"]
            problem = close(mine.reshape(tuple(int(s) for s in t.grad.shape)) if mine.size == t.grad.size else mine,
                            t.grad.numpy())
            if problem:
                self.fail(f"{what}的梯度：你的{problem}")
        n_in = sum(grads)
        self.say(f"{OK} {n_in} 个输入" + (f"和 {len(pairs)} 个参数" if pairs else "") + "的梯度")

    def moving_statistics(self, ref_in, state_pairs) -> None:
        if not state_pairs or not self.ex.train:
            return
        ref_state = dict(runner.state(self.ref))
        for rn, mn in state_pairs:
            mine = self.arrays.get(f"state.{rn}")
            if mine is None:
                self.error_or("没有收到移动统计量（检查用的子进程没有报告）")
            r = runner._numpy(ref_state[rn])
            problem = close(mine.reshape(r.shape) if mine.size == r.size else mine, r)
            if problem:
                self.fail(f"一个训练步后的移动统计量（{mn}）：你的{problem}")
        self.say(f"{OK} 一个训练步后的移动统计量")
        if "eval" not in self.head:
            self.error_or("没有收到预测模式下的输出（检查用的子进程没有报告）")
        self.ref.eval()
        with paddle.no_grad():
            r = runner._numpy(runner.flatten(self.ref(*ref_in), self.ex.outputs)[0])
        d = self.head["eval"]
        if d["kind"] == "other" or "eval" not in self.arrays:
            self.fail(f"预测模式下的输出：你的返回了 {d.get('type')}，应为 paddle.Tensor")
        problem = close(self.arrays["eval"], r)
        if problem:
            self.fail(f"预测模式下的输出（使用移动统计量）：你的{problem}")
        self.say(f"{OK} 预测模式下的输出（使用移动统计量）")
