"""Hand examples for the model's selection steps (lessons 08_rpn and 09_roi_heads).

RPN proposal selection (`RPN.select_proposals`) and the RoI heads' detection post-processing
(`RoIHeads.select`) and RoI sampling (`RoIHeads.sample`) on a few boxes small enough to follow
by eye: each test says which box each step removes and why, and checks the exact boxes kept.
The modules are built from explicit settings, not from a Config, so every number is on the page.
"""
import dataclasses
import math

import pytest
import torch

from mrcnn_edu import ops
from mrcnn_edu.config import preset
from mrcnn_edu.model import MaskRCNN, RoIHeads, RPN
from mrcnn_edu.model.transforms import BatchTransform


RPN_SETTINGS = dict(anchor_strides=(4, 8), anchor_sizes=(8, 16), anchor_aspect_ratios=(1.0,),
                    pre_nms_top_n_train=6, post_nms_top_n_train=5, pre_nms_top_n_test=3,
                    post_nms_top_n_test=3, nms_thresh=0.7, min_size=2.0, fg_iou_thresh=0.7,
                    bg_iou_thresh=0.3, batch_size_per_image=8, positive_fraction=0.5)


def hand_rpn(**overrides):
    """An RPN with small, distinct train and test limits; the head's weights are never used."""
    return RPN(4, **{**RPN_SETTINGS, **overrides})


def hand_roi_heads(**overrides):
    """RoI heads with 2 classes (K1 = 3), score > 0.3, NMS at 0.5 and at most 3 detections."""
    settings = dict(box_pool_size=2, box_head_dim=8, mask_pool_size=2, mask_head_dim=4,
                    mask_head_convs=1, mask_size=4, mask_box_scale=1.0, head_norm_groups=0,
                    sampling_ratio=1,
                    fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=16,
                    positive_fraction=0.25, box_reg_weights=(10.0, 10.0, 5.0, 5.0),
                    score_thresh=0.3, nms_thresh=0.5, detections_per_image=3)
    return RoIHeads(4, 2, **{**settings, **overrides})


# --- RPN: top-k per level, decode, clip, remove small, NMS per level, best post-NMS top-n -------

IMAGE_SIZE = (32, 48)  # (h, w): clipping x and y to different limits shows which is which

LEVEL0 = [  # anchor, objectness logit, what happens to it (in training mode)
    ([0.0, 0, 10, 10], 5.0),  # kept
    ([1.0, 0, 11, 10], 4.0),  # IoU 90 / 110 = 0.82 > 0.7 with anchor 0: removed by NMS
    ([20.0, 20, 30, 30], 3.0),  # deltas move it by (+5, -2.5): kept as [25, 17.5, 35, 27.5]
    ([-4.0, -6, 6, 4], 2.0),  # clipped to [0, 0, 6, 4] (x1 and y1 to 0): kept
    ([40.0, 28, 60, 40], 6.0),  # clipped to [40, 28, 48, 32] (x2 to w, y2 to h): kept
    ([50.0, 0, 60, 10], 7.0),  # clipped to [48, 0, 48, 10], zero width: removed as too small
    ([30.0, 0, 40, 10], -1.0),  # the lowest of 7 scores: cut by the pre-NMS top 6
]
LEVEL1 = [
    ([0.0, 0, 11, 10], 4.5),  # IoU 0.91 with level 0's anchor 0, but NMS is within a level: kept
    ([2.0, 0, 12, 10], 4.2),  # IoU 90 / 120 = 0.75 > 0.7 with the anchor above: removed by NMS
    ([10.0, 10, 26, 26], 0.5),  # survives its level, but is 6th overall: cut by post-NMS top 5
]


@pytest.fixture(params=[False, True], ids=["nms per level", "one nms for all levels"])
def nms_calls(request, monkeypatch):
    """Run an RPN test both ways the RPN can apply NMS within levels (the CPU's and the GPU's)."""
    import mrcnn_edu.model.rpn as rpn_module
    monkeypatch.setattr(rpn_module, "one_nms_for_all_levels", lambda device: request.param)
    return request.param


def rpn_inputs():
    """Per level: objectness (R_l,), deltas (R_l, 4) and anchors (R_l, 4), float32."""
    objectness, deltas, anchors = [], [], []
    for level in (LEVEL0, LEVEL1):
        anchors.append(torch.tensor([a for a, _ in level]))
        objectness.append(torch.tensor([s for _, s in level]))
        deltas.append(torch.zeros(len(level), 4))
    deltas[0][2] = torch.tensor([0.5, -0.25, 0.0, 0.0])  # weights 1: dx * w = 5, dy * h = -2.5
    return objectness, deltas, anchors


