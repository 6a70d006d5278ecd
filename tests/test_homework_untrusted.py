"""`homework check` on folders a careless or hostile hand prepared (issue 40, "Untrusted folders").

Each case starts from a committed section copied to tmp_path (no training). Most copies are stamped
with the figure record a current `homework.record` writes (``"curves"``), so their check compares
hashes and draws nothing; the cases of folders recorded before that draw the curves again.
"""
import copy
import hashlib
import json
import os
import shutil
import struct
import sys
import zlib

import pytest

from paddle_cnn import cli, homework
from paddle_cnn.homework import schema
from paddle_cnn.homework.check import curves_match

from conftest import REPO

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
needs_links = pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")


def _copy(tmp_path, section="lenet", stamp=True):
    """A committed section in tmp_path; ``stamp``: with the figure record a current record() writes, else
    without one (as results.json was before record() kept it)."""
    folder = tmp_path / section
    shutil.copytree(REPO / "homework" / section, folder)
    if stamp:
        _stamp(folder)
    else:
        doc = json.loads((folder / "results.json").read_text())
        doc.pop("curves", None)
        (folder / "results.json").write_text(json.dumps(doc))
    return folder


def _stamp(folder):
    doc = json.loads((folder / "results.json").read_text())
    doc["curves"] = {"sha256": hashlib.sha256((folder / "curves.png").read_bytes()).hexdigest(),
                     "runs_sha256": schema.runs_sha256(doc)}
    (folder / "results.json").write_text(json.dumps(doc))


def _edit(folder, change, restamp=True):
    """Apply ``change`` to results.json as a forger would: each run's own sha256 recomputed after the edit."""
    doc = json.loads((folder / "results.json").read_text())
    change(doc)
    for entry in doc["runs"].values():
        if "sha256" in entry:
            entry["sha256"] = schema.entry_sha256(entry)
    (folder / "results.json").write_text(json.dumps(doc))
    if restamp and "curves" in doc:
        _stamp(folder)


def _refused(folder, *expected):
    """check() finds exactly one problem, a Refusal starting with ``expected[0]`` and holding the rest;
    the command line prints that one line and exits with 2."""
    (problem,) = homework.check(folder)
    assert isinstance(problem, homework.Refusal), problem
    assert problem.startswith(expected[0]) and all(e in problem for e in expected[1:]), problem
    return problem


def _cli_line(folder, capsys):
    code = cli.main(["homework", "check", str(folder)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_a_stamped_copy_passes(tmp_path, capsys):
    folder = _copy(tmp_path)
    assert homework.check(folder) == []
    assert _cli_line(folder, capsys)[0] == 0


# --------------------------------------------------------------------------- files that are not files
@needs_fifo
@pytest.mark.parametrize("name", ["results.json", "curves.png", "README.md", "x.png"])
def test_a_fifo_is_refused_without_being_opened(tmp_path, capsys, name):
    folder = _copy(tmp_path)
    target = folder / name
    if target.exists():
        target.unlink()
    os.mkfifo(target)        # opening it for reading would wait for a writer forever
    _refused(folder, f"{target}: a named pipe (FIFO), not a regular file; replace it")
    code, lines, err = _cli_line(folder, capsys)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err


@needs_fifo
def test_record_and_summary_refuse_a_fifo_results_json(tmp_path):
    folder = _copy(tmp_path)
    (folder / "results.json").unlink()
    os.mkfifo(folder / "results.json")
    with pytest.raises(homework.UnsafeInput, match="a named pipe"):
        homework.load_results(folder / "results.json")
    with pytest.raises(ValueError, match="a named pipe"):
        homework.summary(tmp_path)
    assert not (tmp_path / "README.md").exists()      # nothing written


@needs_fifo
def test_record_refuses_a_fifo_readme_before_writing_anything(tmp_path):
    import types

    from paddle_cnn import config_for

    folder = _copy(tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "README.md"}
    (folder / "README.md").unlink()
    os.mkfifo(folder / "README.md")
    result = types.SimpleNamespace(config=config_for("lenet", "cpu"))   # refused before it is looked at
    with pytest.raises(homework.UnsafeInput, match="README.md: a named pipe"):
        homework.record(result, root=tmp_path)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "README.md"} == before


@needs_links
def test_a_readme_linked_to_dev_zero_is_refused(tmp_path, capsys):
    folder = _copy(tmp_path)
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to("/dev/zero")   # read to the end, it never ends
    _refused(folder, f"{folder / 'README.md'}: a link to /dev/zero, outside {folder.resolve()}; replace the link")
    code, lines, _ = _cli_line(folder, capsys)
    assert code == 2 and len(lines) == 1


@needs_links
def test_links_out_of_the_folder_are_refused_and_links_inside_followed(tmp_path):
    folder = _copy(tmp_path / "a")
    outside = _copy(tmp_path / "b")
    (folder / "results.json").unlink()
    (folder / "results.json").symlink_to(outside / "results.json")
    _refused(folder, f"{folder / 'results.json'}: a link to {(outside / 'results.json').resolve()}, outside")

    folder = _copy(tmp_path / "c")
    (folder / "notes.txt").symlink_to("/etc/hostname")           # an entry check does not even read
    _refused(folder, f"{folder / 'notes.txt'}: a link to /etc/hostname, outside")

    folder = _copy(tmp_path / "d")
    (folder / "curves.png").rename(folder / "figure.png")
    (folder / "curves.png").symlink_to("figure.png")             # inside the folder: followed
    assert homework.check(folder) == []


@needs_links
def test_a_section_folder_linked_from_elsewhere_is_refused(tmp_path):
    root = tmp_path / "class"
    root.mkdir()
    _copy(root)                                                   # root/lenet: a real folder
    (root / "alexnet").symlink_to(_copy(tmp_path / "elsewhere", "alexnet"))
    (problem,) = homework.check(root)
    assert isinstance(problem, homework.Refusal)
    assert problem.startswith(f"{root / 'alexnet'}: a link to {(tmp_path / 'elsewhere' / 'alexnet').resolve()}")


# --------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("name, size", [("results.json", 9 << 20), ("README.md", 2 << 20),
                                        ("curves.png", 17 << 20)])
