"""mrcnn_edu.viz diagrams: the pipeline map (every lesson), the FPN (lesson 05), the RoI heads
(lesson 09). Each returns an Axes; the labels must say what the package's code does."""
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from mrcnn_edu import viz  # noqa: E402
from mrcnn_edu.config import preset  # noqa: E402
from mrcnn_edu.model.backbone import ResNet  # noqa: E402
from mrcnn_edu.model.fpn import FPN  # noqa: E402
from mrcnn_edu.model.roi_heads import BoxHead, MaskHead  # noqa: E402

LESSON_SOURCES = sorted((Path(__file__).resolve().parents[1] / "lessons" / "src").glob("[0-9][0-9]_*.py"))
TITLES = [stage[0] for stage in viz.PIPELINE_STAGES]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(ax):
    return [t.get_text() for t in ax.texts]


def stage_boxes(ax):
    """{title: patch} of the stage boxes pipeline_map drew."""
    return {p.get_gid()[len("stage:"):]: p for p in ax.patches
            if (p.get_gid() or "").startswith("stage:")}


def arrows(ax):
    """{(from, to): patch} of the arrows between stages."""
    found = {}
    for p in ax.patches:
        gid = p.get_gid() or ""
        if gid.startswith("arrow:"):
            a, b = gid[len("arrow:"):].split("->")
            found[(a, b)] = p
    return found


def expected_arrows(compact):
    """Each row's left-to-right chain, plus the cross-row links in the full map."""
    pairs = set()
    for row in (0, 1):
        titles = [s[0] for s in viz.PIPELINE_STAGES if s[3] == row]
        pairs |= set(zip(titles, titles[1:]))
    if not compact:
        pairs |= {(a, b) for a, b, _ in viz.PIPELINE_LINKS}
    return pairs


def test_the_stage_table_covers_every_lesson_and_nothing_else():
    lessons = {int(p.name[:2]) for p in LESSON_SOURCES}
    assert len(lessons) >= 13
    assert {n for stage in viz.PIPELINE_STAGES for n in stage[2]} == lessons
    assert len(set(TITLES)) == len(TITLES)  # titles name the boxes: they must be unique
    links = {t for a, b, _ in viz.PIPELINE_LINKS for t in (a, b)}
    assert links <= set(TITLES)


@pytest.mark.parametrize("compact", [False, True])
def test_pipeline_map_draws_every_stage_with_its_lessons(compact):
    ax = viz.pipeline_map(compact=compact)
    assert isinstance(ax, Axes)
    drawn = texts(ax)
    boxes = stage_boxes(ax)
    assert list(boxes) == TITLES
    for title, detail, lessons, _, _ in viz.PIPELINE_STAGES:
        assert title in drawn
        numbers = viz.lesson_numbers(lessons)
        assert any(numbers in t for t in drawn), (title, numbers)
        if not compact:
            assert detail in drawn
    assert viz.lesson_numbers((2, 3, 8)) == "02 · 03 · 08"


@pytest.mark.parametrize("compact", [False, True])
def test_every_arrow_joins_the_two_stages_it_names(compact):
    ax = viz.pipeline_map(compact=compact)
    ax.figure.canvas.draw()
    boxes = {t: p.get_window_extent() for t, p in stage_boxes(ax).items()}
    found = arrows(ax)
    assert set(found) == expected_arrows(compact)
    for (a, b), arrow in found.items():
        ext = arrow.get_window_extent().padded(4)  # pixels: the head stops ~2 px short of its tip
        touching = {t for t, box in boxes.items() if ext.overlaps(box)}
        assert touching == {a, b}, (a, b, touching)


def test_highlight_marks_the_lesson_and_greys_every_other_stage():
    here, grey = to_rgba(viz.HERE_COLOR), to_rgba(viz.GREYED_COLOR)
    for lesson in range(len(LESSON_SOURCES)):
        for compact in (False, True):
            boxes = stage_boxes(viz.pipeline_map(highlight=lesson, compact=compact))
            for title, _, lessons, _, _ in viz.PIPELINE_STAGES:
                assert boxes[title].get_facecolor() == (here if lesson in lessons else grey)
            assert sum(b.get_facecolor() == here for b in boxes.values()) >= 1
            plt.close("all")


def test_without_highlight_nothing_is_greyed():
    boxes = stage_boxes(viz.pipeline_map())
    colours = {b.get_facecolor() for b in boxes.values()}
    assert colours == {to_rgba(c) for c in viz.STAGE_COLORS}


def test_compact_is_one_row_in_table_order_and_full_map_has_two():
    boxes = list(stage_boxes(viz.pipeline_map(compact=True)).values())
    assert len({round(b.get_y(), 9) for b in boxes}) == 1
    xs = [b.get_x() for b in boxes]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    full = stage_boxes(viz.pipeline_map())
    assert len({round(b.get_y(), 9) for b in full.values()}) == 2