def test_rpn_selects_proposals_step_by_step_in_training(nms_calls):
    rpn = hand_rpn().train()
    proposals = rpn.select_proposals(*rpn_inputs(), IMAGE_SIZE)
    want = [[40.0, 28, 48, 32],  # logit 6.0, level 0
            [0, 0, 10, 10],  # 5.0, level 0
            [0, 0, 11, 10],  # 4.5, level 1
            [25, 17.5, 35, 27.5],  # 3.0, level 0, moved by its deltas
            [0, 0, 6, 4]]  # 2.0, level 0, clipped
    assert proposals.tolist() == want


def test_rpn_uses_the_test_limits_in_eval_mode(nms_calls):
    """Top 3 per level, then the best 3 of all: level 0 keeps anchors 4 and 0 of its top 3
    (anchor 5 is too small), level 1 anchors 0 and 2; the best 3 are 6.0, 5.0 and 4.5."""
    rpn = hand_rpn().eval()
    proposals = rpn.select_proposals(*rpn_inputs(), IMAGE_SIZE)
    assert proposals.tolist() == [[40.0, 28, 48, 32], [0, 0, 10, 10], [0, 0, 11, 10]]


def test_rpn_min_size_and_nms_threshold_are_the_ones_given(nms_calls):
    """min_size 5 also removes the two clipped boxes, [40, 28, 48, 32] and [0, 0, 6, 4] (both
    4 px high); NMS at 0.9 keeps both pairs NMS at 0.7 broke up (IoU 0.82 and 0.75)."""
    rpn = hand_rpn(min_size=5.0, nms_thresh=0.9).train()
    proposals = rpn.select_proposals(*rpn_inputs(), IMAGE_SIZE)
    assert proposals.tolist() == [[0.0, 0, 10, 10],  # 5.0, level 0
                                  [0, 0, 11, 10],  # 4.5, level 1
                                  [2, 0, 12, 10],  # 4.2, level 1
                                  [1, 0, 11, 10],  # 4.0, level 0
                                  [25, 17.5, 35, 27.5]]  # 3.0, level 0


def test_rpn_nms_per_level_or_in_one_call_keeps_the_same_proposals(monkeypatch):
    """Five levels of 600 random anchors with random deltas: NMS level by level (the CPU's
    way) and one NMS call over all levels (the GPU's) keep the same proposals in the same
    order."""
    import mrcnn_edu.model.rpn as rpn_module
    gen = torch.Generator().manual_seed(3)
    rpn = hand_rpn(pre_nms_top_n_train=400, post_nms_top_n_train=2000).train()
    inputs = []
    for _ in range(5):
        xy = torch.rand(600, 2, generator=gen) * 200
        wh = torch.rand(600, 2, generator=gen) * 60 + 4
        inputs.append((torch.randn(600, generator=gen), torch.randn(600, 4, generator=gen) * 0.2,
                       torch.cat([xy, xy + wh], 1)))
    got = {}
    for one_call in (False, True):
        monkeypatch.setattr(rpn_module, "one_nms_for_all_levels", lambda device: one_call)
        got[one_call] = rpn.select_proposals(*zip(*inputs), (180, 220))
    assert 300 < len(got[False]) < 2000  # NMS removed some; the post-NMS cut does not bind
    assert torch.equal(got[True], got[False])


# --- RoI heads: select (score threshold, clip, per-class NMS, detections per image) ------------

SELECT = [  # proposal, scores (background, class 1, class 2), what happens
    ([0.0, 0, 10, 10], [0.1, 0.8, 0.1]),  # class 1 kept (0.8); class 2 below 0.3
    ([1.0, 0, 11, 10], [0.1, 0.5, 0.4]),  # class 1: IoU 0.82 with the row above, removed by
    #                                       NMS; class 2 (0.4) kept: classes never suppress
    ([20.0, 20, 30, 30], [0.2, 0.7, 0.1]),  # class 1's deltas move it 5 px right, then x2 is
    #                                         clipped to 32: kept as [25, 20, 32, 30]
    ([40.0, 5, 50, 15], [0.05, 0.9, 0.05]),  # outside the 32 px wide image: clipped to zero
    #                                          width and removed, best score or not
    ([0.0, 20, 10, 30], [0.4, 0.35, 0.25]),  # class 1 (0.35) passes, but is 4th of 3 allowed
]


