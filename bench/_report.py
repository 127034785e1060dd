"""Shared helpers for the benchmark scripts: timing and writing one section of docs/benchmarks.md.

Each script owns one section of the page, between `<!-- BEGIN name -->` and `<!-- END name -->`,
and rewrites only that section, so scripts can be re-run independently.
"""
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def median_ms(fn, repeat=7, warmup=1):
    """Median wall time of fn() in milliseconds, after `warmup` untimed calls (numba compiles there)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def machine_line():
    """One line naming the machine the numbers were taken on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy, torch  # noqa: E401  (versions belong with the numbers)
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {numpy.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def write_section(name, markdown):
    """Replace the section `name` of docs/benchmarks.md (append it if new)."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = PAGE.read_text() if PAGE.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    PAGE.write_text(text)


# Paths that belong to one machine are written as these names, so the page shows the command
# a reader types, not where it once ran.
PATH_PLACEHOLDERS = {"--peer-python": "PEER", "--data": "DIR"}


def command_line(argv=None):
    """The command as a reader would type it: `python bench/x.py ...`, with machine-specific
    paths (--peer-python, --data, any other absolute path) replaced by a placeholder."""
    argv = sys.argv if argv is None else argv
    words = [os.path.relpath(argv[0])]
    for previous, word in zip(argv, argv[1:]):
        flag, eq, value = word.partition("=")
        if eq and flag in PATH_PLACEHOLDERS:
            word = f"{flag}={PATH_PLACEHOLDERS[flag]}"
        elif previous in PATH_PLACEHOLDERS:
            word = PATH_PLACEHOLDERS[previous]
        elif os.path.isabs(word):
            word = "PATH"
        words.append(word)
    return "python " + " ".join(words)


def interleaved_medians(calls, repeat):
    """{name: median ms} over `repeat` rounds, each round calling every function once in turn, so
    that on a shared machine all of them see the same load; one untimed warm-up call each first
    (numba compiles there). A function that returns a float reports its own time (a peer)."""
    times = {name: [] for name in calls}
    for fn in calls.values():
        fn()
    for _ in range(repeat):
        for name, fn in calls.items():
            start = time.perf_counter()
            out = fn()
            elapsed = (time.perf_counter() - start) * 1e3
            times[name].append(out if isinstance(out, float) else elapsed)
    return {name: statistics.median(ts) for name, ts in times.items()}


def anonymous_rss_mb():
    """The process's resident anonymous memory (heap, not shared-library code) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def peak_rss_growth_mb(fn):
    """Peak growth (MB) of anonymous RSS while fn() runs, sampled every millisecond by a thread
    (torch releases the GIL inside its kernels)."""
    baseline, peak, done = anonymous_rss_mb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_rss_mb())
            time.sleep(0.001)

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        fn()
    finally:
        done.set()
        watcher.join()
    return max(peak[0], anonymous_rss_mb()) - baseline


PEER_ENV_VAR = "MRCNN_EDU_PEER_PYTHON"


def resolve_peer_python(given, no_peer, script):
    """The Python of a virtual environment with torchvision, timed as a peer: --peer-python >
    $MRCNN_EDU_PEER_PYTHON > none. A path that does not exist is an error, not a silent skip."""
    if no_peer:
        return None
    for path, what in ((given, "--peer-python"), (os.environ.get(PEER_ENV_VAR), f"${PEER_ENV_VAR}")):
        if path:
            if not Path(path).exists():
                raise SystemExit(f"{script}: the peer Python from {what} does not exist: {path}")
            return Path(path)
    return None


# The job beside the busy measurements: 2 torch threads multiplying 512 x 512 matrices forever.
BUSY_SCRIPT = """
import torch
torch.set_num_threads(2)
a, b = torch.randn(512, 512), torch.randn(512, 512)
a @ b
print("ready", flush=True)
while True:
    a @ b
"""


class BusyJob:
    """A 2-thread torch matmul loop in a child process, for the duration of a `with` block."""

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-c", BUSY_SCRIPT], stdout=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()
