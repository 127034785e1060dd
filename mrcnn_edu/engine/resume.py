"""Starting a run in its folder: the lock, a fresh start or a resume from the checkpoint (lesson 12).

A run holds its folder locked for its whole life (`mrcnn_edu.engine.rundir`), removes the temp
files of a save that was killed, then either starts fresh (refusing to overwrite a checkpoint)
or resumes: weights, momentum buffers and loss scale from `checkpoint.pt`, the log cut back to
its iteration. A checkpoint whose model has another shape than the config builds (say
`--set fpn_channels=32` on resume) is refused with the config fields that differ.
"""
import contextlib
import json
import sys

from mrcnn_edu.engine import distributed, rundir, runlog
from mrcnn_edu.engine.checkpoint import CheckpointError, capture_rng_state, load_run_checkpoint

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
RESUME_ENTRIES = ("config", "iteration", "model", "optimizer")


@contextlib.contextmanager
def run_folder_lock(output_dir, info, device):
    """Rank 0 holds the run folder's lock for the body; every rank stops when it cannot."""
    lock, error = None, None
    if info.is_main:
        try:
            lock = rundir.acquire_run_lock(output_dir)
        except (rundir.RunFolderError, rundir.RunFolderLocked) as err:
            error = err
    # All ranks learn the outcome, so none is left waiting in a collective call.
    failed = distributed.average_across_processes({"failed": float(error is not None)}, info,
                                                  device)["failed"] > 0
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"rank 0 could not take the run folder {output_dir}: see its message")
    try:
        yield lock
    finally:
        if lock is not None:
            rundir.release_run_lock(lock)


def restore(model, optimizer, scaler, checkpoint_path, resume, config, info, device):
    """Load the checkpoint when resuming and return its iteration; 0 for a fresh run.

    A fresh run refuses to overwrite an existing checkpoint; resuming without one starts fresh.
    """
    if resume and checkpoint_path.is_file():
        state = load_run_checkpoint(checkpoint_path, device, RESUME_ENTRIES)
        if state["iteration"] > config.max_iters:
            raise ValueError(f"{checkpoint_path} is at iteration {state['iteration']}, past "
                             f"max_iters {config.max_iters}: raise --max-iters to continue it")
        load_training_state(model, optimizer, scaler, state, checkpoint_path, config)
        warn_config_changes(state["config"], config, info)
        return state["iteration"]
    if resume:
        if info.is_main:
            print(f"no checkpoint at {checkpoint_path}; starting from iteration 0",
                  file=sys.stderr)
    elif checkpoint_path.is_file():
        raise FileExistsError(f"{checkpoint_path} exists: pass resume=True (--resume) to continue "
                              "that run, or choose another output directory")
    return 0


def load_training_state(model, optimizer, scaler, state, checkpoint_path, config):
    """Weights, momentum buffers and loss scale of a checkpoint; a clear error when its model
    has another shape than `config` builds."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])  # momentum buffers
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(shape_mismatch_message(checkpoint_path, state["config"], config,
                                                     err)) from None
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])


def changed_fields(saved, config):
    """{field: (checkpoint's value, current value)} where a config differs from a saved dict."""
    current = config.to_dict()
    return {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}


def shape_mismatch_message(checkpoint_path, saved, config, err):
    changed = {k: v for k, v in changed_fields(saved, config).items()
               if k not in ("max_iters", "output_dir")}
    if not changed:
        return (f"cannot resume from {checkpoint_path}: its config matches but its weights do "
                f"not fit this model ({str(err).splitlines()[0][:200]})")
    fields = ", ".join(f"{k} (checkpoint {a!r}, now {b!r})" for k, (a, b) in changed.items())
    return (f"cannot resume from {checkpoint_path}: its model was built with other settings. "
            f"Config fields that differ: {fields}. Resume with the checkpoint's values, or "
            "start a new run in another output folder")


def warn_config_changes(saved, config, info):
    """Tell the user when a resumed run's config differs from its checkpoint's (fine for max_iters)."""
    changed = sorted(changed_fields(saved, config))
    if changed and info.is_main:
        print(f"note: resuming with changed config fields {changed}; the loss sequence will "
              "differ from the original run's where they matter", file=sys.stderr)


def prepare_output_dir(output_dir, config, start):
    """Write config.json; cut log.jsonl back to the checkpoint (or remove it for a fresh run)."""
    rundir.make_writable_dir(output_dir)
    (output_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    log_path = output_dir / LOG_NAME
    if start > 0:
        runlog.truncate_log(log_path, start)  # drop iterations the killed run did after saving
    elif log_path.exists():
        log_path.unlink()


def checkpoint_state(model, optimizer, scaler, iteration, config, class_names):
    """The dict that `save_checkpoint` writes (see mrcnn_edu.engine.checkpoint)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "iteration": iteration, "config": config.to_dict(),
            "class_names": list(class_names) if class_names is not None else None,
            "rng": capture_rng_state()}
