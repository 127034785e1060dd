"""Anchor matching and sampling (lesson 04_nms_and_matching), torch twin of
`mrcnn_edu.reference.matching`.

Shape legend: G ground-truth boxes, A anchors; iou is (G, A), gt along rows.
Labels: 1 positive, 0 negative, -1 ignored; matched index and label are returned separately.

Reference -> twin:
    match_anchors -> match_anchors
    as_generator  -> as_generator (plus the device the generator must live on)
    sample_labels -> sample_labels (same counts; torch's RNG, so other picks)
"""
import torch


def match_anchors(iou, high=0.7, low=0.3, allow_low_quality=True):
    """Torch twin of `mrcnn_edu.reference.matching.match_anchors`: same contract.
    iou (G, A) -> (matched_idx, labels), both int64 (A,) on iou's device."""
    if iou.ndim != 2:
        raise ValueError(f"iou must have shape (G, A) = (num gt, num anchors), "
                         f"got {tuple(iou.shape)}")
    if not low <= high:
        raise ValueError(f"need low <= high, got low={low} and high={high}")
    num_gt, num_anchors = iou.shape
    if num_gt == 0:  # nothing to match: all background
        zeros = torch.zeros(num_anchors, dtype=torch.int64, device=iou.device)
        return zeros, zeros.clone()
    best, matched_idx = iou.max(dim=0)  # (A,), (A,) first gt on ties
    labels = torch.full((num_anchors,), -1, dtype=torch.int64, device=iou.device)  # (A,)
    labels[best < low] = 0
    labels[best >= high] = 1
    if allow_low_quality and num_anchors:
        best_per_gt = iou.max(dim=1, keepdim=True).values  # (G, 1)
        is_best = (iou == best_per_gt) & (best_per_gt > 0)  # (G, A)
        labels[is_best.any(dim=0)] = 1
    return matched_idx, labels


def as_generator(generator, device):
    """torch.Generator on `device` from an int seed, an existing Generator, or None (global RNG)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator(device=device).manual_seed(int(generator))


def sample_labels(labels, batch_size, positive_fraction, generator=None):
    """Torch twin of `mrcnn_edu.reference.matching.sample_labels`: same contract and counts;
    generator is an int seed or torch.Generator, so the picks differ from the reference's."""
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (A,), got {tuple(labels.shape)}")
    gen = as_generator(generator, labels.device)
    positives = torch.nonzero(labels == 1).flatten()  # (P,)
    negatives = torch.nonzero(labels == 0).flatten()  # (Q,)
    num_pos = min(positives.numel(), int(batch_size * positive_fraction))
    num_neg = min(negatives.numel(), batch_size - num_pos)  # negatives fill what positives leave
    out = torch.full_like(labels, -1)
    pick_pos = torch.randperm(positives.numel(), generator=gen, device=labels.device)[:num_pos]
    pick_neg = torch.randperm(negatives.numel(), generator=gen, device=labels.device)[:num_neg]
    out[positives[pick_pos]] = 1
    out[negatives[pick_neg]] = 0
    return out
