"""ResNet-18/34/50 backbone with torchvision's parameter names (lesson 05_backbone_fpn_levels).

The backbone turns a batch of images into four feature maps C2..C5 at strides 4, 8, 16, 32.
It is written here block by block, but every parameter and buffer carries the name torchvision's
`resnet18/34/50` gives it ("conv1.weight", "layer1.0.bn1.running_mean",
"layer2.0.downsample.0.weight", ...), so an ImageNet checkpoint downloaded by the user loads
with `load_torchvision_weights` without any key renaming.

Shape legend: B images, C channels, H x W input size (multiples of 32 after padding).

    C2 (B, C2, H/4,  W/4)     C3 (B, C3, H/8,  W/8)
    C4 (B, C4, H/16, W/16)    C5 (B, C5, H/32, W/32)
    channels: 64/128/256/512 for ResNet-18/34; 256/512/1024/2048 for ResNet-50.
    A `width` other than 64 scales every stage alike (width 32: 32/64/128/256 for ResNet-18);
    such a trunk has no ImageNet weights and trains from scratch.

Normalisation is either `FrozenBatchNorm2d` (BatchNorm whose ImageNet statistics and affine
parameters are fixed buffers: batches of 2 images are too small to estimate statistics) or
`nn.GroupNorm` (trains from scratch, independent of the batch size). Either module is still
called `bn1`, `bn2`, ... so the names stay torchvision's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# depth -> (block type, blocks per stage)
RESNET_LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                 50: ("bottleneck", (3, 4, 6, 3))}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all stored as buffers.

    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, folded into one scale
    and shift. Buffers keep torchvision's names so BatchNorm checkpoints load; their
    `num_batches_tracked` counter has no meaning here and is dropped on load.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()  # (C,)
        shift = self.bias - self.running_mean * scale  # (C,)
        return x * scale[None, :, None, None] + shift[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(norm: str, channels: int, groups: int = 32) -> nn.Module:
    """"frozen_bn" -> FrozenBatchNorm2d; "group_norm" -> GroupNorm, min(groups, channels) groups."""
    if norm == "frozen_bn":
        return FrozenBatchNorm2d(channels)
    if norm == "group_norm":
        return nn.GroupNorm(min(groups, channels), channels)
    raise ValueError(f"norm must be 'frozen_bn' or 'group_norm', got {norm!r}")


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut (ResNet-18/34). Stride sits on the first conv."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, norm: str, groups: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = conv3x3(cin, width, stride)
        self.bn1 = make_norm(norm, width, groups)
        self.conv2 = conv3x3(width, cout)
        self.bn2 = make_norm(norm, cout, groups)
        self.downsample = _shortcut(cin, cout, stride, norm, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place, as torchvision does: the norms' outputs are kept by no backward pass, so
        # ReLU and the shortcut's sum may overwrite them instead of allocating another map.
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += identity
        return F.relu(out, inplace=True)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) and a shortcut (ResNet-50).

    The stride sits on the 3x3 conv, as in torchvision ("ResNet v1.5"), not on the first 1x1.
    """

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, norm: str, groups: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = conv1x1(cin, width)
        self.bn1 = make_norm(norm, width, groups)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = make_norm(norm, width, groups)
        self.conv3 = conv1x1(width, cout)
        self.bn3 = make_norm(norm, cout, groups)
        self.downsample = _shortcut(cin, cout, stride, norm, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)  # in place: see BasicBlock
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        out += identity
        return F.relu(out, inplace=True)


def _shortcut(cin: int, cout: int, stride: int, norm: str, groups: int) -> nn.Module | None:
    # A projection only where the shape changes; torchvision names it downsample.0 / .1.
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(conv1x1(cin, cout, stride), make_norm(norm, cout, groups))


class ResNet(nn.Module):
    """ResNet trunk without the classifier: forward(x (B, 3, H, W)) -> [C2, C3, C4, C5]."""

    def __init__(self, depth: int = 50, norm: str = "frozen_bn", groups: int = 32,
                 width: int = 64):
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        kind, blocks = RESNET_LAYERS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        # Each stage doubles the width; the parameter count grows as width ** 2.
        stage_widths = (width, 2 * width, 4 * width, 8 * width)
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, width, groups)
        cin = width
        for i, (n, stage_width) in enumerate(zip(blocks, stage_widths)):
            stride = 1 if i == 0 else 2  # layer1 follows the max-pool, already at stride 4
            layer = []
            for j in range(n):
                layer.append(block(cin, stage_width, stride if j == 0 else 1, norm, groups))
                cin = stage_width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.out_channels = [w * block.expansion for w in stage_widths]
        self._init_weights(norm)

    def _init_weights(self, norm: str) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if norm == "group_norm":
            # Zero the last norm of each residual branch: every block starts as the identity,
            # which lets a from-scratch ResNet train at a large learning rate (Goyal et al. 2017).
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.bn3.weight if isinstance(m, Bottleneck) else m.bn2.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)  # (B, width, H/2, W/2)
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)  # (B, width, H/4, W/4)
        c2 = self.layer1(x)  # (B, C2, H/4, W/4)
        c3 = self.layer2(c2)  # (B, C3, H/8, W/8)
        c4 = self.layer3(c3)  # (B, C4, H/16, W/16)
        c5 = self.layer4(c4)  # (B, C5, H/32, W/32)
        return [c2, c3, c4, c5]

    def freeze(self, freeze_at: int) -> None:
        """Stop gradients to the stem (freeze_at >= 1) and layer1..layer{freeze_at - 1}.

        torchvision's default for a pretrained detector is freeze_at=2: stem and layer1 fixed.
        """
        frozen = [self.conv1, self.bn1] if freeze_at >= 1 else []
        frozen += [getattr(self, f"layer{i}") for i in range(1, min(freeze_at, 5))]
        for module in frozen:
            module.requires_grad_(False)


def load_torchvision_weights(resnet: ResNet, path: str, verbose: bool = True):
    """Load a torchvision ResNet state dict (a `.pth` file) into `resnet`, by key name.

    The ImageNet classifier `fc.*` has no place in a backbone and is skipped silently; every
    other key that does not fit is reported. Returns (missing, unexpected): names the
    backbone expected but the file lacks, and names in the file the backbone does not have.
    A key whose shape differs raises, because loading it would be silently wrong.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)  # {name: tensor}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    result = resnet.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if verbose:
        print(f"backbone weights from {path}: {len(state) - len(unexpected)} tensors loaded")
        if missing:
            print(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            print(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    return missing, unexpected
