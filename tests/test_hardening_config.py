"""Issue 13, configuration side: Config checks itself, `--set` and `--threads` are type- and
range-checked, num_classes is derived, a BatchNorm trap refuses to train, a resume cannot go
backwards, and evaluate matches the checkpoint's classes with the dataset's by name.
"""
import dataclasses
import json
import re

import pytest
import torch

from mrcnn_edu.__main__ import UsageError, build_config, main, make_parser, parse_assignment
from mrcnn_edu.config import Config, preset
from mrcnn_edu.data import make_shapes_dataset

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


# --- Config.__post_init__ -----------------------------------------------------------------------
@pytest.mark.parametrize("changes, field", [
    (dict(lr="abc"), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(lr=0.0), "lr"),
    (dict(lr_steps=("a",)), "lr_steps"),
    (dict(max_iters=-5), "max_iters"),
    (dict(max_iters=0), "max_iters"),
    (dict(min_size=0), "min_size"),
    (dict(max_size=100, min_size=200), "max_size"),
    (dict(train_min_sizes=(128, 0)), "train_min_sizes"),
    (dict(train_min_sizes=(128.5,)), "train_min_sizes"),
    (dict(copy_paste_prob=1.5), "copy_paste_prob"),
    (dict(copy_paste_prob=0.5, batch_size=1), "copy_paste_prob"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2.0), "batch_size"),
    (dict(amp=1), "amp"),
    (dict(norm="batch_norm"), "norm"),
    (dict(optimizer="adam"), "optimizer"),
    (dict(backbone_depth=101), "backbone_depth"),
    (dict(freeze_at=6), "freeze_at"),
    (dict(mask_size=20), "mask_size"),
    (dict(mask_pool_size=7), "mask_size"),
    (dict(anchor_strides=(4, 8, 16, 32)), "anchor_strides"),
    (dict(anchor_strides=(8, 16, 32, 64, 128)), "anchor_strides"),
    (dict(anchor_sizes=(32, 64)), "anchor_sizes"),
    (dict(anchor_aspect_ratios=()), "anchor_aspect_ratios"),
    (dict(rpn_fg_iou_thresh=1.5), "rpn_fg_iou_thresh"),
    (dict(rpn_bg_iou_thresh=0.8), "rpn_bg_iou_thresh"),
    (dict(roi_positive_fraction=0.0), "roi_positive_fraction"),
    (dict(box_reg_weights=(1.0, 1.0, 1.0)), "box_reg_weights"),
    (dict(pixel_std=(0.2, 0.0, 0.2)), "pixel_std"),
    (dict(hflip_prob=2.0), "hflip_prob"),
    (dict(num_workers=-1), "num_workers"),
    (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(grad_clip=-1.0), "grad_clip"),
    (dict(num_classes=0), "num_classes"),
    (dict(categories=()), "categories"),
    (dict(categories=("person", 3)), "categories"),
    (dict(train_split=""), "train_split"),
    (dict(backbone_width=0), "backbone_width"),
    (dict(backbone_width=24), "group_norm_groups"),  # 16 groups do not divide 24 channels
    (dict(backbone_width=32, backbone_weights="r18.pth"), "backbone_weights"),  # ImageNet: 64
])
def test_config_refuses_bad_values_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"Config\.{field}\b"):
        dataclasses.replace(preset("tiny"), **changes)


def test_config_accepts_every_preset_and_consistent_changes():
    for name in ("tiny", "subset", "r50_fpn"):
        assert preset(name) == Config.from_dict(json.loads(json.dumps(preset(name).to_dict())))
    from pathlib import Path
    cfg = dataclasses.replace(preset("tiny"), mask_pool_size=7, mask_size=14, lr=1,
                              grad_clip=None, anchor_sizes=[8, 16, 32, 64, 128],
                              output_dir=Path("runs/x"))
    assert cfg.lr == 1 and cfg.anchor_sizes == (8, 16, 32, 64, 128) and cfg.output_dir == "runs/x"


def test_an_old_config_json_still_loads():
    old = preset("r50_fpn").to_dict()  # every field, as a config.json written before validation
    old["categories"] = ["person"]
    assert Config.from_dict(old).categories == ("person",)


# --- --set and --threads ------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("lr=abc", r"--set lr=abc: .*Config\.lr must be a number"),
    ("lr_steps=[a]", r"--set lr_steps=\[a\]: .*Config\.lr_steps"),
    ("lr_steps=a,b", r"Config\.lr_steps"),
    ("batch_size=two", r"Config\.batch_size"),
    ("num_classes=3", r"num_classes is derived from the data"),
])
def test_bad_set_values_are_named(text, message):
    with pytest.raises(UsageError, match=message):
        parse_assignment(text)


