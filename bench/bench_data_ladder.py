"""The data ladder: lesson 10's recipe, the same number of steps, on 16, 64, 256 and 1024 images.

    .venv/bin/python bench/bench_data_ladder.py        # writes docs/data_ladder_shapes.csv
    .venv/bin/python bench/bench_data_ladder.py --steps 300 --sizes 16 64 --out ladder.csv

Each rung writes the seeded shapes dataset (seed 0, 128 x 128) with N training images and the
same 200 validation images, trains lesson 10's recipe (`preset("shapes")` with --steps steps,
lr x0.1 for the last fifth, 128 RoIs per image, no copy-paste) on 2 images per step from the same random weights (seed 0), and
scores the model with pycocotools: box and mask AP50 on the validation images, which no rung trains on, and on the
training images it saw (the first TRAIN_EVAL_IMAGES of them when there are more: a split's first
n images do not depend on how many follow, so they are written once more as a split of their own).
With few images the model memorises (train AP50 near 1, val far below); with more, the same steps
generalise. One CSV row per rung; the "data_ladder" section of docs/benchmarks.md gets the table.
"""
import argparse
import contextlib
import csv
import dataclasses
import io
import os
import sys
import tempfile
import time
from pathlib import Path

from _report import machine_line, write_section  # bench/ is on sys.path

# OpenMP threads that spin while they wait steal the cores of a busy machine (see __main__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mrcnn_edu.config import preset  # noqa: E402  (after the environment is set)
from mrcnn_edu.data import CocoDataset, make_shapes_dataset  # noqa: E402
from mrcnn_edu.engine.checkpoint import load_model  # noqa: E402
from mrcnn_edu.engine.evaluate import evaluate  # noqa: E402
from mrcnn_edu.engine.train import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZES = (16, 64, 256, 1024)
STEPS = 600  # lesson 10's run: its 256-image rung is the lesson's own training
VAL_IMAGES = 200
TRAIN_EVAL_IMAGES = 256
COLUMNS = ("train_images", "steps", "train_eval_images", "train_box_ap50", "train_mask_ap50",
           "val_box_ap50", "val_mask_ap50", "val_box_ap", "val_mask_ap", "seconds")


def recipe_config(steps):
    """preset("shapes") for `steps` steps, lr x0.1 for the last fifth, tiny's 128 RoIs per image
    and no copy-paste (the preset's levers for its longer run): lesson 10's recipe."""
    return dataclasses.replace(preset("shapes"), max_iters=steps, lr_steps=(int(steps * 0.8),),
                               roi_batch_size_per_image=128, copy_paste_prob=0.0,
                               checkpoint_every=steps, seed=0)


def run_rung(num_images, steps, work):
    """Train on `num_images` shapes images for `steps` steps; returns one CSV row (a dict)."""
    root = make_shapes_dataset(work / f"shapes_{num_images}", seed=0,
                               splits={"train2017": num_images, "val2017": VAL_IMAGES})
    train_eval_images = min(num_images, TRAIN_EVAL_IMAGES)
    train_eval_root = root
    if train_eval_images < num_images:  # the same first images, as a dataset of their own
        train_eval_root = make_shapes_dataset(work / f"shapes_first_{train_eval_images}", seed=0,
                                              splits={"train2017": train_eval_images})
    run_dir = work / f"run_{num_images}"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # train's summary: not needed here
        summary = train(recipe_config(steps), root, run_dir, progress=False, evaluate_after=False)
    seconds = time.perf_counter() - start
    model, _, _ = load_model(summary["checkpoint"], "cpu")
    val = evaluate(model, CocoDataset(root, "val2017"), "cpu")["pycocotools"]
    seen = evaluate(model, CocoDataset(train_eval_root, "train2017"), "cpu")["pycocotools"]
    return {"train_images": num_images, "steps": steps, "train_eval_images": train_eval_images,
            "train_box_ap50": round(seen["bbox"]["AP50"], 3),
            "train_mask_ap50": round(seen["segm"]["AP50"], 3),
            "val_box_ap50": round(val["bbox"]["AP50"], 3),
            "val_mask_ap50": round(val["segm"]["AP50"], 3),
            "val_box_ap": round(val["bbox"]["AP"], 3), "val_mask_ap": round(val["segm"]["AP"], 3),
            "seconds": round(seconds)}


def write_csv(rows, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def shown_path(path):
    """`path` relative to the repository when inside it, else its file name: no machine paths."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def markdown(rows, args, loads):
    table = "\n".join(
        f"| {r['train_images']} | {r['steps']} | {r['train_box_ap50']:.3f} | "
        f"{r['train_mask_ap50']:.3f} | {r['val_box_ap50']:.3f} | {r['val_mask_ap50']:.3f} | "
        f"{r['val_mask_ap']:.3f} | {r['seconds']} |" for r in rows)
    return f"""## The data ladder: lesson 10's recipe on 16 to 1024 shapes images (CPU)

Command: `python bench/bench_data_ladder.py --steps {args.steps}` (CSV: `{shown_path(args.out)}`)  
Machine: {machine_line()}; load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end
(other processes shared the cores when it is above 2).  
Recipe: lesson 10's, `preset("shapes")` with `max_iters={args.steps}`, lr x0.1 at 80% of the
steps, 128 RoIs per image and no copy-paste (masks read over boxes widened by `mask_box_scale`); 2 images per step on every rung, from
the same random weights. Validation: the same
{VAL_IMAGES} unseen images for every rung; train AP50 on the training images seen (at most the first
{TRAIN_EVAL_IMAGES}). AP by pycocotools.

| train images | steps | train box AP50 | train mask AP50 | val box AP50 | val mask AP50 \
| val mask AP | train s |
|---|---|---|---|---|---|---|---|
{table}
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=STEPS, help=f"steps per rung ({STEPS})")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES,
                        help="training images per rung (16 64 256 1024)")
    parser.add_argument("--out", default=str(REPO / "docs" / "data_ladder_shapes.csv"),
                        help="CSV to write (default docs/data_ladder_shapes.csv)")
    parser.add_argument("--no-report", action="store_true",
                        help="do not rewrite the data_ladder section of docs/benchmarks.md")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for num_images in args.sizes:
            row = run_rung(num_images, args.steps, Path(tmp))
            rows.append(row)
            print(f"{num_images:5d} images, {args.steps} steps, {row['seconds']} s: "
                  f"train AP50 box {row['train_box_ap50']:.3f} mask {row['train_mask_ap50']:.3f}"
                  f" | val AP50 box {row['val_box_ap50']:.3f} mask {row['val_mask_ap50']:.3f}",
                  file=sys.stderr, flush=True)
            write_csv(rows, args.out)  # after every rung: a long run that is stopped keeps its rows
    print(f"wrote {args.out}")
    if not args.no_report:
        write_section("data_ladder", markdown(rows, args, (load_start, os.getloadavg()[0])))


if __name__ == "__main__":
    main()
