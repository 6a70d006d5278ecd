"""Student runs, per-student seeds, exported programs, pack and grade (issue 37).

One real smoke-profile training run of lenet_relu (1 epoch) is recorded once,
as the reference run and as the student's run of student s01, with its
exported program; every other submission is derived from that folder (another
student's id and seed, their own source and analysis), so the whole class is
graded from one tiny training run.
"""
import csv
import json
import os
import shutil
import zipfile

import pytest

from paddle_cnn import homework
from paddle_cnn.homework import grade as grading
from paddle_cnn.homework import programs
from paddle_cnn.homework.pack import pack
from paddle_cnn.homework.render import ANALYSIS_TEMPLATE, write_section_readme
from paddle_cnn.homework.schema import entry_sha256, load_results
from paddle_cnn.homework.student import normalised_source, seed_for, source_sha256

SOURCE = '''\
def my_block(x):
    """The student's own code."""
    y = x * 2   # doubled
    return y
'''


def _analysis(text):
    return ANALYSIS_TEMPLATE.split("\n")[0] + "\n\n" + text + "\n"


def _set_analysis(folder, text):
    readme = folder / "README.md"
    body = readme.read_text(encoding="utf-8")
    head = body.split(homework.END)[0] + homework.END + "\n\n"
    readme.write_text(head + _analysis(text), encoding="utf-8")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, data_dir):
    """s01's homework root: lenet_relu trained once (smoke), recorded as reference and as student run."""
    from paddle_cnn.trainer import train

    root = tmp_path_factory.mktemp("hw") / "s01"
    # accel off: the test needs no oneDNN build (another test session may hold its lock for a while)
    result = train("lenet_relu", "smoke", data_dir=data_dir, seed=seed_for("s01"), accel="off", log=None,
                   progress=False)
    homework.record(result, root=root, student="s01")
    doc = homework.record(result, root=root, student="s01", implementation="student", source=SOURCE,
                          exercise=True)
    _set_analysis(root / "lenet", "ReLU 收敛比 sigmoid 快，s01 的分析。")
    return root, doc, result


def _derive(src_root, dest_root, student, source=SOURCE, analysis=None, history_nudge=0.0):
    """A copy of a recorded root as if ``student`` had recorded it: id, seed, source, sums, analysis."""
    shutil.copytree(src_root, dest_root)
    folder = dest_root / "lenet"
    doc = load_results(folder / "results.json")
    doc["student"] = {"id": student, "seed": seed_for(student)}
    for name, run_ in doc["runs"].items():
        run_["student"] = {"id": student, "seed": seed_for(student)}
        run_["config"]["seed"] = seed_for(student)
        if history_nudge:
            run_["history"][-1]["train_loss"] += history_nudge
            run_["final"]["train_loss"] = run_["history"][-1]["train_loss"]
        if run_.get("implementation") == "student":
            (folder / run_["source"]["file"]).write_text(source, encoding="utf-8")
            run_["source"]["sha256"] = source_sha256(source)
        run_["sha256"] = entry_sha256(run_)
    (folder / "results.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    write_section_readme(doc, folder / "README.md")
    if analysis is not None:
        _set_analysis(folder, analysis)
    return dest_root


def _slow_program(folder):
    """A program of 200 convolutions at 28x28 (allowed operators, ~1.5 T multiply-adds over 256 images)."""
    import paddle
    from paddle import nn

    layers = [nn.Conv2D(1, 64, 3, padding=1)] + [nn.Conv2D(64, 64, 3, padding=1) for _ in range(200)]
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(64, 10))
    net.eval()
    for name in os.listdir(folder):
        if name.startswith("model."):
            os.unlink(folder / name)
    paddle.jit.save(net, str(folder / "model"),
                    input_spec=[paddle.static.InputSpec([None, 1, 28, 28], "float32", "image")])
    from paddle_cnn.export import META, meta_sha256                     # its export.json sums made to match
    meta = json.loads((folder / META).read_text())
    meta["sha256"] = {n: programs.file_sha256(folder / n) for n in meta["sha256"]}
    meta["meta_sha256"] = meta_sha256(meta)
    (folder / META).write_text(json.dumps(meta))


