"""End to end: the tiny model memorises a handful of synthetic images (lesson 10's claim).

Four shapes images, 128-pixel inputs, the half-width backbone, about a hundred SGD iterations on
2 CPU cores (under a minute). Then box and mask AP50 on those same images must reach 0.9 by
pycocotools and by our own evaluator (measured: 1.0 with AVX2 kernels, 0.988 with oneDNN's AVX
and ATen's unvectorised ones). This is the test that says the whole pipeline learns: data,
anchors, matching, sampling, RoIAlign, the five losses, the schedule, post-processing, mask
pasting and evaluation.
"""
import dataclasses

import pytest

from mrcnn_edu.config import preset
from mrcnn_edu.data import CocoDataset, make_shapes_dataset
from mrcnn_edu.engine.checkpoint import load_model
from mrcnn_edu.engine.evaluate import evaluate, format_metrics
from mrcnn_edu.engine.train import train

MEMORISE = dict(
    min_size=128, max_size=160,  # small inputs: a CPU iteration stays well under a second
    backbone_width=32,  # the shapes preset's half-width ResNet-18: 1.4x fewer seconds per step
    lr=0.02, warmup_iters=20, max_iters=110, lr_steps=(90,), lr_gamma=0.1,
    hflip_prob=0.0,  # memorising: show the very images that are evaluated
    batch_size=2, checkpoint_every=1000, log_every=10, seed=0,
)


@pytest.mark.slow
def test_tiny_model_memorises_a_few_images(tmp_path):
    config = dataclasses.replace(preset("tiny"), **MEMORISE)
    root = make_shapes_dataset(tmp_path / "shapes", splits={config.train_split: 4}, seed=0)
    summary = train(config, root, tmp_path / "run", progress=False, evaluate_after=False)
    assert summary["iterations"] == MEMORISE["max_iters"]

    dataset = CocoDataset(root, split=config.train_split)
    model, _, _ = load_model(summary["checkpoint"], "cpu")  # what `evaluate CHECKPOINT` does
    metrics = evaluate(model, dataset, "cpu")
    print(format_metrics(metrics))
    for source in ("pycocotools", "ours"):
        for iou_type in ("bbox", "segm"):
            assert metrics[source][iou_type]["AP50"] >= 0.9, (source, iou_type, metrics)

