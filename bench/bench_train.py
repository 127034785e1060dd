"""Training speed of the tiny preset on the CPU: images per second, written to docs/benchmarks.md.

    .venv/bin/python bench/bench_train.py [--iters 20] [--data DIR]

Trains `preset("tiny")` (shorter side 256 px, batch 2) on the training split of the COCO subset
(`resolve_data_root`, as `make train` does) through `mrcnn_edu.engine.train.train`, without
evaluation, and reads the per-iteration times from the run's log.jsonl. The first iterations
warm up (allocator, numba) and are left out of the rate.
"""
import argparse
import dataclasses
import os
import statistics
import tempfile
from pathlib import Path

import torch

from _report import command_line, machine_line, write_section
from mrcnn_edu.config import preset
from mrcnn_edu.data import resolve_data_root
from mrcnn_edu.engine.runlog import read_log
from mrcnn_edu.engine.train import train

WARMUP_ITERS = 3


def images_per_second(records, batch_size, skip=WARMUP_ITERS):
    """batch_size / the median iteration time after the first `skip` iterations.

    The median rather than the mean: the cores are shared, and bursts of other work inflate a
    few iterations a lot.
    """
    times = [r["time"] for r in records[skip - 1 :]]
    return batch_size / statistics.median(b - a for a, b in zip(times, times[1:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--data", help="COCO-layout folder (default: resolve_data_root())")
    args = parser.parse_args()
    config = dataclasses.replace(preset("tiny"), hflip_prob=0.5)
    load_before = os.getloadavg()[0]  # other processes on the cores slow the rate down
    with tempfile.TemporaryDirectory() as tmp:
        train(config, resolve_data_root(args.data), Path(tmp) / "run", max_iters=args.iters, progress=False,
              evaluate_after=False)
        records = read_log(Path(tmp) / "run" / "log.jsonl")
    rate = images_per_second(records, config.batch_size)
    print(f"tiny preset: {rate:.2f} images/s")
    write_section("train_tiny", f"""
## Training speed of the tiny preset (CPU)

`{command_line()}`

| preset | image size | batch | threads | images / s | s / iteration |
|--------|------------|-------|---------|------------|---------------|
| tiny | {config.min_size}-{config.max_size} px (COCO subset) | {config.batch_size} | {torch.get_num_threads()} | {rate:.2f} | {config.batch_size / rate:.2f} |

Median iteration over iterations {WARMUP_ITERS}..{args.iters} of a fresh run (forward, backward, SGD step; data
loading in the main process). Load average when it started: {load_before:.1f} (other work on the
same cores lowers the rate). Machine: {machine_line()}.
""")


if __name__ == "__main__":
    main()
