"""The per-iteration loss log of a run, `runs/<name>/log.jsonl`, and its plot (lesson 12).

One JSON object per line, one line per iteration, written by rank 0 as training goes:

    {"iteration": 1, "lr": 1e-05, "loss": 4.21, "loss_objectness": 0.69, ..., "time": 0.8}

`iteration` counts completed iterations (1-based); `loss` is the sum of the loss terms, each
averaged over processes; `time` is seconds since this process started training (not
reproducible, so comparisons of runs ignore it). JSON lines survive a killed run: every complete
line is a valid record, and resuming cuts the log back to the checkpoint's iteration.
"""
import json
from pathlib import Path

# A bare Figure draws to files without pyplot, so importing this module never changes the
# backend of a notebook or GUI session that imports it.
from matplotlib.figure import Figure


def read_log(path):
    """All records of a log.jsonl as a list of dicts (a half-written last line is skipped)."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the run was killed while writing this line
    return records


def truncate_log(path, iteration):
    """Keep only records with record["iteration"] <= iteration: what a resumed run redoes goes."""
    kept = [r for r in read_log(path) if r["iteration"] <= iteration]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


def append_record(f, record):
    """Write one record as a line and flush, so a killed run keeps every finished iteration."""
    f.write(json.dumps(record) + "\n")
    f.flush()


def loss_names(records):
    """The loss keys of the records, in first-seen order ("loss" is the total)."""
    names = []
    for r in records:
        names += [k for k in r if k.startswith("loss") and k not in names]
    return names


def plot_loss_curve(records, ax=None, smooth=10):
    """Each loss against iteration, thin raw and thick running mean over `smooth` iterations."""
    if ax is None:
        ax = Figure(figsize=(8, 5)).add_subplot()
    its = [r["iteration"] for r in records]
    for name in loss_names(records):
        values = [r.get(name, float("nan")) for r in records]
        line, = ax.plot(its, values, lw=0.5, alpha=0.4)
        ax.plot(its, running_mean(values, smooth), lw=2 if name == "loss" else 1.2,
                color=line.get_color(), label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return ax


def running_mean(values, window):
    """Mean of the last `window` values at each position (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def save_loss_curve(log_path, png_path):
    """Plot a log.jsonl to a PNG; returns the PNG path (None when the log is empty)."""
    records = read_log(log_path)
    if not records:
        return None
    ax = plot_loss_curve(records)
    ax.set_title(f"training losses ({len(records)} iterations)")
    ax.figure.tight_layout()
    ax.figure.savefig(png_path, dpi=100)
    return Path(png_path)
