"""The command line's OpenMP wait policy follows the machine's load (engine/cpu.py)."""
import os

from mrcnn_edu.engine import cpu


def test_idle_machine_spins_busy_machine_sleeps():
    assert cpu.wait_policy(0.0, 2) == "ACTIVE"
    assert cpu.wait_policy(0.4, 2) == "ACTIVE"
    assert cpu.wait_policy(0.5, 2) == "PASSIVE"  # a quarter of a core per core is busy
    assert cpu.wait_policy(1.0, 2) == "PASSIVE"  # one other job on two cores
    assert cpu.wait_policy(1.0, 16) == "ACTIVE"


def test_a_policy_already_set_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert cpu.set_wait_policy() == "PASSIVE"


def test_policy_is_chosen_from_the_load(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert cpu.set_wait_policy() == "ACTIVE" == os.environ["OMP_WAIT_POLICY"]
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    assert cpu.set_wait_policy() == "PASSIVE"
