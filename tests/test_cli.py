"""Tests for the command line (mrcnn_edu/__main__.py): option parsing and error messages, then
train -> evaluate -> predict with the real tiny model on a few synthetic images, a NaN stop, and
two CPU processes under torchrun.
"""
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pycocotools import mask as mask_utils

from mrcnn_edu.__main__ import UsageError, build_config, main, make_parser, parse_assignment
from mrcnn_edu.config import preset
from mrcnn_edu.data import make_shapes_dataset
from mrcnn_edu.engine.checkpoint import load_checkpoint, load_model
from mrcnn_edu.engine.runlog import read_log

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, key, value", [
    ("lr=0.005", "lr", 0.005),
    ("lr=1", "lr", 1.0),  # an int for a float field becomes a float
    ("max_iters=30", "max_iters", 30),
    ("lr_steps=100,200", "lr_steps", (100, 200)),
    ("lr_steps=[100]", "lr_steps", (100,)),
    ("lr_steps=50", "lr_steps", (50,)),
    ("grad_clip=null", "grad_clip", None),
    ("amp=true", "amp", True),
    ("norm=frozen_bn", "norm", "frozen_bn"),
    ("categories=circle,square", "categories", ("circle", "square")),
    ("categories=circle", "categories", ("circle",)),
    ("categories=null", "categories", None),
])
def test_set_values_take_the_field_type(text, key, value):
    assert parse_assignment(text) == (key, value)


@pytest.mark.parametrize("text, message", [
    ("learning_rate=0.1", "no field 'learning_rate'"),
    ("lr", "key=value"),
    ("max_iters=1.5", "integer"),
    ("amp=1", "true or false"),
    ("lr=null", "cannot be null"),
])
def test_bad_set_is_named(text, message):
    with pytest.raises(UsageError, match=message):
        parse_assignment(text)


def test_options_then_sets_build_the_config():
    args = make_parser().parse_args(["train", "--output", "runs/x", "--categories", "circle",
                                     "--set", "lr=0.5", "--set", "batch_size=4"])
    expected = dataclasses.replace(preset("tiny"), output_dir="runs/x", categories=("circle",),
                                   lr=0.5, batch_size=4)
    assert build_config(args) == expected


def test_unknown_preset_exits_2_naming_it(capsys):
    assert main(["train", "--preset", "huge", "--data", "."]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def test_missing_checkpoint_exits_2_naming_it(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "gone.pt"), "--data", str(tmp_path)]) == 2
    assert "gone.pt" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "gone.pt"), "x.png", "-o", str(tmp_path)]) == 2
    assert "gone.pt" in capsys.readouterr().err


@pytest.mark.parametrize("device, message", [("gpu0", "'gpu0'"), ("cuda:7", "cuda:7")])
def test_bad_device_exits_2_naming_it(device, message, tmp_path, capsys):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    assert main(["train", "--device", device, "--data", str(tmp_path),
                 "--output", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_missing_data_dir_exits_2_naming_it(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nodata"), "--output", str(tmp_path)]) == 2
    assert "nodata" in capsys.readouterr().err


# ---------------------------------------------------------------- the real tiny model


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    splits = {preset("tiny").train_split: 4, preset("tiny").val_split: 2}
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), splits=splits, seed=0)


TINY = ["--set", "min_size=128", "--set", "max_size=160", "--set", "batch_size=2",
        "--set", "checkpoint_every=2", "--no-progress"]


def test_train_evaluate_predict(shapes_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(shapes_root), "--output", str(run),
                 "--max-iters", "3", *TINY]) == 0
    out = capsys.readouterr().out
    for name in ("config.json", "log.jsonl", "checkpoint.pt", "loss_curve.png", "metrics.json",
                 "predictions.png"):
        assert (run / name).is_file(), name
        assert str(run / name) in out  # the summary says where everything is
    assert [r["iteration"] for r in read_log(run / "log.jsonl")] == [1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"val", "train"}
    assert set(metrics["val"]["pycocotools"]) == {"bbox", "segm"}
    assert json.loads((run / "config.json").read_text())["max_iters"] == 3

    results = tmp_path / "results.json"
    assert main(["evaluate", str(run / "checkpoint.pt"), "--data", str(shapes_root),
                 "-o", str(results), "--no-progress"]) == 0  # the config's val split
    assert "pycocotools" in capsys.readouterr().out
    written = json.loads(results.read_text())
    assert isinstance(written, list) and written, "evaluate wrote no detections"
    val_ids = {img["id"] for img in json.loads(
        (shapes_root / "annotations" / f"instances_{preset('tiny').val_split}.json").read_text())["images"]}
    for r in written:
        assert {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(r)
        assert r["image_id"] in val_ids and len(r["bbox"]) == 4 and 0 <= r["score"] <= 1

    # an inference setting replaced for this evaluation: the same boxes, wider masks
    wider = tmp_path / "wider.json"
    assert main(["evaluate", str(run / "checkpoint.pt"), "--data", str(shapes_root),
                 "-o", str(wider), "--no-progress", "--mask-box-scale", "1.5"]) == 0
    wider_results = json.loads(wider.read_text())
    assert [r["bbox"] for r in wider_results] == [r["bbox"] for r in written]
    area = lambda rs: sum(mask_utils.area(r["segmentation"]) for r in rs)
    assert area(wider_results) > area(written)
    with pytest.raises(ValueError, match=r"\['backbone_width'\] are not inference settings"):
        load_model(run / "checkpoint.pt", inference={"backbone_width": 16})

    image = next((shapes_root / preset("tiny").val_split).iterdir())
    assert main(["predict", str(run / "checkpoint.pt"), str(image), "-o",
                 str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / f"{image.stem}.png").is_file()


def test_resume_repeats_the_real_models_losses(shapes_root, tmp_path):
    # flips, scale jitter and copy-paste on: every random draw must come back the same
    common = ["train", "--data", str(shapes_root), "--no-eval", *TINY, "--set", "hflip_prob=0.5",
              "--set", "train_min_sizes=96,128", "--set", "copy_paste_prob=0.5"]
    assert main([*common, "--output", str(tmp_path / "a"), "--max-iters", "3"]) == 0
    assert main([*common, "--output", str(tmp_path / "b"), "--max-iters", "2"]) == 0
    assert main([*common, "--output", str(tmp_path / "b"), "--max-iters", "3", "--resume"]) == 0
    straight, resumed = (read_log(tmp_path / name / "log.jsonl") for name in "ab")
    drop_time = lambda records: [{k: v for k, v in r.items() if k != "time"} for r in records]
    assert drop_time(resumed) == drop_time(straight)


def test_nan_loss_exits_3_with_the_iteration(shapes_root, tmp_path, capsys):
    # An absurd learning rate without clipping blows the weights up after the first step.
    code = main(["train", "--data", str(shapes_root), "--output", str(tmp_path), "--max-iters",
                 "4", *TINY, "--set", "lr=1e30", "--set", "warmup_iters=0",
                 "--set", "grad_clip=null", "--set", "checkpoint_every=1", "--no-eval"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "became" in err and "at iteration" in err and "Last good checkpoint" in err
    bad = int(err.split("at iteration ")[1].split(";")[0])
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == bad - 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(shapes_root, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "mrcnn_edu", "train", "--data", str(shapes_root), "--output", str(tmp_path),
           "--max-iters", "2", "--no-eval", *TINY, "--set", "batch_size=1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["iteration"] for r in read_log(tmp_path / "log.jsonl")] == [1, 2]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 2
