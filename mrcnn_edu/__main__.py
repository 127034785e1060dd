"""The command line: `python -m mrcnn_edu train|evaluate|predict` (also the `mrcnn-edu` script).

    python -m mrcnn_edu train --preset shapes --output runs/shapes   # writes data/shapes if missing
    python -m mrcnn_edu train --preset tiny --data data/shapes --output runs/tiny --max-iters 300
    python -m mrcnn_edu train --output runs/shapes --resume          # continue a killed run
    torchrun --nproc_per_node 2 -m mrcnn_edu train ...               # several processes / GPUs
    python -m mrcnn_edu evaluate runs/shapes/checkpoint.pt --split val -o results.json
    python -m mrcnn_edu predict runs/shapes/checkpoint.pt a.jpg b.png -o predictions/

Every option maps onto one `Config` field or one argument of the engine functions; `--set
key=value` changes any other Config field (values parse as JSON: 0.01, true, null, [800, 1000];
"a,b" and "[a, b]" are lists too), checked against the field's type and range by Config;
num_classes is derived from the data and cannot be set. Mistakes (unknown preset, unknown
field, bad value, missing file) exit with status 2 and a message naming the culprit; a NaN
loss exits with status 3 and says where the last good checkpoint is.
"""
import argparse
import dataclasses
import difflib
import json
import sys

from mrcnn_edu.engine.cpu import set_wait_policy

# OpenMP threads spin between ops on an idle machine and sleep on a busy one (engine/cpu.py).
# Must be set before torch loads.
set_wait_policy()

from mrcnn_edu.config import Config, preset
from mrcnn_edu.config_checks import coerce_field
from mrcnn_edu.data import resolve_data_root
from mrcnn_edu.data.shapes import ensure_shapes_dataset
from mrcnn_edu.engine.evaluate import evaluate_checkpoint, format_metrics
from mrcnn_edu.engine.predict import predict
from mrcnn_edu.engine.train import NonFiniteLossError, auto_device, train
from mrcnn_edu.viz import MIN_DISPLAY_SCORE


class UsageError(ValueError):
    """A bad command line: the message names the option or field."""


SHAPES_DATA = "data/shapes"  # the shapes preset's data folder when --data is not given (cwd)
DERIVED_FIELDS = {"num_classes": "it is the number of kept categories: choose them with "
                                  "--categories"}


