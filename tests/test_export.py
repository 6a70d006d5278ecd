"""Export: every registered model, accelerated where the accelerator runs, saved with ``paddle.jit.save``
and reloaded in a fresh process that never imports paddle_cnn (``paddle.jit.load`` and
``paddle.inference``, ONNX through onnxruntime when installed); outputs equal the eager model's.
Then ``paddle-cnn export`` on run folders, good and bad."""
import hashlib
import json
import shutil
import subprocess
import sys

import paddle_cnn  # noqa: F401  (CPU tuning before paddle)
import numpy as np
import paddle
import pytest
from PIL import Image

from paddle_cnn import accel, checkpoint
from paddle_cnn.cli import main
from paddle_cnn.config import config_for
from paddle_cnn.export import META, export_model, export_run, onnx_available, read_meta
from paddle_cnn.models import get_spec, list_models
from paddle_cnn.models.factory import build_model

from helpers import make_run

RTOL = 1e-5
# ONNX conversion starts one Python process per model (paddle2onnx can end its process on failure), so
# it runs on one model per task plus the two with their own operators (GoogLeNet's concatenations,
# DenseBox's up-sampling and three outputs); the Paddle formats are checked for every model.
ONNX_MODELS = ("lenet_relu", "googlenet", "unet", "densebox")


def small_size(name: str) -> int:
    """A small input side the model accepts: 28 (Fashion-MNIST's own) or its minimum; scenes at their smoke
    canvas (Paddle Inference ran DenseBox's interpolation at 32 but failed at 64)."""
    spec = get_spec(name)
    return max(spec.min_size, 28) if spec.task == "classification" else spec.profiles["smoke"]["resize"]


def small_config(name: str):
    return config_for(name, "smoke", resize=small_size(name))


# --------------------------------------------------------------------------- every model, outside the package
LOADER = r"""
import json, sys
sys.modules["paddle_cnn"] = None          # any import of paddle_cnn now fails: the export stands alone
import numpy as np
import paddle
import paddle.inference as inference

try:
    import onnxruntime
except ImportError:
    onnxruntime = None

report = {}
for name, folder in json.loads(sys.argv[1]).items():
    try:
        meta = json.load(open(f"{folder}/{sys.argv[2]}"))
        x = np.load(f"{folder}/input.npy")
        layer = paddle.jit.load(f"{folder}/model")
        layer.eval()
        out = layer(paddle.to_tensor(x))
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        arrays = {f"jit{i}": o.numpy() for i, o in enumerate(out)}
        config = inference.Config(f"{folder}/{meta['files']['program']}", f"{folder}/{meta['files']['params']}")
        config.disable_gpu()
        predictor = inference.create_predictor(config)
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(x)
        predictor.run()
        for i, n in enumerate(predictor.get_output_names()):
            arrays[f"inference{i}"] = predictor.get_output_handle(n).copy_to_cpu()
        if "onnx" in meta["files"] and onnxruntime is not None:
            session = onnxruntime.InferenceSession(f"{folder}/{meta['files']['onnx']}",
                                                   providers=["CPUExecutionProvider"])
            for i, o in enumerate(session.run(None, {session.get_inputs()[0].name: x})):
                arrays[f"onnx{i}"] = o
        np.savez(f"{folder}/loaded.npz", **arrays)
        report[name] = "ok"
    except Exception as e:
        report[name] = f"{type(e).__name__}: {e}"[:500]
print("REPORT " + json.dumps({"report": report, "paddle_cnn_imported": sys.modules.get("paddle_cnn") is not None}))
"""


