"""Saving and loading training checkpoints (lesson 12).

A checkpoint is one dict written with `torch.save`:

    model       the model's state_dict (never the DDP wrapper's: keys have no "module." prefix)
    optimizer   the optimizer's state_dict (momentum buffers)
    scheduler   the LR scheduler's state_dict
    iteration   how many iterations are complete (the next one to run is iteration + 1)
    config      `Config.to_dict()`, so a checkpoint alone can rebuild its model
    class_names names of labels 1..K, for drawing predictions
    rng         the torch, numpy and python RNG states at save time

Writing is atomic: the bytes go to `<path>.tmp` in the same folder, are flushed to disk, and
`os.replace` swaps the file in. A run killed mid-save leaves the previous checkpoint intact,
never a truncated one.
"""
import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import torch

from mrcnn_edu.config import Config
from mrcnn_edu.model import MaskRCNN


def save_checkpoint(path, state):
    """Write `state` (a dict) to `path` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    # os.replace is atomic on POSIX and Windows when both paths are on the same filesystem,
    # which is why the temp file lives beside the target rather than in /tmp.
    os.replace(tmp, path)
    return path


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint dict written by `save_checkpoint`; tensors land on `map_location`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    # weights_only=False: the dict holds numpy RNG states and the config, not only tensors.
    # Only load checkpoints you trust (pickle can run code).
    return torch.load(path, map_location=map_location, weights_only=False)


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


def restore_rng_state(state):
    """Inverse of `capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model(checkpoint, device="cpu"):
    """Rebuild the trained model of a checkpoint: (model in eval mode on `device`, Config,
    class_names). The checkpoint's config says how to build it; no other file is needed."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    # The trained weights include the backbone: do not load backbone_weights again.
    config = dataclasses.replace(Config.from_dict(state["config"]), backbone_weights=None)
    model = MaskRCNN(config)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    class_names = state.get("class_names") or (
        ["__background__"] + [str(k) for k in range(1, config.num_classes + 1)])
    return model, config, class_names
