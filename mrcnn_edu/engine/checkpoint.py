"""Saving and loading training checkpoints (lesson 12).

A checkpoint is one dict written with `torch.save`:

    model       the model's state_dict (never the DDP wrapper's: keys have no "module." prefix)
    optimizer   the optimizer's state_dict (momentum buffers)
    scaler      the AMP GradScaler's state_dict (its loss scale; inert without AMP)
    iteration   how many iterations are complete (the next one to run is iteration + 1)
    config      `Config.to_dict()`, so a checkpoint alone can rebuild its model
    class_names names of labels 1..K, for drawing predictions
    rng         the torch, numpy and python RNG states at save time (for inspection: a resumed
                run re-seeds every iteration from (seed, iteration), see engine.schedule)

Writing is atomic: the bytes go to a temp file `<name>.<random>.tmp` in the same folder, are
flushed to disk, and `os.replace` swaps the file in. A run killed mid-save leaves the previous
checkpoint intact, never a truncated one; the partial temp file it leaves is removed by
`remove_partial_saves` when the next run starts in that folder.

Reading checks what it reads: an empty, truncated or foreign file raises `CheckpointError`
naming the file and what is wrong with it, never a raw unpickling error.
"""
import dataclasses
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from mrcnn_edu.config import Config
from mrcnn_edu.model import MaskRCNN

REQUIRED = ("config", "iteration", "model")  # the entries every checkpoint of a run has
# Config fields that change what a trained model outputs, never its weights or their shapes
INFERENCE_FIELDS = ("score_thresh", "nms_thresh", "detections_per_image", "mask_threshold",
                    "mask_box_scale", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message names the file and the reason."""


def save_checkpoint(path, state):
    """Write `state` (a dict) to `path` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temp name: two writers never share one, and a leftover is recognisable by its
    # "<name>." prefix and ".tmp" suffix (see remove_partial_saves).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        # os.replace is atomic on POSIX and Windows when both paths are on the same filesystem,
        # which is why the temp file lives beside the target rather than in /tmp.
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def partial_saves(path):
    """Temp files that saves of `path` left behind when killed (old and new naming)."""
    path = Path(path)
    return sorted(path.parent.glob(path.name + ".*tmp"))  # <name>.tmp and <name>.<random>.tmp


def remove_partial_saves(path):
    """Delete the temp files of killed saves of `path`; returns their paths.

    Only safe while no other process saves into the folder: the run lock guarantees that.
    """
    removed = partial_saves(path)
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint dict written by `save_checkpoint`; tensors land on `map_location`.

    Raises FileNotFoundError when there is no file, CheckpointError when it is empty or cannot
    be unpickled (truncated, or not written by torch.save).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was never written "
                              "completely")
    # weights_only=False: the dict holds numpy RNG states and the config, not only tensors.
    # Only load checkpoints you trust (pickle can run code).
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError or UnpicklingError here
        reason = str(err).split(". ")[0][:160]  # torch's first sentence; the rest is advice
        raise CheckpointError(f"checkpoint {path} cannot be read: it is truncated or was not "
                              f"written by torch.save ({type(err).__name__}: {reason})") from None


def check_run_checkpoint(state, path, required=REQUIRED):
    """Raise CheckpointError unless `state` is a dict with the `required` entries."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a "
                              "checkpoint dict written by mrcnn_edu training")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} has no {', '.join(map(repr, missing))} "
                              f"(entries found: {sorted(map(str, state))[:8]}); it was not "
                              "written by mrcnn_edu training")
    return state


def load_run_checkpoint(path, map_location="cpu", required=REQUIRED):
    """`load_checkpoint`, then `check_run_checkpoint`: the dict of a training run."""
    return check_run_checkpoint(load_checkpoint(path, map_location), path, required)


def config_of(state, path):
    """The Config stored in a checkpoint; CheckpointError naming the file when it is invalid."""
    try:
        return Config.from_dict(state["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: its config is invalid: {err}") from None


def capture_rng_state():
    """The global torch, numpy and python RNG states, for a checkpoint's "rng" entry."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load_model(checkpoint, device="cpu", inference=None):
    """Rebuild the trained model of a checkpoint: (model in eval mode on `device`, Config,
    class_names). The checkpoint's config says how to build it; no other file is needed.

    inference: {Config field: value} for fields that change inference only (INFERENCE_FIELDS,
    e.g. {"mask_box_scale": 1.1}), replacing the checkpoint's; the weights are the same.
    """
    inference = dict(inference or {})
    unknown = sorted(set(inference) - set(INFERENCE_FIELDS))
    if unknown:
        raise ValueError(f"load_model: {unknown} are not inference settings; these are: "
                         f"{', '.join(INFERENCE_FIELDS)}")
    state = load_run_checkpoint(checkpoint, map_location="cpu")
    # The trained weights include the backbone: do not load backbone_weights again.
    config = dataclasses.replace(config_of(state, checkpoint), backbone_weights=None,
                                 **inference)
    model = MaskRCNN(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {checkpoint}: its weights do not fit the model its "
                              f"config describes: {str(err).splitlines()[0]}") from None
    model.to(device).eval()
    class_names = state.get("class_names") or (
        ["__background__"] + [str(k) for k in range(1, config.num_classes + 1)])
    return model, config, class_names
