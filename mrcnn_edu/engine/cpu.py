"""How the command line sets up the CPU before torch loads (lesson 12): OpenMP's wait policy.

torch's parallel ops hand work to OpenMP threads. Between ops those threads either spin, ready
at once, or sleep, woken by the kernel: OMP_WAIT_POLICY=ACTIVE spins forever, PASSIVE sleeps
at once, and libgomp's default (the variable unset) spins for a while, then sleeps. On idle
cores spinning is faster: a training step of the subset preset measured 0.87 of PASSIVE's time
with ACTIVE and 0.81 with the default (docs/benchmarks.md, "Levers for a training step"). On a
busy machine spinning threads take the cores that the other threads of the same op need, and
every small parallel op then waits on a descheduled thread: with a second 2-thread job beside
it the same step took 2.4x PASSIVE's time with the default and 8.4x with ACTIVE.

So the policy follows how busy the cores are when the command starts: on idle cores libgomp's
default (as fast as ACTIVE or faster, and far less hurt when the machine gets busy later),
else PASSIVE. Busy cores are measured over a quarter of a second from /proc/stat where there
is one, else read from the 1-minute load average, which remembers the last minute: right after
an install or a test run it still reads 1-2 on cores that are idle now. The policy is read
once, when torch loads; an OMP_WAIT_POLICY already in the environment is kept.
"""
import os
import time

IDLE_LOAD_PER_CORE = 0.25  # below this many busy cores per core the machine counts as idle
SAMPLE_SECONDS = 0.25  # how long the busy cores are measured


def wait_policy(load: float, cores: int) -> str:
    """"default" (libgomp's own: spin a while, then sleep) when the busy cores (or the load
    average) leave the machine idle, else "PASSIVE"."""
    return "default" if load < IDLE_LOAD_PER_CORE * cores else "PASSIVE"


def cpu_times(stat_path: str = "/proc/stat") -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from the first line of /proc/stat."""
    with open(stat_path) as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    total = sum(ticks[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_cores(cores: int, seconds: float = SAMPLE_SECONDS, stat_path: str = "/proc/stat") -> float:
    """How many cores other processes keep busy now: the busy share of `seconds`, times cores.
    Raises OSError where there is no /proc/stat."""
    busy0, total0 = cpu_times(stat_path)
    time.sleep(seconds)  # this process sleeps: what is busy meanwhile is somebody else
    busy1, total1 = cpu_times(stat_path)
    return cores * (busy1 - busy0) / max(total1 - total0, 1)


def current_load(cores: int) -> float:
    """Busy cores now where /proc/stat tells, else the 1-minute load average, else infinity
    (a system that tells nothing is assumed busy: sleeping threads never collapse)."""
    try:
        return busy_cores(cores)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("inf")


def set_wait_policy() -> str:
    """Choose OpenMP's wait policy for this process from the current load, unless
    OMP_WAIT_POLICY is already set: PASSIVE is set on a busy machine, nothing on an idle one.
    Returns the policy in force ("default" when the variable is unset). Call it before torch
    is imported."""
    if "OMP_WAIT_POLICY" not in os.environ:
        cores = os.cpu_count() or 1
        if wait_policy(current_load(cores), cores) == "PASSIVE":
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return os.environ.get("OMP_WAIT_POLICY", "default")
