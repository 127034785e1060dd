"""Where the data lives (lesson 00).

Every command that reads data takes an explicit `--data DIR`. When it is not given, the
directory comes from, in this order:

    1. the environment variable MRCNN_EDU_DATA;
    2. <repo>/data/coco_subset, when it exists (a subset you built yourself);
    3. <repo>/../shared/coco_subset, when it exists (the offline copy beside the repository).

A data directory is laid out like official COCO:

    DIR/annotations/instances_{split}.json
    DIR/{split}/*.jpg | *.png

The shared copy is read in place; it is never copied into the repository.
"""
import os
from pathlib import Path

ENV_VAR = "MRCNN_EDU_DATA"
# mrcnn_edu/data/paths.py -> the repository root is three levels up; tests monkeypatch this.
REPO_ROOT = Path(__file__).resolve().parents[2]

HOW_TO_BUILD = (
    "Build a subset of official COCO with\n"
    "    python -m mrcnn_edu.data subset --annotations COCO/annotations/instances_val2017.json "
    "--out data/coco_subset --split val2017 --num-images 200 --images COCO/val2017\n"
    "(without --images only the picked images are downloaded from their coco_url),\n"
    "or make a synthetic one with\n"
    "    python -m mrcnn_edu.data shapes data/shapes\n"
    f"then pass --data DIR to the command or set {ENV_VAR}=DIR."
)


def default_candidates():
    """The default locations, in the order they are tried."""
    return [REPO_ROOT / "data" / "coco_subset", REPO_ROOT.parent / "shared" / "coco_subset"]


def resolve_data_root(data=None):
    """The data directory to use, as an absolute Path.

    explicit `data` > $MRCNN_EDU_DATA > <repo>/data/coco_subset > <repo>/../shared/coco_subset.
    An explicit or environment path that does not exist is an error (a typo should not fall
    back silently to another dataset); FileNotFoundError says how to build a subset.
    """
    if data is not None:
        return _existing(Path(data), "the data directory given (--data)")
    env = os.environ.get(ENV_VAR)
    if env:
        return _existing(Path(env), f"the data directory in ${ENV_VAR}")
    candidates = default_candidates()
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = "\n".join(f"    {c}" for c in candidates)
    raise FileNotFoundError(f"no data directory found; tried\n{tried}\n{HOW_TO_BUILD}")


def _existing(path, what):
    path = path.expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} does not exist: {path}\n{HOW_TO_BUILD}")
    return path.resolve()
