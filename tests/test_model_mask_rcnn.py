"""Tests for mrcnn_edu.model: RPN, RoI heads and the whole MaskRCNN on tiny synthetic images."""
import dataclasses

import pytest
import torch

from mrcnn_edu.config import preset
from mrcnn_edu.model import LOSS_KEYS, MaskRCNN
from mrcnn_edu.ops import box_iou


def small_config(**overrides):
    """The tiny preset shrunk further so a forward pass takes a fraction of a second."""
    cfg = dataclasses.replace(
        preset("tiny"), num_classes=2, min_size=96, max_size=160, fpn_channels=32,
        box_head_dim=64, mask_head_dim=32, mask_head_convs=2, anchor_sizes=(8, 16, 32, 64, 128),
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64, roi_batch_size_per_image=32)
    return dataclasses.replace(cfg, **overrides)


def synthetic(height, width, boxes, labels):
    """A dark noisy image with a bright rectangle (label 1) or ellipse (label 2) per box."""
    g = torch.Generator().manual_seed(height * 1000 + width)
    image = torch.rand(3, height, width, generator=g) * 0.2
    masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    for i, ((x1, y1, x2, y2), label) in enumerate(zip(boxes, labels)):
        if label == 1:
            inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        else:
            cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
            inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        masks[i] = inside
        colour = [0.9, 0.6, 0.2] if label == 1 else [0.2, 0.5, 0.9]
        image[:, inside] = torch.tensor(colour)[:, None]
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor(labels, dtype=torch.int64), "masks": masks,
              "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
              "area": masks.flatten(1).sum(1).float(), "image_id": torch.tensor(0)}
    return image, target


def two_images():
    a = synthetic(80, 120, [[10, 10, 50, 40], [60, 30, 110, 75]], [1, 2])
    b = synthetic(100, 70, [[5, 50, 40, 95]], [2])
    return [a[0], b[0]], [a[1], b[1]]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are small: a second thread only adds contention on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MaskRCNN(small_config())


def test_train_mode_returns_the_five_finite_losses(model):
    images, targets = two_images()
    model.train()
    losses = model(images, targets)
    assert tuple(losses) == LOSS_KEYS
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())


