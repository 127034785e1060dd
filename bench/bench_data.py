"""Benchmark: load every image of the COCO subset through CocoDataset, masks included (lesson 00).

    python bench/bench_data.py [--data DIR] [--repeat 3]

Times, per split, building the dataset (reading and checking the JSON) and then reading every
(image, target) pair in order: JPEG decode, float conversion, boxes, and every mask decoded to a
full-size (N, H, W) uint8 array. One process, no DataLoader workers. The budget is 30 s for the
whole subset on 2 cores; the result goes to the "data" section of docs/benchmarks.md.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import command_line, machine_line, write_section  # noqa: E402

from mrcnn_edu.data import CocoDataset, resolve_data_root  # noqa: E402

SPLITS = ("train2017", "val2017")
BUDGET_S = 30.0


def load_all(root, split):
    """(seconds to build, seconds to read every item, images, instances, mask megapixels)."""
    start = time.perf_counter()
    ds = CocoDataset(root, split)
    built = time.perf_counter()
    instances = pixels = 0
    for i in range(len(ds)):
        _, target = ds[i]
        instances += len(target["labels"])
        pixels += target["masks"].numel()
    done = time.perf_counter()
    return built - start, done - built, len(ds), instances, pixels / 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="data folder (default: resolve_data_root)")
    parser.add_argument("--repeat", type=int, default=3, help="full passes; the median is kept")
    args = parser.parse_args(argv)
    root = resolve_data_root(args.data)
    rows, totals = [], []
    load = os.getloadavg()[0]
    for _ in range(args.repeat):
        runs = {split: load_all(root, split) for split in SPLITS}
        totals.append(sum(r[0] + r[1] for r in runs.values()))
        rows.append(runs)
    best = rows[totals.index(statistics.median_low(totals))]  # the pass with the median total
    table = ["| split | images | instances | mask Mpx | build (s) | read all (s) | images / s |",
             "|---|---|---|---|---|---|---|"]
    for split, (build, read, n, inst, mpx) in best.items():
        table.append(f"| {split} | {n} | {inst} | {mpx:.0f} | {build:.2f} | {read:.2f} | "
                     f"{n / read:.0f} |")
    n_all = sum(r[2] for r in best.values())
    total = statistics.median_low(totals)
    verdict = "meets" if total < BUDGET_S else "MISSES"
    md = "\n".join([
        "## Loading the COCO subset (lesson 00)",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine_line()}  ",
        f"Data: `{'the shared subset' if root.parent.name == 'shared' else root.name}`; "
        f"pass with the median total of {args.repeat}; one process, no DataLoader workers; "
        "every (image, target) read in order, masks decoded to full-size (N, H, W) uint8.  ",
        f"Load average (1 min) at start: {load:.1f}",
        "",
        *table,
        "",
        f"All {n_all} images with their masks: {total:.1f} s ({verdict} the {BUDGET_S:.0f} s "
        f"budget); passes took {', '.join(f'{t:.1f}' for t in totals)} s.",
    ])
    print(md)
    write_section("data", md)


if __name__ == "__main__":
    main()
