"""Homework folders: the generator, and every committed folder against its results.json."""
import json
import re

import pytest

from paddle_cnn import homework
from paddle_cnn.data import OFFICIAL_MD5
from paddle_cnn.homework.schema import run_key
from paddle_cnn.homework.verify import compare_epoch
from paddle_cnn.models import sections

from conftest import REPO, SHARED_DATA, make_fake_dataset

PNG = b"\x89PNG\r\n\x1a\n"
# Sections whose cpu-profile run has not been recorded yet (issue 7). A section leaves
# this set when its folder is committed; the test below fails if the two disagree.
PENDING = set()


def committed_sections():
    root = REPO / "homework"
    return sorted(p.parent.name for p in root.glob("*/results.json"))


def test_generator_round_trip_keeps_the_analysis(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=200, n_test=50)
    root = tmp_path / "homework"
    doc = homework.run("lenet_relu", "smoke", "cpu", root=root, data_dir=tmp_path / "d", progress=False, log=None)
    folder = root / "lenet"
    assert (folder / "curves.png").read_bytes()[:8] == PNG
    homework.validate(json.loads((folder / "results.json").read_text()))
    readme = (folder / "README.md").read_text()
    assert homework.section_table(doc) in readme and homework.ANALYSIS_HEADING in readme

    mine = readme.replace("（在这里用自己的话", "ReLU 比 sigmoid 收敛快得多。\n（在这里用自己的话")
    (folder / "README.md").write_text(mine)
    doc = homework.run("lenet", "smoke", "cpu", root=root, data_dir=tmp_path / "d", progress=False, log=None)
    assert list(doc["runs"]) == ["lenet", "lenet_relu"]         # the variant sits beside the main model
    after = (folder / "README.md").read_text()
    assert after.split(homework.END)[1] == mine.split(homework.END)[1]   # analysis untouched
    assert homework.section_table(doc) in after

    stale = after.replace("Settings:", "Settings (an older format):")  # as after a generator change
    (folder / "README.md").write_text(stale)
    summary = homework.summary(root).read_text()
    for r in doc["runs"].values():
        assert f"{r['final']['examples_per_sec']:.1f}" in summary
    assert (root / "summary.png").read_bytes()[:8] == PNG
    assert (folder / "README.md").read_text() == after           # block regenerated, analysis kept
    for r in doc["runs"].values():                                # subsets are part of the settings
        assert f"{r['config']['test_subset']} test examples" in after


