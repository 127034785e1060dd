"""Tests for mrcnn_edu.engine.train, checkpoint and distributed, driven by a fast stand-in model.

The schedule and data order by hand; exact resume after a killed run; the NaN guard; atomic
checkpoints; and 2 CPU processes under torchrun (gloo). The real tiny model goes through the
same loop in tests/test_cli.py and tests/test_engine_e2e.py.
"""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrcnn_edu.engine import checkpoint as ckpt
from mrcnn_edu.engine.runlog import read_log
from mrcnn_edu.engine.train import (NonFiniteLossError, epoch_permutation, fit,
                                    global_batch_indices, lr_at, make_optimizer)

sys.path.insert(0, str(Path(__file__).parent))
from _engine_fakes import FakeDataset, FakeMaskRCNN, fake_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def losses_of(records):
    """The reproducible part of a log: everything but the wall-clock time."""
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return FakeMaskRCNN()


# ---------------------------------------------------------------- schedule and data order


def test_lr_schedule_by_hand():
    cfg = fake_config(lr=0.1, warmup_iters=4, warmup_factor=0.2, lr_steps=(6, 8), lr_gamma=0.1)
    expected = [0.02, 0.04, 0.06, 0.08, 0.1, 0.1, 0.01, 0.01, 0.001]
    assert [lr_at(i, cfg) for i in range(9)] == pytest.approx(expected)


def test_each_epoch_visits_every_image_once():
    order = [i for it in range(6) for i in global_batch_indices(it, 5, 3, seed=1)]  # 18 = 3.6 epochs
    for epoch in range(3):
        assert sorted(order[5 * epoch : 5 * epoch + 5]) == list(range(5))
    assert order[:5] == list(epoch_permutation(0, 5, 1))
    assert order[5:10] == list(epoch_permutation(1, 5, 1))  # iteration 1 straddles epochs 0 and 1
    assert global_batch_indices(4, 5, 3, seed=1) == global_batch_indices(4, 5, 3, seed=1)
    assert [global_batch_indices(i, 50, 2, 1) for i in range(5)] != \
           [global_batch_indices(i, 50, 2, 2) for i in range(5)]


@pytest.mark.parametrize("num_images, per_step", [(20, 2), (21, 2), (23, 3), (9, 4)])
def test_grouped_batches_hold_one_group_and_every_epoch_visits_every_image(num_images, per_step):
    """Aspect-ratio grouping: an epoch is still a permutation of the images, and every batch
    that lies inside one epoch and is not among its last, leftover batches holds one group."""
    groups = tuple(int(i % 3 == 0) for i in range(num_images))  # a third are "portrait"
    steps = 4 * num_images // per_step + 1
    batches = [global_batch_indices(it, num_images, per_step, 5, groups) for it in range(steps)]
    order = [i for batch in batches for i in batch]
    for epoch in range(4):
        assert sorted(order[epoch * num_images:(epoch + 1) * num_images]) == list(range(num_images))
    mixed = [b for b in batches if len({groups[i] for i in b}) > 1]
    # per epoch: the batch straddling into it, and the leftovers (at most per_step - 1 of each
    # of the 2 groups); every other batch holds one group
    leftover_batches = -(-2 * (per_step - 1) // per_step)
    assert len(mixed) <= 4 * (1 + leftover_batches) + 1
    ungrouped = [global_batch_indices(it, num_images, per_step, 5) for it in range(steps)]
    assert len(mixed) < sum(len({groups[i] for i in b}) > 1 for b in ungrouped)
    # the same order on every call (resume), and another seed gives another
    assert batches[7] == global_batch_indices(7, num_images, per_step, 5, groups)
    assert batches != [global_batch_indices(it, num_images, per_step, 6, groups)
                       for it in range(steps)]


def test_one_group_keeps_the_plain_permutation():
    """Square images (the shapes datasets) form one group: the order is the ungrouped one."""
    for it in range(12):
        assert global_batch_indices(it, 7, 2, 3, (0,) * 7) == global_batch_indices(it, 7, 2, 3)


def test_aspect_groups_read_the_annotation_sizes_through_a_subset():
    from mrcnn_edu.engine.loop import aspect_groups

    class Sized(torch.utils.data.Dataset):
        sizes = [(100, 200), (200, 100), (150, 150), (300, 200)]  # (height, width)

        def __len__(self):
            return len(self.sizes)

        def image_info(self, i):
            return {"height": self.sizes[i][0], "width": self.sizes[i][1]}

    assert aspect_groups(Sized()) == (0, 1, 0, 1)
    assert aspect_groups(torch.utils.data.Subset(Sized(), [3, 0])) == (1, 0)
    assert aspect_groups(FakeDataset(4)) is None  # no sizes to read: no grouping


@pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_optimizer_by_name_decays_weights_not_norms_or_biases(name, kind):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4))
    opt = make_optimizer(model, fake_config(optimizer=name, lr=0.5, weight_decay=0.01))
    assert type(opt) is kind
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [(4, 3, 3, 3)] and decay["weight_decay"] == 0.01
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0  # bias, GN w and b
    assert decay["lr"] == 0.5


