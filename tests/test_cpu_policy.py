"""The command line's OpenMP wait policy follows how busy the machine is (engine/cpu.py)."""
import os

import pytest

from mrcnn_edu.engine import cpu


def test_idle_machine_spins_busy_machine_sleeps():
    assert cpu.wait_policy(0.0, 2) == "default"
    assert cpu.wait_policy(0.4, 2) == "default"
    assert cpu.wait_policy(0.5, 2) == "PASSIVE"  # a quarter of a core per core is busy
    assert cpu.wait_policy(1.0, 2) == "PASSIVE"  # one other job on two cores
    assert cpu.wait_policy(1.0, 16) == "default"


def test_a_policy_already_set_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setattr(cpu, "current_load", lambda cores: 0.0)
    assert cpu.set_wait_policy() == "PASSIVE"


def test_policy_is_chosen_from_the_load(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(cpu, "current_load", lambda cores: 0.1)
    assert cpu.set_wait_policy() == "default"  # libgomp's own: the variable stays unset
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setattr(cpu, "current_load", lambda cores: 1.9)
    assert cpu.set_wait_policy() == "PASSIVE" == os.environ["OMP_WAIT_POLICY"]


def _stat_file(path, user, idle, iowait=0):
    path.write_text(f"cpu  {user} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")


def test_busy_cores_reads_the_share_of_busy_ticks(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    _stat_file(stat, user=100, idle=900)
    # Between the two reads, 2 cores spend 150 ticks busy and 50 idle (+ 0 iowait):
    # 1.5 cores' worth of work is running elsewhere.
    monkeypatch.setattr(cpu.time, "sleep", lambda s: _stat_file(stat, user=250, idle=950))
    assert cpu.busy_cores(2, stat_path=str(stat)) == pytest.approx(1.5)
    # Waiting on a disk is not using a core.
    _stat_file(stat, user=100, idle=900, iowait=0)
    monkeypatch.setattr(cpu.time, "sleep",
                        lambda s: _stat_file(stat, user=110, idle=1000, iowait=90))
    assert cpu.busy_cores(2, stat_path=str(stat)) == pytest.approx(0.1)


def test_a_lingering_load_average_does_not_hide_idle_cores(monkeypatch):
    """Right after an install the load average still reads busy; the cores are measured instead."""
    monkeypatch.setattr(cpu, "busy_cores", lambda cores: 0.05)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.8, 1.5, 1.0))
    assert cpu.wait_policy(cpu.current_load(2), 2) == "default"


def test_without_proc_stat_the_load_average_decides(monkeypatch):
    def no_proc(cores):
        raise OSError("no /proc/stat")
    monkeypatch.setattr(cpu, "busy_cores", no_proc)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.8, 1.5, 1.0))
    assert cpu.current_load(2) == 1.8
    def no_loadavg():
        raise OSError
    monkeypatch.setattr(os, "getloadavg", no_loadavg)
    assert cpu.current_load(2) == float("inf")
