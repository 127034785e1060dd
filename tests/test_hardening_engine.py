"""Issue 13, engine side: bad input gives a clear error naming the file, and runs are never lost.

- two runs into one folder: the second refuses, naming the first one's pid and host; a lock left
  by a killed run does not block --resume;
- an empty, truncated or foreign checkpoint, and a resume whose config changes the model's shape,
  give a message naming the file (and the fields), not a traceback from torch;
- an unwritable output folder is named, not a raw PermissionError / NotADirectoryError;
- predict never writes two images to one PNG;
- a partial temp file of a killed save is removed when the next run starts;
- one rule per threshold, one path per command-line option, one room per concept.
"""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mrcnn_edu.__main__ import build_config, main, make_parser
from mrcnn_edu.config import preset
from mrcnn_edu.data import make_shapes_dataset
from mrcnn_edu.engine import checkpoint as ckpt
from mrcnn_edu.engine.runlog import read_log
from mrcnn_edu.engine.train import fit, train
from mrcnn_edu.model import MaskRCNN

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
from _engine_fakes import FakeDataset, FakeMaskRCNN, fake_config  # noqa: E402

TINY = ["--set", "min_size=128", "--set", "max_size=160", "--set", "batch_size=2",
        "--set", "checkpoint_every=1", "--no-progress", "--no-eval"]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    splits = {preset("tiny").train_split: 2, preset("tiny").val_split: 2}
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), splits=splits, seed=0)


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory):
    """A checkpoint of the tiny model at its initial weights (predict needs no training)."""
    config = dataclasses.replace(preset("tiny"), num_classes=3, min_size=128, max_size=160)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"model": MaskRCNN(config).state_dict(), "iteration": 0,
                                "config": config.to_dict(),
                                "class_names": ["__background__", "a", "b", "c"]})
    return path


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return FakeMaskRCNN()


# ---------------------------------------------------------------- 1: one run per folder

HOLDER = textwrap.dedent("""
    import sys, time
    import torch
    sys.path.insert(0, {tests!r})
    from _engine_fakes import FakeDataset, FakeMaskRCNN, fake_config
    from mrcnn_edu.engine.train import fit

    class Slow(FakeMaskRCNN):
        def forward(self, images, targets=None):
            if self.training and self.calls == 2:  # two iterations done and saved
                print("training", flush=True)
                time.sleep(600)
            return super().forward(images, targets)

    torch.manual_seed(0)
    fit(Slow(), FakeDataset(), fake_config(max_iters=6, checkpoint_every=1), sys.argv[1],
        progress=False)
""")


def test_second_run_refuses_a_busy_folder_and_a_killed_runs_lock_does_not_block_resume(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    errors = tmp_path / "first.err"
    with open(errors, "w") as err_file:
        first = subprocess.Popen([sys.executable, "-c", HOLDER.format(tests=str(TESTS)),
                                  str(run)], env=env, stdout=subprocess.PIPE, stderr=err_file,
                                 text=True)
    try:
        lines = iter(first.stdout.readline, "")  # ends when the first run's stdout closes
        assert any(line.strip() == "training" for line in lines), errors.read_text()[-2000:]
        for resume in (False, True):  # neither a fresh start nor a resume may touch it
            with pytest.raises(FileExistsError,
                               match=rf"in use by pid {first.pid} on {socket.gethostname()}"):
                fit(fresh_model(), FakeDataset(), fake_config(max_iters=4), run, resume=resume,
                    progress=False)
        assert [r["iteration"] for r in read_log(run / "log.jsonl")] == [1, 2]  # untouched
    finally:
        first.kill()  # SIGKILL: the first run leaves its lock file behind
        first.communicate()
    summary = fit(fresh_model(), FakeDataset(), fake_config(max_iters=4, checkpoint_every=1),
                  run, resume=True, progress=False)
    assert summary["start_iteration"] == 2
    assert [r["iteration"] for r in read_log(run / "log.jsonl")] == [1, 2, 3, 4]
    assert not list(run.glob("*.lock"))  # released at the end of the run


def test_cli_refuses_a_locked_folder_with_status_2(shapes_root, tmp_path, capsys):
    from mrcnn_edu.engine import rundir

    with rundir.run_lock(tmp_path):
        code = main(["train", "--data", str(shapes_root), "--output", str(tmp_path),
                     "--max-iters", "1", *TINY])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"in use by pid {os.getpid()}" in err and str(tmp_path) in err


# ---------------------------------------------------------------- 2: bad checkpoint files


def bad_checkpoint(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:500])
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "weights_only":
        torch.save({"w": torch.zeros(3)}, path)
    return path


