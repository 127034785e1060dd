"""Tests for mrcnn_edu.model backbone, fpn, transforms: shapes, torchvision names, resizing."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_edu.model.backbone import FrozenBatchNorm2d, ResNet, load_torchvision_weights
from mrcnn_edu.model.fpn import FPN
from mrcnn_edu.model.transforms import BatchTransform, RandomHorizontalFlip, resized_size

CHANNELS = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512], 50: [256, 512, 1024, 2048]}


def bn_state(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def torchvision_resnet_shapes(depth):
    """{key: shape} of torchvision's resnet{depth}().state_dict(), from its architecture."""
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
    expansion = 4 if depth == 50 else 1
    shapes = {"conv1.weight": (64, 3, 7, 7), **bn_state("bn1", 64)}
    cin = 64
    for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for j in range(n):
            p = f"layer{i}.{j}"
            if expansion == 1:
                convs = [(width, cin, 3), (width, width, 3)]
            else:
                convs = [(width, cin, 1), (width, width, 3), (width * 4, width, 1)]
            for c, (co, ci, k) in enumerate(convs, start=1):
                shapes[f"{p}.conv{c}.weight"] = (co, ci, k, k)
                shapes.update(bn_state(f"{p}.bn{c}", co))
            if j == 0 and (i > 1 or cin != width * expansion):
                shapes[f"{p}.downsample.0.weight"] = (width * expansion, cin, 1, 1)
                shapes.update(bn_state(f"{p}.downsample.1", width * expansion))
            cin = width * expansion
    shapes["fc.weight"], shapes["fc.bias"] = (1000, cin), (1000,)
    return shapes


def random_state(shapes):
    g = torch.Generator().manual_seed(0)
    return {k: torch.tensor(7) if k.endswith("num_batches_tracked")
            else torch.rand(s, generator=g) + 0.5 for k, s in shapes.items()}


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_backbone_output_shapes(depth):
    net = ResNet(depth, "frozen_bn")
    c2, c3, c4, c5 = net(torch.zeros(1, 3, 64, 96))
    assert [c.shape[1] for c in (c2, c3, c4, c5)] == CHANNELS[depth] == net.out_channels
    assert [tuple(c.shape[-2:]) for c in (c2, c3, c4, c5)] == [(16, 24), (8, 12), (4, 6), (2, 3)]


