"""A recorded run keeps its trained model as an exported inference program, so a grader re-scores it
without the student's code.

``homework/<section>/programs/<run-id>/`` is exactly what ``paddle-cnn export``
writes (:func:`paddle_cnn.export.export_model`): the network as a program of
Paddle's standard operators, its weights and ``export.json``. The run's entry
in results.json names the folder, the SHA-256 of every file in it, its size,
the precision, and the test accuracy the program re-scored right after
recording. Programs under :data:`COMMIT_LIMIT` are committed with the folder;
larger ones are git-ignored (``homework/.gitignore`` lists them) and reach a
teacher through ``paddle-cnn homework pack``.

Half precision (float16 weights and arithmetic) is tried on the device the run
trained on and kept only when the half-precision program re-scores within
:data:`FP16_TOLERANCE` of the float32 one; on a CPU Paddle has no float16
convolution kernel, so the trial fails at once there and float32 is kept (the
reason is recorded).

Re-scoring (:func:`score`) loads the program with ``paddle.jit.load`` after
:func:`paddle_cnn.export.read_meta` has checked export.json and every file's
SHA-256 and :func:`check_operators` has read its operator list against
:data:`ALLOWED_OPS`: nothing a student wrote is imported or run.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from ..checkpoint_bounds import json_depth

PROGRAMS = "programs"
COMMIT_LIMIT = 10 * 2**20      # bytes: programs up to this size are committed with the homework folder
FP16_TOLERANCE = 0.003         # |fp16 - fp32| re-scored test accuracy for half precision to be kept
EVAL_BATCH = 256
MAX_PROGRAM_BYTES = 64 * 2**20  # model.json / model.pdmodel larger than this is refused before parsing
MAX_JSON_DEPTH = 200

# Operators a program of a course network may hold (Paddle 3's PIR names without the dialect prefix, and
# Paddle 2.6's operator types). Everything the registered networks export is here (collected by exporting
# each of them), with the standard layers a student's block may reasonably use. Custom operators, Python
# callbacks and file or network I/O are not.
ALLOWED_OPS = frozenset("""
    p parameter data feed fetch shadow_output combine split full full_int_array full_like assign constant
    conv2d depthwise_conv2d conv2d_transpose pool2d pool3d max_pool2d_with_index matmul matmul_v2 mul
    add subtract multiply divide elementwise_add elementwise_sub elementwise_mul elementwise_div
    maximum minimum elementwise_max elementwise_min pow elementwise_pow scale sqrt rsqrt exp log abs square
    relu relu6 sigmoid tanh gelu silu swish leaky_relu hardswish hard_swish hardsigmoid hard_sigmoid elu
    softmax log_softmax batch_norm sync_batch_norm layer_norm group_norm instance_norm dropout
    flatten flatten_contiguous_range reshape reshape2 transpose transpose2 concat slice strided_slice squeeze
    squeeze2 unsqueeze unsqueeze2 stack split_with_num pad pad3d expand expand_v2 tile cast clip
    mean reduce_mean sum reduce_sum max reduce_max bilinear_interp bilinear_interp_v2 nearest_interp
    nearest_interp_v2 fill_constant