BAD_CHECKPOINTS = [("empty", "is empty"), ("truncated", "cannot be read"),
                   ("text", "cannot be read"), ("list", "holds a list, not a checkpoint"),
                   ("weights_only", r"has no 'config', 'iteration', 'model'")]


@pytest.mark.parametrize("kind, message", BAD_CHECKPOINTS)
def test_load_model_names_the_bad_file(tmp_path, kind, message):
    path = bad_checkpoint(tmp_path, kind)
    with pytest.raises(ckpt.CheckpointError, match=rf"{path.name}.*{message}"):
        ckpt.load_model(path)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("kind, message", BAD_CHECKPOINTS)
def test_cli_exits_2_on_a_bad_checkpoint(tmp_path, capsys, command, kind, message):
    path = bad_checkpoint(tmp_path, kind)
    argv = ([command, str(path), "--data", str(tmp_path)] if command == "evaluate" else
            [command, str(path), "x.png", "-o", str(tmp_path / "out")])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    assert any(word in err for word in message.split())


def test_resume_from_a_truncated_checkpoint_names_it(tmp_path):
    fit(fresh_model(), FakeDataset(), fake_config(max_iters=2), tmp_path, progress=False)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ckpt.CheckpointError, match=rf"{path}.*cannot be read"):
        fit(fresh_model(), FakeDataset(), fake_config(max_iters=4), tmp_path, resume=True,
            progress=False)