def test_a_file_over_its_size_cap_is_refused_before_reading(tmp_path, name, size):
    folder = _copy(tmp_path)
    with open(folder / name, "r+b") as f:
        f.truncate(size)          # sparse: the size is declared, no disk is used
    _refused(folder, f"{folder / name}: {size:,} bytes, more than the", "such a file can hold")


def test_a_png_declaring_a_huge_picture_is_refused_before_decoding(tmp_path):
    folder = _copy(tmp_path)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)   # 10^10 RGB pixels, 30 GB decoded
    blob = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    (folder / "curves.png").write_bytes(blob)
    _refused(folder, f"{folder / 'curves.png'}: 100000 x 100000 pixels, more than a section figure has")


# --------------------------------------------------------------------------- numbers no run gives
@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(tmp_path, text):
    folder = _copy(tmp_path)
    raw = (folder / "results.json").read_text()
    (folder / "results.json").write_text(raw.replace('"train_loss": ', f'"train_loss": {text}, "was": ', 1))
    _refused(folder, f"{folder / 'results.json'}: holds the number {text}, which no measurement gives")


def test_json_nested_a_hundred_thousand_deep_is_one_line(tmp_path, capsys):
    folder = _copy(tmp_path)
    raw = (folder / "results.json").read_text()
    (folder / "results.json").write_text(raw.replace('"section": ', '"deep": ' + "[" * 100_000 + "]" * 100_000
                                                     + ', "section": ', 1))
    _refused(folder, f"{folder / 'results.json'}: nested deeper than 32 levels")
    code, lines, err = _cli_line(folder, capsys)
    assert code == 2 and len(lines) == 1 and "RecursionError" not in err


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_an_accuracy_outside_0_1_is_refused(tmp_path, capsys, value):
    folder = _copy(tmp_path)

    def change(doc):
        doc["runs"]["lenet"]["history"][-1]["test_acc"] = doc["runs"]["lenet"]["final"]["test_acc"] = value
    _edit(folder, change)
    problems = homework.check(folder)   # the README's table no longer matches either (a plain problem)
    refused = [p for p in problems if isinstance(p, homework.Refusal)]
    assert refused == [f"{folder / 'results.json'}: run 'lenet': final.test_acc is {value}, outside [0, 1] "
                       "(1 more such values); restore the file the course wrote"]
    code, lines, _ = _cli_line(folder, capsys)
    assert code == 2 and len(lines) == len(problems)


def test_a_negative_loss_is_refused(tmp_path):
    folder = _copy(tmp_path)
    _edit(folder, lambda d: d["runs"]["lenet_relu"]["history"][3].update(train_loss=-0.2))
    assert (f"{folder / 'results.json'}: run 'lenet_relu': history[3].train_loss is -0.2, below 0; restore the "
            "file the course wrote") in homework.check(folder)


