"""Copy-paste augmentation (`Config.copy_paste_prob`, Ghiasi et al. 2021): pasted pixels and
instances, what they hide, boxes re-fitted only where a mask changed, crowd never pasted, images
of different sizes, and the seeded per-batch draw of the training loop.
"""
import dataclasses

import pytest
import torch

from mrcnn_edu.config import preset
from mrcnn_edu.engine.distributed import init_distributed
from mrcnn_edu.engine.schedule import paste_batch
from mrcnn_edu.model.transforms import boxes_of_masks, copy_paste


def square_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def target_of(masks, labels, boxes=None, iscrowd=None):
    masks = torch.stack(masks) if masks else torch.zeros(0, 20, 20, dtype=torch.uint8)
    return {"boxes": boxes_of_masks(masks) if boxes is None else boxes,
            "labels": torch.tensor(labels, dtype=torch.int64), "masks": masks,
            "iscrowd": torch.tensor(iscrowd or [0] * len(labels), dtype=torch.int64),
            "image_id": torch.tensor(7)}


def test_boxes_of_masks_follow_cocos_bbox_rule():
    masks = torch.stack([square_mask(10, 12, 2, 5, 3, 9), torch.zeros(10, 12, dtype=torch.uint8)])
    assert boxes_of_masks(masks).tolist() == [[3.0, 2.0, 9.0, 5.0], [0.0, 0.0, 0.0, 0.0]]


def test_pasted_pixels_and_instances_hide_what_lies_under_them():
    image, source_image = torch.zeros(3, 20, 20), torch.ones(3, 20, 20)
    # the destination's square is half covered by the pasted one; its second square is not
    target = target_of([square_mask(20, 20, 2, 10, 2, 10), square_mask(20, 20, 15, 18, 15, 18)],
                       [1, 2])
    target["boxes"][1] = torch.tensor([14.5, 14.5, 18.5, 18.5])  # an annotation box, not tight
    source = target_of([square_mask(20, 20, 2, 10, 6, 14), square_mask(20, 20, 12, 14, 0, 3)],
                       [3, 2])
    before = {k: v.clone() for k, v in target.items()}, {k: v.clone() for k, v in source.items()}
    out_image, out = copy_paste(image, target, source_image, source, torch.tensor([True, False]))
    for given, kept in zip((target, source), before):  # the inputs are not modified
        assert all(torch.equal(given[k], kept[k]) for k in kept)
    cover = square_mask(20, 20, 2, 10, 6, 14).bool()
    assert torch.equal(out_image[:, cover], torch.ones(3, int(cover.sum())))
    assert torch.equal(out_image[:, ~cover], torch.zeros(3, int((~cover).sum())))
    assert out["labels"].tolist() == [1, 2, 3]  # the image's own first, then the pasted one
    assert torch.equal(out["masks"][0], square_mask(20, 20, 2, 10, 2, 6))  # what stays visible
    assert out["boxes"][0].tolist() == [2.0, 2.0, 6.0, 10.0]  # re-fitted to it
    assert out["boxes"][1].tolist() == [14.5, 14.5, 18.5, 18.5]  # untouched: left as it was
    assert out["boxes"][2].tolist() == [6.0, 2.0, 14.0, 10.0]
    assert out["area"].tolist() == [32.0, 9.0, 64.0] and out["iscrowd"].tolist() == [0, 0, 0]
    assert int(out["image_id"]) == 7 and image.sum() == 0


def test_empty_targets_and_masks_already_empty():
    image, source_image = torch.zeros(3, 20, 20), torch.ones(3, 20, 20)
    empty = target_of([], [])
    source = target_of([square_mask(20, 20, 0, 5, 0, 5)], [2])
    out_image, out = copy_paste(image, empty, source_image, source, torch.tensor([True]))
    assert out["labels"].tolist() == [2] and out["boxes"].tolist() == [[0.0, 0.0, 5.0, 5.0]]
    same_image, same = copy_paste(image, source, source_image, empty, torch.zeros(0, dtype=bool))
    assert same is source and same_image is image  # nothing to paste: returned as they came
    # an instance whose mask was already empty (a thin object lost in resizing) and that the
    # paste does not touch keeps its place; the crowd region under the paste is cut like the rest
    thin = target_of([torch.zeros(20, 20, dtype=torch.uint8), square_mask(20, 20, 0, 8, 0, 8)],
                     [1, 3], boxes=torch.tensor([[9.0, 9.0, 9.4, 12.0], [0.0, 0.0, 8.0, 8.0]]),
                     iscrowd=[0, 1])
    _, out = copy_paste(image, thin, source_image, source, torch.tensor([True]))
    assert out["labels"].tolist() == [1, 3, 2] and out["iscrowd"].tolist() == [0, 1, 0]
    assert out["boxes"][0].tolist() == pytest.approx([9.0, 9.0, 9.4, 12.0])  # not re-fitted
    assert out["masks"][1].sum() == 64 - 25 and out["boxes"][1].tolist() == [0.0, 0.0, 8.0, 8.0]


