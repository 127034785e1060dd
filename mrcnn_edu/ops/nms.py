"""Non-maximum suppression (lesson 04_nms_and_matching), torch twin of `mrcnn_edu.reference.nms`.

Shape legend: N boxes; B boxes per block; K boxes kept in a block.
Same rule and the same stable order as the reference: visit by descending score (ties lower
index first), drop a box whose IoU with a kept box is > iou_threshold.

How it stays fast without a compiled kernel: the sorted boxes are swept in blocks of B.
Inside a block the greedy decisions are solved as a fixed point of a small matrix equation
(no loop over boxes); the block's kept boxes then suppress all later boxes at once with one
(K, N) IoU. Boxes already suppressed are never looked at again, so clustered inputs get cheap.

Reference -> twin (same names for the same things: `order`, `suppressed`, `keep`, `areas`):
    as_boxes (boxes.py) -> _check_boxes (the shape check only: the twin keeps the dtype)
    check_scores        -> check_scores
    greedy_nms_kernel   -> the block sweep in `nms`: `resolve_block` decides inside a block,
                           `overlaps_above` suppresses later boxes (the kernel's inner IoU test)
    nms                 -> nms
    offset_by_label     -> offset_by_label
    batched_nms         -> batched_nms
"""
import torch

from .boxes import box_area

BLOCK = 256  # boxes per block: big enough to amortise the per-block overhead, small enough for cache
# On a GPU an (N, N) IoU of a few thousand boxes costs microseconds, while every block and every
# fixed-point test waits for the device (a `nonzero`, a `torch.equal`): there the blocks are
# as large as GPU_BLOCK, and the fixed point is tested every GPU_STEPS_PER_CHECK steps.
GPU_BLOCK = 4096
GPU_STEPS_PER_CHECK = 8


def check_scores(scores, num_boxes, name="scores"):
    """Torch twin of `mrcnn_edu.reference.nms.check_scores`: same contract (ValueError unless
    scores is (num_boxes,)); the tensor is returned as it is."""
    if tuple(scores.shape) != (num_boxes,):
        raise ValueError(f"{name} must have shape (N,) = ({num_boxes},) to match boxes, "
                         f"got {tuple(scores.shape)}")
    return scores


def _check_boxes(boxes):
    """ValueError unless boxes is (N, 4): the check `reference.boxes.as_boxes` makes."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    return boxes


def overlaps_above(boxes1, area1, boxes2, area2, iou_threshold):
    """(K, L) bool: IoU(boxes1[k], boxes2[l]) > iou_threshold, with the arithmetic of `box_iou`
    (so results agree bit for bit) but fused and in place, as NMS spends its time here.

    A zero union means a zero intersection: 0 / 0 = NaN, and NaN > threshold is False, as the
    IoU of 0 it stands for would be.
    """
    inter_w = torch.minimum(boxes1[:, None, 2], boxes2[None, :, 2])  # (K, L)
    inter_w.sub_(torch.maximum(boxes1[:, None, 0], boxes2[None, :, 0])).clamp_(min=0)
    inter_h = torch.minimum(boxes1[:, None, 3], boxes2[None, :, 3])  # (K, L)
    inter_h.sub_(torch.maximum(boxes1[:, None, 1], boxes2[None, :, 1])).clamp_(min=0)
    inter = inter_w.mul_(inter_h)  # (K, L)
    union = (area1[:, None] + area2[None, :]).sub_(inter)  # (K, L)
    return inter.div_(union) > iou_threshold  # (K, L)


def resolve_block(suppresses, steps_per_check=1):
    """Greedy keep-flags of one block from its (B, B) strictly upper-triangular matrix
    suppresses[i, j] = (i before j and IoU > threshold).

    The greedy rule keep[j] = not any(keep[i] and suppresses[i, j] for i < j) is a triangular
    system with exactly one solution, so iterating keep <- rule(keep) from all-True stops exactly
    there (a fixed point must be it). Each step settles at least one more box in order; in
    practice a few steps suffice. Steps past the fixed point change nothing, so several may run
    between two tests for it (`steps_per_check`; each test waits for a GPU).
    """
    weights = suppresses.to(torch.float32)  # (B, B) matmul does the "any" as a sum
    keep = torch.ones(len(weights), dtype=torch.bool, device=weights.device)  # (B,)
    while True:
        for _ in range(steps_per_check):
            previous = keep
            keep = (previous.to(torch.float32) @ weights) == 0  # (B,) no kept box suppresses j
        if torch.equal(keep, previous):
            return keep


def sweep_settings(device):
    """(boxes per block, fixed-point steps per test) for NMS on `device`; any values give the
    same result, only the time differs."""
    if device.type == "cuda":
        return GPU_BLOCK, GPU_STEPS_PER_CHECK
    return BLOCK, 1


def nms(boxes, scores, iou_threshold):
    """Torch twin of `mrcnn_edu.reference.nms.nms`: same contract (int64 indices of the kept
    boxes, highest score first; ties lower index first), any device and float dtype."""
    block_size, steps_per_check = sweep_settings(boxes.device)
    boxes = _check_boxes(boxes).detach()  # indices only: no graph, in-place is safe
    scores = check_scores(scores, len(boxes)).detach()
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,) ties by index
    sorted_boxes = boxes[order]  # (N, 4) in visiting order
    areas = box_area(sorted_boxes)  # (N,)
    n = len(order)
    suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)  # (N,) in visiting order
    keep = torch.zeros(n, dtype=torch.bool, device=boxes.device)  # (N,) in visiting order
    for start in range(0, n, block_size):  # a loop over N / B blocks, not over boxes
        stop = min(start + block_size, n)
        block = torch.nonzero(~suppressed[start:stop]).flatten() + start  # (B',) not suppressed
        if block.numel() == 0:
            continue
        block_boxes, block_areas = sorted_boxes[block], areas[block]  # (B', 4), (B',)
        above = overlaps_above(block_boxes, block_areas, block_boxes, block_areas, iou_threshold)
        suppresses = torch.triu(above, diagonal=1)  # (B', B') earlier -> later
        kept = block[resolve_block(suppresses, steps_per_check)]  # (K,)
        keep[kept] = True
        later = torch.nonzero(~suppressed[stop:]).flatten() + stop  # (L,) after the block
        if later.numel() == 0:
            continue
        hit = overlaps_above(sorted_boxes[kept], areas[kept], sorted_boxes[later], areas[later],
                             iou_threshold).any(dim=0)  # (L,) suppressed by a kept box
        suppressed[later[hit]] = True
    return order[keep]


def offset_by_label(boxes, labels):
    """Torch twin of `mrcnn_edu.reference.nms.offset_by_label`: label * (max - min + 1) shifts."""
    span = boxes.max() - boxes.min() + 1
    return boxes + (labels.to(boxes.dtype) * span)[:, None]  # (N, 4)


def batched_nms(boxes, scores, labels, iou_threshold):
    """Torch twin of `mrcnn_edu.reference.nms.batched_nms`: same contract (NMS within each
    label, by the coordinate-offset trick)."""
    check_scores(scores, len(_check_boxes(boxes)))
    check_scores(labels, len(boxes), name="labels")
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    return nms(offset_by_label(boxes, labels), scores, iou_threshold)
