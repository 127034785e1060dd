"""Input transforms: in-model batch transform, training augmentation (lesson 10_training_on_shapes).

`BatchTransform` is the first and last step of `MaskRCNN.forward`:

    images (3, H_i, W_i) in [0, 1], any sizes
      -> resize so the shorter side is min_size (the longer at most max_size); in training,
         with scale jitter, a size drawn per image from train_min_sizes instead
      -> normalise with the ImageNet mean and std
      -> pad bottom/right with zeros into one (B, 3, H_pad, W_pad) tensor, multiples of 32
    ... the network runs on the batch ...
    detections in resized pixels -> `postprocess` -> boxes and pasted masks in ORIGINAL pixels

Targets go through the same resize (boxes scaled per axis, masks by nearest neighbour at pixel
centres) and lose their crowd instances, which are never training targets.

`RandomHorizontalFlip` and `RandomCopyPaste` are data augmentation: they belong to the data,
not to the model. A flip needs one image (`CocoDataset(..., transforms=RandomHorizontalFlip(0.5))`
works); a paste needs two, so the training loop applies both to each batch (engine.schedule).

Shape legend: B images, N instances, D detections, M mask side (28), H x W image size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrcnn_edu.ops import expand_boxes, paste_masks
from mrcnn_edu.reference.masks import MASK_THRESHOLD


def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(h, w) after scaling the shorter side to min_size, unless the longer would pass max_size."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))  # never a 0-pixel side


def resize_target(target: dict, size: tuple[int, int]) -> dict:
    """Boxes and masks of one target resized from the masks' (H, W) to `size` (h, w)."""
    (h, w), (new_h, new_w) = target["masks"].shape[-2:], size
    scale = target["boxes"].new_tensor([new_w / w, new_h / h, new_w / w, new_h / h])
    masks = target["masks"].new_zeros((0, *size))  # (0, h, w): interpolate refuses empty input
    if len(target["masks"]) > 0:
        # nearest-exact samples at pixel centres, our convention; "nearest" is half a pixel off.
        masks = F.interpolate(target["masks"][None].float(), size=size, mode="nearest-exact")
        masks = masks[0].to(torch.uint8)  # (N, h, w)
    return {"boxes": target["boxes"] * scale, "labels": target["labels"], "masks": masks}


def drop_crowd(target: dict) -> dict:
    """The non-crowd instances of a target (all of them without "iscrowd"): boxes, labels, masks."""
    keep = target["iscrowd"] == 0 if "iscrowd" in target else slice(None)
    return {k: target[k][keep] for k in ("boxes", "labels", "masks")}