def test_a_fully_hidden_instance_is_dropped_and_crowd_is_never_pasted():
    image, source_image = torch.zeros(3, 20, 20), torch.ones(3, 20, 20)
    target = target_of([square_mask(20, 20, 4, 6, 4, 6), square_mask(20, 20, 15, 18, 15, 18)],
                       [1, 2])
    source = target_of([square_mask(20, 20, 0, 10, 0, 10), square_mask(20, 20, 12, 19, 12, 19)],
                       [3, 1], iscrowd=[0, 1])
    out_image, out = copy_paste(image, target, source_image, source, torch.tensor([True, True]))
    assert out["labels"].tolist() == [2, 3]  # label 1's square is gone; the crowd stayed home
    assert out_image[:, 12:19, 12:19].sum() == 0  # no pixel of the crowd region came over
    assert out_image[:, :10, :10].sum() == 3 * 100


def test_sources_of_another_size_are_cut_to_the_image():
    image, source_image = torch.zeros(3, 20, 20), torch.ones(3, 30, 16)
    target = target_of([square_mask(20, 20, 0, 4, 0, 4)], [1])
    outside = square_mask(30, 16, 22, 28, 2, 8)  # below row 20: nothing of it lands
    across = square_mask(30, 16, 16, 24, 10, 16)  # rows 16-19 of it land
    source = {"boxes": boxes_of_masks(torch.stack([outside, across])),
              "labels": torch.tensor([2, 3]), "masks": torch.stack([outside, across])}
    out_image, out = copy_paste(image, target, source_image, source, torch.tensor([True, True]))
    assert out["labels"].tolist() == [1, 3] and out["masks"].shape == (2, 20, 20)
    assert out["boxes"][1].tolist() == [10.0, 16.0, 16.0, 20.0]
    assert out_image.sum() == 3 * 4 * 6


def test_paste_batch_is_seeded_and_off_by_default():
    info = init_distributed("cpu")
    image = torch.zeros(3, 20, 20)
    t1 = target_of([square_mask(20, 20, 0, 5, 0, 5)], [1])
    t2 = target_of([square_mask(20, 20, 10, 15, 10, 15), square_mask(20, 20, 0, 3, 15, 19)], [2, 3])
    off = dataclasses.replace(preset("tiny"))
    assert off.copy_paste_prob == 0
    assert paste_batch([image, image], [t1, t2], 0, off, info)[1] == [t1, t2]
    on = dataclasses.replace(preset("tiny"), copy_paste_prob=1.0)
    assert paste_batch([image], [t1], 0, on, info)[1] == [t1]  # one image: nothing to paste
    draws = [[len(t["labels"]) for t in paste_batch([image, image], [t1, t2], i, on, info)[1]]
             for i in range(12)]
    again = [[len(t["labels"]) for t in paste_batch([image, image], [t1, t2], i, on, info)[1]]
             for i in range(12)]
    assert draws == again  # (seed, iteration) decides
    assert len({tuple(d) for d in draws}) > 1  # and it is a random half, not always the same
    assert all(n1 in (1, 2, 3) and n2 in (2, 3) for n1, n2 in draws)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_training_sees_pasted_instances_at_the_largest_jitter_size(tmp_path, monkeypatch):
    from mrcnn_edu.data import make_shapes_dataset
    from mrcnn_edu.engine.train import train
    from mrcnn_edu.model.transforms import BatchTransform
    root = make_shapes_dataset(tmp_path / "d", seed=0, image_size=(64, 64),
                               splits={"train2017": 4}, empty_prob=0.0)
    seen = []
    original = BatchTransform.forward

    def spy(self, images, targets=None):
        if targets is not None:
            seen.extend((tuple(im.shape[-2:]), len(t["labels"])) for im, t in zip(images, targets))
        return original(self, images, targets)

    monkeypatch.setattr(BatchTransform, "forward", spy)
    cfg = dataclasses.replace(preset("tiny"), max_iters=4, batch_size=2, warmup_iters=1,
                              lr_steps=(10,), min_size=32, max_size=128, hflip_prob=0.0,
                              train_min_sizes=(32, 64), copy_paste_prob=1.0)
    summary = train(cfg, root, tmp_path / "run", device="cpu", progress=False,
                    evaluate_after=False)
    assert summary is not None and len(seen) == 8
    assert {size for size, _ in seen} == {(64, 64)}  # the dataset resizes to the largest size
    from mrcnn_edu.data import CocoDataset
    counts = [len(t["labels"]) for _, t in CocoDataset(root, "train2017")]
    assert max(n for _, n in seen) > max(counts)  # pasted instances reached the model
