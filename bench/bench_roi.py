"""Time RoIAlign and RoIPool (lesson 06): reference (numba), torch twin and torchvision's C++.

    python bench/bench_roi.py [--repeat 5] [--quick] [--no-busy] [--peer-python PATH] [--no-write]

Writes the section `ops_roi` of docs/benchmarks.md (not with --quick or --no-write). Inputs,
fixed by the issue: features (1, 256, 200, 200) float32 (P2 of an 800 x 800 image, spatial_scale
1/4); 512 and 2000 RoIs whose sides are log-uniform in [16, 512] px with centres uniform over the
image (like RPN proposals; some leave the image); outputs 7 x 7 and 14 x 14; sampling_ratio 2,
aligned=True. "Forward+backward" is the forward plus the gradient with respect to the features
for an all-ones output gradient: `roi_align_backward` for the reference, autograd for the twin
and for torchvision (the reference has no RoIPool backward).

Timing: for each (op, RoIs, output size) and each of forward and forward+backward, the
implementations run in interleaved rounds (one call of each per round) after one warm-up round
(which also compiles the numba kernels), and the median of each is reported, so that on a shared
machine they all see the same load. The 1-minute load average is recorded before and after each
such block and printed beside its figures. OMP_WAIT_POLICY=PASSIVE, as the training CLI sets it
(override it in the environment to measure another policy).

Goal (issue 12): the twins no slower than torchvision's C++ kernels (ratio twin / C++ <= 1.0) at
512 and 2000 RoIs, 7 x 7 and 14 x 14, forward and forward+backward.

Busy columns (skip with --no-busy): the twin and C++ are timed again while a second process runs
a 2-thread torch job beside them (a loop of 512 x 512 float32 matmuls, torch.set_num_threads(2)),
started before the block and killed after it. Busy / idle is the slowdown; the goal is that no
twin collapses (more than ~3x) when the cores are shared.

Peak memory of the twin: torch's CPU allocations are invisible to tracemalloc, and the peak RSS
(ru_maxrss) also counts shared-library code paged in on first use, so each configuration runs
forward+backward once in a fresh subprocess (after a tiny warm-up call) while a thread samples
the process's anonymous resident memory (`RssAnon` in /proc/self/status) every millisecond; we
report the peak minus the value before the call. It includes the output (K x 256 x h x w floats:
400 MB for 2000 RoIs at 14 x 14) and the features' gradient (41 MB).

Compiled peer (optional, never a dependency): torchvision.ops.roi_align and roi_pool run in a
child process of another Python that has torchvision, on the same saved inputs, in the same
rounds. Which Python: --peer-python PATH, else $MRCNN_EDU_PEER_PYTHON; without one the C++ rows
and ratios are left out (--no-peer skips it on purpose). A path given explicitly that does not
exist is an error, not a silent skip.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Sleeping OpenMP waits, as in bench_ops.py and the training CLI: spinning threads steal the cores
# of a shared machine. Set before torch loads; the child processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from _report import (PEER_ENV_VAR, BusyJob, command_line,  # bench/ is on sys.path
                     interleaved_medians, machine_line, peak_rss_growth_mb, resolve_peer_python,
                     write_section)

from mrcnn_edu import ops, reference as ref

QUOTED_CPP_MS = {"forward": 256.0, "forward+backward": 820.0}  # C++ RoIAlign, 512 RoIs, 7 x 7
SCALE, RATIO = 0.25, 2
CONFIGS = [(512, 7), (512, 14), (2000, 7), (2000, 14)]
OPS = ("RoIAlign", "RoIPool")
MODES = ("forward", "forward+backward")
BUSY_SLOWDOWN_GOAL = 3.0

# Runs in the peer's Python: loads the saved inputs, prints its versions, then times one call per
# line read from stdin ("RoIAlign forward+backward 512 7") and answers with the milliseconds.
PEER_SCRIPT = """
import sys, time
import numpy as np, torch, torchvision
torch.set_num_threads(int(sys.argv[2]))
data = np.load(sys.argv[1])
feats = torch.from_numpy(data["features"])
rois = {int(k.split("_")[1]): torch.from_numpy(data[k]) for k in data.files if k.startswith("rois_")}
fns = {"RoIAlign": lambda f, r, s: torchvision.ops.roi_align(f, r, s, 0.25, 2, aligned=True),
       "RoIPool": lambda f, r, s: torchvision.ops.roi_pool(f, r, s, 0.25)}
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}", flush=True)
for line in sys.stdin:
    op, mode, count, size = line.split()
    fn, r, s = fns[op], rois[int(count)], int(size)
    start = time.perf_counter()
    if mode == "forward":
        fn(feats, r, s)
    else:
        f = feats.clone().requires_grad_()
        fn(f, r, s).sum().backward()
    print((time.perf_counter() - start) * 1e3, flush=True)
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


