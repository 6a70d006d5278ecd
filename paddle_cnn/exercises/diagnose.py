"""Naming the part that is wrong, in the student's terms (Simplified Chinese, d2l-zh 2nd edition).

A failing property ("参数量", "输出值") says *that* something differs; these
functions say *where*, from the layer structure alone:

* :func:`structure` compares the candidate's layers with the reference's, in
  definition order, by kind (卷积层, 批量规范化层, 全连接层, 转置卷积层) and
  settings (channels, kernel, stride, padding): "第 2 个卷积层后缺少批量规范化层".
* :func:`channels` maps the output channels back to the parts that produce them
  (Inception's paths): "路径 3 的输出出现在第 5-10 个通道，应在第 7-12 个通道".
* :func:`trace` follows the forward pass layer by layer (the input and output
  each layer saw, recorded in both versions) and names the first layer whose
  input or output differs, i.e. the step between two layers that went wrong.
"""
from __future__ import annotations

import difflib

import numpy as np

NAMES = {"conv": "卷积层", "convT": "转置卷积层", "bn": "批量规范化层", "linear": "全连接层",
         "maxpool": "最大汇聚层", "avgpool": "平均汇聚层"}
WEIGHTED = ("conv", "convT", "bn", "linear")


def _label(kind: str, ordinal: int, part: str = "") -> str:
    return f"{part} 的" * bool(part) + f"第 {ordinal} 个{NAMES[kind]}"


def _ordinals(kinds: list) -> list:
    seen, out = {}, []
    for k in kinds:
        seen[k] = seen.get(k, 0) + 1
        out.append(seen[k])
    return out


def _part_ordinals(kinds: list, parts: list) -> list:
    """Ordinal of each layer among the layers of its kind within its part (the whole block when no parts)."""
    seen, out = {}, []
    for k, p in zip(kinds, parts):
        seen[(k, p)] = seen.get((k, p), 0) + 1
        out.append(seen[(k, p)])
    return out


def _sides(v, square: bool = False) -> str:
    """'3×3' for a kernel, '2' for an equal stride or padding, '0×4' when the two sides differ."""
    v = [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v), int(v)]
    return "×".join(map(str, v)) if square or len(set(v)) > 1 else str(v[0])


def _cfg_key(c: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in c.items()))


def _problems(rc: dict, mc: dict) -> list:
    """How one layer's settings differ from the reference layer's, in words."""
    problems = []
    for key, word in (("inp", "输入通道数"), ("out", "输出通道数"), ("features", "通道数")):
        if rc.get(key) is not None and mc.get(key) is not None and rc[key] != mc[key]:
            problems.append(f"{word}是 {mc[key]}，应为 {rc[key]}")
    for key, word in (("kernel", "卷积核"), ("stride", "步幅"), ("padding", "填充")):
        if rc.get(key) is not None and mc.get(key) is not None and list(rc[key]) != list(mc[key]):
            square = key == "kernel"
            problems.append(f"{word}是 {_sides(mc[key], square)}，应为 {_sides(rc[key], square)}")
    if rc.get("bias") is not None and mc.get("bias") is not None and rc["bias"] != mc["bias"]:
        problems.append("不应有偏置（bias_attr=False）" if not rc["bias"] else "缺少偏置")
    return problems


def structure(ref_layers: list, my_layers: list, paths=None) -> str:
    """The first difference in kind, order or settings of the weighted layers, or ''.

    ``*_layers``: [name, class name, config] in the order the layers run (or
    are defined); ``paths(ref_name)`` gives the part a reference layer belongs
    to ("路径 3") or ''. The two lists are aligned on (kind, settings), so a
    missing or extra layer is placed where it belongs, and a layer whose
    settings differ is compared with the one it stands in for.
    """
    ref = [(n, c) for n, _, c in ref_layers if c.get("kind") in WEIGHTED]
    mine = [(n, c) for n, _, c in my_layers if c.get("kind") in WEIGHTED]
    rkeys, mkeys = [_cfg_key(c) for _, c in ref], [_cfg_key(c) for _, c in mine]
    if sorted(rkeys) == sorted(mkeys):
        return ""
    rk, mk = [c["kind"] for _, c in ref], [c["kind"] for _, c in mine]
    parts = [paths(n) if paths else "" for n, _ in ref]
    r_ord = _part_ordinals(rk, parts)
    m_ord = _ordinals(mk)

    def label(i):
        return _label(rk[i], r_ord[i], parts[i])

    def after(i):
        return f"{label(i - 1)}后" if i else "开头"

    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, rkeys, mkeys, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if op == "delete":
            return f"{after(i1)}缺少{'、'.join(NAMES[k] for k in rk[i1:i2])}（应为{label(i1)}）"
        if op == "insert":
            return f"{after(i1)}多了{'、'.join(NAMES[k] for k in mk[j1:j2])}（你的第 {m_ord[j1]} 个{NAMES[mk[j1]]}）"
        # replace: the same kinds with other settings, or other kinds
        for sub, a1, _, b1, _ in difflib.SequenceMatcher(None, rk[i1:i2], mk[j1:j2], autojunk=False).get_opcodes():
            i, j = i1 + a1, j1 + b1
            if sub == "equal":
                problems = _problems(ref[i][1], mine[j][1])
                if problems:
                    extra = "" if i2 - i1 == j2 - j1 else \
                        f"（参考实现在这里有 {i2 - i1} 个带参数的层，你的有 {j2 - j1} 个）"
                    return f"{label(i)}：" + "，".join(problems) + extra
                continue
            if sub == "delete":
                return f"{after(i)}缺少{NAMES[rk[i]]}（应为{label(i)}）"
            if sub == "insert":
                return f"{after(i)}多了一个{NAMES[mk[j]]}（你的第 {m_ord[j]} 个{NAMES[mk[j]]}）"
            return f"{label(i)}的位置上你的是{NAMES[mk[j]]}（你的第 {m_ord[j]} 个）：层的种类或顺序不对"
    return ""