def test_rpn_proposals_shapes(model):
    images, targets = two_images()
    model.eval()
    batch, sizes, resized = model.transform(images, targets)
    features = model.fpn(model.backbone(batch))
    proposals, losses = model.rpn(features, sizes, batch.shape[-2:], resized)
    assert len(proposals) == 2 and all(p.shape[1] == 4 and 0 < len(p) <= 50 for p in proposals)
    for p, (h, w) in zip(proposals, sizes):
        assert (p[:, 0] >= 0).all() and (p[:, 1] >= 0).all()  # clipped to the image,
        assert (p[:, 2] <= w).all() and (p[:, 3] <= h).all()  # not to the padded batch
    assert set(losses) == {"loss_objectness", "loss_rpn_box"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_eval_outputs_in_original_coordinates(model):
    images, _ = two_images()
    model.eval()
    detections = model(images)
    for det, image in zip(detections, images):
        h, w = image.shape[-2:]
        d = len(det["boxes"])
        assert det["boxes"].shape == (d, 4) and det["boxes"].dtype == torch.float32
        assert det["labels"].dtype == torch.int64 and det["scores"].shape == (d,)
        assert det["masks"].shape == (d, h, w) and det["masks"].dtype == torch.uint8
        assert (det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all()
        assert ((det["labels"] >= 1) & (det["labels"] <= 2)).all() and d <= 100


def test_eval_with_targets_gives_repeatable_losses(model):
    images, targets = two_images()
    model.eval()
    detections, losses = model(images, targets)
    _, again = model(images, targets)
    assert len(detections) == 2 and tuple(losses) == LOSS_KEYS
    assert all(torch.equal(losses[k], again[k]) for k in LOSS_KEYS)


def test_empty_targets_and_crowd_only_images_train(model):
    image, target = synthetic(64, 64, [[10, 10, 30, 30]], [1])
    crowd = {**target, "iscrowd": torch.tensor([1])}
    empty = {k: v[:0] if k in ("boxes", "labels", "masks", "iscrowd", "area") else v
             for k, v in target.items()}
    model.train()
    model.zero_grad()
    losses = model([image, image], [empty, crowd])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rpn_box"] == 0 and losses["loss_box"] == 0
    sum(losses.values()).backward()


def test_training_is_deterministic_given_the_seed():
    images, targets = two_images()
    results = []
    for _ in range(2):
        torch.manual_seed(3)
        m = MaskRCNN(small_config())
        results.append(m(images, targets))
    assert all(torch.equal(results[0][k], results[1][k]) for k in LOSS_KEYS)


def test_gradient_reaches_every_trainable_parameter():
    torch.manual_seed(0)
    m = MaskRCNN(small_config())
    for module in m.backbone.modules():  # undo the zero-init of residual branches, which
        if isinstance(module, torch.nn.GroupNorm):  # blocks their gradient at step 0 only
            torch.nn.init.ones_(module.weight)
    images, targets = two_images()
    sum(m(images, targets).values()).backward()
    no_grad = [n for n, p in m.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []


def test_head_group_norm_is_optional_and_trains():
    plain = MaskRCNN(small_config()).state_dict()
    assert not any("norm" in k for k in plain if "roi_heads" in k)  # the paper's heads
    torch.manual_seed(0)
    m = MaskRCNN(small_config(head_norm_groups=8))
    norms = [k for k in m.state_dict() if "roi_heads" in k and "norm" in k]
    assert len(norms) == 2 * (2 + 2)  # weight and bias: 2 in the box head, 2 in the mask head
    images, targets = two_images()
    losses = m(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert m.roi_heads.mask_head.norms[0].weight.grad.abs().sum() > 0
    assert m.roi_heads.box_head.norm7.weight.grad.abs().sum() > 0


def test_frozen_backbone_parts_get_no_gradient():
    m = MaskRCNN(small_config(norm="frozen_bn", freeze_at=2))
    images, targets = two_images()
    sum(m(images, targets).values()).backward()
    assert m.backbone.conv1.weight.grad is None and m.backbone.layer1[0].conv1.weight.grad is None
    assert m.backbone.layer2[0].conv1.weight.grad is not None


def test_load_backbone_weights_reports_keys(tmp_path):
    m = MaskRCNN(small_config())
    state = {k: v + 1 for k, v in m.backbone.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)
    state["extra.weight"] = torch.zeros(1)
    del state["layer4.1.conv2.weight"]
    torch.save(state, tmp_path / "w.pth")
    missing, unexpected = m.load_backbone_weights(str(tmp_path / "w.pth"), verbose=False)
    assert missing == ["layer4.1.conv2.weight"] and unexpected == ["extra.weight"]
    assert torch.equal(m.backbone.conv1.weight, state["conv1.weight"])


def test_overfits_one_image():
    """Loss drops well, and the model then finds both objects in original coordinates."""
    torch.manual_seed(0)
    cfg = small_config(score_thresh=0.3)
    m = MaskRCNN(cfg)
    image, target = synthetic(80, 120, [[10, 10, 50, 40], [60, 30, 110, 75]], [1, 2])
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    history = []
    for _ in range(80):
        losses = m([image], [target])
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 10.0)
        opt.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.35 * sum(history[:5]) / 5
    m.eval()
    det = m([image])[0]  # sorted by score
    iou = box_iou(target["boxes"], det["boxes"])  # (2, D)
    for g in range(2):  # AP50's rule: the best-scoring detection with IoU >= 0.5 is a hit
        hits = torch.nonzero(iou[g] >= 0.5).flatten()
        assert len(hits) > 0, f"object {g} not found"
        best = hits[0]
        assert det["labels"][best] == target["labels"][g]
        pred, gt = det["masks"][best].bool(), target["masks"][g].bool()
        assert (pred & gt).sum() / (pred | gt).sum() >= 0.5


def test_postprocess_maps_boxes_and_masks_to_original_pixels(model):
    """An image of 80 x 120 is resized to 96 x 144: a box there is 1.2 times too large."""
    detections = [{"boxes": torch.tensor([[12.0, 24.0, 60.0, 48.0]]), "labels": torch.tensor([1]),
                   "scores": torch.tensor([0.9]), "masks": torch.ones(1, 28, 28)}]
    det = model.transform.postprocess(detections, [(96, 144)], [(80, 120)])[0]
    torch.testing.assert_close(det["boxes"], torch.tensor([[10.0, 20.0, 50.0, 40.0]]))
    assert det["masks"].shape == (1, 80, 120) and det["masks"].dtype == torch.uint8
    assert det["masks"][0, 20:40, 10:50].all() and det["masks"].sum() == 20 * 40


def test_no_detections_gives_empty_outputs_of_the_right_shape():
    m = MaskRCNN(small_config(score_thresh=1.0)).eval()  # no softmax score exceeds 1
    images, _ = two_images()
    for det, image in zip(m(images), images):
        assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,)
        assert det["labels"].dtype == torch.int64
        assert det["masks"].shape == (0, *image.shape[-2:]) and det["masks"].dtype == torch.uint8


def test_autocast_keeps_boxes_losses_and_detections_float32(model):
    """bfloat16 on the CPU stands in for float16 on a GPU: coordinates must not lose precision."""
    images, targets = two_images()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        det = model(images)[0]
    assert det["boxes"].dtype == det["scores"].dtype == torch.float32


def test_r50_fpn_has_the_parameter_count_torchvision_publishes():
    """torchvision lists 44,401,393 parameters for maskrcnn_resnet50_fpn (91 COCO classes,
    background included): same layers, same widths, same heads, no extra bias anywhere."""
    m = MaskRCNN(dataclasses.replace(preset("r50_fpn"), num_classes=90))
    assert sum(p.numel() for p in m.parameters()) == 44_401_393


def every_anchor_and_roi_config():
    """small_config where nothing random can differ between devices: every anchor and every
    RoI is sampled (batch sizes above their counts, so each pick is "all of them"), and no
    top-n cut can fall between two nearly equal scores."""
    return small_config(rpn_batch_size_per_image=10**6, roi_batch_size_per_image=10**6,
                        rpn_pre_nms_top_n_train=10**6, rpn_post_nms_top_n_train=10**6,
                        rpn_pre_nms_top_n_test=10**6, rpn_post_nms_top_n_test=10**6,
                        score_thresh=0.0)


def relative_difference(got, want):
    return ((got.detach().cpu().double() - want.detach().double()).abs().max()
            / want.detach().double().abs().max().clamp_min(1e-12)).item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_whole_model_on_cuda_matches_the_cpu():
    """The model's CUDA path against its CPU path, same weights and images: the five losses,
    every parameter's gradient, and the detections agree in float32 (TF32 off, so that the GPU
    multiplies in full float32 as the CPU does)."""
    import copy
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.manual_seed(0)
        cpu_model = MaskRCNN(every_anchor_and_roi_config())
        gpu_model = copy.deepcopy(cpu_model).cuda()
        images, targets = two_images()
        on_gpu = [{k: v.cuda() for k, v in t.items()} for t in targets]
        losses = {"cpu": cpu_model(images, targets), "gpu": gpu_model([i.cuda() for i in images], on_gpu)}
        for key in LOSS_KEYS:
            assert losses["gpu"][key].device.type == "cuda"
            assert relative_difference(losses["gpu"][key], losses["cpu"][key]) < 1e-3, key
        sum(losses["cpu"].values()).backward()
        sum(losses["gpu"].values()).backward()
        for (name, p_cpu), p_gpu in zip(cpu_model.named_parameters(), gpu_model.parameters()):
            if p_cpu.grad is not None and p_cpu.grad.abs().max() > 0:
                assert relative_difference(p_gpu.grad, p_cpu.grad) < 1e-3, name

        cpu_model.eval(), gpu_model.eval()
        with torch.no_grad():
            want = cpu_model(images)
            got = gpu_model([i.cuda() for i in images])
        for d_gpu, d_cpu in zip(got, want):
            assert len(d_cpu["scores"]) > 0
            # same detections up to order among near-equal scores: match each CPU box to the GPU
            # box of the same class that overlaps it most
            iou = box_iou(d_cpu["boxes"], d_gpu["boxes"].cpu())  # (D_cpu, D_gpu)
            same_class = d_cpu["labels"][:, None] == d_gpu["labels"].cpu()[None, :]
            best, j = torch.where(same_class, iou, torch.zeros_like(iou)).max(1)
            matched = best > 0.999
            assert matched.float().mean() >= 0.95, f"{int(matched.sum())} of {len(best)} matched"
            scores = d_gpu["scores"].cpu()[j[matched]]
            assert (scores - d_cpu["scores"][matched]).abs().max() < 1e-4
            masks = d_gpu["masks"].cpu()[j[matched]]  # binary: a pixel at the threshold may flip
            assert (masks != d_cpu["masks"][matched]).float().mean() < 1e-3
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