def test_normalised_source_ignores_layout_comments_and_docstrings():
    same = 'def my_block(x):\n\n    y = x*2\n    return y  # out\n'
    assert normalised_source(same) == normalised_source(SOURCE)
    assert source_sha256(same) == source_sha256(SOURCE)
    assert source_sha256(SOURCE.replace("y", "z")) != source_sha256(SOURCE)
    assert seed_for("s01") == seed_for("s01") != seed_for("s02")


def test_record_keeps_both_runs_with_seed_source_and_program(recorded):
    root, doc, result = recorded
    folder = root / "lenet"
    assert list(doc["runs"]) == ["lenet_relu", "lenet_relu.student"]
    ref, mine = doc["runs"]["lenet_relu"], doc["runs"]["lenet_relu.student"]
    assert ref["implementation"] == "reference" and mine["implementation"] == "student"
    assert doc["student"] == {"id": "s01", "seed": seed_for("s01")} == ref["student"]
    assert ref["config"]["seed"] == seed_for("s01")
    assert mine["source"]["sha256"] == source_sha256(SOURCE) == source_sha256((folder / mine["source"]["file"])
                                                                              .read_text())
    assert mine["exercise"] == {"name": "lenet_relu", "outcome": "passed"}   # LeNet's network exercise
    for run_ in (ref, mine):
        prog = run_["program"]
        assert programs.folder_sums(folder / prog["path"]) == prog["files"]
        assert prog["committed"] and prog["precision"] == "float32"   # 250 KB; this CPU has no fp16 conv kernel
        assert prog["fp16"]["kept"] is False and "float16" in prog["fp16"]["reason"]
        # The program re-scores exactly what the run claimed, on the same test images.
        assert abs(prog["rescored"] - run_["final"]["test_acc"]) <= 0.003
        assert run_["sha256"] == entry_sha256(run_)
    readme = (folder / "README.md").read_text()
    assert "| `lenet_relu.student` |" in readme and "| `lenet_relu` |" in readme
    # The check of the folder holds but for the smoke run's test subset; the sums are checked too.
    assert all("test images, not the full test set" in p for p in homework.check(root))
    with pytest.raises(ValueError, match="seed"):
        homework.record(result, root=root, student="s02")              # s01's run is not s02's


def test_missing_student_run_is_said(tmp_path):
    doc = {"section": "resnet", "runs": {}}
    from paddle_cnn.homework.render import student_lines

    assert any("Student run: missing" in line for line in student_lines(doc))
    assert not student_lines({"section": "batchnorm", "runs": {}})    # no network slot: nothing is missing


def test_operators_outside_the_allow_list_are_refused(recorded, tmp_path):
    root, doc, _ = recorded
    src = root / "lenet" / doc["runs"]["lenet_relu"]["program"]["path"]
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    if not (src / "model.json").is_file():   # Paddle 2.6: a protobuf model.pdmodel (no PIR JSON)
        assert "conv2d" in programs.check_operators(src)
        blob = (bad / "model.pdmodel").read_bytes()
        assert b"relu" in blob
        (bad / "model.pdmodel").write_bytes(blob.replace(b"relu", b"xelu"))   # same length: still valid protobuf
        with pytest.raises(programs.ProgramError, match="xelu"):
            programs.check_operators(bad)
        return
    assert "1.conv2d" in programs.check_operators(src)
    text = (bad / "model.json").read_text().replace('"1.relu"', '"7.my_custom_op"')
    (bad / "model.json").write_text(text)
    with pytest.raises(programs.ProgramError, match="7.my_custom_op"):
        programs.check_operators(bad)
    doc = json.loads((src / "model.json").read_text())                # a parameter shape no file could hold
    ops = doc["program"]["regions"][0]["blocks"][0]["ops"]
    next(op for op in ops if op["#"] == "p")["O"]["TT"]["D"][1] = [100000, 100000]
    (bad / "model.json").write_text(json.dumps(doc))
    with pytest.raises(programs.ProgramError, match="declares 38,147 MB of parameters"):
        programs.check_operators(bad)