def _onnx_runtime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return onnx_available()[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every model built small, accelerated where possible, its eager outputs on a batch of 2 recorded,
    exported, and reloaded in one fresh process. Returns {name: (folder, eager outputs)} and the report."""
    root = tmp_path_factory.mktemp("exports")
    onnx = _onnx_runtime()
    rng = np.random.default_rng(0)
    done = {}
    for name in list_models():
        cfg = small_config(name)
        model = build_model(cfg)
        model.eval()
        accel.apply(model, "auto", log=None)
        x = rng.standard_normal((2, 1, cfg.resize, cfg.resize)).astype(np.float32)
        with paddle.no_grad():
            out = model(paddle.to_tensor(x))
        eager = [v.numpy() for v in out.values()] if isinstance(out, dict) else [out.numpy()]
        folder = root / name
        export_model(model, name, cfg, folder, "onnx" if onnx and name in ONNX_MODELS else "paddle")
        np.save(folder / "input.npy", x)
        done[name] = (folder, eager)
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps({n: str(f) for n, (f, _) in done.items()}), META],
                          capture_output=True, text=True, cwd=root)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    return done, json.loads(lines[-1][len("REPORT "):])


def relative_error(value, reference) -> float:
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(value - reference).max() / max(np.abs(reference).max(), 1e-12))


@pytest.mark.parametrize("name", list_models())
def test_export_reloads_outside_the_package_with_equal_outputs(exported, name):
    done, result = exported
    assert result["paddle_cnn_imported"] is False
    assert result["report"][name] == "ok"
    folder, eager = done[name]
    loaded = np.load(folder / "loaded.npz")
    meta = read_meta(folder)
    assert len(meta["outputs"]) == len(eager)
    for kind in ("jit", "inference"):
        for i, reference in enumerate(eager):
            got = loaded[f"{kind}{i}"]
            assert got.shape == reference.shape, (kind, meta["outputs"][i])
            assert relative_error(got, reference) <= RTOL, (kind, meta["outputs"][i])


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_onnx_export_runs_in_onnxruntime_with_equal_outputs(exported, name):
    if not _onnx_runtime():
        pytest.skip("paddle2onnx and onnxruntime are not both installed (pip install paddle2onnx onnxruntime)")
    done, _ = exported
    folder, eager = done[name]
    assert read_meta(folder)["files"]["onnx"] == "model.onnx"
    loaded = np.load(folder / "loaded.npz")
    for i, reference in enumerate(eager):
        assert relative_error(loaded[f"onnx{i}"], reference) <= RTOL


def test_export_holds_no_custom_operator(exported):
    """The accelerator's operator never reaches a program: the saved program names only Paddle's ops."""
    done, _ = exported
    folder, _ = done["resnet18"]
    program = (folder / read_meta(folder)["files"]["program"]).read_bytes()
    assert b"onednn" not in program.lower() and b"pcnn" not in program.lower()
    densebox, _ = done["densebox"]
    assert b"interp" not in (densebox / read_meta(densebox)["files"]["program"]).read_bytes()


def test_metadata_describes_the_model(exported):
    done, _ = exported
    meta = read_meta(done["densebox"][0])
    assert meta["task"] == "detection" and meta["outputs"] == ["conf", "dist", "cls"]
    assert meta["input"]["shape"] == [None, 1, 64, 64] and meta["input"]["mean"] == pytest.approx(0.2860)
    assert meta["detection"]["stride"] == 4 and meta["paddle_version"] == paddle.__version__
    seg = read_meta(done["unet"][0])
    assert seg["mask_classes"][0] == "background" and len(seg["mask_classes"]) == 11


# --------------------------------------------------------------------------- paddle-cnn export
def test_cli_export_writes_the_run_metric_and_replaces_its_previous_export(tmp_path, capsys):
    run = make_run(tmp_path / "run", metric=0.625)
    assert main(["export", str(run)]) == 0
    line = capsys.readouterr().out
    assert "test acc 0.625 after 1 epoch)" in line and str(run / "export") in line
    meta = read_meta(run / "export")
    assert (meta["model"], meta["metric"]["value"], meta["epochs"]) == ("lenet_relu", 0.625, 1)
    assert meta["classes"][0] == "T-shirt/top" and meta["input"]["size"] == 28
    # A stale file the earlier export listed goes; nothing else in the folder is touched.
    (run / "export" / "model.onnx").write_bytes(b"old")
    doc = json.loads((run / "export" / META).read_text())
    doc["files"]["onnx"] = "model.onnx"
    (run / "export" / META).write_text(json.dumps(doc))
    (run / "export" / "notes.txt").write_text("mine")
    assert main(["export", str(run)]) == 0
    assert not (run / "export" / "model.onnx").exists() and (run / "export" / "notes.txt").read_text() == "mine"
    assert not [p for p in (run / "export").iterdir() if p.name.startswith(".")]


def _error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_cli_export_refuses_bad_input_with_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(empty)]) == 2
    assert "not a run folder" in _error(capsys)
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in _error(capsys)
    run = make_run(tmp_path / "run")
    blob = bytearray((run / checkpoint.CHECKPOINT).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (run / checkpoint.CHECKPOINT).write_bytes(bytes(blob))
    assert main(["export", str(run)]) == 2
    assert "checkpoint damaged" in _error(capsys)
    assert not (run / "export").exists()
    good = make_run(tmp_path / "good")
    (tmp_path / "afile").write_text("x")
    assert main(["export", str(good), "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in _error(capsys)
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.json").write_text("{}")
    assert main(["export", str(good), "--out", str(other)]) == 2
    assert "of something else" in _error(capsys) and (other / "model.json").read_text() == "{}"


def test_cli_export_onnx_without_paddle2onnx_names_the_install(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)     # import paddle2onnx -> ImportError
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert "pip install paddle2onnx" in _error(capsys)
    assert not (run / "export").exists()


@pytest.mark.parametrize("scale", [2, 3, (2, 1)])
def test_upsampling_written_with_standard_operators_equals_paddles(scale):
    """The exported stand-in for nn.Upsample(bilinear) gives Paddle's values, edges included."""
    from paddle import nn

    from paddle_cnn.export import _Bilinear

    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((2, 3, 5, 7)).astype("float32"))
    reference = nn.Upsample(scale_factor=scale, mode="bilinear")(x).numpy()
    ours = _Bilinear(scale if isinstance(scale, tuple) else (scale, scale))(x).numpy()
    assert ours.shape == reference.shape
    assert relative_error(ours, reference) <= RTOL