@pytest.mark.parametrize("depth", [18, 50])
def test_width_scales_every_stage_and_the_weights_quadratically(depth):
    wide, narrow = ResNet(depth, "group_norm", 16), ResNet(depth, "group_norm", 16, width=32)
    assert narrow.out_channels == [c // 2 for c in wide.out_channels]
    c2, c3, c4, c5 = narrow(torch.zeros(1, 3, 64, 96))
    assert [c.shape[1] for c in (c2, c3, c4, c5)] == narrow.out_channels
    assert [tuple(c.shape[-2:]) for c in (c2, c3, c4, c5)] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert 0.24 < count(narrow) / count(wide) < 0.26  # convs dominate: (1/2)^2
    assert list(narrow.state_dict()) == list(wide.state_dict())  # the same torchvision names


@pytest.mark.parametrize("depth", [18, 50])
def test_parameter_names_are_torchvision_names(depth):
    expected = {k: s for k, s in torchvision_resnet_shapes(depth).items()
                if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    got = {k: tuple(v.shape) for k, v in ResNet(depth, "frozen_bn").state_dict().items()}
    assert got == expected


def test_checkpoint_round_trip_and_key_report(tmp_path, capsys):
    state = random_state(torchvision_resnet_shapes(18))
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    net = ResNet(18, "frozen_bn")
    assert load_torchvision_weights(net, str(path)) == ([], [])
    assert torch.equal(net.layer2[0].downsample[1].running_var,
                       state["layer2.0.downsample.1.running_var"])
    assert torch.equal(net.conv1.weight, state["conv1.weight"])

    del state["layer1.0.conv1.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, path)
    missing, unexpected = load_torchvision_weights(ResNet(18, "frozen_bn"), str(path))
    assert missing == ["layer1.0.conv1.weight"] and unexpected == ["layer5.0.conv1.weight"]
    out = capsys.readouterr().out
    assert "layer1.0.conv1.weight" in out and "layer5.0.conv1.weight" in out


def test_group_norm_reports_batchnorm_statistics_as_unexpected(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(random_state(torchvision_resnet_shapes(18)), path)
    net = ResNet(18, "group_norm", 16)
    missing, unexpected = load_torchvision_weights(net, str(path), verbose=False)
    assert missing == [] and "bn1.running_mean" in unexpected and "fc.weight" not in unexpected


def test_frozen_batchnorm_matches_eval_batchnorm():
    bn = torch.nn.BatchNorm2d(3).eval()
    g = torch.Generator().manual_seed(0)
    for buf in (bn.weight.data, bn.bias.data, bn.running_mean, bn.running_var):
        buf.copy_(torch.rand(3, generator=g) + 0.5)
    frozen = FrozenBatchNorm2d(3)
    frozen.load_state_dict(bn.state_dict())
    x = torch.randn(2, 3, 4, 5, generator=g)
    torch.testing.assert_close(frozen(x), bn(x))
    assert list(frozen.parameters()) == []


def test_freeze_stops_stem_and_layer1():
    net = ResNet(18, "group_norm", 16)
    net.freeze(2)
    assert not net.conv1.weight.requires_grad and not net.layer1[0].conv1.weight.requires_grad
    assert net.layer2[0].conv1.weight.requires_grad


def test_fpn_shapes():
    fpn = FPN([64, 128, 256, 512], 32)
    feats = [torch.zeros(2, c, 64 // s, 96 // s)
             for c, s in zip([64, 128, 256, 512], [4, 8, 16, 32])]
    outs = fpn(feats)
    assert [tuple(p.shape[-2:]) for p in outs] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert all(p.shape[:2] == (2, 32) for p in outs)


def test_resized_size_rules():
    assert resized_size(100, 200, 50, 1000) == (50, 100)  # shorter side to min_size
    assert resized_size(100, 400, 50, 150) == (38, 150)  # longer side capped by max_size


def test_batch_transform_resizes_targets_and_pads():
    t = BatchTransform(32, 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 32)
    masks = torch.zeros(2, 20, 40, dtype=torch.uint8)
    masks[0, 0:10, 0:20] = 1
    target = {"boxes": torch.tensor([[0.0, 0.0, 20.0, 10.0], [1.0, 1.0, 2.0, 2.0]]),
              "labels": torch.tensor([1, 2]), "masks": masks, "iscrowd": torch.tensor([0, 1])}
    images = [torch.full((3, 20, 40), 0.5), torch.full((3, 30, 30), 0.75)]
    batch, sizes, targets = t(images, [target, {**target, "iscrowd": torch.tensor([0, 0])}])
    assert sizes == [(32, 64), (32, 32)] and tuple(batch.shape) == (2, 3, 32, 64)
    assert batch[0].abs().max() == 0 and torch.allclose(batch[1, :, :, :32], torch.ones(()))
    assert batch[1, :, :, 32:].abs().max() == 0  # padding
    assert len(targets[0]["boxes"]) == 1 and len(targets[1]["boxes"]) == 2  # crowd dropped
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[0.0, 0.0, 32.0, 16.0]]))
    assert targets[0]["masks"].shape == (1, 32, 64) and targets[0]["masks"].sum() == 16 * 32


def test_horizontal_flip_boxes_and_masks():
    image = torch.arange(3 * 4 * 10, dtype=torch.float32).view(3, 4, 10)
    masks = torch.zeros(1, 4, 10, dtype=torch.uint8)
    masks[0, 1:3, 0:3] = 1
    target = {"boxes": torch.tensor([[0.0, 1.0, 3.0, 3.0]]), "labels": torch.tensor([1]),
              "masks": masks}
    img2, t2 = RandomHorizontalFlip(1.0)(image, target)
    assert torch.equal(img2, image.flip(-1))
    assert t2["boxes"].tolist() == [[7.0, 1.0, 10.0, 3.0]]
    assert t2["masks"][0, 1:3, 7:10].all() and t2["masks"].sum() == 6
    assert target["boxes"].tolist() == [[0.0, 1.0, 3.0, 3.0]]  # input untouched
    img3, t3 = RandomHorizontalFlip(0.0)(image, target)
    assert img3 is image and t3 is target


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2000), st.integers(1, 1000), st.integers(1, 2000))
def test_resized_size_bounds(h, w, min_size, max_size):
    new_h, new_w = resized_size(h, w, min_size, max_size)
    assert new_h >= 1 and new_w >= 1
    # the longer side never passes max_size (up to rounding); the shorter side reaches
    # min_size unless that cap stopped it
    assert max(new_h, new_w) <= max_size + 0.5
    assert min(new_h, new_w) <= min_size + 0.5
    assert min(new_h, new_w) >= min_size - 0.5 or max(new_h, new_w) >= max_size - 1


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 4))
def test_flipping_twice_is_the_identity(seed, n):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 20
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 10], 1)  # (n, 4) inside 30 x 30
    target = {"boxes": boxes, "labels": torch.ones(n, dtype=torch.int64),
              "masks": (torch.rand(n, 30, 31, generator=g) > 0.5).to(torch.uint8)}
    image = torch.rand(3, 30, 31, generator=g)
    flip = RandomHorizontalFlip(1.0)
    image2, target2 = flip(*flip(image, target))
    assert torch.equal(image2, image) and torch.equal(target2["masks"], target["masks"])
    torch.testing.assert_close(target2["boxes"], boxes)
