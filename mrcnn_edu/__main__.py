"""The command line: `python -m mrcnn_edu train|evaluate|predict` (also the `mrcnn-edu` script).

    python -m mrcnn_edu train --preset tiny --data data/shapes --output runs/shapes --max-iters 300
    python -m mrcnn_edu train --output runs/shapes --resume          # continue a killed run
    torchrun --nproc_per_node 2 -m mrcnn_edu train ...               # several processes / GPUs
    python -m mrcnn_edu evaluate runs/shapes/checkpoint.pt --split val -o results.json
    python -m mrcnn_edu predict runs/shapes/checkpoint.pt a.jpg b.png -o predictions/

Every option maps onto one `Config` field or one argument of the engine functions; `--set
key=value` changes any other Config field (values parse as JSON: 0.01, true, null, [800, 1000];
"a,b" is a list too). Mistakes (unknown preset, unknown field, missing file) exit with status 2
and a message naming the culprit; a NaN loss exits with status 3 and says where the last good
checkpoint is.
"""
import argparse
import dataclasses
import difflib
import json
import os
import sys

# OpenMP threads that spin while they wait steal the cores of a busy machine (torch's small
# parallel ops then wait for threads that are not running); sleeping waits cost nothing
# measurable on an idle one. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mrcnn_edu.config import Config, preset
from mrcnn_edu.data import resolve_data_root
from mrcnn_edu.engine.evaluate import evaluate_checkpoint, format_metrics
from mrcnn_edu.engine.predict import predict
from mrcnn_edu.engine.train import NonFiniteLossError, auto_device, train


class UsageError(ValueError):
    """A bad command line: the message names the option or field."""


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
    return key, convert_value(raw, fields[key], f"--set {text}")


def convert_value(raw, declared, where):
    """Parse `raw` as JSON (else a bare word, or a comma list), then coerce to `declared`."""
    value = json_or_text(raw)
    if isinstance(value, str) and "," in value:
        value = [json_or_text(v.strip()) for v in value.split(",")]
    if value is None:
        if "None" not in declared:
            raise UsageError(f"{where}: this field cannot be null")
        return None
    if declared.startswith("tuple"):
        return tuple(value) if isinstance(value, list) else (value,)
    if declared == "bool":
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true or false")
    elif declared.startswith("int") and (isinstance(value, bool) or not isinstance(value, int)):
        raise UsageError(f"{where}: expected an integer")
    elif declared.startswith("float") and not isinstance(value, bool) and isinstance(value, int):
        value = float(value)
    return value


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
    config = dataclasses.replace(config, **changes)
    for text in args.set:
        key, value = parse_assignment(text)
        config = dataclasses.replace(config, **{key: value})
    return config


def run_train(args):
    config = build_config(args)
    data_root = resolve_data_root(args.data)
    train(config, data_root, config.output_dir, resume=args.resume, device=args.device,
          max_iters=args.max_iters, progress=not args.no_progress,
          evaluate_after=not args.no_eval)


def run_evaluate(args):
    metrics = evaluate_checkpoint(args.checkpoint, resolve_data_root(args.data), args.split,
                                  auto_device(args.device), results_path=args.output,
                                  progress=not args.no_progress)
    print(format_metrics(metrics))
    if args.output:
        print(f"results written to {args.output}")


def run_predict(args):
    for path in predict(args.checkpoint, args.images, args.output, auto_device(args.device),
                        score_threshold=args.score_threshold):
        print(path)


def make_parser():
    parser = argparse.ArgumentParser(
        prog="mrcnn-edu", description="Train, evaluate and run the Mask R-CNN of mrcnn_edu.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; writes runs/<name>/")
    t.add_argument("--preset", default="tiny", help="tiny (2-core CPU) or r50_fpn (GPU)")
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
    e.set_defaults(run=run_evaluate)

    p = sub.add_parser("predict", help="draw detections on images")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, help="folder for the PNGs")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(run=run_predict)
    return parser


def main(argv=None):
    """Entry point of `python -m mrcnn_edu` and of the `mrcnn-edu` console script."""
    args = make_parser().parse_args(argv)
    if getattr(args, "threads", None):
        import torch
        torch.set_num_threads(args.threads)
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
