"""How the command line sets up the CPU before torch loads (lesson 12): OpenMP's wait policy.

torch's parallel ops hand work to OpenMP threads. Between ops those threads either spin
(OMP_WAIT_POLICY=ACTIVE), ready at once, or sleep (PASSIVE), woken by the kernel. On idle cores
spinning is faster: a training step of the subset preset measured 15% faster (docs/benchmarks.md).
On a busy machine spinning threads take the cores that the other threads of the same op need,
and every small parallel op then waits on a descheduled thread: sleeping is far faster there.
So the policy follows the machine's load when the command starts. It is read once, when torch
loads; an OMP_WAIT_POLICY already in the environment is kept.
"""
import os

IDLE_LOAD_PER_CORE = 0.25  # below this 1-minute load average per core the machine counts as idle


def wait_policy(load: float, cores: int) -> str:
    """"ACTIVE" when the 1-minute load average leaves the cores idle, else "PASSIVE"."""
    return "ACTIVE" if load < IDLE_LOAD_PER_CORE * cores else "PASSIVE"


def set_wait_policy() -> str:
    """Set OMP_WAIT_POLICY for this process from the current load, unless it is already set;
    returns the policy in force. Call it before torch is imported."""
    if "OMP_WAIT_POLICY" not in os.environ:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average on this system: assume it is busy
            load = float("inf")
        os.environ["OMP_WAIT_POLICY"] = wait_policy(load, os.cpu_count() or 1)
    return os.environ["OMP_WAIT_POLICY"]
