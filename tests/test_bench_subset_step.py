"""bench/bench_subset_step.py: the page's ratios and training-time column come from the means."""
import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench():
    sys.path.insert(0, str(BENCH))  # the script imports its siblings, as when run from bench/
    try:
        spec = importlib.util.spec_from_file_location("bench_subset_step",
                                                      BENCH / "bench_subset_step.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_ratios_are_to_the_preset_before_and_scaled_by_steps():
    bench = load_bench()
    results = {"random": {"preset": 0.1, "1000_proposals": 0.11, "256px": 0.2},
               "trained": {"preset": 0.15, "1000_proposals": 0.15, "256px": 0.25}}
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in bench.to_markdown(results, (1.0, 2.0)).splitlines()
            if line.startswith("| `")}
    # preset: 0.1 / 0.2 = 0.50 and 0.15 / 0.25 = 0.60; its 2700 steps against 2200
    assert rows["`preset`"][2:4] == ["0.100 (0.50)", "0.150 (0.60)"]
    assert rows["`preset`"][4] == f"{0.5 * 2700 / 2200:.2f}-{0.6 * 2700 / 2200:.2f}x"
    assert rows["`256px`"][2:] == ["0.200 (1.00)", "0.250 (1.00)", "1.00-1.00x"]
    assert rows["`1000_proposals`"][1] == "2700"
