"""Choosing the `subset` preset: short runs of recipe variants, scored on the train split.

    .venv/bin/python bench/bench_subset_recipes.py                 # every variant, 2 at a time
    .venv/bin/python bench/bench_subset_recipes.py --only sgd adamw_5e-4

`make train` has 20 CPU minutes to fit, from random weights, what it saw. Which recipe fits
fastest is a measurement, not a guess: each variant below is the `subset` preset with a few
fields changed, trained for the same number of steps (or the same time) with seed 0, then
scored by pycocotools on the train split (person AP50 of boxes and masks). Each variant runs
in its own process with one thread, `--jobs` of them side by side; results go to the section
"subset_recipes" of docs/benchmarks.md and, one JSON line per variant, to --results.
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _report import machine_line, write_section  # bench/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
STEPS = 1000

# name -> (what it tests, fields changed from preset("subset")). The first rows undo the
# preset's choices one at a time; "previous" is the preset before this measurement.
VARIANTS = {
    "previous": ("the earlier preset: SGD 0.02, all 160 images, flips, no head norm",
                 dict(optimizer="sgd", lr=0.02, skip_images_without_instances=False,
                      hflip_prob=0.5, head_norm_groups=0)),
    "sgd": ("SGD 0.02 on the 76 person images, flips, no head norm",
            dict(optimizer="sgd", lr=0.02, hflip_prob=0.5, head_norm_groups=0)),
    "adamw_1e-3_flips": ("AdamW 1e-3, flips, no head norm",
                         dict(lr=1e-3, hflip_prob=0.5, head_norm_groups=0)),
    "adamw_3e-3_flips": ("AdamW 3e-3, flips, no head norm",
                         dict(lr=3e-3, hflip_prob=0.5, head_norm_groups=0)),
    "adamw_1e-3": ("AdamW 1e-3, no flips, no head norm", dict(lr=1e-3, head_norm_groups=0)),
    "adamw_1e-3_gn": ("AdamW 1e-3, no flips, GroupNorm heads", dict(lr=1e-3)),
    "adamw_1e-3_gn_pos0.5": ("as above, half the sampled RoIs foreground",
                             dict(lr=1e-3, roi_positive_fraction=0.5)),
    "adamw_5e-4": ("AdamW 5e-4, no flips, GroupNorm heads: the preset's recipe", dict()),
    "adamw_5e-4_320px": ("the preset's recipe at 320 px, 640 steps (about the same time)",
                         dict(min_size=320, max_size=640, max_iters=640)),
}


def run_variant(name, steps, data, out_root):
    """Train one variant in a fresh 1-thread process; returns its result dict."""
    code = f"""
import dataclasses, json, sys, time, torch
torch.set_num_threads(1)
from mrcnn_edu.config import preset
from mrcnn_edu.data import CocoDataset, resolve_data_root
from mrcnn_edu.engine.evaluate import evaluate
from mrcnn_edu.engine.train import train
sys.path.insert(0, {str(REPO / 'bench')!r})
from bench_subset_recipes import VARIANTS
changes = dict(max_iters={steps}, **VARIANTS[{name!r}][1])
iters = changes["max_iters"]
changes.setdefault("lr_steps", (int(iters * 0.8),))
cfg = dataclasses.replace(preset("subset"), **changes)
root = resolve_data_root({data!r})
start = time.perf_counter()
train(cfg, root, {str(out_root / name)!r}, progress=False, evaluate_after=False)
seconds = time.perf_counter() - start
from mrcnn_edu.engine.checkpoint import load_model
model, cfg, _ = load_model({str(out_root / name / 'checkpoint.pt')!r}, "cpu")
m = evaluate(model, CocoDataset(root, cfg.train_split, categories=cfg.categories))["pycocotools"]
print("RESULT " + json.dumps({{"iterations": iters, "train_seconds": round(seconds),
      "box_AP50": m["bbox"]["AP50"], "mask_AP50": m["segm"]["AP50"],
      "box_AP": m["bbox"]["AP"], "mask_AP": m["segm"]["AP"]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"variant {name} failed:\n{proc.stderr[-3000:]}")
    result = {"name": name, **json.loads(lines[-1][len("RESULT "):])}
    print(json.dumps(result), flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data")
    parser.add_argument("--out", default="runs/recipes", help="run folders (replaced)")
    parser.add_argument("--results", default="runs/recipes/results.jsonl")
    args = parser.parse_args()
    names = args.only or list(VARIANTS)
    out_root = REPO / args.out
    for name in names:  # a fresh run each time: train() refuses to overwrite a checkpoint
        for f in ("checkpoint.pt", "log.jsonl"):
            (out_root / name / f).unlink(missing_ok=True)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda n: run_variant(n, args.steps, args.data, out_root), names))
    wall = time.perf_counter() - start
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in results)
    rows = [f"| `{r['name']}` | {VARIANTS[r['name']][0]} | {r['iterations']} | "
            f"{r['train_seconds'] / 60:.1f} | {r['box_AP50']:.3f} | {r['mask_AP50']:.3f} |"
            for r in results]
    md = f"""## Choosing the `subset` preset (CPU)

Command: `python bench/bench_subset_recipes.py --steps {args.steps} --jobs {args.jobs}`  
Machine: {machine_line()}; each variant in its own process with 1 thread, {args.jobs} side by
side (load {load:.1f} at the start, {wall / 60:.0f} minutes in all).  
Every variant is `preset("subset")` with the fields of `VARIANTS` in the script changed,
{args.steps} steps of 2 images (lr x0.1 at 80%), seed 0, no pretrained weights; scored by
pycocotools on the **train** split (160 images, person): can the recipe fit what it saw?

| variant | what changes | steps | train min | box AP50 | mask AP50 |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Minutes depend on what else shares the cores; compare the AP columns, which do not.
"""
    write_section("subset_recipes", md)
    print(md)


if __name__ == "__main__":
    main()
