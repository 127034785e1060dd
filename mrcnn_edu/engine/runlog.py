"""The per-iteration loss log of a run, `runs/<name>/log.jsonl`, and its plot (lesson 12).

One JSON object per line, one line per iteration, written by rank 0 as training goes:

    {"iteration": 1, "lr": 1e-05, "loss": 4.21, "loss_objectness": 0.69, ..., "time": 0.8}

`iteration` counts completed iterations (1-based); `loss` is the sum of the loss terms, each
averaged over processes; `time` is seconds since this process started training (not
reproducible, so comparisons of runs ignore it). JSON lines survive a killed run: every complete
line is a valid record, and resuming cuts the log back to the checkpoint's iteration.

The plot itself is `mrcnn_edu.viz.plot_loss_curve` (with every other figure); `plot_loss_curve`,
`loss_names` and `running_mean` stay importable from here.
"""
import json
from pathlib import Path

# A bare Figure, not pyplot's: the PNG is drawn without opening a window or leaving a figure
# registered in pyplot of the notebook or GUI session that trains.
from matplotlib.figure import Figure

from mrcnn_edu.viz import loss_names, plot_loss_curve, running_mean  # noqa: F401 (re-exported)


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


def save_loss_curve(log_path, png_path):
    """Plot a log.jsonl to a PNG; returns the PNG path (None when the log is empty)."""
    records = read_log(log_path)
    if not records:
        return None
    ax = plot_loss_curve(records, ax=Figure(figsize=(8, 5)).add_subplot())
    ax.set_title(f"training losses ({len(records)} iterations)")
    ax.figure.tight_layout()
    ax.figure.savefig(png_path, dpi=100)
    return Path(png_path)
