"""The `shapes` preset: its Config, its data written when missing, `make train PRESET=shapes`."""
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import mrcnn_edu.__main__ as cli
from mrcnn_edu.config import Config, preset
from mrcnn_edu.data import CocoDataset, make_shapes_dataset
from mrcnn_edu.data import shapes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def few_images(monkeypatch):
    """The preset's dataset shrunk to 3 train and 2 val images, so a test writes it in a blink."""
    monkeypatch.setitem(shapes.PRESET_SPLIT_SIZES, "train", 3)
    monkeypatch.setitem(shapes.PRESET_SPLIT_SIZES, "val", 2)


def test_shapes_preset_is_tiny_at_the_data_size():
    cfg = preset("shapes")
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # it validates
    tiny = preset("tiny")
    for name in ("backbone_depth", "norm", "fpn_channels", "anchor_sizes", "mask_size"):
        assert getattr(cfg, name) == getattr(tiny, name)  # the same model family as tiny
    assert cfg.min_size == 128  # the shapes are drawn at 128 x 128: no resizing
    assert cfg.output_dir == "runs/shapes"
    assert all(0 < step < cfg.max_iters for step in cfg.lr_steps)
    assert cfg.copy_paste_prob > 0 and cfg.batch_size >= 2  # a paste needs a second image
    assert shapes.PRESET_SPLIT_SIZES["val"] >= 200  # AP on enough images never trained on


def test_ensure_writes_a_missing_dataset_once(tmp_path, few_images):
    lines = []
    root = shapes.ensure_shapes_dataset(tmp_path / "d", log=lines.append)
    assert len(CocoDataset(root, "train2017")) == 3 and len(CocoDataset(root, "val2017")) == 2
    assert len(lines) == 1 and "3 train2017 images" in lines[0]
    ann = root / "annotations" / "instances_train2017.json"
    before = ann.stat().st_mtime_ns
    shapes.ensure_shapes_dataset(tmp_path / "d", log=lines.append)  # complete: left alone
    assert len(lines) == 1 and ann.stat().st_mtime_ns == before


def test_ensure_rewrites_an_interrupted_dataset_identically(tmp_path, few_images):
    root = shapes.ensure_shapes_dataset(tmp_path / "d")
    train_json = (root / "annotations" / "instances_train2017.json").read_bytes()
    (root / "annotations" / "instances_val2017.json").unlink()  # killed before val was done
    shapes.ensure_shapes_dataset(root)
    assert (root / "annotations" / "instances_val2017.json").is_file()
    assert (root / "annotations" / "instances_train2017.json").read_bytes() == train_json


def test_ensure_matches_make_shapes_dataset(tmp_path, few_images):
    a = shapes.ensure_shapes_dataset(tmp_path / "a")
    b = make_shapes_dataset(tmp_path / "b", seed=shapes.PRESET_DATA_SEED,
                            splits={"train2017": 3, "val2017": 2})
    for split in ("train2017", "val2017"):
        name = f"annotations/instances_{split}.json"
        assert (a / name).read_bytes() == (b / name).read_bytes()


def fake_train(calls):
    def train(config, data_root, output_dir, **kwargs):
        calls.append((config, Path(data_root), output_dir))
    return train


def test_cli_writes_the_data_where_asked(tmp_path, monkeypatch, few_images):
    calls = []
    monkeypatch.setattr(cli, "train", fake_train(calls))
    assert cli.main(["train", "--preset", "shapes", "--data", str(tmp_path / "d"),
                     "--output", str(tmp_path / "run")]) == 0
    config, data_root, output_dir = calls[0]
    assert config == dataclasses.replace(preset("shapes"), output_dir=str(tmp_path / "run"))
    assert data_root == (tmp_path / "d").resolve()
    assert len(CocoDataset(data_root, config.val_split)) == 2


def test_cli_default_data_folder_is_data_shapes_under_cwd(tmp_path, monkeypatch, few_images):
    calls = []
    monkeypatch.setattr(cli, "train", fake_train(calls))
    monkeypatch.setenv("MRCNN_EDU_DATA", str(tmp_path / "real_coco"))  # not read by this preset
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--preset", "shapes"]) == 0
    assert calls[0][1] == (tmp_path / "data" / "shapes").resolve()
    assert (tmp_path / "data" / "shapes" / "annotations" / "instances_train2017.json").is_file()
    assert calls[0][2] == "runs/shapes"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("variables, output", [
    ([], "runs/coco_subset"),
    (["PRESET=shapes"], "runs/shapes"),
    (["PRESET=tiny"], "runs/tiny"),
    (["PRESET=shapes", "RUN=runs/mine"], "runs/mine"),
])
def test_make_train_run_folder_follows_the_preset(variables, output):
    # -n prints the command without running it; STAMP= skips the venv install step.
    text = subprocess.run(["make", "-n", "-s", "train", "STAMP=", *variables], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    preset_name = dict(v.split("=") for v in variables).get("PRESET", "subset")
    assert f"--preset {preset_name} --output {output}" in text