""".split())


class ProgramError(ValueError):
    """A program cannot be used: missing, too large, unreadable or holding an operator outside the allow-list."""


def file_sha256(path, chunk: int = 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def folder_sums(folder) -> dict:
    """{file name: sha256} of the regular files directly in ``folder`` (sorted by name)."""
    return {p.name: file_sha256(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and not p.is_symlink()}


# --------------------------------------------------------------------------- what a program holds
def _depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    return json_depth(text) <= limit


def _declared_parameter_bytes(doc) -> int:
    """Bytes the parameters of a PIR program declare (float32 assumed, the most any course network stores)."""
    total, stack = 0, []
    for region in (doc.get("program") or {}).get("regions") or []:
        stack += (region or {}).get("blocks") or []
    while stack:
        block = stack.pop()
        for op in (block or {}).get("ops") or []:
            if op.get("#") == "p":
                try:
                    shape = op["O"]["TT"]["D"][1]
                    n = 1
                    for d in shape:
                        n *= max(int(d), 0)
                    total += 4 * n
                except (KeyError, IndexError, TypeError, ValueError):
                    continue
            for region in op.get("regions") or []:
                stack += (region or {}).get("blocks") or []
    return total


def _pir_ops(doc) -> list:
    names, stack = [], []
    for region in (doc.get("program") or {}).get("regions") or []:
        stack += (region or {}).get("blocks") or []
    while stack:
        block = stack.pop()
        for op in (block or {}).get("ops") or []:
            names.append(str(op.get("#")))
            for region in op.get("regions") or []:
                stack += (region or {}).get("blocks") or []
    return names


def operators(folder) -> list:
    """The operator names of the program in ``folder`` (model.json of Paddle 3, or model.pdmodel of 2.6),
    read as data: JSON with its size and depth capped, or the protobuf program description."""
    folder = Path(folder)
    for name in ("model.json", "model.pdmodel"):
        path = folder / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ProgramError(f"{path} is not a regular file")
        if not path.is_file():
            continue
        size = path.stat().st_size
        if size > MAX_PROGRAM_BYTES:
            raise ProgramError(f"{path} is {size / 2**20:.0f} MB, more than a course network's program can be")
        data = path.read_bytes()
        if name == "model.json":
            try:
                text = data.decode("utf-8")
                if not _depth_ok(text):
                    raise ProgramError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels: not a Paddle program")
                doc = json.loads(text)
            except (UnicodeDecodeError, ValueError) as e:
                if isinstance(e, ProgramError):
                    raise
                raise ProgramError(f"{path} is not a Paddle program (not valid JSON)") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("program"), dict):
                raise ProgramError(f"{path} is not a Paddle program (no program in it)")
            params = folder / "model.pdiparams"
            stored = params.stat().st_size if params.is_file() and not params.is_symlink() else 0
            declared = _declared_parameter_bytes(doc)
            if declared > 2 * stored + 2**20:   # a shape the weights file cannot hold: refused before loading
                raise ProgramError(f"{path} declares {declared / 2**20:,.0f} MB of parameters but model.pdiparams "
                                   f"holds {stored / 2**20:,.1f} MB")
            return _pir_ops(doc)
        try:
            from paddle.base.proto import framework_pb2
        except ImportError:  # pragma: no cover - Paddle 2.6 without paddle.base
            from paddle.fluid.proto import framework_pb2
        try:
            desc = framework_pb2.ProgramDesc.FromString(data)
        except Exception:  # noqa: BLE001 - any decoding failure means the same
            raise ProgramError(f"{path} is not a Paddle program (its protobuf does not decode)") from None
        return [op.type for block in desc.blocks for op in block.ops]
    raise ProgramError(f"{folder} holds no model.json or model.pdmodel")


def check_operators(folder) -> list:
    """The operators of the program in ``folder``; ProgramError naming any outside :data:`ALLOWED_OPS`."""
    names = operators(folder)
    foreign = set()
    for raw in names:
        dialect, dot, name = raw.partition(".")
        if not dot:
            dialect, name = "", raw
        if dialect not in ("", "0", "1") or name.rstrip("_") not in ALLOWED_OPS:
            foreign.add(raw)
    if foreign:
        shown = ", ".join(sorted(foreign)[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ProgramError(f"{folder} holds operators outside the course's allow-list ({shown}); "
                           "it is not re-scored")
    return names


# --------------------------------------------------------------------------- scoring
def score(folder, data, tta: str = "none", batch_size: int = EVAL_BATCH) -> float:
    """Test accuracy of the program in ``folder`` on ``data``'s test split (a FashionMNIST), as the trainer
    scores it (``tta="flip"`` adds the mirrored images' probabilities)."""
    import paddle
    import paddle.nn.functional as F

    from .. import metrics

    from ..export import ExportError, read_meta

    try:
        read_meta(folder)          # export.json valid, every file matching its SHA-256
    except ExportError as e:
        raise ProgramError(str(e)) from None
    check_operators(folder)
    layer = paddle.jit.load(str(Path(folder) / "model"))
    layer.eval()
    hits, count = 0.0, 0
    with paddle.no_grad():
        for x, y in data.test_batches(batch_size):
            out = layer(x)
            out = out[0] if isinstance(out, (list, tuple)) else out
            if tta == "flip":
                mirrored = layer(paddle.flip(x, axis=[3]))
                mirrored = mirrored[0] if isinstance(mirrored, (list, tuple)) else mirrored
                out = F.softmax(out.astype("float32"), axis=-1) + F.softmax(mirrored.astype("float32"), axis=-1)
            hits += float(metrics.correct(out.astype("float32"), y))
            count += int(y.shape[0])
    if not count:
        raise ProgramError("the test set is empty: nothing to score the program on")
    return hits / count


# --------------------------------------------------------------------------- saving a recorded run's program
class _Half:
    """Builds the float16 twin of a model: input cast to float16, weights in float16, output back to float32."""

    @staticmethod
    def wrap(model):
        import copy

        import paddle
        from paddle import nn

        class HalfPrecision(nn.Layer):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                out = self.net(x.astype("float16"))
                if isinstance(out, dict):
                    return {k: v.astype("float32") for k, v in out.items()}
                return out.astype("float32")

        twin = copy.deepcopy(model)
        twin.eval()
        twin.to(dtype=paddle.float16)
        return HalfPrecision(twin)


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not set(ln.strip()) <= set("-=")]
    line = next((ln for ln in lines if ln.startswith("(")), lines[0] if lines else type(e).__name__)
    return f"{type(e).__name__}: {line[:200]}"


