"""Time RoIAlign and RoIPool (lesson 06), reference (numba) vs torch twin, on the CPU.

    python bench/bench_roi.py [--repeat 5] [--quick]

Writes the section `ops_roi` of docs/benchmarks.md. Inputs, fixed by the issue: features
(1, 256, 200, 200) float32 (P2 of an 800 x 800 image, spatial_scale 1/4); 512 and 2000 RoIs
whose sides are log-uniform in [16, 512] px with centres uniform over the image (like RPN
proposals; some leave the image); outputs 7 x 7 and 14 x 14; sampling_ratio 2, aligned=True.
Times are medians after one warm-up run (which also compiles the numba kernels).
"Forward+backward" is the forward plus the gradient with respect to the features for an
all-ones output gradient: `roi_align_backward` for the reference, autograd for the twin (the
reference has no RoIPool backward).

Peak memory of the twin: torch's CPU allocations are invisible to tracemalloc, and the peak RSS
(ru_maxrss) also counts shared-library code paged in on first use, so each configuration runs
forward+backward once in a fresh subprocess (after a tiny warm-up call) while a thread samples
the process's anonymous resident memory (`RssAnon` in /proc/self/status) every millisecond; we
report the peak minus the value before the call. It includes the output (K x 256 x h x w floats:
400 MB for 2000 RoIs at 14 x 14) and the features' gradient (41 MB).

Optional compiled peer: if a separate virtual environment with torchvision exists at
/work/.bench-venv-tv (outside the repository; never a dependency), torchvision.ops.roi_align and
roi_pool are timed on the same inputs in a subprocess and reported beside ours.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from _report import command_line, machine_line, median_ms, write_section  # bench/ is on sys.path

from mrcnn_edu import ops, reference as ref

PEER_PYTHON = Path("/work/.bench-venv-tv/bin/python")
QUOTED_CPP_MS = {"forward": 256.0, "forward+backward": 820.0}  # C++ RoIAlign, 512 RoIs, 7 x 7
SCALE, RATIO = 0.25, 2
CONFIGS = [(512, 7), (512, 14), (2000, 7), (2000, 14)]

PEER_SCRIPT = """
import json, sys, time, statistics
import numpy as np, torch, torchvision
torch.set_num_threads(int(sys.argv[3]))
data = np.load(sys.argv[1])
repeat = int(sys.argv[2])
def median_ms(fn):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter(); fn(); times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
feats = torch.from_numpy(data["features"])
out = {"version": f"torch {torch.__version__}, torchvision {torchvision.__version__}"}
for key in data.files:
    if not key.startswith("rois_"):
        continue
    rois, size = torch.from_numpy(data[key]), int(key.split("_")[2])
    align = lambda f: torchvision.ops.roi_align(f, rois, size, 0.25, 2, aligned=True)
    pool = lambda f: torchvision.ops.roi_pool(f, rois, size, 0.25)
    def backward(op):
        f = feats.clone().requires_grad_()
        op(f).sum().backward()
    out[key] = {"align_fwd": median_ms(lambda: align(feats)), "align_fwdbwd": median_ms(lambda: backward(align)),
                "pool_fwd": median_ms(lambda: pool(feats)), "pool_fwdbwd": median_ms(lambda: backward(pool))}
