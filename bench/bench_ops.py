"""Time the geometry ops of lessons 01-04, reference (numpy/numba) vs torch twin, on the CPU.

    python bench/bench_ops.py [--repeat 7] [--no-peer]

Writes the section `ops_geometry` of docs/benchmarks.md: the command, the machine, its load, and
one row per op at a realistic size: the median of --repeat runs after one warm-up run (which also
compiles the numba kernels). The implementations of an op are timed in interleaved rounds (one
call of each per round), so that on a shared machine they all see the same load.
Inputs are float32, as the model uses them.

Optional compiled peer: given the Python of a separate virtual environment with torchvision
(--peer-python PATH, else $MRCNN_EDU_PEER_PYTHON; never a dependency of the package, its tests
or CI), its torchvision.ops.nms and box_iou are timed on the same saved inputs in a child
process, in the same rounds, and reported beside ours. Without it, the NMS rows are compared with the figures quoted for a compiled C++ NMS
on this machine (150 ms random, 50 ms clustered).
"""
import argparse
import os
import subprocess
import tempfile
from pathlib import Path

# OpenMP threads that spin while waiting for work steal the cores of a shared machine, and torch's
# small parallel ops then wait for threads that are not running (10x slower at a load of 6 on
# 2 cores). Sleeping waits cost nothing measurable when the machine is idle. Set before torch
# loads; the torchvision child process inherits it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from _report import (PEER_ENV_VAR, command_line, interleaved_medians,  # bench/ on sys.path
                     machine_line, resolve_peer_python, write_section)

from mrcnn_edu import ops, reference as ref

QUOTED_CPP_NMS_MS = {"random": 150.0, "clustered": 50.0}  # compiled C++ NMS on this machine

# Runs in the peer venv: loads the saved inputs, then times one call per line read from stdin
# ("box_iou", "nms_random", "nms_clustered") and answers with the milliseconds it took.
PEER_SCRIPT = """
import sys, time
import numpy as np, torch, torchvision
torch.set_num_threads(int(sys.argv[2]))
data = np.load(sys.argv[1])
t = {k: torch.from_numpy(data[k]) for k in data.files}
calls = {"box_iou": lambda: torchvision.ops.box_iou(t["iou_a"], t["iou_b"]),
         "nms_random": lambda: torchvision.ops.nms(t["random"], t["random_scores"], 0.7),
         "nms_clustered": lambda: torchvision.ops.nms(t["clustered"], t["clustered_scores"], 0.7)}
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}", flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    out = calls[line.strip()]()
    print((time.perf_counter() - start) * 1e3, out.shape[0], flush=True)
"""