class BatchTransform(nn.Module):
    """Resize, normalise and pad a list of images into one batch; map detections back.

    forward(images, targets=None) -> (batch (B, 3, H_pad, W_pad), image_sizes [(h, w)], targets)
    where image_sizes are the resized sizes before padding and targets (if given) hold resized
    "boxes", "labels", "masks" of the non-crowd instances only.
    """

    def __init__(self, min_size: int, max_size: int, pixel_mean, pixel_std,
                 size_divisible: int = 32, train_min_sizes: tuple[int, ...] = ()):
        super().__init__()
        self.min_size, self.max_size, self.size_divisible = min_size, max_size, size_divisible
        self.train_min_sizes = tuple(train_min_sizes)  # scale jitter; () = min_size always
        # Not persistent: they come from the config, so checkpoints need not carry them.
        mean = torch.tensor(pixel_mean, dtype=torch.float32)[:, None, None]  # (3, 1, 1)
        std = torch.tensor(pixel_std, dtype=torch.float32)[:, None, None]  # (3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        sizes = [resized_size(*img.shape[-2:], self.input_min_size(), self.max_size)
                 for img in images]
        batch = self.pad([self.resize_image(img, size) for img, size in zip(images, sizes)])
        if targets is not None:
            targets = [resize_target(drop_crowd(t), size) for t, size in zip(targets, sizes)]
        return batch, sizes, targets  # (B, 3, H_pad, W_pad), [(h, w)], [dict] or None

    def input_min_size(self) -> int:
        """The shorter side for one image: min_size, or in training with scale jitter one of
        train_min_sizes, drawn from torch's global RNG (which the training loop seeds per
        iteration, so a resumed run draws the same sizes)."""
        if not (self.training and self.train_min_sizes):
            return self.min_size
        return self.train_min_sizes[int(torch.randint(len(self.train_min_sizes), ()))]

    def resize_image(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Normalise one (3, H, W) image and resize it bilinearly to size (h, w)."""
        image = (image - self.pixel_mean) / self.pixel_std  # (3, H, W)
        if tuple(image.shape[-2:]) == size:
            return image
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]

    def pad(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Zero-pad bottom and right to a common size that is a multiple of size_divisible."""
        d = self.size_divisible
        height = -(-max(img.shape[-2] for img in images) // d) * d  # ceil to a multiple of d
        width = -(-max(img.shape[-1] for img in images) // d) * d
        batch = images[0].new_zeros(len(images), 3, height, width)  # (B, 3, H_pad, W_pad)
        for b, img in enumerate(images):
            batch[b, :, : img.shape[-2], : img.shape[-1]] = img
        return batch

    def postprocess(self, detections: list[dict], image_sizes, original_sizes,
                    mask_threshold: float = MASK_THRESHOLD,
                    mask_box_scale: float = 1.0) -> list[dict]:
        """Boxes from resized to original pixels; mask probabilities (D, M, M) pasted into
        the original image as uint8 (D, H, W), each into its box scaled by mask_box_scale
        about its centre (the box the mask head saw; `RoIHeads.detect`)."""
        results = []
        for det, (h, w), (oh, ow) in zip(detections, image_sizes, original_sizes):
            scale = det["boxes"].new_tensor([ow / w, oh / h, ow / w, oh / h])
            boxes = det["boxes"] * scale  # (D, 4) original pixels
            mask_boxes = expand_boxes(boxes, mask_box_scale)  # (D, 4)
            masks = paste_masks(det["masks"], mask_boxes, (oh, ow), mask_threshold)  # (D, H, W)
            results.append({"boxes": boxes, "labels": det["labels"], "scores": det["scores"],
                            "masks": masks.to(torch.uint8)})
        return results


def as_generator(generator):
    """None (torch's global RNG) or a torch.Generator as given; an int seeds a new Generator."""
    return torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator


class RandomHorizontalFlip:
    """Flip an image and its target left-right with probability p.

    __call__(image (3, H, W), target) -> (image, target); the input target is not modified.
    x -> W - x, so a box (x1, y1, x2, y2) becomes (W - x2, y1, W - x1, y2); masks are mirrored.
    generator: None (torch's global RNG, which DataLoader reseeds per worker), an int seed,
    or a torch.Generator.
    """

    def __init__(self, p: float = 0.5, generator=None):
        self.p, self.generator = p, as_generator(generator)

    def __call__(self, image: torch.Tensor, target: dict):
        if torch.rand((), generator=self.generator).item() >= self.p:
            return image, target
        width = image.shape[-1]
        x1, y1, x2, y2 = target["boxes"].unbind(1)  # 4 x (N,)
        boxes = torch.stack([width - x2, y1, width - x1, y2], dim=1)  # (N, 4)
        return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


def boxes_of_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight (x1, y1, x2, y2) boxes of (N, H, W) masks, x2 = last column + 1 (COCO's bbox rule);
    an empty mask gives (0, 0, 0, 0)."""
    rows, cols = masks.bool().any(dim=2), masks.bool().any(dim=1)  # (N, H), (N, W)
    # argmax returns the first maximum: the first occupied row or column from either end
    y1, x1 = rows.int().argmax(dim=1), cols.int().argmax(dim=1)  # (N,)
    y2 = rows.shape[1] - rows.flip(1).int().argmax(dim=1)  # (N,)
    x2 = cols.shape[1] - cols.flip(1).int().argmax(dim=1)  # (N,)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)  # (N, 4)
    return boxes * rows.any(dim=1, keepdim=True)  # empty masks: all zeros


def copy_paste(image: torch.Tensor, target: dict, source_image: torch.Tensor, source_target: dict,
               chosen: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Paste the `chosen` instances of a source image onto `image` (Ghiasi et al. 2021, "Simple
    Copy-Paste").

    image (3, H, W), source_image (3, Hs, Ws); chosen: (Ns,) bool over the source's instances.
    The source sits at the top-left corner: where the sizes differ, what falls outside `image`
    is cut off. Pasted pixels replace the image's, so the pasted instances hide what lies under
    them: every mask of `image` loses those pixels, an instance the paste hides entirely is
    dropped, and a box whose mask lost pixels is re-fitted to what remains (untouched boxes stay
    as they were). Pasted instances get the tight box of their (cut) mask; one cut down to no
    pixel is left out. Crowd instances are never pasted. The inputs are not modified.
    Returns (image (3, H, W), target with boxes, labels, masks, iscrowd, area and, when the input
    had one, image_id). `area` becomes every instance's pixel count at this image's size (the
    dataset's is COCO's, at the original size); training does not read it.
    """
    (h, w), (hs, ws) = image.shape[-2:], source_image.shape[-2:]
    ch, cw = min(h, hs), min(w, ws)  # the region the two images share
    chosen = chosen.to(source_target["labels"].device)
    crowd = source_target.get("iscrowd", torch.zeros_like(source_target["labels"]))  # (Ns,)
    chosen = chosen & (crowd == 0)  # crowd regions are not instances to paste
    pasted = source_target["masks"].new_zeros((int(chosen.sum()), h, w))  # (P, H, W)
    pasted[:, :ch, :cw] = source_target["masks"][chosen][:, :ch, :cw]
    alive = pasted.flatten(1).bool().any(dim=1)  # (P,) one cut down to nothing is left out
    pasted = pasted[alive]
    if len(pasted) == 0:
        return image, target
    cover = pasted.bool().any(dim=0)  # (H, W) pixels the pasted instances take over
    image = torch.where(cover, F.pad(source_image[:, :ch, :cw], (0, w - cw, 0, h - ch)), image)
    masks = target["masks"] * (~cover).to(target["masks"].dtype)  # (N, H, W) what stays visible
    changed = (masks != target["masks"]).flatten(1).any(dim=1)  # (N,)
    # dropped: what the paste hid entirely (a mask already empty before it stays, as elsewhere)
    visible = ~changed | masks.flatten(1).bool().any(dim=1)  # (N,)
    boxes = torch.where(changed[:, None], boxes_of_masks(masks), target["boxes"])[visible]
    masks = torch.cat([masks[visible], pasted])  # (N' + P, H, W)
    iscrowd = target.get("iscrowd", torch.zeros_like(target["labels"]))  # (N,)
    out = {"boxes": torch.cat([boxes, boxes_of_masks(pasted)]),
           "labels": torch.cat([target["labels"][visible], source_target["labels"][chosen][alive]]),
           "masks": masks,
           "iscrowd": torch.cat([iscrowd[visible], iscrowd.new_zeros(len(pasted))]),
           "area": masks.flatten(1).sum(dim=1).to(torch.float32)}
    if "image_id" in target:
        out["image_id"] = target["image_id"]
    return image, out


class RandomCopyPaste:
    """With probability p, paste a random half (each instance with probability 1/2) of a source
    image's instances onto an image: `copy_paste` with a random choice.

    __call__(image, target, source_image, source_target) -> (image, target).
    generator: None (torch's global RNG), an int seed, or a torch.Generator.
    """

    def __init__(self, p: float = 0.5, generator=None):
        self.p, self.generator = p, as_generator(generator)

    def __call__(self, image, target, source_image, source_target):
        if torch.rand((), generator=self.generator).item() >= self.p:
            return image, target
        n = len(source_target["labels"])
        chosen = torch.rand(n, generator=self.generator) < 0.5  # (Ns,)
        return copy_paste(image, target, source_image, source_target, chosen)


class ResizeToInput:
    """Resize an image and its target to the model's input size, in the dataset, for training.

    __call__(image (3, H, W), target) -> (image (3, h, w), target) with boxes and masks resized
    as `BatchTransform` would (same `resized_size`, bilinear image, nearest-exact masks); other
    target entries pass through. The model's own resize is then the identity, so the result is
    the same, but a 4000 x 3000 photo's full-resolution masks never reach the batch.
    """

    def __init__(self, min_size: int, max_size: int):
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image: torch.Tensor, target: dict):
        (h, w), masks = image.shape[-2:], target["masks"]
        size = resized_size(h, w, self.min_size, self.max_size)
        if (h, w) == size:
            return image, target
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        scale = target["boxes"].new_tensor([size[1] / w, size[0] / h, size[1] / w, size[0] / h])
        # uint8 in, uint8 out (CPU): the same pixels as resize_target's, without a float32
        # copy of every full-size mask
        masks = (F.interpolate(masks[None], size=size, mode="nearest-exact")[0] if len(masks)
                 else masks.new_zeros((0, *size)))  # (N, h, w)
        return image, {**target, "boxes": target["boxes"] * scale, "masks": masks}  # (3, h, w)
