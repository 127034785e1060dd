"""`make train` on the COCO subset: time, train/val AP, thread count; written to docs/benchmarks.md.

    .venv/bin/python bench/bench_subset.py --run runs/coco_subset --wall 1234 --load "4.2-5.1"
    .venv/bin/python bench/bench_subset.py --speed-iters 40        # s/iteration at 1 and 2 threads

The first form reports a finished run folder (config.json, log.jsonl, metrics.json): the
training time from log.jsonl, the wall time of the whole command as measured outside (`time make
train`, passed with --wall), and AP on the train and val splits by pycocotools and by our
evaluator. The second form trains the `subset` preset for a few iterations without evaluation,
once per thread count, each in a fresh process, and reports the median seconds per iteration
after the first 5 (sections "coco_subset" and "coco_subset_threads").
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import machine_line, write_section  # bench/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
SKIP = 5  # warm-up iterations left out of the speed


def median_step(records, skip=SKIP):
    """Median seconds between consecutive log records after the first `skip`."""
    times = [r["time"] for r in records[skip - 1:]]
    return statistics.median(b - a for a, b in zip(times, times[1:]))


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def report_run(run, wall, load, command, notes="", threads=2):
    import torch  # machine_line names the thread count: the run's (make train: torch's default)
    torch.set_num_threads(threads)
    config = json.loads((run / "config.json").read_text())
    records = read_jsonl(run / "log.jsonl")
    metrics = json.loads((run / "metrics.json").read_text())
    train_s = records[-1]["time"]
    rows = []
    for split in ("train", "val"):
        m = metrics[split]
        for source in ("pycocotools", "ours"):
            for iou_type in ("bbox", "segm"):
                v = m[source][iou_type]
                rows.append(f"| {split} ({m['num_images']} images) | {source} | {iou_type} | "
                            f"{v['AP']:.3f} | {v['AP50']:.3f} | {v['AP75']:.3f} | "
                            f"{v['APs']:.3f} | {v['APm']:.3f} | {v['APl']:.3f} | {v['AR100']:.3f} |")
    first = {k: round(statistics.mean(r[k] for r in records[:20]), 3)
             for k in records[0] if k.startswith("loss")}
    last = {k: round(statistics.mean(r[k] for r in records[-20:]), 3)
            for k in records[0] if k.startswith("loss")}
    wall_text = f"{wall / 60:.1f} min ({wall:.0f} s)" if wall else "not measured"
    images = ("the 76 train images with a person (`skip_images_without_instances`)"
              if config.get("skip_images_without_instances") else "all 160 train images")
    flips = "no flips" if not config["hflip_prob"] else f"flip probability {config['hflip_prob']}"
    head_norm = (f"GroupNorm ({config['head_norm_groups']} groups) in the box and mask heads"
                 if config.get("head_norm_groups") else "no norm in the heads")
    md = f"""## `make train`: the subset preset on the COCO subset (CPU)

Command: `{command}` (= `python -m mrcnn_edu train --preset subset --output runs/coco_subset`)  
Machine: {machine_line()}  
Load average (1 min) during the run: {load}.  
Preset `subset`: the `tiny` model (ResNet-18 + GroupNorm at width {config.get('backbone_width', 64)}, FPN {config['fpn_channels']}, {config['min_size']}-px shorter side, {config['rpn_pre_nms_top_n_train']} proposals per level before NMS), {head_norm};
category **person** only, trained on {images}; {config['max_iters']} iterations of
{config['batch_size']} images, {config.get('optimizer', 'sgd')} at lr {config['lr']} with
{config['warmup_iters']} warm-up iterations and x{config['lr_gamma']} at {config['lr_steps']}, {flips}, seed {config['seed']}.
**No pretrained weights**: every weight starts from random numbers.

Wall time of the whole command (training, evaluation on both splits, PNGs): **{wall_text}**;
training alone {train_s / 60:.1f} min ({config['max_iters'] * config['batch_size'] / train_s:.2f} images/s,
median {median_step(records):.2f} s/iteration).

Mean loss over the first 20 iterations: {first}  
Mean loss over the last 20 iterations: {last}

COCO AP of the final model, person category (train = the 160 train images, the 76 it trained
on and 84 without people, where any detection is a false positive; val = 158 images it never saw):

| split | evaluator | type | AP | AP50 | AP75 | APs | APm | APl | AR100 |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Read the train rows as "can the model fit what it saw?" and the val rows as "what do 76
photos from scratch teach?"; the two evaluators agree.

{notes}

### Published references (not measured here)

For context only; trained on full COCO (~118k images, 80 categories) from ImageNet weights on
GPUs, at 800 px, and evaluated on the 5k-image val set -- not comparable with the table above.

| model | data | box AP | mask AP | source |
|---|---|---|---|---|
| Mask R-CNN, ResNet-50-FPN | trainval35k -> minival | -- | 33.6 (AP50 55.2, AP75 35.3) | He et al., *Mask R-CNN*, ICCV 2017, Table 2a |
| torchvision `maskrcnn_resnet50_fpn` (COCO_V1 weights) | train2017 -> val2017 | 37.9 | 34.6 | torchvision model card (`MaskRCNN_ResNet50_FPN_Weights`) |
"""
    write_section("coco_subset", md)
    print(md)


def measure_threads(iters, threads, data):
    rows = []
    for t in threads:
        with tempfile.TemporaryDirectory() as tmp:
            load = os.getloadavg()[0]
            cmd = [sys.executable, "-m", "mrcnn_edu", "train", "--preset", "subset", "--output",
                   str(Path(tmp) / "run"), "--max-iters", str(iters), "--no-eval", "--no-progress",
                   "--threads", str(t)] + (["--data", data] if data else [])
            start = time.perf_counter()
            subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            step = median_step(read_jsonl(Path(tmp) / "run" / "log.jsonl"))
            rows.append(f"| {t} | {step:.2f} | {2 / step:.2f} | {load:.1f} | {os.getloadavg()[0]:.1f} |")
            print(rows[-1], f"(wall {wall:.0f} s)")
    md = f"""## Threads for `make train` (CPU)

Command: `python bench/bench_subset.py --speed-iters {iters} --threads {','.join(map(str, threads))}`  
Machine: {machine_line()}  
`python -m mrcnn_edu train --preset subset --max-iters {iters} --no-eval --threads T`, each in a
fresh process; median seconds per iteration (batch 2) after the first {SKIP}. OMP_WAIT_POLICY=PASSIVE
(set by the CLI).

| threads | s / iteration | images / s | load at start | load at end |
|---|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section("coco_subset_threads", md)
    print(md)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/coco_subset", help="finished run folder")
    parser.add_argument("--wall", type=float, help="wall seconds of the whole command")
    parser.add_argument("--load", default="not recorded", help="load average during the run")
    parser.add_argument("--command", default="make train")
    parser.add_argument("--run-threads", type=int, default=2, help="threads the run used")
    parser.add_argument("--notes", help="a markdown file appended after the AP table")
    parser.add_argument("--speed-iters", type=int, help="measure s/iteration instead")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--data")
    args = parser.parse_args()
    if args.speed_iters:
        measure_threads(args.speed_iters, [int(t) for t in args.threads.split(",")], args.data)
    else:
        notes = Path(args.notes).read_text() if args.notes else ""
        report_run(REPO / args.run, args.wall, args.load, args.command, notes, args.run_threads)


if __name__ == "__main__":
    main()
