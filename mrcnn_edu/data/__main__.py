"""`python -m mrcnn_edu.data subset|shapes ...`: build a data folder in the COCO layout (lesson 00).

    python -m mrcnn_edu.data subset --annotations COCO/annotations/instances_train2017.json \\
        --out data/coco_subset --split train2017 --num-images 200 [--categories dog cat ...] \\
        [--min-instances 1] [--seed 0] [--images COCO/train2017]
    python -m mrcnn_edu.data shapes data/shapes [--num-images 64] [--seed 0] [--image-size 128 128]

Without --images, `subset` downloads only the picked images from their coco_url (resumable,
checked against out/manifest_{split}.json); run it again to resume or verify.
"""
import argparse
import sys

from .shapes import make_shapes_dataset
from .subset import DownloadError, make_subset


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m mrcnn_edu.data",
                                     description="Build a data folder in the COCO layout.")
    commands = parser.add_subparsers(dest="command", required=True)

    sub = commands.add_parser(
        "subset", help="carve a subset out of an official COCO instances JSON",
        description="Pick images from an official COCO instances JSON, write their annotations "
                    "to OUT/annotations/instances_SPLIT.json and the images to OUT/SPLIT/ "
                    "(copied with --images, else downloaded from coco_url). Run once per split.")
    sub.add_argument("--annotations", required=True,
                     help="official instances JSON, e.g. annotations/instances_val2017.json")
    sub.add_argument("--out", required=True, help="output folder (created; re-runs resume)")
    sub.add_argument("--split", default="train2017",
                     help="split name for the output files (default: train2017)")
    sub.add_argument("--categories", nargs="+", default=None, metavar="NAME_OR_ID",
                     help="keep only these categories (names or COCO ids; default: all)")
    sub.add_argument("--num-images", type=int, default=200,
                     help="how many images to pick (default: 200)")
    sub.add_argument("--min-instances", type=int, default=1,
                     help="pick only images with at least this many non-crowd instances of "
                          "the chosen categories (default: 1)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the pick (default: 0)")
    sub.add_argument("--images", default=None, metavar="DIR",
                     help="local COCO image folder to copy from (e.g. COCO/val2017); "
                          "without it the images are downloaded")
    sub.add_argument("--retries", type=int, default=3,
                     help="download attempts per image (default: 3)")
    sub.add_argument("--timeout", type=float, default=30.0,
                     help="seconds before a stalled download is retried (default: 30)")

    shp = commands.add_parser("shapes", help="write the seeded synthetic shapes dataset",
                              description="Squares, circles and triangles in the COCO layout: "
                                          "OUT/annotations/instances_{train2017,val2017}.json "
                                          "and OUT/{train2017,val2017}/*.png.")
    shp.add_argument("out", help="output folder")
    shp.add_argument("--num-images", type=int, default=64,
                     help="training images; validation gets a quarter (default: 64)")
    shp.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    shp.add_argument("--image-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"),
                     help="image height and width (default: 128 128)")
    shp.add_argument("--max-overlap", type=float, default=0.25,
                     help="largest hidden fraction of a shape, 0 = no overlap (default: 0.25)")
    shp.add_argument("--empty-prob", type=float, default=0.05,
                     help="probability of an image without shapes (default: 0.05)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "subset":
            out = make_subset(args.annotations, args.out, split=args.split,
                              categories=args.categories, num_images=args.num_images,
                              min_instances=args.min_instances, seed=args.seed,
                              images_dir=args.images, retries=args.retries, timeout=args.timeout)
            print(f"wrote {out}/annotations/instances_{args.split}.json and {out}/{args.split}/; "
                  f"use it with --data {out}")
        else:
            out = make_shapes_dataset(args.out, num_images=args.num_images, seed=args.seed,
                                      image_size=tuple(args.image_size),
                                      max_overlap=args.max_overlap, empty_prob=args.empty_prob)
            print(f"wrote the shapes dataset to {out}; use it with --data {out}")
    except (DownloadError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