# --------------------------------------------------------------------------- read back, sums, validation (issue 40)
_LIMITED_EXPORT = """
import resource, sys
from paddle_cnn.cli import main
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))   # writes past it fail; Paddle's go unreported
sys.exit(main(["export", sys.argv[2], "--out", sys.argv[3]]))
"""


def _files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_an_export_written_short_is_refused_and_the_previous_one_kept(tmp_path, capsys):
    """Under a file-size limit below model.pdiparams, paddle.jit.save leaves a short file and says nothing;
    the read-back finds it, the command ends in one line with exit 2, and the good export is untouched."""
    run = make_run(tmp_path / "run")
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0
    capsys.readouterr()
    good = _files(out)
    limit = len(good["model.pdiparams"]) // 2
    assert limit > len(good[META]) and limit > len(good[read_meta(out)["files"]["program"]])
    proc = subprocess.run([sys.executable, "-c", _LIMITED_EXPORT, str(limit), str(run), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not read back whole" in lines[0] and "Nothing was replaced" in lines[0], lines
    assert _files(out) == good
    read_meta(out)


def test_export_json_carries_a_sha256_of_every_file(tmp_path):
    meta, out = export_run(make_run(tmp_path / "run"), tmp_path / "export")
    files = sorted(p.name for p in out.iterdir() if p.name != META)
    assert sorted(meta["sha256"]) == files and set(meta["files"].values()) <= set(files)
    for name, digest in meta["sha256"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert read_meta(out) == json.loads((out / META).read_text())


@pytest.fixture(scope="module")
def good_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("tamper")
    _, out = export_run(make_run(root / "run"), root / "export")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "x.png")
    return out, root / "x.png"


def _edit_meta(change):
    def edit(folder):
        doc = json.loads((folder / META).read_text())
        change(doc)
        (folder / META).write_text(json.dumps(doc))
    return edit


def _edit_file(key, old, new):
    def edit(folder):
        path = folder / json.loads((folder / META).read_text())["files"][key]
        blob = path.read_bytes()
        assert old in blob
        path.write_bytes(blob.replace(old, new, 1))
    return edit


def _flip_last_byte(folder):
    path = folder / "model.pdiparams"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))


def _no_sums(doc):   # what an export made before exports carried sums looks like
    doc["version"] = 1
    doc.pop("sha256")
    doc.pop("meta_sha256")


def _resum(change):
    """An edit whose meta_sha256 is recomputed: the field checks must catch it by themselves."""
    from paddle_cnn.export import meta_sha256

    def both(doc):
        change(doc)
        doc["meta_sha256"] = meta_sha256(doc)
    return both


def _nan_weights_resummed(folder):
    """The last parameter value (the head's last bias) made NaN, every sum recomputed: only the outputs tell."""
    from paddle_cnn.export import meta_sha256

    path = folder / "model.pdiparams"
    blob = path.read_bytes()
    path.write_bytes(blob[:-4] + np.array([np.nan], "<f4").tobytes())
    doc = json.loads((folder / META).read_text())
    doc["sha256"]["model.pdiparams"] = hashlib.sha256(path.read_bytes()).hexdigest()
    doc["meta_sha256"] = meta_sha256(doc)
    (folder / META).write_text(json.dumps(doc))


TAMPERED = {
    "edited weights": (_flip_last_byte, "model.pdiparams does not match its SHA-256"),
    "relu renamed sigmoid": (_edit_file("program", b"relu", b"sigmoid"),
                             "does not match its SHA-256"),   # model.json (PIR) or model.pdmodel (Paddle 2.6)
    "NaN mean": (_edit_meta(lambda d: d["input"].update(mean=float("nan"))), "input mean nan is not a finite"),
    "NaN std": (_edit_meta(lambda d: d["input"].update(std=float("nan"))), "input std nan is not a finite number"),
    "zero std": (_edit_meta(lambda d: d["input"].update(std=0)), "input std 0 is not a finite number above 0"),
    "unknown task": (_edit_meta(lambda d: d.update(task="ranking")), "task 'ranking' is not one of"),
    "edited task": (_edit_meta(lambda d: d.update(task="segmentation")), "mask_classes"),
    "edited task, sum recomputed": (_edit_meta(_resum(lambda d: d.update(task="detection"))),
                                    "detection (stride"),
    "short classes": (_edit_meta(lambda d: d.update(classes=d["classes"][:3])), "classes are not a list of the 10"),
    "huge input": (_edit_meta(lambda d: d["input"].update(size=100000)), "input size 100000 is not"),
    "edited metric": (_edit_meta(lambda d: d["metric"].update(value=0.99)), "edited after export"),
    "no sums (an older export)": (_edit_meta(_no_sums), "without SHA-256 sums of its files"),
    "NaN weights, sums recomputed": (_nan_weights_resummed, "holds NaN or infinity"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_an_edited_or_damaged_export_ends_in_one_line(case, good_export, tmp_path, capsys):
    edit, message = TAMPERED[case]
    folder, picture = good_export
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    edit(copy)
    assert main(["predict", str(copy), str(picture)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert message in lines[0] and "export the run again" in lines[0], lines[0]