@pytest.mark.parametrize("text, value", [
    ("categories=[person]", ("person",)),
    ("categories=[person, dog]", ("person", "dog")),
    ("categories=person,dog", ("person", "dog")),
    ('categories=["person"]', ("person",)),
    ("categories=18", ("18",)),
    ("lr_steps=[100, 200]", (100, 200)),
])
def test_list_values_parse_with_or_without_brackets(text, value):
    assert parse_assignment(text)[1] == value


@pytest.mark.parametrize("argv, message", [
    (["--set", "max_iters=-5"], r"Config\.max_iters"),
    (["--max-iters", "-5"], r"Config\.max_iters"),
    (["--set", "min_size=0"], r"Config\.min_size"),
    (["--set", "batch_size=0"], r"Config\.batch_size"),
    (["--threads", "0"], r"--threads"),
    (["--threads", "-1"], r"--threads"),
    (["--set", "mask_size=20"], r"Config\.mask_size"),
])
def test_train_refuses_nonsense_before_touching_anything(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path), "--output", str(out), *argv]) == 2
    assert not out.exists()
    assert re.search(message, capsys.readouterr().err)


def test_mask_size_follows_mask_pool_size_when_only_that_is_set():
    args = make_parser().parse_args(["train", "--set", "mask_pool_size=7"])
    cfg = build_config(args)
    assert (cfg.mask_pool_size, cfg.mask_size) == (7, 14)


def test_evaluate_refuses_bad_threads(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "c.pt"), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


# --- 5: frozen BatchNorm without weights ----------------------------------------------------------
def test_frozen_bn_without_weights_refuses_to_train(tmp_path, capsys):
    from mrcnn_edu.engine.train import train
    with pytest.raises(ValueError, match=r"--backbone-weights.*group_norm.*freeze_at=0"):
        train(preset("r50_fpn"), tmp_path, tmp_path / "run", device="cpu")
    assert main(["train", "--preset", "r50_fpn", "--data", str(tmp_path),
                 "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "frozen_bn" in err and "--backbone-weights" in err
    assert not (tmp_path / "run").exists()


def test_frozen_bn_is_fine_with_weights_or_without_freezing():
    from mrcnn_edu.config import check_trainable
    check_trainable(dataclasses.replace(preset("r50_fpn"), backbone_weights="w.pth"))
    check_trainable(dataclasses.replace(preset("r50_fpn"), norm="group_norm", freeze_at=0))
    check_trainable(preset("tiny"))


# --- 7: resume cannot go backwards ----------------------------------------------------------------
def test_resume_below_the_checkpoint_iteration_refuses(tmp_path):
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _engine_fakes import FakeDataset, FakeMaskRCNN, fake_config
    from mrcnn_edu.engine.train import fit
    fit(FakeMaskRCNN(), FakeDataset(), fake_config(max_iters=4), tmp_path, progress=False)
    log = (tmp_path / "log.jsonl").read_text()
    with pytest.raises(ValueError, match=r"iteration 4.*max_iters.*3"):
        fit(FakeMaskRCNN(), FakeDataset(), fake_config(max_iters=3), tmp_path, resume=True,
            progress=False)
    assert (tmp_path / "log.jsonl").read_text() == log  # nothing was cut


# --- 6: evaluate matches classes by name --------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), splits={"val2017": 2}, seed=3)


def tiny_checkpoint(path, class_names):
    from mrcnn_edu.engine.checkpoint import save_checkpoint
    from mrcnn_edu.model import MaskRCNN
    cfg = dataclasses.replace(preset("tiny"), num_classes=len(class_names) - 1, min_size=64,
                              max_size=96)
    save_checkpoint(path, {"model": MaskRCNN(cfg).state_dict(), "iteration": 1,
                           "config": cfg.to_dict(), "class_names": class_names})
    return path


def test_evaluate_refuses_a_checkpoint_with_other_classes(shapes_root, tmp_path, capsys):
    names = ["__background__"] + [f"coco{k}" for k in range(1, 81)]
    ckpt = tiny_checkpoint(tmp_path / "c.pt", names)
    assert main(["evaluate", str(ckpt), "--data", str(shapes_root), "--split", "val2017",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "coco1" in err and "circle" in err and "c.pt" in err


def test_evaluate_matches_classes_by_name_not_position(shapes_root, tmp_path):
    from mrcnn_edu.data import CocoDataset
    from mrcnn_edu.engine.evaluate import match_classes
    dataset = CocoDataset(shapes_root, "val2017")
    shuffled = ["__background__"] + dataset.class_names[1:][::-1]
    mapping = match_classes(shuffled, dataset, "c.pt")
    for label, name in enumerate(shuffled[1:], start=1):
        assert dataset.class_names[dataset.cat_id_to_label[mapping[label]]] == name
    assert match_classes(dataset.class_names, dataset, "c.pt") == dataset.label_to_cat_id
    with pytest.raises(ValueError, match=r"c\.pt.*not in the dataset: \['horse'\]"):
        match_classes(dataset.class_names[:-1] + ["horse"], dataset, "c.pt")