def test_grade_a_class(recorded, tmp_path, data_dir):
    src, doc, _ = recorded
    subs = tmp_path / "subs"
    subs.mkdir()
    work = tmp_path / "work"
    other = SOURCE.replace("x * 2", "x + x")

    # s01: honest, the real recording.
    pack("s01", src, subs / "s01.zip", log=None)
    # s02: honest, own source, own analysis, own history; s04 copies s02 and re-records it under its own id.
    s02 = _derive(src, work / "s02", "s02", other, "s02 写的分析：最大池化保留了边缘。", history_nudge=1e-3)
    pack("s02", s02, subs / "s02.zip", log=None)
    s04 = _derive(s02, work / "s04", "s04", other)
    pack("s04", s04, subs / "s04.zip", log=None)
    # s03: edits its claimed accuracy after recording (final and last epoch, so the run agrees with itself).
    s03 = _derive(src, work / "s03", "s03", SOURCE.replace("2", "3"), "s03 的分析。", history_nudge=2e-3)
    path = s03 / "lenet" / "results.json"
    edited = json.loads(path.read_text())
    for run_ in edited["runs"].values():
        run_["final"]["test_acc"] = run_["history"][-1]["test_acc"] = 0.95
    path.write_text(json.dumps(edited))
    write_section_readme(edited, s03 / "lenet" / "README.md")
    pack("s03", s03, subs / "s03.zip", log=None)
    # s05: not a zip; s06: a link out of its folder; s07: a zip bomb; s08: a FIFO; s09: a 1 GB file.
    (subs / "s05.zip").write_bytes(b"PK\x03\x04 this is not really an archive")
    s06 = _derive(src, subs / "s06", "s06", other.replace("+", "-"), "s06", 6e-3)
    (s06 / "lenet" / "notes.txt").symlink_to("/etc/hostname")
    with zipfile.ZipFile(subs / "s07.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("lenet/results.json", b"\0" * (40 * 2**20))
    s08 = _derive(src, subs / "s08", "s08", other.replace("+", "*"), "s08", 8e-3)
    os.mkfifo(s08 / "lenet" / "results.json.fifo")
    s09 = _derive(src, subs / "s09", "s09", other.replace("+", "/"), "s09", 9e-3)
    with open(s09 / "lenet" / "big.bin", "wb") as f:
        f.truncate(2**30)                                               # sparse: 1 GB declared, nothing written
    # s10: a packed folder missing a file its manifest lists.
    s10 = subs / "s10"
    with zipfile.ZipFile(pack("s10", _derive(src, work / "s10", "s10", other.replace("x +", "1 +"), "s10", 1e-2),
                              work / "s10.zip", log=None)) as zf:
        zf.extractall(s10)
    os.unlink(s10 / "lenet" / "curves.png")
    # s11: honest in every sum, but its program is far too slow for the time limit.
    s11 = _derive(src, work / "s11", "s11", other.replace("x +", "2 *"), "s11", 1.1e-2)
    doc11 = load_results(s11 / "lenet" / "results.json")
    for run_ in doc11["runs"].values():
        _slow_program(s11 / "lenet" / run_["program"]["path"])
        run_["program"]["files"] = programs.folder_sums(s11 / "lenet" / run_["program"]["path"])
        run_["sha256"] = entry_sha256(run_)
    (s11 / "lenet" / "results.json").write_text(json.dumps(doc11))
    write_section_readme(doc11, s11 / "lenet" / "README.md")
    _set_analysis(s11 / "lenet", "s11")
    pack("s11", s11, subs / "s11.zip", log=None)

    # s12: honest in every sum, but trained on other data (its own copy of "Fashion-MNIST").
    s12 = _derive(src, work / "s12", "s12", other.replace("x +", "3 *"), "s12", 1.2e-2)
    doc12 = load_results(s12 / "lenet" / "results.json")
    for run_ in doc12["runs"].values():
        run_["data"]["sha256"] = {k: "0" * 64 for k in run_["data"]["sha256"]}
        run_["sha256"] = entry_sha256(run_)
    (s12 / "lenet" / "results.json").write_text(json.dumps(doc12))
    write_section_readme(doc12, s12 / "lenet" / "README.md")
    _set_analysis(s12 / "lenet", "s12")
    pack("s12", s12, subs / "s12.zip", log=None)

    out = tmp_path / "grades.csv"
    grading.grade(subs, out, jobs=2, timeout=10, test_data=data_dir, accept_smoke=True, progress=False, log=None)
    rows = {r["student"]: r for r in csv.DictReader(out.open())}
    assert len(rows) == 12 and set(next(iter(rows.values()))) == set(grading.COLUMNS)

    def flags(s):
        return set(filter(None, rows[s]["flags"].split(";")))

    honest = rows["s01"]
    assert honest["status"] == "ok" and flags("s01") == set(), honest["reason"]
    assert abs(float(honest["rescored"]) - float(honest["claimed"])) <= 0.003
    assert abs(float(honest["rescored"]) - doc["runs"]["lenet_relu.student"]["final"]["test_acc"]) <= 0.003
    assert honest["exercise"] == "passed" and honest["run"] == "lenet_relu.student"
    assert int(honest["points"]) == int(honest["max_points"]) == 10
    for s in ("s02", "s04"):        # the copy and its original: same source, analysis, history, other seeds
        assert rows[s]["status"] == "ok" and flags(s) == {"copied_source", "copied_analysis", "copied_history"}
    assert rows["s03"]["status"] == "failed check" and {"edited", "claim_contradicted"} <= flags("s03")
    assert rows["s03"]["points"] == "0" and "re-scores" in rows["s03"]["reason"]
    reasons = {"s05": "not a readable zip archive", "s06": "symbolic link out of the folder",
               "s07": "zip bomb", "s08": "FIFO", "s09": "1,024 MB"}
    for s, why in reasons.items():
        assert rows[s]["status"] == "unreadable" and why in rows[s]["reason"], (s, rows[s])
    assert rows["s10"]["status"] == "failed check" and "curves.png is listed in the manifest but missing" \
        in rows["s10"]["reason"] and "edited" in flags("s10")
    assert rows["s11"]["status"] == "timeout" and "10 s" in rows["s11"]["reason"]
    assert rows["s12"]["status"] == "ok" and flags("s12") == {"foreign_data"}
    assert int(rows["s12"]["points"]) == 3                            # the exercise only: no run counts
    assert not any("paddle-cnn-grade" in r["reason"] for r in rows.values())   # no private temp path in a reason
    feedback = (tmp_path / "feedback" / "s03.md").read_text()
    assert "未成立" in feedback and "claim_contradicted" in feedback
    assert "成立：练习检查：passed" in (tmp_path / "feedback" / "s01.md").read_text()


@pytest.mark.parametrize("section", ["vgg", "nin", "googlenet", "resnet", "densenet", "unet"])   # alexnet: the block is the network
def test_the_package_block_in_its_slot_builds_the_reference_network(section):
    """The slot's network with the package's own block is the registered model: same parameters, same output;
    each variant that slots in builds and runs."""
    import numpy as np
    import paddle

    from paddle_cnn import exercises
    from paddle_cnn.config import config_for
    from paddle_cnn.homework.student import SLOTS, build_network
    from paddle_cnn.models.factory import build_model

    slot = SLOTS[section]
    printed = next(n for n in slot.exercises if not exercises.EXERCISES[n].variant_of)   # the package's block
    block = exercises.reference(printed)
    cfg = config_for(slot.model, "smoke")
    ref, mine = build_model(cfg), build_network(section, block, cfg, printed)
    assert [list(p.shape) for p in ref.parameters()] == [list(p.shape) for p in mine.parameters()]
    ref.eval()
    mine.eval()
    x = paddle.to_tensor(np.random.RandomState(0).rand(2, 1, cfg.resize, cfg.resize).astype("float32"))
    np.testing.assert_allclose(mine(x).numpy(), ref(x).numpy(), rtol=1e-5, atol=1e-5)   # same seed, same weights
    for variant in (n for n in slot.exercises if n != printed):
        other = build_network(section, exercises.reference(variant), cfg, variant)
        other.eval()
        assert list(other(x).shape) == list(ref(x).shape)
        assert sum(p.size for p in other.parameters()) != sum(p.size for p in ref.parameters())


def test_large_programs_are_git_ignored_and_small_ones_not(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    root = tmp_path / "homework"
    programs.update_gitignore(root, "resnet", "resnet18", committed=False)
    programs.update_gitignore(root, "lenet", "lenet_relu", committed=True)
    for rel in ("resnet/programs/resnet18/model.pdiparams", "lenet/programs/lenet_relu/model.pdiparams"):
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_bytes(b"x")
    ignored = subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "--no-index",
                              "homework/resnet/programs/resnet18/model.pdiparams",
                              "homework/lenet/programs/lenet_relu/model.pdiparams"],
                             capture_output=True, text=True).stdout.split()
    assert ignored == ["homework/resnet/programs/resnet18/model.pdiparams"]
    programs.update_gitignore(root, "resnet", "resnet18", committed=True)     # it shrank: committed again
    assert "resnet18" not in (root / ".gitignore").read_text()