class Peer:
    """torchvision in the separate venv, as a child process that times one call per request."""

    def __init__(self, data, tmp, python):
        path = Path(tmp) / "inputs.npz"
        np.savez(path, **{k: data[k] for k in ("iou_a", "iou_b", "random", "random_scores",
                                                 "clustered", "clustered_scores")})
        self.process = subprocess.Popen(
            [str(python), "-c", PEER_SCRIPT, str(path), str(torch.get_num_threads())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = self.process.stdout.readline().strip()
        self.kept = {}

    def call(self, name):
        """Milliseconds the peer took for one call of `name` (timed inside the peer)."""
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()
        ms, size = self.process.stdout.readline().split()
        self.kept[name] = int(size)
        return float(ms)

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def random_boxes(rng, n, image=1024.0):
    """n boxes with centres uniform over the image and sides uniform in [16, 256]: (n, 4)."""
    centres = rng.uniform(0, image, (n, 2))
    wh = rng.uniform(16, 256, (n, 2))
    return np.concatenate([centres - wh / 2, centres + wh / 2], axis=1).astype(np.float32)


def clustered_boxes(rng, n, clusters=60):
    """n boxes jittered around `clusters` objects, like RPN proposals before NMS: (n, 4)."""
    centres, sizes = rng.uniform(100, 924, (clusters, 2)), rng.uniform(32, 200, (clusters, 2))
    which = rng.integers(0, clusters, n)
    c = centres[which] + rng.normal(0, 0.1, (n, 2)) * sizes[which]
    wh = sizes[which] * rng.uniform(0.8, 1.25, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)


def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    data = {"iou_a": random_boxes(rng, 20000), "iou_b": random_boxes(rng, 50)}
    for kind, make in (("random", random_boxes), ("clustered", clustered_boxes)):
        data[kind] = make(rng, 6000)
        data[kind + "_scores"] = rng.random(6000).astype(np.float32)
    data["anchors"] = random_boxes(rng, 200000)
    data["targets"] = random_boxes(rng, 200000)
    data["match_iou"] = rng.random((50, 200000)).astype(np.float32) ** 4  # mostly small IoUs
    return data


def time_ops(data, repeat, peer=None):
    """[(op, size, reference ms, twin ms, peer ms or None)], checking that the twins agree."""
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    deltas, t_deltas = ref.encode_boxes(data["anchors"], data["targets"]), ops.encode_boxes(t["anchors"], t["targets"])
    cases = [("box_iou", "20000 x 50", "box_iou",
              lambda: ref.box_iou(data["iou_a"], data["iou_b"]), lambda: ops.box_iou(t["iou_a"], t["iou_b"]))]
    for kind in ("random", "clustered"):
        boxes, scores, t_boxes, t_scores = data[kind], data[kind + "_scores"], t[kind], t[kind + "_scores"]
        keep = ref.nms(boxes, scores, 0.7)
        assert np.array_equal(keep, ops.nms(t_boxes, t_scores, 0.7).numpy()), kind
        cases.append((f"nms @ 0.7, {kind}", f"6000 boxes, {len(keep)} kept", "nms_" + kind,
                      lambda b=boxes, s=scores: ref.nms(b, s, 0.7),
                      lambda b=t_boxes, s=t_scores: ops.nms(b, s, 0.7)))
    cases += [
        ("generate_anchors", "1024 x 1024, P2-P6, 3 ratios (261888)", None,
         lambda: ref.generate_anchors((1024, 1024)), lambda: ops.generate_anchors((1024, 1024))),
        ("encode_boxes", "200000 pairs", None,
         lambda: ref.encode_boxes(data["anchors"], data["targets"]),
         lambda: ops.encode_boxes(t["anchors"], t["targets"])),
        ("decode_boxes", "200000 boxes", None,
         lambda: ref.decode_boxes(data["anchors"], deltas), lambda: ops.decode_boxes(t["anchors"], t_deltas)),
        ("match_anchors", "IoU (50, 200000)", None,
         lambda: ref.match_anchors(data["match_iou"]), lambda: ops.match_anchors(t["match_iou"])),
    ]
    rows = []
    for op, size, peer_name, ref_fn, twin_fn in cases:
        calls = {"reference": ref_fn, "twin": twin_fn}
        if peer is not None and peer_name is not None:
            calls["peer"] = lambda name=peer_name: peer.call(name)
        ms = interleaved_medians(calls, repeat)
        rows.append((op, size, ms["reference"], ms["twin"], ms.get("peer")))
    return rows


def to_markdown(rows, peer, loads):
    lines = ["## Geometry ops (lessons 01-04)", "",
             f"Command: `{command_line()}`  ", f"Machine: {machine_line()}  ",
             "Median wall time in ms after one warm-up run, implementations interleaved; float32 "
             f"inputs; CPU; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}.  ",
             # the machine is shared: a load above its core count slows everything, torch most
             f"Load average (1 min) at start / end: {loads[0]:.1f} / {loads[1]:.1f}", ""]
    header = "| op | size | reference (numpy/numba) | twin (torch) |"
    if peer:
        header += " torchvision (C++) |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for op, size, ref_ms, twin_ms, peer_ms in rows:
        line = f"| {op} | {size} | {ref_ms:.1f} | {twin_ms:.1f} |"
        if peer:
            line += f" {peer_ms:.1f} |" if peer_ms is not None else " |"
        lines.append(line)
    lines += ["", nms_verdict(rows, peer)]
    if peer:
        lines += ["", f"torchvision peer: {peer.version}, from a separate virtual environment "
                      "outside the repository (not a dependency); its NMS kept "
                      f"{peer.kept.get('nms_random')} and {peer.kept.get('nms_clustered')} boxes."]
    return "\n".join(lines)


def nms_verdict(rows, peer):
    """One sentence per NMS case: the targets are reference <= C++ and twin <= 2 x C++."""
    parts = []
    for op, _, ref_ms, twin_ms, peer_ms in rows:
        if not op.startswith("nms"):
            continue
        kind = op.rsplit(" ", 1)[-1]
        cpp = peer_ms if peer else QUOTED_CPP_NMS_MS[kind]
        source = "measured above" if peer else "quoted for this machine"
        parts.append(f"NMS {kind}: C++ {cpp:.0f} ms ({source}); reference {ref_ms:.0f} ms "
                     f"({'meets' if ref_ms <= cpp else 'misses'} <= C++), twin {twin_ms:.0f} ms "
                     f"({'meets' if twin_ms <= 2 * cpp else 'misses'} <= 2 x C++).")
    return "  \n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per op (median reported)")
    parser.add_argument("--peer-python", help=f"a Python with torchvision (default: ${PEER_ENV_VAR})")
    parser.add_argument("--no-peer", action="store_true", help="skip torchvision even if one is given")
    args = parser.parse_args(argv)
    data = make_inputs()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        peer_python = resolve_peer_python(args.peer_python, args.no_peer, "bench_ops")
        peer = Peer(data, tmp, peer_python) if peer_python else None
        rows = time_ops(data, args.repeat, peer)
        if peer is not None:
            peer.close()
    markdown = to_markdown(rows, peer, (load_start, os.getloadavg()[0]))
    write_section("ops_geometry", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
