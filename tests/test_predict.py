"""``paddle-cnn predict``: a user's pictures (PNG/JPEG, dark or light, colour or grey, any size) through a
run folder or an export; masks and boxes drawn for U-Net and DenseBox; bad files end in one line."""
import re
import struct
import zlib

import paddle_cnn  # noqa: F401  (CPU tuning before paddle)
import numpy as np
import pytest
from PIL import Image

from paddle_cnn.cli import main
from paddle_cnn.data import CLASSES
from paddle_cnn.export import export_run
from paddle_cnn.images import model_input, read_picture
from paddle_cnn.predict import open_source, predict
from paddle_cnn.tasks.classification import ClassificationTask
from helpers import make_run

LINE = re.compile(r"^(?P<file>.+?): (?P<ranked>.+) \((?P<note>(light|dark) background .*)\)$")


def parse(line: str):
    """(file, [(class, probability)] best first, background note) of a classification line."""
    m = LINE.match(line)
    assert m, line
    ranked = [item.rsplit(" ", 1) for item in m["ranked"].split(", ")]
    return m["file"], [(c, float(p)) for c, p in ranked], m["note"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """lenet_relu trained for one smoke epoch on 6000 images, its run folder and its export."""
    from paddle_cnn import train

    run = tmp_path_factory.mktemp("predict") / "run"
    train("lenet_relu", profile="smoke", out=run, data_dir=data_dir, log=None, progress=False, train_subset=6000)
    export_run(run)
    return run


@pytest.fixture(scope="module")
def test_images(arrays):
    return arrays.test_images[:12], arrays.test_labels[:12]


def run_cli(args, capsys):
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


# --------------------------------------------------------------------------- classification
def test_fashion_mnist_test_images_get_their_class_in_the_top_3(trained, test_images, tmp_path, capsys):
    images, labels = test_images
    files = []
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"item{i}.png")
        files.append(tmp_path / f"item{i}.png")
    code, out, err = run_cli([trained, *files], capsys)
    assert code == 0 and err == [] and len(out) == len(files)
    hits = 0
    for line, f, y in zip(out, files, labels):
        name, ranked, note = parse(line)
        assert name == str(f) and note.startswith("dark background") and "kept" in note
        probs = [p for _, p in ranked]
        assert len(ranked) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0005
        assert all(c in CLASSES for c, _ in ranked)
        hits += CLASSES[y] in [c for c, _ in ranked]
    assert hits >= 9, out     # the run scores about 0.7 top-1 on the test set