# ---------------------------------------------------------------- the peer and the busy job


class Peer:
    """torchvision in another Python, as a child process that times one call per request."""

    def __init__(self, python, data, tmp):
        path = Path(tmp) / "inputs.npz"
        np.savez(path, **data)
        self.process = subprocess.Popen([str(python), "-c", PEER_SCRIPT, str(path),
                                         str(torch.get_num_threads())],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = self.process.stdout.readline().strip()
        if not self.version:
            self.process.wait()
            raise RuntimeError(f"the torchvision peer ({python}) did not start; see its error above")

    def call(self, op, mode, count, size):
        """Milliseconds the peer took for one call (timed inside the peer)."""
        self.process.stdin.write(f"{op} {mode} {count} {size}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait()


# ---------------------------------------------------------------- timing


def calls_for(data, op, mode, count, size, peer, with_reference):
    """{implementation: zero-argument call} for one (op, mode, RoIs, output size)."""
    feats, rois = data["features"], data[f"rois_{count}"]
    t_feats, t_rois = torch.from_numpy(feats), torch.from_numpy(rois)
    twin = twin_ops()[op]
    calls = {}
    if with_reference and op == "RoIAlign":
        forward = lambda: ref.roi_align(feats, rois, size, SCALE, RATIO, True)  # noqa: E731
        if mode == "forward":
            calls["reference (numba)"] = forward
        else:
            grad = np.ones((count, 256, size, size), np.float32)
            calls["reference (numba)"] = lambda: (forward(), ref.roi_align_backward(
                grad, rois, feats.shape, SCALE, RATIO, True))
    elif with_reference and mode == "forward":  # the reference has no RoIPool backward
        calls["reference (numba)"] = lambda: ref.roi_pool(feats, rois, size, SCALE)
    if mode == "forward":
        calls["twin (torch)"] = lambda: twin(t_feats, t_rois, size)
    else:
        calls["twin (torch)"] = lambda: twin_forward_backward(twin, t_feats, t_rois, size)
    if peer is not None:
        calls["torchvision (C++)"] = lambda: peer.call(op, mode, count, size)
    return calls


def check_twins(data, count, size):
    """Compare the twins with the reference before they are timed: RoIAlign must agree; for
    RoIPool returns the number of outputs that differ (0 when they agree), which the page shows."""
    feats, rois = data["features"], data[f"rois_{count}"]
    t_feats, t_rois = torch.from_numpy(feats), torch.from_numpy(rois)
    twin = twin_ops()
    assert np.allclose(ref.roi_align(feats, rois, size, SCALE, RATIO, True),
                       twin["RoIAlign"](t_feats, t_rois, size).numpy(), atol=1e-4)
    differ = ~np.isclose(ref.roi_pool(feats, rois, size, SCALE),
                         twin["RoIPool"](t_feats, t_rois, size).numpy(), atol=1e-5)
    return int(differ.sum())


def time_block(data, op, count, size, repeat, peer, with_reference):
    """({(implementation, mode): ms}, (load before, load after)) for one (op, RoIs, size)."""
    load_before, ms = os.getloadavg()[0], {}
    for mode in MODES:
        medians = interleaved_medians(calls_for(data, op, mode, count, size, peer, with_reference),
                                      repeat)
        ms.update({(impl, mode): value for impl, value in medians.items()})
    return ms, (load_before, os.getloadavg()[0])


def reps_for(count, repeat):
    return max(3, repeat // 2) if count > 512 else repeat


def time_all(data, configs, repeat, peer, busy):
    """{(op, count, size): {"idle": ms, "idle_load": loads, "busy": ms, "busy_load": loads}}."""
    results = {}
    for count, size in configs:
        pool_differ = check_twins(data, count, size)
        for op in OPS:
            ms, loads = time_block(data, op, count, size, reps_for(count, repeat), peer, True)
            results[op, count, size] = {"idle": ms, "idle_load": loads}
        results["RoIPool", count, size]["differ"] = pool_differ
    if busy:
        with BusyJob():
            for count, size in configs:
                for op in OPS:
                    ms, loads = time_block(data, op, count, size, max(3, repeat // 2), peer, False)
                    results[op, count, size].update(busy=ms, busy_load=loads)
    return results


# ---------------------------------------------------------------- peak memory


def peak_memory_mb(op, count, size):
    """Growth of peak RSS (MB) over one forward+backward of the twin, in a fresh process."""
    run = subprocess.run([sys.executable, __file__, "--memory", op, str(count), str(size)],
                         capture_output=True, text=True, cwd=Path(__file__).parent)
    if run.returncode != 0:
        print(run.stderr[-2000:], file=sys.stderr)
        return float("nan")
    return float(run.stdout.strip().splitlines()[-1])


def measure_memory(op, count, size):
    """Child process: print the peak growth (MB) of anonymous RSS over one twin forward+backward,
    sampled every millisecond by a thread (torch releases the GIL inside its kernels)."""
    data = make_inputs()
    feats, rois = torch.from_numpy(data["features"]), torch.from_numpy(data[f"rois_{count}"])
    twin_forward_backward(twin_ops()[op], feats[..., :8, :8], rois[:4], size)  # warm up, tiny
    print(peak_rss_growth_mb(lambda: twin_forward_backward(twin_ops()[op], feats, rois, size)))


# ---------------------------------------------------------------- the page


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, digits=0, suffix=""):
    return "" if value is None else f"{value:.{digits}f}{suffix}"


def fmt_load(loads):
    return "" if loads is None else f"{loads[0]:.1f} → {loads[1]:.1f}"


def to_markdown(results, memory, peer, busy, loads):
    lines = ["## RoIAlign and RoIPool (lesson 06)", "",
             f"Command: `{command_line()}`  ", f"Machine: {machine_line()}  ",
             "Median wall time in ms after one warm-up round, implementations interleaved; features "
             "(1, 256, 200, 200) float32, spatial_scale 1/4, RoI sides log-uniform in [16, 512] px, "
             f"sampling_ratio 2, aligned=True; CPU; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}.  ",
             "twin / C++: the twin's time over torchvision's, forward / forward+backward "
             "(goal <= 1.0).  ",
             "load: 1-minute load average before → after the block of rows of that op and size.  ",
             ("busy: the same calls while a 2-thread torch matmul loop runs in another process; "
              "busy / idle is the slowdown, forward / forward+backward (goal: no twin above "
              f"{BUSY_SLOWDOWN_GOAL:.0f}x).  " if busy else "busy: not measured (--no-busy).  "),
             "Twin peak MB: peak growth of anonymous RSS (sampled every ms) over one "
             "forward+backward in a fresh process; includes the output and the features' gradient.  ",
             f"Load average (1 min) at start / end of the whole run: {loads[0]:.1f} / {loads[1]:.1f}",
             ""]
    header = ("| op | RoIs | output | implementation | forward | forward+backward | twin / C++ | load "
              "| busy forward | busy forward+backward | busy / idle | busy load | twin peak MB |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for (op, count, size), r in results.items():
        idle, hot = r["idle"], r.get("busy", {})
        for impl in ("reference (numba)", "twin (torch)", "torchvision (C++)"):
            fwd, both = idle.get((impl, "forward")), idle.get((impl, "forward+backward"))
            if fwd is None:
                continue
            cells = [op, str(count), f"{size} x {size}", impl, fmt(fwd), fmt(both) or "n/a"]
            cpp = [idle.get(("torchvision (C++)", m)) for m in MODES]
            is_twin = impl.startswith("twin")
            cells.append(f"{fmt(ratio(fwd, cpp[0]), 2)} / {fmt(ratio(both, cpp[1]), 2)}"
                         if is_twin and cpp[0] else "")
            cells.append(fmt_load(r["idle_load"]))
            bf, bb = hot.get((impl, "forward")), hot.get((impl, "forward+backward"))
            cells += [fmt(bf), fmt(bb),
                      f"{fmt(ratio(bf, fwd), 1, 'x')} / {fmt(ratio(bb, both), 1, 'x')}" if bf else "",
                      fmt_load(r.get("busy_load")) if bf else ""]
            cells.append(fmt(memory.get((op, count, size))) if is_twin else "")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", verdict(results, peer, busy)]
    differ = [f"{count} x {size}²: {r['differ']} of {count * 256 * size * size}"
              for (op, count, size), r in results.items() if r.get("differ")]
    if differ:
        lines += ["", "RoIPool: the twin and the numba reference disagree at some outputs ("
                  + "; ".join(differ) + "); timed anyway (both promise torchvision's kernel exactly)."]
    if peer:
        lines += ["", f"torchvision peer: {peer.version}, from a separate virtual environment "
                      "outside the repository (not a dependency)."]
    return "\n".join(lines)


def verdict(results, peer, busy):
    """The goals: twins <= C++ at every size; no twin collapses when busy; numba <= C++."""
    parts = []
    if peer:
        for op in OPS:
            misses, worst = [], 0.0
            for (o, count, size), r in results.items():
                if o != op:
                    continue
                for mode in MODES:
                    q = ratio(r["idle"][("twin (torch)", mode)], r["idle"][("torchvision (C++)", mode)])
                    worst = max(worst, q)
                    if q > 1.0:
                        misses.append(f"{count} x {size}² {mode} {q:.2f}")
            n = len(MODES) * sum(o == op for o, _, _ in results)
            parts.append(f"{op} twin vs C++ (goal <= 1.0 at every size, forward and forward+backward): "
                         + (f"meets at all {n}; worst {worst:.2f}." if not misses else
                            f"misses {len(misses)} of {n} ({'; '.join(misses)})."))
    else:
        parts.append("twin vs C++: no torchvision peer, not measured.")
    if busy:
        worst = max(((ratio(r["busy"][("twin (torch)", m)], r["idle"][("twin (torch)", m)]), o, c, s, m)
                     for (o, c, s), r in results.items() for m in MODES), key=lambda t: t[0])
        q, o, c, s, m = worst
        parts.append(f"Twins with the busy job beside them: worst slowdown {q:.1f}x ({o}, {c} RoIs, "
                     f"{s} x {s}, {m}): {'meets' if q <= BUSY_SLOWDOWN_GOAL else 'misses'} "
                     f"<= {BUSY_SLOWDOWN_GOAL:.0f}x.")
    if ("RoIAlign", 512, 7) in results:
        idle = results["RoIAlign", 512, 7]["idle"]
        fwd, both = idle[("reference (numba)", "forward")], idle[("reference (numba)", "forward+backward")]
        if peer:
            cpp = {m: idle[("torchvision (C++)", m)] for m in MODES}
            source = "measured above"
        else:
            cpp, source = QUOTED_CPP_MS, "quoted for this machine"
        parts.append(f"RoIAlign, 512 RoIs, 7 x 7: C++ {cpp['forward']:.0f} ms forward, "
                     f"{cpp['forward+backward']:.0f} ms forward+backward ({source}); numba reference "
                     f"{fwd:.0f} ms ({'meets' if fwd <= cpp['forward'] else 'misses'} <= C++) and "
                     f"{both:.0f} ms ({'meets' if both <= cpp['forward+backward'] else 'misses'} <= C++).")
    return "  \n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per block (median reported)")
    parser.add_argument("--quick", action="store_true", help="only 512 RoIs at 7 x 7; no page update")
    parser.add_argument("--no-busy", action="store_true", help="skip the busy columns")
    parser.add_argument("--peer-python", help=f"a Python with torchvision (default: ${PEER_ENV_VAR})")
    parser.add_argument("--no-peer", action="store_true", help="skip torchvision even if found")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    parser.add_argument("--memory", nargs=3, metavar=("OP", "ROIS", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory:
        measure_memory(args.memory[0], int(args.memory[1]), int(args.memory[2]))
        return
    configs = CONFIGS[:1] if args.quick else CONFIGS
    peer_python = resolve_peer_python(args.peer_python, args.no_peer, "bench_roi")
    data = make_inputs()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        peer = Peer(peer_python, data, tmp) if peer_python else None
        try:
            results = time_all(data, configs, args.repeat, peer, not args.no_busy)
        finally:
            if peer is not None:
                peer.close()
    memory = {(op, count, size): peak_memory_mb(op, count, size)
              for count, size in configs for op in OPS}
    markdown = to_markdown(results, memory, peer, not args.no_busy, (load_start, os.getloadavg()[0]))
    if not (args.quick or args.no_write):
        write_section("ops_roi", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
