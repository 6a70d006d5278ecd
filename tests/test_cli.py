"""The command line, end to end in subprocesses (as a student runs it)."""
import json

import pytest

from conftest import make_fake_dataset
from helpers import run_cli


def test_list_shows_registered_models():
    """One row per registered model, in registry order, with its section, task, minimum size and profiles."""
    from paddle_cnn.models import REGISTRY

    proc = run_cli("list")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:4] == ["model", "section", "task", "min"]
    assert [row.split()[0] for row in rows] == list(REGISTRY)
    for row, (name, spec) in zip(rows, REGISTRY.items()):
        fields = row.split()
        assert fields[1:4] == [spec.section, spec.task, str(spec.min_size)], row
        cpu = spec.profiles["cpu"]
        assert f"cpu:{cpu['resize']}/{cpu['epochs']}/{cpu['batch_size']}/{cpu['lr']}" in fields[4:], row


def test_train_end_to_end(tmp_path):
    make_fake_dataset(tmp_path / "d", n_train=200, n_test=50)
    out = tmp_path / "run"
    proc = run_cli("train", "lenet_relu", "--profile", "smoke", "--epochs", "2", "--data-dir", str(tmp_path / "d"),
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("epoch 2/2: loss") for line in lines)
    assert any(line.startswith("loss ") and line.endswith("examples/sec on cpu") for line in lines)
    results = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2]
    assert results["config"]["epochs"] == 2 and results["environment"]["device"] == "cpu"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # resume with more epochs runs only the third
    proc = run_cli("train", "lenet_relu", "--profile", "smoke", "--epochs", "3", "--data-dir", str(tmp_path / "d"),
                   "--out", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "epoch 3/3" in proc.stdout and "epoch 1/3" not in proc.stdout


def test_data_check(tmp_path):
    make_fake_dataset(tmp_path)
    proc = run_cli("data", "check", "--data-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "unrecognised copy" in proc.stdout and "train 60 images, test 20 images" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "lenet9"], "unknown model 'lenet9'; choose one of"),
    (["train", "lenet", "--profile", "fast"], "no profile 'fast'"),
    (["train", "lenet", "--epochs", "0"], "epochs must be a positive"),
    (["train", "lenet", "--lr", "-1"], "learning rate must be a positive"),
    (["train", "lenet", "--resize", "4"], "at least 12x12"),
])
def test_bad_arguments_give_one_clear_line(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_missing_data_folder(tmp_path):
    proc = run_cli("data", "check", "--data-dir", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_every_training_setting_is_a_flag():
    """The train flags are generated from TrainConfig: each field (but model/profile/dicts) parses back."""
    from dataclasses import fields

    from paddle_cnn.cli import build_parser
    from paddle_cnn import TrainConfig

    samples = {int: "3", float: "0.5", str: None, bool: None}
    parser = build_parser()
    for f in fields(TrainConfig):
        if not f.metadata.get("cli", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            args = parser.parse_args(["train", "lenet", flag])
            assert getattr(args, f.name) is True
            continue
        choices = f.metadata.get("choices")
        value = choices[-1] if choices else {"int": "3", "float": "0.5", "Optional[int]": "7",
                                             "Optional[str]": "x", "str": "x"}[str(f.type)]
        args = parser.parse_args(["train", "lenet", flag, value])
        assert str(getattr(args, f.name)) == value, f.name
    assert samples  # the table above covers every annotation the dataclass uses


def test_set_reaches_model_and_task_arguments():
    from paddle_cnn.cli import parse_sets

    assert parse_sets(["base_width=16", "max_items=6"], "unet") == {"model_args": {"base_width": 16},
                                                                     "task_args": {"max_items": 6}}
    assert parse_sets(["model_args.stage_arch=((64, 1),)"], "resnet18") == {"model_args": {"stage_arch": ((64, 1),)}}
    with pytest.raises(ValueError, match="has no argument 'widht'.*base_width"):
        parse_sets(["widht=16"], "unet")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["base_width"], "unet")


@pytest.mark.parametrize("args, message", [
    (["--resize", "5000", "--profile", "smoke"], "does not fit in memory"),
    (["--batch-size", "100000", "--profile", "smoke"], "is larger than the 512 training examples"),
    (["--step-every", "0"], "step_every must be a positive"),
    (["--set", "widht=3"], "has no argument 'widht'"),
    (["--augment", "rotate"], "unknown augment 'rotate'; choose one of none, flip, crop, crop+flip"),
])
def test_bad_input_found_as_a_user_would(tmp_path, args, message):
    make_fake_dataset(tmp_path / "d", n_train=600, n_test=20)
    model = "alexnet" if "--resize" in args else "lenet_relu"
    proc = run_cli("train", model, "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                   "--accel", "off", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_out_naming_a_file(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    proc = run_cli("train", "lenet_relu", "--profile", "smoke", "--out", str(tmp_path / "taken"))
    assert proc.returncode == 2 and "is a file; name a folder" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "taken").read_text() == "not a folder"      # nothing already written is lost


def test_doctor_json_and_table(tmp_path):
    proc = run_cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["paddle"]["version"] and "data" in report
    proc = run_cli("doctor")
    assert proc.returncode == 0 and "paddle" in proc.stdout.lower()