def _close(a, b) -> bool:
    from .engine import close
    return np.shape(a) == np.shape(b) and close(a, b) is None


def channels(ref_out: np.ndarray, my_out: np.ndarray, parts: list) -> str:
    """Where each part's channels went: the first part whose values sit elsewhere or nowhere, or ''."""
    if ref_out.ndim < 2 or ref_out.shape != my_out.shape:
        return ""
    for label, a, b in parts:
        block = ref_out[:, a:b]
        if _close(my_out[:, a:b], block):
            continue
        width = b - a
        for o in range(my_out.shape[1] - width + 1):
            if o != a and _close(my_out[:, o:o + width], block):
                return (f"{label} 的输出出现在第 {o + 1}-{o + width} 个通道，应在第 {a + 1}-{b} 个通道"
                        "（连结的顺序不对）")
        return f"{label} 的输出（第 {a + 1}-{b} 个通道）与参考实现不同"
    return ""


def trace(ref_trace: list, my_trace: list, ref_arrays: dict, my_arrays: dict, paths=None) -> str:
    """The first layer of the forward pass whose input or output differs, or '' (traces: [name, kind])."""
    kinds = [k for _, k in ref_trace]
    parts = [paths(n) if paths else "" for n, _ in ref_trace]
    ords = _part_ordinals(kinds, parts)
    labels = [_label(k, o, p) for k, o, p in zip(kinds, ords, parts)]
    mine = [k for _, k in my_trace]
    if mine != kinds:
        if len(mine) == len(kinds):    # e.g. a max-pool where the reference averages
            i = next(i for i, (a, b) in enumerate(zip(kinds, mine)) if a != b)
            return f"{labels[i]}的位置上你用的是{NAMES[mine[i]]}"
        return ""
    for i in range(len(ref_trace)):
        r_in, m_in = ref_arrays.get(f"trace.{i}.in"), my_arrays.get(f"trace.{i}.in")
        r_out, m_out = ref_arrays.get(f"trace.{i}.out"), my_arrays.get(f"trace.{i}.out")
        if r_in is None or m_in is None:
            return ""
        if not _close(m_in, r_in):
            if i == 0:
                return f"{labels[0]}的输入已经不同：在它之前的计算有误"
            return (f"{labels[i]}的输入不同，而{labels[i - 1]}的输出一致：两者之间的计算有误"
                    "（是否少了或多了 ReLU、汇聚层，连结的顺序不对，或用错了它的输入？）")
        if not _close(m_out, r_out):
            return f"{labels[i]}的输出不同（输入一致）：检查它的设置（步幅、填充）或调用方式"
    if ref_trace:
        return f"各层的输入输出都一致：{labels[-1]}之后的计算有误（是否少了或多了最后的 ReLU、汇聚层、连结或相加？）"
    return ""


def axes(ref: np.ndarray, mine: np.ndarray, what: str) -> str:
    """For a channel-wise quantity: which channels differ ('第 2、3 个通道'), or ''."""
    if ref.shape != mine.shape or ref.ndim < 2 or ref.shape[1] < 2:
        return ""
    bad = [c + 1 for c in range(ref.shape[1]) if not _close(mine[:, c], ref[:, c])]
    if not bad or len(bad) == ref.shape[1]:
        return ""
    return f"{what}在第 {'、'.join(map(str, bad[:6]))} 个通道（轴 1）上不同，其余通道一致"