def parse_assignment(text):
    """'key=value' -> (key, value) typed as Config declares the field (e.g. "tuple[int, ...]")."""
    if "=" not in text:
        raise UsageError(f"--set expects key=value, got {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    fields = {f.name: str(f.type) for f in dataclasses.fields(Config)}
    if key not in fields:
        close = difflib.get_close_matches(key, fields, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UsageError(f"--set {text}: Config has no field {key!r}{hint}")
    if key in DERIVED_FIELDS:
        raise UsageError(f"--set {text}: {key} is derived from the data and cannot be set; "
                         f"{DERIVED_FIELDS[key]}")
    return key, convert_value(raw, fields[key], f"--set {text}", name=key)


def convert_value(raw, declared, where, name="value"):
    """Parse `raw` as JSON (else a bare word, or a list: "a,b" or "[a, b]"), then check it
    against `declared` as Config does; UsageError naming `where` and the field otherwise."""
    value = parse_list_or_value(raw, as_text="tuple[str" in declared)
    if value is None:
        if "None" not in declared:
            raise UsageError(f"{where}: this field cannot be null")
        return None
    if declared.startswith("tuple"):
        value = tuple(value) if isinstance(value, list) else (value,)
    elif declared.startswith("float") and not isinstance(value, bool) and isinstance(value, int):
        value = float(value)
    try:
        return coerce_field(value, declared, name)
    except ValueError as err:
        raise UsageError(f"{where}: {err}") from None


def parse_list_or_value(raw, as_text=False):
    """A list from "a,b" or "[a, b]" (items JSON or bare words), else one JSON value or word.

    as_text: items are names, kept as written ("18" stays the name "18", not a number).
    """
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        parsed = json_or_text(text)
        if isinstance(parsed, list) and not (as_text and not all(isinstance(v, str)
                                                                 for v in parsed)):
            return parsed
        text = text[1:-1]  # not JSON ("[person]") or numbers for names: split by hand
        return [item for item in split_items(text, as_text) if item != ""]
    if "," in text:
        return split_items(text, as_text)
    if as_text:
        return None if text == "null" else text.strip("\"'")
    return json_or_text(text)


def split_items(text, as_text):
    items = [item.strip() for item in text.split(",")]
    return [item.strip("\"'") if as_text else json_or_text(item) for item in items]


def json_or_text(raw):
    """json.loads(raw), or raw itself when it is not JSON (a bare word such as group_norm)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def build_config(args):
    """The preset, then the dedicated options, then every --set, in that order."""
    try:
        config = preset(args.preset)
    except ValueError as err:
        raise UsageError(f"--preset: {err}") from None
    changes = {}
    if args.backbone_weights is not None:
        changes["backbone_weights"] = args.backbone_weights
    if args.categories:
        changes["categories"] = tuple(args.categories)
    if args.output is not None:
        changes["output_dir"] = args.output
    if args.max_iters is not None:
        changes["max_iters"] = args.max_iters
    sets = dict(parse_assignment(text) for text in args.set)
    if "mask_pool_size" in sets and "mask_size" not in sets:
        sets["mask_size"] = 2 * sets["mask_pool_size"]  # derived: the deconv doubles the side
    # One replace, so Config checks the fields together (mask_size with mask_pool_size, ...)
    return dataclasses.replace(config, **{**changes, **sets})  # a --set wins over its option


def run_train(args):
    config = build_config(args)
    data_root = train_data_root(args, config)
    # One path per option: --output and --max-iters reach the trainer through the config only.
    train(config, data_root, config.output_dir, resume=args.resume, device=args.device,
          progress=not args.no_progress, evaluate_after=not args.no_eval)


def train_data_root(args, config):
    """The data folder to train on. The shapes preset makes its own: --data (default
    data/shapes under the current folder) gets the synthetic dataset when it lacks it
    (MRCNN_EDU_DATA, which names real data, is not read). Other presets: resolve_data_root."""
    if args.preset != "shapes":
        return resolve_data_root(args.data)
    root = ensure_shapes_dataset(args.data or SHAPES_DATA, config.train_split, config.val_split,
                                 log=lambda line: print(line, flush=True))
    return root.resolve()


def run_evaluate(args):
    inference = {} if args.mask_box_scale is None else {"mask_box_scale": args.mask_box_scale}
    metrics = evaluate_checkpoint(args.checkpoint, resolve_data_root(args.data), args.split,
                                  auto_device(args.device), results_path=args.output,
                                  progress=not args.no_progress, inference=inference)
    print(format_metrics(metrics))
    if args.output:
        print(f"results written to {args.output}")


def run_predict(args):
    for path in predict(args.checkpoint, args.images, args.output, auto_device(args.device),
                        min_score=args.min_score):
        print(path)


def make_parser():
    parser = argparse.ArgumentParser(
        prog="mrcnn-edu", description="Train, evaluate and run the Mask R-CNN of mrcnn_edu.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; writes runs/<name>/")
    t.add_argument("--preset", default="tiny", help="tiny (2-core CPU), subset (make train), "
                   "shapes (synthetic shapes, written to --data or data/shapes when missing) "
                   "or r50_fpn (GPU)")
    t.add_argument("--data", help="COCO-layout data folder (default: resolve_data_root())")
    t.add_argument("--output", help="run folder (default: the preset's output_dir)")
    t.add_argument("--max-iters", type=int, help="train up to this iteration (Config.max_iters)")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    t.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    t.add_argument("--backbone-weights", help="ResNet state dict (Config.backbone_weights)")
    t.add_argument("--categories", nargs="+", help="category names to keep (default: all)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any Config field, e.g. --set lr=0.005 (repeatable)")
    t.add_argument("--no-eval", action="store_true", help="skip metrics.json and predictions")
    t.add_argument("--no-progress", action="store_true", help="print lines instead of a bar")
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, "
                   "one per core); 1 is fastest on a machine shared with other work")
    t.set_defaults(run=run_train)

    e = sub.add_parser("evaluate", help="COCO AP of a checkpoint, pycocotools and ours")
    e.add_argument("checkpoint")
    e.add_argument("--data", help="COCO-layout data folder (default: resolve_data_root())")
    e.add_argument("--split", help="split to evaluate (default: the config's val_split)")
    e.add_argument("-o", "--output", help="write the COCO results JSON here")
    e.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--threads", type=int, help="CPU threads for torch (default: one per core)")
    e.add_argument("--mask-box-scale", type=float, metavar="S",
                   help="read and paste masks over boxes widened by S (Config.mask_box_scale; "
                        "default: the checkpoint's)")
    e.set_defaults(run=run_evaluate)

    p = sub.add_parser("predict", help="draw detections on images")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files; x.jpg is drawn to OUTPUT/x.png, and a later image with the "
                   "same name (b/x.jpg after a/x.jpg) to x_1.png, then x_2.png, ...")
    p.add_argument("-o", "--output", required=True, help="folder for the PNGs")
    p.add_argument("--min-score", "--score-threshold", dest="min_score", type=float,
                   default=MIN_DISPLAY_SCORE, help="draw detections scoring at least this "
                   f"(default {MIN_DISPLAY_SCORE})")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(run=run_predict)
    return parser


def main(argv=None):
    """Entry point of `python -m mrcnn_edu` and of the `mrcnn-edu` console script."""
    args = make_parser().parse_args(argv)
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        print(f"mrcnn-edu {args.command}: error: --threads must be at least 1, got {threads}",
              file=sys.stderr)
        return 2
    if threads:
        import torch
        torch.set_num_threads(threads)
    try:
        args.run(args)
    except NonFiniteLossError as err:
        print(f"mrcnn-edu {args.command}: {err}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # bad input, named
        print(f"mrcnn-edu {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
