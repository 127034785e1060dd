"""mrcnn_edu.viz, basic functions: each returns the Axes it drew on, with the expected artists."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mrcnn_edu import viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def rectangles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


@pytest.mark.parametrize("image", [
    torch.rand(3, 10, 14),  # our tensors: (3, H, W) float
    np.zeros((10, 14, 3), np.uint8),  # (H, W, 3) uint8
    np.zeros((10, 14), np.float32),  # (H, W) grayscale
    torch.rand(1, 10, 14),  # (1, H, W)
])
def test_show_image_layouts(image):
    ax = viz.show_image(image, title="t")
    assert isinstance(ax, Axes) and ax.get_title() == "t"
    (im,) = ax.get_images()
    assert im.get_array().shape[:2] == (10, 14)
    assert tuple(im.get_extent()) == (0, 14, 10, 0)  # pixel edges on integers, y down


def test_show_image_grayscale_keeps_its_range():
    img = np.full((4, 4), 0.5)
    (im,) = viz.show_image(img).get_images()
    assert im.get_clim() == (0, 1.0)  # 0.5 shows as mid-grey, not stretched to white
    (im8,) = viz.show_image(np.full((4, 4), 7, np.uint8)).get_images()
    assert im8.get_clim() == (0, 255)


def test_show_image_clips_floats():
    (im,) = viz.show_image(np.full((2, 2, 3), 1.5)).get_images()
    assert float(im.get_array().max()) == 1.0


def test_show_image_uses_the_given_axes():
    _, ax = plt.subplots()
    assert viz.show_image(np.zeros((4, 4, 3)), ax=ax) is ax


def test_draw_boxes_one_rectangle_per_box():
    boxes = torch.tensor([[1.0, 2.0, 5.0, 8.0], [0.0, 0.0, 3.0, 3.0]])
    ax = viz.draw_boxes(boxes)
    assert isinstance(ax, Axes)
    rects = rectangles(ax)
    assert len(rects) == 2
    assert rects[0].get_xy() == (1.0, 2.0)
    assert (rects[0].get_width(), rects[0].get_height()) == (4.0, 6.0)  # x2 - x1, no +1
    assert rects[0].get_edgecolor() == to_rgba(viz.GT_COLOR)
    assert not rects[0].get_fill()
    assert not ax.texts  # no labels or scores: no captions


def test_draw_boxes_captions_and_style():
    ax = viz.draw_boxes(np.array([[0, 0, 4, 4], [1, 1, 2, 2]]), labels=[1, 2], scores=[0.934, 0.5],
                        class_names=["bg", "cat", "dog"], color=viz.DETECTION_COLOR,
                        linestyle="--")
    assert [t.get_text() for t in ax.texts] == ["cat 0.93", "dog 0.50"]
    assert all(r.get_edgecolor() == to_rgba(viz.DETECTION_COLOR) for r in rectangles(ax))
    assert all(r.get_linestyle() == "--" for r in rectangles(ax))


def test_draw_boxes_empty():
    ax = viz.draw_boxes(np.zeros((0, 4)))
    assert isinstance(ax, Axes) and not rectangles(ax)


def test_box_caption():
    assert viz.box_caption(3, None, ["a", "b", "c", "dog"]) == "dog"
    assert viz.box_caption(None, 0.456) == "0.46"
    assert viz.box_caption(2) == "2"
    assert viz.box_caption() == ""


def test_draw_masks_overlay_colours():
    masks = np.zeros((2, 6, 8), np.uint8)
    masks[0, :3, :4] = 1
    masks[1, 2:, 2:] = 1  # overlaps mask 0 at rows 2, cols 2-3: later masks paint over
    ax = viz.draw_masks(torch.from_numpy(masks), alpha=0.4)
    (im,) = ax.get_images()
    rgba = np.asarray(im.get_array())
    assert rgba.shape == (6, 8, 4)
    assert np.allclose(rgba[0, 0], (*to_rgba(viz.PALETTE[0])[:3], 0.4))
    assert np.allclose(rgba[2, 2], (*to_rgba(viz.PALETTE[1])[:3], 0.4))
    assert rgba[0, 7, 3] == 0  # outside every mask: transparent


def test_draw_masks_by_label_and_threshold():
    probs = np.array([[[0.2, 0.5], [0.9, 0.49]]])  # (1, 2, 2) probabilities
    (im,) = viz.draw_masks(probs, labels=[4]).get_images()
    alpha = np.asarray(im.get_array())[..., 3]
    assert (alpha > 0).tolist() == [[False, True], [True, False]]  # on where >= 0.5
    assert np.allclose(np.asarray(im.get_array())[1, 0, :3], to_rgba(viz.PALETTE[4])[:3])


def test_draw_masks_single_colour_and_empty():
    masks = np.ones((2, 3, 3), bool)
    (im,) = viz.draw_masks(masks, colors="red").get_images()
    assert np.allclose(np.asarray(im.get_array())[0, 0, :3], (1, 0, 0))
    (im,) = viz.draw_masks(np.zeros((0, 3, 3))).get_images()
    assert np.asarray(im.get_array()).max() == 0


def test_show_sample_boxes_masks_and_crowd():
    image = torch.rand(3, 20, 30)
    masks = torch.zeros(3, 20, 30, dtype=torch.uint8)
    masks[0, 2:8, 3:9] = 1
    masks[2, 10:, 10:] = 1
    target = {"boxes": torch.tensor([[3.0, 2, 9, 8], [1, 1, 4, 4], [10, 10, 30, 20]]),
              "labels": torch.tensor([1, 2, 1]), "masks": masks,
              "iscrowd": torch.tensor([0, 0, 1])}
    ax = viz.show_sample(image, target, class_names=["__background__", "cat", "dog"], title="s")
    assert isinstance(ax, Axes) and ax.get_title() == "s"
    assert sum(isinstance(a, AxesImage) for a in ax.get_images()) == 2  # image + mask overlay
    rects = rectangles(ax)
    assert len(rects) == 3
    # crowd regions are dashed and drawn last
    assert [r.get_linestyle() for r in rects] == ["solid", "solid", "--"]
    assert [t.get_text() for t in ax.texts] == ["cat", "dog", "cat (crowd)"]


def test_show_sample_without_instances_or_crowd_field():
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "masks": torch.zeros(0, 5, 5, dtype=torch.uint8)}
    ax = viz.show_sample(torch.rand(3, 5, 5), target)
    assert len(ax.get_images()) == 1 and not rectangles(ax)


def test_show_samples_draws_the_first_images_with_their_ids():
    class Two:
        class_names = ["__background__", "cat"]
        image_ids = [7, 9]

        def __getitem__(self, i):
            target = {"boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([1]),
                      "masks": torch.zeros(1, 8, 8, dtype=torch.uint8)}
            return torch.rand(3, 8, 8), target

    fig = viz.show_samples(Two(), 2, title="train image {id}")
    assert [ax.get_title() for ax in fig.axes] == ["train image 7", "train image 9"]
    assert all(any(isinstance(p, Rectangle) for p in ax.patches) for ax in fig.axes)
    plt.close(fig)


def test_plot_data_ladder_one_line_and_label_per_series_on_a_log_axis():
    ax = viz.plot_data_ladder([("train", [16, 64, 256], [0.99, 0.98, 0.97], {}),
                               ("val", [16, 64, 256], [0.2, 0.7, 0.95], {"linestyle": "--"}),
                               ("paper", [1000], [0.035], {"color": "grey"})])
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["train", "val", "paper"]
    assert list(lines[1].get_xdata()) == [16, 64, 256] and lines[1].get_linestyle() == "--"
    assert ax.get_xscale() == "log" and ax.get_ylim()[0] == 0
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        ["0.99", "0.98", "0.97", "0.20", "0.70", "0.95", "0.04"])
    plt.close(ax.figure)