def select_inputs():
    proposals = torch.tensor([p for p, _ in SELECT])  # (5, 4)
    scores = torch.tensor([s for _, s in SELECT])  # (5, 3)
    box_regression = torch.zeros(len(SELECT), 4 * 3)  # (5, 12) one box per class
    box_regression[2, 4] = 5.0  # class 1's dx: 5 / wx * w = 5 / 10 * 10 = 5 px
    return proposals, scores, box_regression


def test_select_keeps_the_best_boxes_per_class():
    heads = hand_roi_heads()
    det = heads.select(*select_inputs(), (32, 32))
    assert det["boxes"].tolist() == [[0.0, 0, 10, 10], [25, 20, 32, 30], [1, 0, 11, 10]]
    assert det["labels"].tolist() == [1, 1, 2]
    torch.testing.assert_close(det["scores"], torch.tensor([0.8, 0.7, 0.4]))


def test_select_settings_are_the_ones_given():
    """Score > 0.45 leaves class 2's 0.4 and the 0.35 out; NMS at 0.9 lets the 0.5 box stay."""
    heads = hand_roi_heads(score_thresh=0.45, nms_thresh=0.9, detections_per_image=10)
    det = heads.select(*select_inputs(), (32, 32))
    assert det["boxes"].tolist() == [[0.0, 0, 10, 10], [25, 20, 32, 30], [1, 0, 11, 10]]
    assert det["labels"].tolist() == [1, 1, 1]
    torch.testing.assert_close(det["scores"], torch.tensor([0.8, 0.7, 0.5]))


# --- RoI heads: sample (ground truth joins the proposals, match at 0.5, fg fraction) ----------

GT = torch.tensor([[0.0, 0, 10, 10]])  # one object of class 2
PROPOSALS = torch.tensor([
    [0.0, 0, 10, 9],  # IoU 0.9: foreground
    [0.0, 0, 10, 6],  # IoU 0.6: foreground
    [0.0, 0, 10, 4],  # IoU 0.4: background
    [20.0, 20, 30, 30],  # IoU 0: background
    [0.0, 0, 10, 5],  # IoU 0.5 exactly: foreground (>= the threshold)
])


def box_head_deltas(box, gt, weights=(10.0, 10.0, 5.0, 5.0)):
    """The regression target by the formula: dx = wx (gx - ax) / aw, dw = ww log(gw / aw)."""
    ax, ay = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    aw, ah = box[2] - box[0], box[3] - box[1]
    gx, gy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
    gw, gh = gt[2] - gt[0], gt[3] - gt[1]
    wx, wy, ww, wh = weights
    return [wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * math.log(gw / aw),
            wh * math.log(gh / ah)]


def test_sample_adds_the_ground_truth_and_labels_by_iou():
    """16 RoIs with at most 25% foreground: room for all 4 foreground and 2 background ones,
    so every box is sampled and the result does not depend on the random picks."""
    heads = hand_roi_heads()
    target = {"boxes": GT, "labels": torch.tensor([2])}
    generator = torch.Generator().manual_seed(0)
    boxes, labels, matched, deltas = heads.sample(PROPOSALS, target, generator)
    assert boxes.tolist() == PROPOSALS.tolist() + GT.tolist()  # the ground truth comes last
    assert labels.tolist() == [2, 2, 0, 0, 2, 2]
    assert matched.tolist() == [0] * 6
    fg = labels > 0
    want = torch.tensor([box_head_deltas(b, GT[0].tolist()) for b in boxes[fg].tolist()])
    torch.testing.assert_close(deltas[fg], want)
    assert deltas[-1].tolist() == [0.0, 0.0, 0.0, 0.0]  # the ground truth needs no correction


def test_sample_caps_the_foreground_fraction():
    """4 RoIs at 25% foreground: int(4 * 0.25) = 1 of the 4 foreground boxes, and the 2
    background boxes fill what is left (there are only 2 to give)."""
    heads = hand_roi_heads(batch_size_per_image=4)
    target = {"boxes": GT, "labels": torch.tensor([2])}
    boxes, labels, _, _ = heads.sample(PROPOSALS, target, torch.Generator().manual_seed(0))
    assert labels.tolist().count(2) == 1 and labels.tolist().count(0) == 2
    background = boxes[labels == 0].tolist()
    assert background == [[0.0, 0, 10, 4], [20, 20, 30, 30]]
    fg_candidates = [[0.0, 0, 10, 9], [0, 0, 10, 6], [0, 0, 10, 5], [0, 0, 10, 10]]
    assert boxes[labels == 2].tolist()[0] in fg_candidates


