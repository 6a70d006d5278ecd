"""Homework folders: the generator, and every committed folder against its results.json."""
import json
import re

import pytest

from paddle_cnn import homework
from paddle_cnn.data import OFFICIAL_MD5
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
            assert (f"`{r['model']}` | {homework._metric_text(r)} | {reference} | "
                    f"{r['final']['examples_per_sec']:.1f} |") in text
    assert "Data: Fashion-MNIST" in text and "Measured on: " in text


def test_check_passes_a_clean_folder_and_names_each_problem(tmp_path, data_dir, monkeypatch):
    """`paddle-cnn homework check`: a fresh full-test-set run passes; a path, a subset or a stale table is named."""
    import dataclasses
    import json

    from paddle_cnn.trainer import config_for, run

    monkeypatch.setenv("PADDLE_CNN_HOMEWORK", str(tmp_path / "hw"))
    cfg = dataclasses.replace(config_for("lenet_relu", "smoke", device="cpu", accel="off"), test_subset=None)
    result = run(cfg, tmp_path / "scratch", data_dir=data_dir, progress=False, log=None)
    homework.record(result, root=tmp_path / "hw")
    folder = tmp_path / "hw" / "lenet"
    assert homework.check(tmp_path / "hw") == []
    assert homework.check(folder) == []
    doc = json.loads((folder / "results.json").read_text())
    doc["runs"]["lenet_relu"]["data"]["path"] = "/home/student/data"
    doc["runs"]["lenet_relu"]["config"]["test_subset"] = 500
    (folder / "results.json").write_text(json.dumps(doc))
    problems = homework.check(tmp_path / "hw")
    assert any("absolute path recorded" in p and "/home/student/data" in p for p in problems)
    assert any("500 test images, not the full test set" in p for p in problems)
    assert any("generated table does not match" in p for p in problems)
    (folder / "curves.png").unlink()
    assert any("curves.png: missing" in p for p in homework.check(folder))