def test_readme_without_markers_is_not_overwritten(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("my notes only\n")
    with pytest.raises(ValueError, match="no generated-table markers"):
        homework.write_section_readme({"section": "lenet", "runs": {}}, path)
    assert path.read_text() == "my notes only\n"


def test_validate_names_the_missing_field():
    with pytest.raises(ValueError, match="lacks runs"):
        homework.validate({"section": "x"})


def _shared_readme_sha256():
    """The sums the offline copy's own README publishes (independent of the sums in our code)."""
    readme = SHARED_DATA / "README.md"
    if not readme.exists():
        pytest.skip("the offline copy's README (../shared/data/fashion-mnist) is not here to check the sums against")
    return dict(re.findall(r"\| (\S+\.gz) \|[^|]*\| ([0-9a-f]{64}) \|", readme.read_text()))


def test_every_section_is_recorded_or_pending():
    done = set(committed_sections())
    assert set(sections()) == done | PENDING, "a section has neither a homework folder nor a PENDING entry"
    assert not done & PENDING, f"recorded sections still listed as pending: {sorted(done & PENDING)}"


@pytest.mark.parametrize("section", committed_sections())
def test_committed_folder_matches_its_results(section):
    folder = REPO / "homework" / section
    doc = homework.load_results(folder / "results.json")
    assert (folder / "curves.png").read_bytes()[:8] == PNG
    assert homework.generated_block(doc) in (folder / "README.md").read_text()
    assert homework.ANALYSIS_HEADING in (folder / "README.md").read_text()
    for run_ in doc["runs"].values():
        sums = run_["data"]["sha256"]
        if run_["data"]["name"].startswith("Fashion-MNIST (offline copy"):
            assert sums == _shared_readme_sha256()
        else:
            assert run_["data"]["name"] == "Fashion-MNIST (official)" and set(sums) == set(OFFICIAL_MD5)
        assert run_["profile"] in ("cpu", "course")


def test_committed_summary_matches_results():
    summary = REPO / "homework" / "README.md"
    if not committed_sections():
        pytest.skip("no homework recorded yet")
    text = summary.read_text()
    for section in committed_sections():
        for r in homework.load_results(REPO / "homework" / section / "results.json")["runs"].values():
            reference = homework.COURSE_REFERENCE.get(r["model"])
            reference = "–" if reference is None else f"[{reference[0]:.3f}]({reference[1]})"
            shown = run_key(r["model"], r.get("implementation", "reference"))   # a student run: `<model>.student`
            assert (f"`{shown}` | {homework.metric_text(r)} | {reference} | "
                    f"{r['final']['examples_per_sec']:.1f} |") in text
    assert "Data: Fashion-MNIST" in text and "Measured on: " in text
    # The site shows this table to Chinese readers: headings and the do-not-edit line in Chinese.
    assert text.splitlines()[2:5] == [homework.render.GENERATED_LINE, "",
                                      "| 章节 | 模型 | 测试指标 | d2l-zh 测试精度 | 样本/秒 | 参数量 | 轮数 | 用时 | 配置 | 设备 |"]


def test_check_passes_a_clean_folder_and_names_each_problem(tmp_path, data_dir, monkeypatch):
    """`paddle-cnn homework check`: a fresh full-test-set run passes; a path, a subset or a stale table is named."""
    import dataclasses
    import hashlib
    import json

    from paddle_cnn import config_for
    from paddle_cnn.homework.schema import runs_sha256
    from paddle_cnn.trainer import run

    monkeypatch.setenv("PADDLE_CNN_HOMEWORK", str(tmp_path / "hw"))
    cfg = dataclasses.replace(config_for("lenet_relu", "smoke", device="cpu", accel="off"), test_subset=None)
    result = run(cfg, tmp_path / "scratch", data_dir=data_dir, progress=False, log=None)
    homework.record(result, root=tmp_path / "hw")
    folder = tmp_path / "hw" / "lenet"
    assert homework.check(tmp_path / "hw") == []
    assert homework.check(folder) == []
    doc = json.loads((folder / "results.json").read_text())
    # The figure is tied to the runs it was drawn from (what check compares, without drawing it again).
    assert doc["curves"] == {"sha256": hashlib.sha256((folder / "curves.png").read_bytes()).hexdigest(),
                             "runs_sha256": runs_sha256(doc)}
    doc["runs"]["lenet_relu"]["data"]["path"] = "/home/student/data"
    doc["runs"]["lenet_relu"]["config"]["test_subset"] = 500
    (folder / "results.json").write_text(json.dumps(doc))
    problems = homework.check(tmp_path / "hw")
    assert any("absolute path recorded" in p and "/home/student/data" in p for p in problems)
    assert any("500 test images, not the full test set" in p for p in problems)
    assert any("generated table does not match" in p for p in problems)
    (folder / "curves.png").unlink()
    assert any("curves.png: missing" in p for p in homework.check(folder))


# --------------------------------------------------------------------------- a folder checked against itself
def _copy_section(tmp_path, section="lenet"):
    import shutil

    folder = tmp_path / section
    shutil.copytree(REPO / "homework" / section, folder)
    return folder


def _edit(folder, change):
    doc = json.loads((folder / "results.json").read_text())
    change(doc)
    (folder / "results.json").write_text(json.dumps(doc))


MALFORMED = {
    "task foo": (lambda d: d["runs"]["lenet"].update(task="foo"),
                 "runs.lenet.task is 'foo', not one of classification, segmentation, detection"),
    "history 5": (lambda d: d["runs"]["lenet"].update(history=5), "runs.lenet.history must be a list, got an integer 5"),
    "runs [1]": (lambda d: d.update(runs=[1]), "runs must be an object, got a list [1]"),
    "run 1": (lambda d: d["runs"].update(lenet=1), "runs.lenet must be an object, got an integer 1"),
    "loss text": (lambda d: d["runs"]["lenet"]["history"][2].update(train_loss="low"),
                  "runs.lenet.history[2].train_loss must be a number, got a string \"low\""),
    "epochs float": (lambda d: d["runs"]["lenet"]["final"].update(epochs=20.0),
                     "runs.lenet.final.epochs must be an integer, got a number 20.0"),
    "data list": (lambda d: d["runs"]["lenet"].update(data=[]), "runs.lenet.data must be an object, got a list []"),
    "no section": (lambda d: (d.clear(), d.update(x=1)), "the document lacks section, runs"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_check_names_a_malformed_field_in_one_line(tmp_path, case):
    folder = _copy_section(tmp_path)
    change, message = MALFORMED[case]
    _edit(folder, change)
    problems = homework.check(folder)
    assert problems == [f"{folder / 'results.json'}: {message}"]


def test_check_of_text_that_is_not_json_is_one_line(tmp_path, capsys):
    from paddle_cnn import cli

    folder = _copy_section(tmp_path)
    (folder / "results.json").write_text('{"section": "lenet", "runs": {')
    assert cli.main(["homework", "check", str(folder)]) == 1
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    assert line.startswith(f"{folder / 'results.json'}: not valid JSON (") and line.endswith("line 1 column 31)")


def test_check_finds_a_folder_that_disagrees_with_itself(tmp_path):
    folder = _copy_section(tmp_path)
    assert homework.check(folder) == []
    path = folder / "results.json"
    lenet = json.loads(path.read_text())["runs"]["lenet"]
    last = lenet["history"][-1]["test_acc"]

    _edit(folder, lambda d: d["runs"]["lenet"]["final"].update(test_acc=last + 0.05))
    assert f"{path}: run 'lenet': final.test_acc is {last + 0.05} but the last history epoch has {last}; restore " \
        "the file the course wrote" in homework.check(folder)

    _copy_section(tmp_path / "b")
    folder = tmp_path / "b" / "lenet"
    path = folder / "results.json"
    _edit(folder, lambda d: d["runs"]["lenet"]["history"].pop(5))    # an epoch lost in the middle
    problems = homework.check(folder)
    assert f"{path}: run 'lenet': history epochs are numbered 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, ..., " \
           "not 1..19" in problems
    assert f"{path}: run 'lenet': history holds 19 epochs but final.epochs is 20" in problems
    assert f"{path}: run 'lenet': history holds 19 epochs but config.epochs is 20" in problems
    assert any("final.wall_time is" in p and "the history's epochs add up to" in p for p in problems)

    _copy_section(tmp_path / "c")
    folder = tmp_path / "c" / "lenet"
    (folder / "curves.png").write_text("a picture of learning curves")
    assert homework.check(folder) == [f"{folder / 'curves.png'}: not a PNG image (its first bytes are not the "
                                      "PNG signature)"]
    blob = (REPO / "homework" / "lenet" / "curves.png").read_bytes()
    (folder / "curves.png").write_bytes(blob[:200])                  # the signature, then nothing that decodes
    (problem,) = homework.check(folder)
    assert problem.startswith(f"{folder / 'curves.png'}: a damaged PNG image")


# --------------------------------------------------------------------------- replaying a submission
@pytest.fixture
def recorded(tmp_path):
    """A real 2-epoch lenet_relu run on synthetic data, recorded into a homework folder: (folder, data)."""
    from paddle_cnn import config_for
    from paddle_cnn.trainer import run

    make_fake_dataset(tmp_path / "d", n_train=300, n_test=50)
    cfg = config_for("lenet_relu", "smoke", device="cpu", accel="off", epochs=2, schedule="onecycle")
    result = run(cfg, None, data_dir=tmp_path / "d", progress=False, log=None)
    homework.record(result, root=tmp_path / "hw")
    return tmp_path / "hw" / "lenet", tmp_path / "d"


def _verify(folder, data, capsys, *extra):
    from paddle_cnn import cli

    code = cli.main(["homework", "verify", str(folder), "--data-dir", str(data), *extra])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_verify_replays_the_first_epoch_exactly(recorded, capsys):
    folder, data = recorded
    code, out, err = _verify(folder, data, capsys)
    assert code == 0 and err == []
    assert out[0].startswith("replaying the first 1 epoch of 1 run") and "losses 3% relative, metrics 0.02" in out[0]
    first = json.loads((folder / "results.json").read_text())["runs"]["lenet_relu"]["history"][0]
    assert out[1] == (f"lenet_relu: 1 epoch matches exactly (same machine, Paddle, threads): train_loss "
                      f"{first['train_loss']:.4f}, train_metric {first['train_metric']:.4f}, test_acc "
                      f"{first['test_acc']:.4f}")
    assert out[2] == "verdict: the run reproduces its recorded history"
    code, out, err = _verify(folder, data, capsys, "--epochs", "2")   # both epochs: the one-cycle decay's end too
    assert code == 0 and out[1].startswith("lenet_relu: 2 epochs match exactly")


def test_verify_finds_a_changed_history(recorded, capsys):
    folder, data = recorded
    _edit(folder, lambda d: d["runs"]["lenet_relu"]["history"][0].update(
        train_loss=d["runs"]["lenet_relu"]["history"][0]["train_loss"] * 0.999))
    code, out, err = _verify(folder, data, capsys)
    assert code == 1 and err == []
    assert out[1].startswith("lenet_relu: MISMATCH in 1 epoch compared exactly: epoch 1: train_loss recorded")
    assert out[2] == "verdict: 1 of 1 runs do not reproduce their history (lenet_relu)"


def test_verify_off_this_machine_uses_the_stated_tolerance():
    want = {"epoch": 1, "examples": 512, "lr_end": 0.05, "train_loss": 1.0, "train_metric": 0.5, "test_acc": 0.8,
            "wall_time": 3.0}
    near = {**want, "train_loss": 1.02, "test_acc": 0.79, "wall_time": 9.0}
    assert compare_epoch(want, near, exact=False) == []
    assert compare_epoch(want, near, exact=True) == ["train_loss recorded 1, replayed 1.02",
                                                         "test_acc recorded 0.8, replayed 0.79"]
    far = {**want, "train_loss": 1.04, "test_acc": 0.77, "examples": 511}
    assert compare_epoch(want, far, exact=False) == ["examples recorded 512, replayed 511",
                                                         "train_loss recorded 1, replayed 1.04",
                                                         "test_acc recorded 0.8, replayed 0.77"]


def test_verify_refuses_other_data_and_bad_input_with_one_line(recorded, tmp_path, capsys):
    folder, data = recorded
    make_fake_dataset(tmp_path / "other", n_train=300, n_test=50, seed=1)
    code, out, err = _verify(folder, tmp_path / "other", capsys)
    assert code == 2 and out == [] and len(err) == 1
    assert err[0].startswith(f"error: {folder / 'results.json'}: run 'lenet_relu' was trained on other data than")
    assert "train-images-idx3-ubyte.gz" in err[0]
    code, out, err = _verify(tmp_path / "nowhere", data, capsys)
    assert code == 2 and err == [f"error: {tmp_path / 'nowhere'}: no results.json here or in its sub-folders"]
    _edit(folder, lambda d: d["runs"]["lenet_relu"]["config"].update(optimizer="lion"))
    code, out, err = _verify(folder, data, capsys)
    assert code == 2 and len(err) == 1 and "has a config this version cannot replay (unknown optimizer 'lion'" in err[0]
    code, out, err = _verify(folder, data, capsys, "--epochs", "0")
    assert code == 2 and err == ["error: --epochs must be a whole number >= 1, got 0"]


# ---------------------------------------------------------------- executed notebooks and the folders they wrote

def _executed_copy(folder, table: str, name="00_lenet.ipynb"):
    """A minimal executed notebook whose `homework.record` cell printed ``table``."""
    executed = folder.parent / "executed"
    executed.mkdir(exist_ok=True)
    nb = {"cells": [{"cell_type": "code", "source": "doc = homework.record(result)\nprint(homework.section_table(doc))",
                     "metadata": {}, "execution_count": 1,
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": table + "\n"}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (executed / name).write_text(json.dumps(nb))
    return executed


@pytest.mark.parametrize("section", committed_sections())
def test_committed_section_reads_as_its_executed_notebook_printed(section):
    """Where a notebook was executed for the website, it recorded its section: the tables agree."""
    folder = REPO / "homework" / section
    assert homework.notebook_agreement(folder, homework.load_results(folder / "results.json")) == []


def test_notebook_agreement_names_the_changed_figure_and_the_missing_run(tmp_path):
    folder = _copy_section(tmp_path)
    doc = homework.load_results(folder / "results.json")
    printed = homework.section_table(doc)
    executed = _executed_copy(folder, printed)
    assert homework.notebook_agreement(folder, doc, executed) == []
    # A later `homework run` (or a hand edit) changed one figure of the folder: named, with what to do.
    doc["runs"]["lenet"]["final"]["examples_per_sec"] += 1000.0
    [problem] = homework.notebook_agreement(folder, doc, executed)
    assert "`lenet` examples/sec is" in problem and "notebooks/executed/00_lenet.ipynb" in problem
    assert "tools/execute_notebooks.py 00_lenet.ipynb" in problem
    # A run the notebook never printed.
    doc = homework.load_results(folder / "results.json")
    _executed_copy(folder, "\n".join(line for line in printed.splitlines() if "`lenet_relu`" not in line))
    [problem] = homework.notebook_agreement(folder, doc, executed)
    assert "run `lenet_relu` is missing from notebooks/executed/00_lenet.ipynb" in problem
    # No executed copy for the section: nothing to compare.
    assert homework.notebook_agreement(folder, doc, tmp_path / "nowhere") == []


def test_settings_line_states_the_processes_that_ran():
    """A notebook trains in one process even where the profile gives the command line two."""
    entry = {"config": {"resize": 28, "epochs": 1, "batch_size": 256, "optimizer": "sgd", "lr": 0.9,
                        "schedule": "cosine", "weight_decay": 0.0, "augment": "none", "seed": 0, "nproc": 2}}
    assert "2 processes" in homework.settings_line("lenet", entry)           # no run record: the config
    assert "processes" not in homework.settings_line("lenet", {**entry, "run": {"world": 1}})
    assert "2 processes" in homework.settings_line("lenet", {**entry, "run": {"world": 2}})
