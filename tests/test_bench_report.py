"""The benchmark pages write commands a reader can type: no path of the machine that ran them."""
import importlib.util
import os
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "bench_report", Path(__file__).resolve().parents[1] / "bench" / "_report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def test_machine_paths_become_placeholders():
    script = os.path.join("bench", "bench_roi.py")
    line = report.command_line([script, "--repeat", "5", "--peer-python", "/opt/tv/bin/python",
                                "--data=/srv/coco", "--out", "/home/me/x.csv", "--quick"])
    assert line == (f"python {script} --repeat 5 --peer-python PEER --data=DIR --out PATH "
                    "--quick")


def test_relative_arguments_are_kept():
    script = os.path.join("bench", "bench_train.py")
    line = report.command_line([script, "--data", "data/shapes", "--steps", "10"])
    assert line == f"python {script} --data DIR --steps 10"