def test_unknown_optimizer_is_named():
    config = fake_config()
    config.optimizer = "adam"  # past Config's own check, which refuses it when built
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        make_optimizer(torch.nn.Linear(2, 2), config)


# ---------------------------------------------------------------- resume, NaN, overwrite


def test_resume_after_kill_repeats_the_losses_exactly(tmp_path):
    cfg = fake_config(max_iters=7, checkpoint_every=2)
    fit(fresh_model(), FakeDataset(), cfg, tmp_path / "straight", progress=False)
    straight = read_log(tmp_path / "straight" / "log.jsonl")
    assert [r["iteration"] for r in straight] == list(range(1, 8))

    killed = fresh_model()
    killed.interrupt_at_call = 6  # dies during iteration 6: 5 logged, checkpoint at 4
    with pytest.raises(KeyboardInterrupt, match="simulated kill"):
        fit(killed, FakeDataset(), cfg, tmp_path / "resumed", progress=False)
    assert len(read_log(tmp_path / "resumed" / "log.jsonl")) == 5
    assert ckpt.load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["iteration"] == 4

    # A different initialisation proves the weights come from the checkpoint.
    summary = fit(fresh_model(seed=123), FakeDataset(), cfg, tmp_path / "resumed", resume=True,
                  progress=False)
    assert summary["start_iteration"] == 4
    resumed = read_log(tmp_path / "resumed" / "log.jsonl")
    assert losses_of(resumed) == losses_of(straight)  # exact equality on the CPU


def test_worker_processes_do_not_change_the_losses(tmp_path):
    logs = []
    for workers in (0, 2):
        cfg = fake_config(max_iters=3, num_workers=workers, hflip_prob=0.5)
        fit(fresh_model(), FakeDataset(), cfg, tmp_path / str(workers), progress=False)
        logs.append(losses_of(read_log(tmp_path / str(workers) / "log.jsonl")))
    assert logs[0] == logs[1]


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    model = fresh_model()
    model.nan_at_call = 5
    with pytest.raises(NonFiniteLossError, match="loss_box became nan") as err:
        fit(model, FakeDataset(), fake_config(checkpoint_every=2), tmp_path, progress=False)
    path = tmp_path / "checkpoint.pt"
    assert str(err.value) == (f"loss_box became nan at iteration 5; stopped. "
                              f"Last good checkpoint: {path} (iteration 4)")
    assert ckpt.load_checkpoint(path)["iteration"] == 4
    assert len(read_log(tmp_path / "log.jsonl")) == 4


def test_nan_before_first_checkpoint_says_so(tmp_path):
    model = fresh_model()
    model.nan_at_call = 1
    with pytest.raises(NonFiniteLossError, match="at iteration 1; stopped. No checkpoint"):
        fit(model, FakeDataset(), fake_config(), tmp_path, progress=False)


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    fit(fresh_model(), FakeDataset(), fake_config(max_iters=2), tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(fresh_model(), FakeDataset(), fake_config(max_iters=2), tmp_path, progress=False)


def test_resume_extends_a_finished_run(tmp_path):
    fit(fresh_model(), FakeDataset(), fake_config(max_iters=2), tmp_path, progress=False)
    fit(fresh_model(), FakeDataset(), fake_config(max_iters=4), tmp_path, resume=True,
        progress=False)
    assert [r["iteration"] for r in read_log(tmp_path / "log.jsonl")] == [1, 2, 3, 4]
    assert ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 4


# ---------------------------------------------------------------- checkpoint files


def test_checkpoint_round_trip_and_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "c.pt"
    ckpt.save_checkpoint(path, {"iteration": 3, "w": torch.arange(4)})
    state = ckpt.load_checkpoint(path)
    assert state["iteration"] == 3 and torch.equal(state["w"], torch.arange(4))
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"iteration": 1})

    def broken_save(state, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"iteration": 2})
    assert ckpt.load_checkpoint(path)["iteration"] == 1


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")


# ---------------------------------------------------------------- two processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_train_in_step(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(REPO / "tests" / "_engine_fakes.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The two ranks share one stdout, so a line may hold the end of the other rank's output:
    # read (rank, checksum) pairs by pattern, not by line.
    found = dict(re.findall(r"rank (\d) of 2 checksum (-?\d+\.\d{10})", proc.stdout))  # printed as :.10f
    assert sorted(found) == ["0", "1"], proc.stdout
    assert found["0"] == found["1"], proc.stdout  # both ranks hold the same weights
    assert [r["iteration"] for r in read_log(tmp_path / "log.jsonl")] == [1, 2, 3]
    assert ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 3