def test_resume_with_a_different_model_shape_names_the_fields(shapes_root, tmp_path, capsys):
    common = ["train", "--data", str(shapes_root), "--output", str(tmp_path), *TINY]
    assert main([*common, "--max-iters", "1"]) == 0
    code = main([*common, "--max-iters", "2", "--resume", "--set", "fpn_channels=32"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "fpn_channels" in err and "checkpoint.pt" in err and "size mismatch" not in err


# ---------------------------------------------------------------- 8: unwritable output


def test_output_through_a_file_is_named(tmp_path, shapes_root, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = main(["train", "--data", str(shapes_root), "--output", str(blocker / "run"),
                 "--max-iters", "1", *TINY])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot write the run folder {blocker / 'run'}" in err and "Traceback" not in err


def test_permission_denied_output_is_named(tmp_path, monkeypatch):
    target = tmp_path / "readonly" / "run"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == target or target.is_relative_to(self) and self != tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(ValueError, match=rf"cannot write the run folder {target}: "
                                         "Permission denied"):
        fit(fresh_model(), FakeDataset(), fake_config(max_iters=1), target, progress=False)


def test_predict_into_a_path_through_a_file_is_named(tmp_path, untrained_checkpoint, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    image = tmp_path / "x.png"
    image.write_bytes(b"")  # never read: the output folder is checked first
    assert main(["predict", str(untrained_checkpoint), str(image), "-o",
                 str(blocker / "out")]) == 2
    assert f"cannot write the output folder {blocker / 'out'}" in capsys.readouterr().err


# ---------------------------------------------------------------- 12: predict output names


def test_output_names_are_unique_and_keep_the_first(tmp_path):
    from mrcnn_edu.engine.predict import output_paths

    images = ["a/x.jpg", "b/x.jpg", "c/x.png", "x_1.jpg", "y.jpg"]
    names = [p.name for p in output_paths(images, tmp_path)]
    assert names == ["x.png", "x_1.png", "x_2.png", "x_1_1.png", "y.png"]


def test_predict_two_images_with_one_name_writes_two_files(tmp_path, shapes_root,
                                                           untrained_checkpoint):
    source = next((shapes_root / preset("tiny").val_split).iterdir())
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.png").write_bytes(source.read_bytes())
    out = tmp_path / "out"
    assert main(["predict", str(untrained_checkpoint), str(tmp_path / "a" / "x.png"),
                 str(tmp_path / "b" / "x.png"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.png", "x_1.png"]


def test_predict_help_says_how_outputs_are_named(capsys):
    with pytest.raises(SystemExit, match="0"):
        make_parser().parse_args(["predict", "--help"])
    assert "x_1.png" in capsys.readouterr().out


# ---------------------------------------------------------------- 13: partial saves


def test_a_killed_saves_temp_file_is_removed_when_the_next_run_starts(tmp_path):
    fit(fresh_model(), FakeDataset(), fake_config(max_iters=2), tmp_path, progress=False)
    partial = [tmp_path / "checkpoint.pt.tmp", tmp_path / "checkpoint.pt.k3j_x9.tmp"]
    for path in partial:
        path.write_bytes(b"half a checkpoint")
    fit(fresh_model(), FakeDataset(), fake_config(max_iters=3), tmp_path, resume=True,
        progress=False)
    assert [p for p in partial if p.exists()] == []
    assert ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 3


def test_saves_write_unique_temp_files_beside_the_target(tmp_path, monkeypatch):
    temp_names, real_replace = [], os.replace

    def spy(src, dst):
        temp_names.append(Path(src))
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", spy)
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"iteration": 1})
    ckpt.save_checkpoint(path, {"iteration": 2})
    assert [p.parent for p in temp_names] == [tmp_path, tmp_path]
    assert temp_names[0] != temp_names[1]
    assert all(p.name.startswith("c.pt.") and p.name.endswith(".tmp") for p in temp_names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


# ---------------------------------------------------------------- one rule per threshold


def test_a_float_mask_at_the_threshold_is_on_in_results_and_drawings():
    from mrcnn_edu import viz
    from mrcnn_edu.engine.cocoapi import detections_to_coco_results
    from mrcnn_edu.reference.masks import MASK_THRESHOLD

    masks = np.full((1, 4, 5), MASK_THRESHOLD, dtype=np.float32)  # (N, H, W) exactly at it
    det = {"boxes": np.array([[0.0, 0.0, 5.0, 4.0]]), "labels": np.array([1]),
           "scores": np.array([0.9]), "masks": masks}
    (result,) = detections_to_coco_results([det], [7], {1: 1})
    from pycocotools import mask as mask_utils
    assert int(mask_utils.area(result["segmentation"])) == 20  # on when >= 0.5
    assert viz.binary_masks(masks).all()
    assert not viz.binary_masks(np.nextafter(masks, 0)).any()


def test_display_score_has_one_named_default_and_the_old_keyword_still_works(tmp_path):
    from mrcnn_edu import viz
    from mrcnn_edu.config import Config
    from mrcnn_edu.engine import predict

    assert viz.MIN_DISPLAY_SCORE == 0.5 and not hasattr(Config, "min_display_score")
    detections = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 3.0]]),
                  "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.3]),
                  "masks": torch.ones(2, 8, 8, dtype=torch.uint8)}
    image = torch.zeros(3, 8, 8)
    assert len(viz.show_detections(image, detections).patches) == 1  # only 0.9 >= 0.5
    assert len(viz.show_detections(image, detections, min_score=0.2).patches) == 2
    assert len(predict.show_detections(image, detections, score_threshold=0.2).patches) == 2


def test_max_iters_and_output_each_take_one_path(shapes_root, tmp_path):
    args = make_parser().parse_args(["train", "--max-iters", "7", "--output", "runs/x"])
    config = build_config(args)
    assert (config.max_iters, config.output_dir) == (7, "runs/x")
    # train(): the folder it writes to is the one its config.json records.
    cfg = dataclasses.replace(preset("tiny"), min_size=128, max_size=160, num_workers=0)
    train(cfg, shapes_root, tmp_path / "run", max_iters=1, progress=False, evaluate_after=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["output_dir"], saved["max_iters"]) == (str(tmp_path / "run"), 1)


# ---------------------------------------------------------------- one room per concept


def test_plots_live_in_viz_and_the_old_names_still_import():
    from mrcnn_edu import viz
    from mrcnn_edu.engine import predict, runlog

    assert predict.show_detections is viz.show_detections
    assert runlog.plot_loss_curve is viz.plot_loss_curve
    for module in (predict, runlog):
        source = Path(module.__file__).read_text()
        assert "def show_detections" not in source and "def plot_loss_curve" not in source


def test_fake_detections_live_outside_the_engine_and_the_old_import_works():
    from mrcnn_edu import fake_detections
    from mrcnn_edu.engine import cocoapi
    from mrcnn_edu.engine.cocoapi import simulate_detections

    assert simulate_detections is fake_detections.simulate_detections
    assert "def simulate_detections" not in Path(cocoapi.__file__).read_text()


def test_no_engine_module_is_over_300_lines_and_no_function_over_60():
    import ast

    for path in sorted((REPO / "mrcnn_edu" / "engine").glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 300, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}:{node.name}"