print(json.dumps(out))
"""


def make_rois(rng, count, image=800.0):
    """(count, 5) float32 RoIs [0, x1, y1, x2, y2]: log-uniform sides in [16, 512] px."""
    sides = np.exp(rng.uniform(np.log(16), np.log(512), (count, 2)))
    centres = rng.uniform(0, image, (count, 2))
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], 1)
    return np.concatenate([np.zeros((count, 1)), boxes], 1).astype(np.float32)


def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    data = {"features": rng.standard_normal((1, 256, 200, 200), dtype=np.float32)}
    for count in sorted({k for k, _ in CONFIGS}):
        data[f"rois_{count}"] = make_rois(rng, count)
    return data


def twin_forward_backward(op, features, rois, size):
    f = features.clone().requires_grad_()
    op(f, rois, size).sum().backward()
    return f.grad


def twin_ops():
    return {"RoIAlign": lambda f, r, s: ops.roi_align(f, r, s, SCALE, RATIO, True),
            "RoIPool": lambda f, r, s: ops.roi_pool(f, r, s, SCALE)}


def time_config(data, count, size, repeat):
    """Rows [(op, impl, forward ms, forward+backward ms or None)] for one (RoIs, output size)."""
    feats, rois = data["features"], data[f"rois_{count}"]
    t_feats, t_rois = torch.from_numpy(feats), torch.from_numpy(rois)
    grad = np.ones((count, 256, size, size), np.float32)
    reps = max(3, repeat // (2 if count > 512 else 1))
    align_ref = lambda: ref.roi_align(feats, rois, size, SCALE, RATIO, True)  # noqa: E731
    align_ref_bwd = lambda: (align_ref(), ref.roi_align_backward(grad, rois, feats.shape, SCALE, RATIO, True))  # noqa: E731
    twin = twin_ops()
    assert np.allclose(align_ref(), twin["RoIAlign"](t_feats, t_rois, size).numpy(), atol=1e-4)
    rows = [("RoIAlign", "reference (numba)", median_ms(align_ref, reps), median_ms(align_ref_bwd, reps))]
    rows.append(("RoIAlign", "twin (torch)", median_ms(lambda: twin["RoIAlign"](t_feats, t_rois, size), reps),
                 median_ms(lambda: twin_forward_backward(twin["RoIAlign"], t_feats, t_rois, size), reps)))
    pool_reps = 1 if count > 512 else 3  # the twin's RoIPool is slow on the CPU: fewer runs
    rows.append(("RoIPool", "reference (numba)",
                 median_ms(lambda: ref.roi_pool(feats, rois, size, SCALE), reps), None))
    rows.append(("RoIPool", "twin (torch)",
                 median_ms(lambda: twin["RoIPool"](t_feats, t_rois, size), pool_reps, warmup=0),
                 median_ms(lambda: twin_forward_backward(twin["RoIPool"], t_feats, t_rois, size),
                           pool_reps, warmup=0)))
    return rows


def peak_memory_mb(op, count, size):
    """Growth of peak RSS (MB) over one forward+backward of the twin, in a fresh process."""
    run = subprocess.run([sys.executable, __file__, "--memory", op, str(count), str(size)],
                         capture_output=True, text=True, cwd=Path(__file__).parent)
    if run.returncode != 0:
        print(run.stderr[-2000:], file=sys.stderr)
        return float("nan")
    return float(run.stdout.strip().splitlines()[-1])


def anonymous_rss_mb():
    """The process's resident anonymous memory (heap, not shared-library code) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def measure_memory(op, count, size):
    """Child process: print the peak growth (MB) of anonymous RSS over one twin forward+backward,
    sampled every millisecond by a thread (torch releases the GIL inside its kernels)."""
    data = make_inputs()
    feats, rois = torch.from_numpy(data["features"]), torch.from_numpy(data[f"rois_{count}"])
    twin_forward_backward(twin_ops()[op], feats[..., :8, :8], rois[:4], size)  # warm up, tiny
    baseline, peak, done = anonymous_rss_mb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_rss_mb())
            time.sleep(0.001)

    watcher = threading.Thread(target=sample)
    watcher.start()
    twin_forward_backward(twin_ops()[op], feats, rois, size)
    done.set()
    watcher.join()
    print(max(peak[0], anonymous_rss_mb()) - baseline)