def test_a_final_that_is_not_the_last_epoch_is_refused(tmp_path, capsys):
    folder = _copy(tmp_path)
    _edit(folder, lambda d: d["runs"]["lenet"]["final"].update(test_acc=0.964))
    problems = homework.check(folder)
    assert (f"{folder / 'results.json'}: run 'lenet': final.test_acc is 0.964 but the last history epoch has "
            "0.8642; restore the file the course wrote") in problems
    assert _cli_line(folder, capsys)[0] == 2


# --------------------------------------------------------------------------- a figure that is not the run's
def test_a_recorded_figure_is_checked_by_its_hash(tmp_path):
    folder = _copy(tmp_path)
    other = REPO / "homework" / "alexnet" / "curves.png"
    shutil.copy(other, folder / "curves.png")
    _refused(folder, f"{folder / 'curves.png'}: not the figure recorded with results.json (its SHA-256 differs)")

    folder = _copy(tmp_path / "b")

    def raise_accuracy(doc):   # the final and its epoch raised together, the table regenerated
        doc["runs"]["lenet"]["history"][-1]["test_acc"] = doc["runs"]["lenet"]["final"]["test_acc"] = 0.964
    _edit(folder, raise_accuracy, restamp=False)
    homework.write_section_readme(homework.load_results(folder / "results.json"), folder / "README.md")
    _refused(folder, f"{folder / 'results.json'}: the runs differ from those curves.png was drawn from")


def test_an_old_record_is_checked_by_drawing_its_curves_again(tmp_path):
    """batchnorm/ was recorded before record() kept the figure's sum: its curves are drawn again and compared."""
    folder = _copy(tmp_path, "batchnorm", stamp=False)
    assert homework.check(folder) == []                      # the committed figure is the run's
    shutil.copy(REPO / "homework" / "alexnet" / "curves.png", folder / "curves.png")
    _refused(folder, f"{folder / 'curves.png'}: does not show the learning curves of results.json")

    folder = _copy(tmp_path / "b", "batchnorm", stamp=False)

    def raise_accuracy(doc):
        doc["runs"]["lenet_bn"]["history"][-1]["test_acc"] = doc["runs"]["lenet_bn"]["final"]["test_acc"] = 0.964
    _edit(folder, raise_accuracy)
    homework.write_section_readme(homework.load_results(folder / "results.json"), folder / "README.md")
    _refused(folder, f"{folder / 'curves.png'}: does not show the learning curves of results.json")


def test_curves_match_tolerates_another_text_rendering():
    """What another Matplotlib or FreeType changes (text hinting) is not taken for another figure."""
    import matplotlib
    from PIL import Image

    doc = homework.load_results(REPO / "homework" / "nin" / "results.json")
    with Image.open(REPO / "homework" / "nin" / "curves.png") as image:
        picture = image.convert("RGB")
    with matplotlib.rc_context({"text.hinting": "force_autohint"}):
        assert curves_match(doc, picture)
    shifted = copy.deepcopy(doc)
    shifted["runs"]["nin"]["history"][0]["train_loss"] += 0.5       # one curve starts elsewhere
    assert not curves_match(shifted, picture)


# --------------------------------------------------------------------------- exercises
def test_a_flipped_exercise_is_refused_against_the_executed_notebook(tmp_path):
    folder = _copy(tmp_path)
    doc = homework.load_results(folder / "results.json")
    assert homework.notebook_agreement(folder, doc) == []        # the notebook printed "not attempted yet"
    flipped = copy.deepcopy(doc)
    for run_ in flipped["runs"].values():
        run_["exercises"] = [{"exercise": "corr2d", "passed": True}]
    problems = homework.notebook_agreement(folder, flipped)
    assert problems and all(isinstance(p, homework.Refusal) for p in problems)
    assert problems[0] == (f"{folder / 'results.json'}: run 'lenet' records exercise corr2d as passed true, but "
                           "notebooks/executed/00_lenet.ipynb printed that it did not pass; re-run "
                           "`python tools/execute_notebooks.py 00_lenet.ipynb`, or restore lenet/ from git")


def test_an_exercise_record_of_the_wrong_kind_is_named(tmp_path):
    folder = _copy(tmp_path)
    _edit(folder, lambda d: d["runs"]["lenet"].update(exercises=[{"exercise": "corr2d", "passed": "yes"}]))
    assert homework.check(folder) == [f"{folder / 'results.json'}: runs.lenet.exercises[0].passed must be true, "
                                      "false or \"not run\", got a string \"yes\""]