def test_pipeline_map_draws_on_a_given_axes():
    _, ax = plt.subplots()
    assert viz.pipeline_map(ax=ax, highlight=3, compact=True) is ax


@pytest.mark.parametrize("bad", [13, -1, "05", 2.5, 5.0, True])
def test_pipeline_map_rejects_an_unknown_lesson(bad):
    with pytest.raises(ValueError, match="highlight must be a lesson number"):
        viz.pipeline_map(highlight=bad)


def test_fpn_diagram_labels_what_the_modules_compute():
    ax = viz.fpn_diagram()
    assert isinstance(ax, Axes)
    drawn = "\n".join(texts(ax))
    assert drawn.count("1x1 conv") == 4 and drawn.count("3x3 conv") == 4
    assert drawn.count("2x up") == 3 and drawn.count("max-pool 1x1") == 1
    paper, tiny = preset("r50_fpn"), preset("tiny")
    side, channels = 1024, []
    with torch.device("meta"):  # shapes only, no numbers: cheap even for a ResNet-50
        for cfg in (paper, tiny):
            backbone = ResNet(cfg.backbone_depth)
            channels.append(backbone.out_channels)
            c_maps = backbone(torch.zeros(1, 3, side, side))
            p_maps = FPN(backbone.out_channels, cfg.fpn_channels)(c_maps)
            for k, c in enumerate(c_maps, start=2):
                assert c.shape[-1] == side // 2 ** k
                assert f"C{k}   stride {2 ** k}, H/{2 ** k} x W/{2 ** k}" in drawn
            assert [p.shape[1] for p in p_maps] == [cfg.fpn_channels] * 5
            for k, p in enumerate(p_maps, start=2):
                assert p.shape[-1] == math.ceil(side / 2 ** k)
                assert f"P{k}   stride {2 ** k}" in drawn
    for c_paper, c_tiny in zip(*channels):
        assert f"{c_paper} ch (tiny: {c_tiny})" in drawn
    assert f"{paper.fpn_channels} ch (tiny: {tiny.fpn_channels})" in drawn
    assert "ceil(H/64) x ceil(W/64)" in drawn


def test_heads_diagram_labels_what_the_heads_compute_and_the_losses():
    ax = viz.heads_diagram()
    assert isinstance(ax, Axes)
    drawn = "\n".join(texts(ax))
    paper, tiny = preset("r50_fpn"), preset("tiny")
    k = 3  # any number of classes: the labels say K
    box_head = BoxHead(tiny.fpn_channels, tiny.box_pool_size, tiny.box_head_dim, k)
    mask_head = MaskHead(tiny.fpn_channels, tiny.mask_head_dim, tiny.mask_head_convs, k)
    roi = torch.zeros(2, tiny.fpn_channels, tiny.box_pool_size, tiny.box_pool_size)
    scores, deltas = box_head(roi)
    assert scores.shape[1] == k + 1 and deltas.shape[1] == 4 * (k + 1)
    assert "class: K + 1 scores" in drawn and "box: 4 (K + 1) deltas" in drawn
    masks = mask_head(torch.zeros(2, tiny.fpn_channels, tiny.mask_pool_size, tiny.mask_pool_size))
    m = tiny.mask_size
    assert masks.shape[1:] == (k + 1, m, m) and m == paper.mask_size
    assert f"{m}x{m}x(K + 1)" in drawn
    assert f"RoI 7x7x{paper.fpn_channels} (tiny: {tiny.fpn_channels})" in drawn
    assert f"RoI 14x14x{paper.fpn_channels} (tiny: {tiny.fpn_channels})" in drawn
    assert f"fc6\n{paper.box_head_dim} (tiny: {tiny.box_head_dim})" in drawn
    assert f"{paper.mask_head_convs} x (3x3 conv)" in drawn
    assert f"{m}x{m}x{paper.mask_head_dim} (tiny: {tiny.mask_head_dim})" in drawn
    for loss in ("L_{cls}", "L_{box}", "L_{mask}", "L = L_{cls} + L_{box} + L_{mask}"):
        assert loss in drawn
    assert r"-\log\, p_u" in drawn and r"\mathrm{smooth}_{L_1}(t^u_i - v_i)" in drawn
    assert r"\beta = 1/9" in drawn  # the smooth L1 beta of reference/losses.py


@pytest.mark.parametrize("draw", [viz.fpn_diagram, viz.heads_diagram])
def test_diagrams_draw_on_a_given_axes(draw):
    _, ax = plt.subplots()
    assert draw(ax=ax) is ax
