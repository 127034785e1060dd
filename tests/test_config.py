"""Tests for mrcnn_edu.config: presets, JSON round trip, overrides, every field commented."""
import dataclasses
import inspect
import json

import pytest

from mrcnn_edu.config import Config, preset


@pytest.mark.parametrize("name", ["tiny", "r50_fpn"])
def test_preset_json_round_trip(name):
    cfg = preset(name)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert Config.from_dict(d) == cfg


def test_to_dict_has_lists_not_tuples():
    d = preset("tiny").to_dict()
    assert isinstance(d["anchor_sizes"], list)
    assert d["backbone_weights"] is None


def test_paper_defaults():
    cfg = preset("r50_fpn")
    assert (cfg.backbone_depth, cfg.norm, cfg.fpn_channels) == (50, "frozen_bn", 256)
    assert (cfg.min_size, cfg.max_size, cfg.size_divisible) == (800, 1333, 32)
    assert (cfg.roi_batch_size_per_image, cfg.roi_positive_fraction) == (512, 0.25)
    assert (cfg.score_thresh, cfg.nms_thresh, cfg.detections_per_image) == (0.05, 0.5, 100)
    assert cfg.box_reg_weights == (10.0, 10.0, 5.0, 5.0)


def test_tiny_is_small():
    cfg = preset("tiny")
    assert cfg.backbone_depth == 18 and cfg.min_size <= 320


def test_replace_override_and_presets_are_fresh():
    cfg = dataclasses.replace(preset("tiny"), max_iters=7)
    assert cfg.max_iters == 7
    assert preset("tiny").max_iters != 7


def test_unknown_names_raise():
    with pytest.raises(ValueError):
        preset("nope")
    with pytest.raises(ValueError):
        Config.from_dict({"not_a_field": 1})


def test_every_field_is_commented():
    lines = inspect.getsource(Config).splitlines()
    for f in dataclasses.fields(Config):
        line = next(l for l in lines if l.strip().startswith(f"{f.name}:"))
        assert "#" in line, f"field {f.name} has no comment"