def test_light_colour_and_odd_sized_pictures_are_brought_to_fashion_mnist(trained, test_images, tmp_path, capsys):
    img, truth = test_images[0][1], CLASSES[test_images[1][1]]     # dark background, as in Fashion-MNIST
    Image.fromarray(img).save(tmp_path / "dark.png")
    light = np.repeat(np.repeat(255 - img, 3, 0), 3, 1)           # 84 x 84, light background
    tinted = np.stack([light, (light * 0.9).astype(np.uint8), light], -1)
    Image.fromarray(tinted).save(tmp_path / "light.png")
    Image.fromarray(tinted).save(tmp_path / "light.jpg", quality=95)
    odd = np.full((53, 37, 3), 235, np.uint8)                     # 37 wide, 53 high, light grey
    odd[8:45, 10:27] = (40, 60, 200)                              # a dark blue item
    Image.fromarray(odd).save(tmp_path / "odd.jpg")
    Image.fromarray(255 - odd[..., 0]).convert("L").save(tmp_path / "odd_grey.png")
    rgba = np.zeros((40, 30, 4), np.uint8)                        # transparent around an opaque dark item
    rgba[5:35, 8:22] = (30, 30, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    names = ["dark.png", "light.png", "light.jpg", "odd.jpg", "odd_grey.png", "cutout.png"]
    code, out, err = run_cli([trained, *[tmp_path / n for n in names]], capsys)
    assert code == 0 and err == []
    result = {n: parse(line) for n, line in zip(names, out)}
    assert "kept" in result["dark.png"][2] and "kept" in result["odd_grey.png"][2]
    for n in ("light.png", "light.jpg", "odd.jpg", "cutout.png"):
        assert "inverted" in result[n][2], n
    dark, inverted = dict(result["dark.png"][1]), result["light.png"][1]
    assert inverted[0][0] == result["dark.png"][1][0][0] == truth
    assert inverted[0][1] == pytest.approx(dark[truth], abs=0.05)
    assert result["light.jpg"][1][0][0] == truth


def test_picture_preparation_inverts_pads_and_normalises(tmp_path):
    odd = np.full((53, 37), 250, np.uint8)
    odd[10:40, 12:25] = 20
    Image.fromarray(odd).save(tmp_path / "odd.png")
    pic = read_picture(tmp_path / "odd.png")
    assert pic.inverted and pic.original_size == (37, 53) and pic.pixels[20, 15] == 235 and pic.pixels[0, 0] == 5
    x = model_input(pic, 32, "classification", 0.286, 0.353)
    assert x.shape == (1, 1, 32, 32) and x.dtype == np.float32
    background = (5 / 255 - 0.286) / 0.353                        # the padding keeps the background's grey
    assert x[0, 0, 16, 0] == pytest.approx(background, abs=0.02) and x.max() > 1.5


def test_run_folder_and_export_agree_and_probabilities_sum_to_one(trained, test_images, tmp_path):
    for i, img in enumerate(test_images[0][:4]):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    files = sorted(tmp_path.glob("*.png"))
    from_run, from_export = predict(trained, files), predict(trained / "export", files)
    for a, b in zip(from_run, from_export):
        (fa, ra, na), (fb, rb, nb) = parse(a), parse(b)
        assert (fa, na, [c for c, _ in ra]) == (fb, nb, [c for c, _ in rb])
        assert np.allclose([p for _, p in ra], [p for _, p in rb], atol=2e-3)
    for source in (trained, trained / "export"):
        predictor = open_source(source)
        x = model_input(read_picture(files[0]), 28, "classification", 0.286, 0.353)
        probs = ClassificationTask.probabilities(predictor.outputs, x, predictor.meta.get("tta", "none"))
        assert probs.shape == (1, 10) and probs.sum() == pytest.approx(1.0, abs=1e-6) and (probs >= 0).all()


# --------------------------------------------------------------------------- masks and boxes
@pytest.mark.parametrize("name, word", [("unet", "mask"), ("densebox", "box")])
def test_scene_models_write_a_picture_beside_the_input(name, word, tmp_path, capsys):
    run = make_run(tmp_path / name, name)
    export_run(run)
    Image.fromarray(np.full((50, 70, 3), (250, 240, 230), np.uint8)).save(tmp_path / "scene.jpg")
    for source, out in ((run, tmp_path / "from_run"), (run / "export", tmp_path / "from_export")):
        code, lines, err = run_cli([source, tmp_path / "scene.jpg", "--out", out], capsys)
        assert code == 0 and err == [] and len(lines) == 1
        written = out / f"scene-{name}.png"
        assert word in lines[0] and str(written) in lines[0] and "inverted" in lines[0]
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(written) as picture:
            assert picture.size[0] > picture.size[1]             # input and prediction side by side


# --------------------------------------------------------------------------- bad input
def png_declaring(width: int, height: int) -> bytes:
    """A PNG header that declares width x height grey pixels, with no real pixel data behind it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


@pytest.fixture
def bad_files(tmp_path):
    good = np.zeros((28, 28), np.uint8)
    good[5:20, 10:18] = 200
    Image.fromarray(good).save(tmp_path / "good.png")
    blob = (tmp_path / "good.png").read_bytes()
    Image.fromarray(np.stack([good] * 3, -1)).save(tmp_path / "good.jpg")
    jpeg = (tmp_path / "good.jpg").read_bytes()
    files = {
        "text.png": (b"these are not pixels\n", "not a picture"),
        "empty.png": (b"", "not a picture"),
        "truncated.png": (blob[:len(blob) // 2], "damaged or truncated"),
        "truncated.jpg": (jpeg[:len(jpeg) // 3], "damaged or truncated"),
        "bomb.png": (png_declaring(100_000, 100_000), "too large"),
        "big.png": (png_declaring(8000, 8000), "megapixels"),
        "script.gif.py": (b"import os\n", "not a picture"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.png").mkdir()
    return tmp_path, {**{n: why for n, (_, why) in files.items()}, "folder.png": "is a folder",
                      "missing.png": "no such file"}


def test_bad_pictures_end_in_one_line_and_nothing_is_written(bad_files, capsys):
    folder, cases = bad_files
    run = make_run(folder / "unet-run", "unet")
    out = folder / "preds"
    for name, why in cases.items():
        code, lines, err = run_cli([run, folder / "good.png", folder / name, "--out", out], capsys)
        assert code == 2 and lines == [], name
        assert len(err) == 1 and err[0].startswith("error: ") and why in err[0] and name in err[0], (name, err)
        assert not out.exists(), name                      # the good picture before it was not predicted either


def test_bad_sources_end_in_one_line(tmp_path, capsys):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "export.json").write_text('{"kind": "somebody else\'s model"}')
    broken = tmp_path / "broken"
    export_run(make_run(tmp_path / "run"), broken)
    (broken / "model.pdiparams").unlink()
    cases = {empty: "neither a run folder", tmp_path / "x.png": "is a file", tmp_path / "nowhere": "no such folder",
             other: "not a paddle_cnn export", broken: "lacks model.pdiparams"}
    for source, why in cases.items():
        code, lines, err = run_cli([source, tmp_path / "x.png"], capsys)
        assert code == 2 and lines == [] and len(err) == 1 and why in err[0], (source, err)