def save(result, folder, run_id: str, try_fp16: bool = True, log=None) -> dict:
    """Export ``result``'s model into ``folder``/programs/``run_id`` and describe it for results.json.

    The description: ``path`` (relative to the section folder), ``files`` {name: sha256}, ``bytes``,
    ``precision``, ``rescored`` (the program's test accuracy on the run's own test split, classification
    only), ``fp16`` (what the half-precision trial gave), ``committed`` (size under :data:`COMMIT_LIMIT`).
    """
    from ..export import export_model

    cfg, folder = result.config, Path(folder)
    out = folder / PROGRAMS / run_id
    if out.exists():
        shutil.rmtree(out)
    export_model(result.model, cfg.model, cfg, out, "paddle", result.history)
    classification = getattr(result, "metric", "test_acc") == "test_acc" and result.data is not None
    rescored = score(out, result.data, cfg.tta) if classification else None
    precision, fp16 = "float32", None
    if try_fp16:
        trial = folder / PROGRAMS / f".{run_id}.fp16"
        try:
            export_model(_Half.wrap(result.model), cfg.model, cfg, trial, "paddle", result.history)
            half = score(trial, result.data, cfg.tta) if classification else None
            if half is None:
                fp16 = {"kept": False, "reason": "only classification programs are re-scored, so half precision "
                                                 "is not measured for this task"}
            elif abs(half - rescored) <= FP16_TOLERANCE:
                shutil.rmtree(out)
                trial.rename(out)
                precision, fp16 = "float16", {"kept": True, "rescored": half, "float32_rescored": rescored}
                rescored = half
            else:
                fp16 = {"kept": False, "rescored": half,
                        "reason": f"re-scores {half:.4f}, {abs(half - rescored):.4f} from float32's {rescored:.4f}"}
        except Exception as e:  # noqa: BLE001 - a device without float16 kernels ends the trial, not the record
            fp16 = {"kept": False, "reason": f"half precision does not run on this device ({_one_line(e)})"}
        finally:
            shutil.rmtree(trial, ignore_errors=True)
    files = folder_sums(out)
    size = sum((out / n).stat().st_size for n in files)
    if log:
        log(f"program of {run_id}: {size / 2**20:.1f} MB ({precision})"
            + (f", re-scored test acc {rescored:.4f}" if rescored is not None else ""))
    return {"path": f"{PROGRAMS}/{run_id}", "files": files, "bytes": size, "precision": precision,
            "rescored": rescored, "fp16": fp16, "committed": size <= COMMIT_LIMIT}


def update_gitignore(root, section: str, run_id: str, committed: bool) -> None:
    """List a large program in ``root``/.gitignore (``<section>/programs/<run-id>/``), or drop it when small.

    One rule per program, so a program that shrinks below the limit is committed again.
    """
    from .. import atomic

    path = Path(root) / ".gitignore"
    rule = f"/{section}/{PROGRAMS}/{run_id}/"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    header = "# Programs of recorded runs larger than 10 MB (paddle_cnn.homework.programs); `homework pack` ships them."
    kept = [ln for ln in lines if ln != rule]
    if not committed:
        if header not in kept:
            kept.insert(0, header)
        kept.append(rule)
    if kept != lines:
        atomic.write_text(path, "\n".join(kept) + "\n")


def program_entry_problems(folder, entry: dict) -> list:
    """How the files of a recorded program differ from the sums its run recorded (one phrase each)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("files"),
                                                                                               dict):
        return ["its program entry is malformed"]
    rel = Path(entry["path"])
    if rel.is_absolute() or ".." in rel.parts:
        return [f"its program path {entry['path']} leaves the folder"]
    where = Path(folder) / rel
    if where.is_symlink() or not where.is_dir():
        return [f"its program {entry['path']}/ is missing"]
    have = folder_sums(where)
    problems = []
    for name, digest in entry["files"].items():
        if name not in have:
            problems.append(f"{entry['path']}/{name} is missing")
        elif have[name] != digest:
            problems.append(f"{entry['path']}/{name} differs from the file recorded (sha256)")
    return problems