def test_pack_refuses_links_and_other_students_runs(recorded, tmp_path):
    src, _, _ = recorded
    with pytest.raises(ValueError, match="not student s02"):
        pack("s02", src, tmp_path / "x.zip", log=None)
    copy = tmp_path / "s01"
    shutil.copytree(src, copy)
    (copy / "lenet" / "source" / "link.py").symlink_to("/etc/hostname")
    with pytest.raises(ValueError, match="symbolic link"):
        pack("s01", copy, tmp_path / "y.zip", log=None)
    assert not (tmp_path / "y.zip").exists()


def test_verify_replays_the_reference_run_and_never_the_students(recorded, data_dir):
    root, _, _ = recorded
    lines = []
    assert homework.verify(root, data_dir=data_dir, log=lines.append)
    assert any(line.startswith("lenet_relu.student: not replayed") for line in lines)
    assert any(line.startswith("lenet_relu: 1 epoch matches exactly") for line in lines)


def test_cli_refuses_bad_grade_and_pack_input_in_one_line(tmp_path, capsys, monkeypatch):
    from paddle_cnn import cli

    monkeypatch.delenv("PADDLE_CNN_STUDENT", raising=False)
    assert cli.main(["homework", "grade", str(tmp_path / "none"), "--out", str(tmp_path / "g.csv")]) == 2
    assert cli.main(["homework", "grade", str(tmp_path), "--jobs", "0"]) == 2
    assert cli.main(["homework", "pack", "--root", str(tmp_path)]) == 2
    assert cli.main(["homework", "pack", "--student", "../x", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err), err
    assert "is not a folder" in err[0] and "--jobs" in err[1] and "--student ID" in err[2] and "'../x'" in err[3]
    assert not (tmp_path / "g.csv").exists()


def test_train_student_builds_the_section_network_with_the_students_code(data_dir):
    from paddle_cnn import exercises

    result = homework.train_student("lenet", exercises.reference("lenet_relu"), "smoke", student="s01",
                                    data_dir=data_dir, accel="off", log=None, progress=False)
    assert result.config.seed == seed_for("s01") and result.config.model == "lenet_relu"
    assert result.run_info["student_exercise"] == "lenet_relu"
    assert type(result.model).__name__ == "Sequential"        # the exercise's network, not the registry's LeNet
    assert 0 <= result.final["test_acc"] <= 1
    with pytest.raises(ValueError, match="does not slot into"):
        homework.train_student("resnet", exercises.reference("residual"), exercise="unet_up")


def test_a_student_id_sets_the_seed_of_every_training_unless_one_is_given(monkeypatch):
    """train(...) in a notebook, train_student and `paddle-cnn train` all read PADDLE_CNN_STUDENT through config_for."""
    from paddle_cnn.config import config_for
    from paddle_cnn.homework.student import seed_for

    assert config_for("resnet18", "smoke").seed == 0
    monkeypatch.setenv("PADDLE_CNN_STUDENT", "2026001")
    assert config_for("resnet18", "smoke").seed == seed_for("2026001") == 160192429
    assert config_for("lenet", "cpu").seed == 160192429
    assert config_for("resnet18", "smoke", seed=7).seed == 7
    monkeypatch.setenv("PADDLE_CNN_STUDENT", "no spaces allowed")
    with pytest.raises(ValueError, match="student id 'no spaces allowed' is not usable"):
        config_for("resnet18", "smoke")


def test_the_pre_activation_resnet_ends_with_batch_norm_and_relu():
    """Pre-activation blocks add unnormalised sums: the slot network normalises the last stage (He et al., 2016b)."""
    from paddle import nn

    from paddle_cnn import exercises
    from paddle_cnn.config import config_for
    from paddle_cnn.homework.student import build_network

    net = build_network("resnet", exercises.reference("residual_preact"), config_for("resnet18", "smoke"))
    last = list(net.stages.children())[-1]
    assert [type(layer) for layer in last.children()] == [nn.BatchNorm2D, nn.ReLU]


def test_a_source_that_is_the_course_sample_answer_is_flagged():
    """The executed chapter's answers (tools/answers/) are public: a student who hands one in is flagged."""
    from paddle_cnn.homework import grade as G
    from paddle_cnn.homework.student import source_sha256

    answers = G.sample_answer_sums()
    assert "residual_preact.py" in answers.values()
    text = (G.ANSWERS / "residual_preact.py").read_text(encoding="utf-8")
    copied = text[text.index("class "):].replace("    def forward", "    # mine\n    def forward")  # a comment added
    own = copied.replace("shortcut = x if", "skip = x if").replace("y + shortcut", "y + skip")
    graded = {"a": {"sections": [{"section": "resnet", "flags": [], "fingerprints": {"source": source_sha256(copied)}}]},
              "b": {"sections": [{"section": "resnet", "flags": [], "fingerprints": {"source": source_sha256(own)}}]}}
    G._cross_flags(graded)
    [a], [b] = graded["a"]["sections"], graded["b"]["sections"]
    assert a["flags"] == ["sample_answer"] and "tools/answers/residual_preact.py" in a["cross"][0]
    assert b["flags"] == []


def test_the_student_comparison_reads_the_gap_against_the_noise():
    from paddle_cnn.homework import student_comparison

    def run_(acc, **config):
        return {"task": "classification", "final": {"test_acc": acc},
                "config": {"model": "resnet18", "seed": 0, "test_subset": None, **config}}

    doc = {"runs": {"resnet18": run_(0.9000), "resnet18.student": run_(0.9050)}}
    assert student_comparison(doc) == (
        "你的网络 `resnet18.student` 的测试精度 0.9050，参考实现 `resnet18` 0.9000，相差 +0.0050，在两次测量之差的 "
        "95% 区间 ±0.0082 之内，是噪声：这个测试集分不出两者；两次训练的配置和随机种子相同，只有块不同。")
    doc["runs"]["resnet18.student"] = run_(0.9300, seed=7)
    assert "相差 +0.0300，超出两次测量之差的 95% 区间 ±0.0077；两次训练的配置不同" in student_comparison(doc)
    assert student_comparison({"runs": {"resnet18": run_(0.9)}}) == ""


def test_a_git_ignored_program_may_be_absent_only_in_the_repository(tmp_path):
    """Programs over 10 MB are git-ignored: a checkout lacks them by design, a student's folder must not."""
    from paddle_cnn.homework.check import recorded_sums_problems
    from paddle_cnn.homework.schema import ROOT

    folder = tmp_path / "resnet"
    shutil.copytree(ROOT / "resnet", folder, ignore=shutil.ignore_patterns("programs"))
    run_ = json.loads((folder / "results.json").read_text())["runs"]["resnet18"]
    assert run_["program"]["committed"] is False
    assert recorded_sums_problems(folder, run_) == [f"its program {run_['program']['path']}/ is missing"]
    assert recorded_sums_problems(folder, run_, ignored_absent=True) == []