def time_peer(data, repeat):
    """torchvision's compiled ops in the separate venv, or None when it is not there or fails."""
    if not PEER_PYTHON.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inputs.npz"
        arrays = {"features": data["features"]}
        for count, size in CONFIGS:
            arrays[f"rois_{count}_{size}"] = data[f"rois_{count}"]
        np.savez(path, **arrays)
        run = subprocess.run([str(PEER_PYTHON), "-c", PEER_SCRIPT, str(path), str(max(3, repeat // 2)),
                              str(torch.get_num_threads())], capture_output=True, text=True)
    if run.returncode != 0:
        print("torchvision peer failed:\n" + run.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def to_markdown(results, memory, peer, loads):
    lines = ["## RoIAlign and RoIPool (lesson 06)", "",
             f"Command: `{command_line()}`  ", f"Machine: {machine_line()}  ",
             "Median wall time in ms after one warm-up run; features (1, 256, 200, 200) float32, "
             "spatial_scale 1/4, RoI sides log-uniform in [16, 512] px, sampling_ratio 2, "
             "aligned=True; CPU.  ",
             "Twin peak MB: peak growth of anonymous RSS (sampled every ms) over one "
             "forward+backward in a fresh process; includes the output and the features' gradient.  ",
             f"Load average (1 min) at start / end: {loads[0]:.1f} / {loads[1]:.1f}", ""]
    header = "| op | RoIs | output | implementation | forward | forward+backward | twin peak MB |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for (count, size), rows in results.items():
        for op, impl, fwd, fwdbwd in rows:
            mem = f"{memory[op, count, size]:.0f}" if impl.startswith("twin") else ""
            both = f"{fwdbwd:.0f}" if fwdbwd is not None else "n/a"
            lines.append(f"| {op} | {count} | {size} x {size} | {impl} | {fwd:.0f} | {both} | {mem} |")
        if peer:
            p = peer[f"rois_{count}_{size}"]
            for op, key in (("RoIAlign", "align"), ("RoIPool", "pool")):
                lines.append(f"| {op} | {count} | {size} x {size} | torchvision (C++) | "
                             f"{p[key + '_fwd']:.0f} | {p[key + '_fwdbwd']:.0f} | |")
    lines += ["", verdict(results, peer)]
    if peer:
        lines += ["", f"torchvision peer: {peer['version']}, from a separate virtual environment "
                      "outside the repository (not a dependency)."]
    return "\n".join(lines)


def verdict(results, peer):
    """The target: the numba RoIAlign no slower than compiled C++ at 512 RoIs, 7 x 7."""
    rows = {impl: (fwd, both) for op, impl, fwd, both in results[512, 7] if op == "RoIAlign"}
    fwd, both = rows["reference (numba)"]
    if peer:
        cpp = {"forward": peer["rois_512_7"]["align_fwd"], "forward+backward": peer["rois_512_7"]["align_fwdbwd"]}
        source = "measured above"
    else:
        cpp, source = QUOTED_CPP_MS, "quoted for this machine"
    return (f"RoIAlign, 512 RoIs, 7 x 7: C++ {cpp['forward']:.0f} ms forward, "
            f"{cpp['forward+backward']:.0f} ms forward+backward ({source}); numba reference "
            f"{fwd:.0f} ms ({'meets' if fwd <= cpp['forward'] else 'misses'} <= C++) and "
            f"{both:.0f} ms ({'meets' if both <= cpp['forward+backward'] else 'misses'} <= C++).")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per op (median reported)")
    parser.add_argument("--quick", action="store_true", help="only 512 RoIs at 7 x 7; no page update")
    parser.add_argument("--memory", nargs=3, metavar=("OP", "ROIS", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory:
        measure_memory(args.memory[0], int(args.memory[1]), int(args.memory[2]))
        return
    configs = CONFIGS[:1] if args.quick else CONFIGS
    data = make_inputs()
    load_start = os.getloadavg()[0]
    results = {(count, size): time_config(data, count, size, args.repeat) for count, size in configs}
    memory = {(op, count, size): peak_memory_mb(op, count, size)
              for count, size in configs for op in ("RoIAlign", "RoIPool")}
    peer = None if args.quick else time_peer(data, args.repeat)
    markdown = to_markdown(results, memory, peer, (load_start, os.getloadavg()[0]))
    if not args.quick:
        write_section("ops_roi", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