def test_sample_without_ground_truth_gives_only_background():
    heads = hand_roi_heads()
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    boxes, labels, _, deltas = heads.sample(PROPOSALS, target, torch.Generator().manual_seed(0))
    assert boxes.tolist() == PROPOSALS.tolist()  # 5 background boxes, all within 16 * 0.75
    assert labels.tolist() == [0] * 5 and not deltas.any()


# --- explicit arguments: MaskRCNN builds its RPN and RoI heads from its Config -----------------

def test_model_passes_its_config_to_rpn_and_roi_heads():
    cfg = dataclasses.replace(preset("tiny"), num_classes=3, rpn_nms_thresh=0.65,
                              rpn_pre_nms_top_n_test=321, roi_positive_fraction=0.3,
                              score_thresh=0.2, detections_per_image=17)
    model = MaskRCNN(cfg)
    assert model.rpn.nms_thresh == 0.65 and model.rpn.pre_nms_top_n["test"] == 321
    assert model.rpn.anchor_sizes == cfg.anchor_sizes
    assert model.roi_heads.positive_fraction == 0.3 and model.roi_heads.score_thresh == 0.2
    assert model.roi_heads.detections_per_image == 17
    assert model.roi_heads.box_head.cls_score.out_features == 4  # K1 = 3 classes + background
    direct = RPN.from_config(cfg, cfg.fpn_channels)
    assert list(direct.state_dict()) == list(model.rpn.state_dict())


def test_settings_are_required_keyword_arguments():
    """No setting has a second default here: the Config's is the only one."""
    without_min_size = {k: v for k, v in RPN_SETTINGS.items() if k != "min_size"}
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'min_size'"):
        RPN(4, **without_min_size)
    with pytest.raises(TypeError, match="positional argument"):
        RPN(4, (4, 8), **RPN_SETTINGS)


# --- mask_box_scale: the mask head's view of a box, in training and at inference ---------------

def mask_inputs():
    """P2..P5 of one 64 x 64 image (4 channels), two RoIs (one foreground), one gt mask."""
    torch.manual_seed(0)
    features = [torch.randn(1, 4, 64 // s, 64 // s) for s in (4, 8, 16, 32)]
    boxes = [torch.tensor([[10.0, 12.0, 30.0, 28.0], [40.0, 40.0, 60.0, 50.0]])]
    labels, matched = [torch.tensor([2, 0])], [torch.tensor([0, 0])]
    gt = torch.zeros(1, 64, 64)
    gt[0, 8:32, 8:34] = 1  # reaches past the first RoI on every side
    return features, boxes, labels, matched, [{"masks": gt}]


def test_mask_loss_does_not_depend_on_the_mask_box_scale():
    """The scale is for inference only: training RoIs are proposals, looser than detections."""
    features, boxes, labels, matched, targets = mask_inputs()
    heads = hand_roi_heads(mask_box_scale=1.5)
    scaled = heads.mask_loss(features, boxes, labels, matched, targets)
    heads.mask_box_scale = 1.0
    assert scaled == heads.mask_loss(features, boxes, labels, matched, targets)


def test_detections_keep_their_boxes_and_the_mask_is_pasted_into_the_scaled_box():
    heads = hand_roi_heads(mask_box_scale=2.0)
    features, boxes, *_ = mask_inputs()
    seen = []  # the RoIs pooled: the box head's, then the mask head's

    def pool(feats, rois, size):
        seen.append(rois)
        return torch.zeros(len(rois), 4, size, size)

    heads.pool = pool
    # class 1 only, no box offsets: the detection is the proposal itself
    heads.box_head.forward = lambda x: (torch.tensor([[0.0, 5.0, 0.0]]).expand(len(x), 3),
                                        torch.zeros(len(x), 12))
    det = heads.detect(features, [boxes[0][:1]], [(64, 64)])[0]
    torch.testing.assert_close(det["boxes"], boxes[0][:1])  # the box itself is reported ...
    torch.testing.assert_close(seen[1][:, 1:], torch.tensor([[0.0, 4.0, 40.0, 36.0]]))  # ... x2
    transform = BatchTransform(64, 64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 32)
    ones = {**det, "masks": torch.ones(1, 4, 4)}
    for scale, area in ((1.0, 20 * 16), (2.0, 40 * 32)):
        pasted = transform.postprocess([ones], [(64, 64)], [(64, 64)], 0.5, scale)[0]["masks"]
        assert int(pasted.sum()) == area
