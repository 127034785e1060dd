"""A stand-in model and dataset that follow MaskRCNN's and CocoDataset's contracts, for fast
engine tests (seconds, not minutes). Not a test module itself (leading underscore).

FakeMaskRCNN: train mode -> dict of the five Mask R-CNN loss names; it draws from torch's global
RNG like the real RPN/RoI samplers do, so exact-resume tests see that RNG's effect. Eval mode ->
one detection per image. `nan_at_call` makes the k-th train-mode forward return a NaN loss_box;
`interrupt_at_call` makes it raise KeyboardInterrupt (a "killed" run).

Run as a script under torchrun it trains on 2 CPU processes: see tests/test_engine_train.py.
"""
import sys

import torch
from torch import nn

LOSS_NAMES = ("loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box", "loss_mask")


class FakeMaskRCNN(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, len(LOSS_NAMES) + 4)
        self.num_classes = num_classes
        self.calls = 0
        self.nan_at_call = None
        self.interrupt_at_call = None

    def features(self, images):
        return torch.cat([self.norm(self.conv(im[None])).mean((2, 3)) for im in images])  # (B, 8)

    def forward(self, images, targets=None):
        out = self.head(self.features(images))  # (B, 9)
        if not self.training:
            return [self.detection(im, o) for im, o in zip(images, out)]
        self.calls += 1
        if self.interrupt_at_call == self.calls:
            raise KeyboardInterrupt("simulated kill")
        noise = torch.rand(len(LOSS_NAMES))  # the global RNG, like sample_labels
        gt = torch.stack([t["boxes"][0] / 32 for t in targets])  # (B, 4)
        losses = {name: (out[:, i] - noise[i]).pow(2).mean() for i, name in enumerate(LOSS_NAMES)}
        losses["loss_box"] = losses["loss_box"] + (out[:, 5:] - gt).abs().mean()
        if self.nan_at_call == self.calls:
            losses["loss_box"] = losses["loss_box"] * float("nan")
        return losses

    def detection(self, image, out):
        h, w = image.shape[-2:]
        masks = torch.zeros(1, h, w, dtype=torch.uint8)
        masks[:, : h // 2, : w // 2] = 1
        return {"boxes": torch.tensor([[0.0, 0.0, w / 2, h / 2]]), "labels": torch.tensor([1]),
                "scores": torch.sigmoid(out[:1]).detach(), "masks": masks}


class FakeDataset(torch.utils.data.Dataset):
    """`n` seeded 32x32 images with one square each; CocoDataset's attributes, no files."""

    def __init__(self, n=6, num_classes=3):
        self.n = n
        self.num_classes = num_classes
        self.class_names = ["__background__"] + [f"class{k}" for k in range(1, num_classes + 1)]
        self.label_to_cat_id = {k: k for k in range(1, num_classes + 1)}
        self.image_ids = list(range(1, n + 1))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        image = torch.rand(3, 32, 32, generator=g)
        x, y = int(torch.randint(0, 16, (), generator=g)), int(torch.randint(0, 16, (), generator=g))
        masks = torch.zeros(1, 32, 32, dtype=torch.uint8)
        masks[0, y : y + 12, x : x + 12] = 1
        target = {"boxes": torch.tensor([[x, y, x + 12.0, y + 12.0]]),
                  "labels": torch.tensor([1 + i % self.num_classes]), "masks": masks,
                  "iscrowd": torch.zeros(1, dtype=torch.int64),
                  "image_id": torch.tensor(self.image_ids[i])}
        return image, target


def fake_config(**changes):
    """The tiny preset with short, fast settings for the engine tests."""
    import dataclasses

    from mrcnn_edu.config import preset

    settings = dict(lr=0.01, warmup_iters=2, max_iters=6, lr_steps=(4,), batch_size=2,
                    checkpoint_every=2, log_every=1, num_workers=0, hflip_prob=0.0, seed=0)
    settings.update(changes)
    return dataclasses.replace(preset("tiny"), **settings)


def main_distributed(output_dir):
    """Entry point under torchrun: 2 CPU processes train the fake model for a few steps."""
    from mrcnn_edu.engine import distributed
    from mrcnn_edu.engine.train import fit

    info = distributed.init_distributed("cpu")
    torch.manual_seed(0)
    model = FakeMaskRCNN()
    try:
        fit(model, FakeDataset(n=8), fake_config(max_iters=3), output_dir, progress=False,
            info=info)
        # DDP keeps the copies identical: every rank prints the same weight checksum.
        print(f"rank {info.rank} of {info.world_size} checksum "
              f"{sum(p.double().sum().item() for p in model.parameters()):.10f}", flush=True)
    finally:
        distributed.cleanup(info)


if __name__ == "__main__":
    main_distributed(sys.argv[1])
