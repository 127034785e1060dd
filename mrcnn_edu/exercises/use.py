"""Train the real model with your own stage: `with use(nms=my_nms): train(...)` (after lesson 10).

`use(**functions)` swaps functions of `mrcnn_edu.ops` for the duration of a `with` block: the name
in `mrcnn_edu.ops`, in the ops module that defines it (so `ops.batched_nms` calls your `nms`), and
in every `mrcnn_edu.model` / `mrcnn_edu.ops` / `mrcnn_edu.engine` module that bound it with
`from mrcnn_edu.ops import name`. Everything is put back when the block ends, even on an error.
A name you bound yourself (`from mrcnn_edu.ops import nms` in a notebook) is not touched.
The model pools RoIs on all FPN levels in one call and builds the mask targets of all images
in one call; swapping `roi_align` or `mask_targets` also swaps those batched forms for loops
over your function (`loops_over`), unless you swap them yourself.

The model calls these functions with torch tensors. A numpy function (as the lessons' exercises
are) is wrapped: tensors in become numpy arrays, numpy arrays out become tensors on the device
and in the float dtype of the first tensor argument (integers stay int64). A torch function is
passed the tensors as they are. Which kind yours is, is found on its first call, as `check` does:
numpy first, torch when numpy input raises a TypeError or AttributeError. numpy carries no
gradient, so a numpy function that receives a tensor requiring one stops with a clear error.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import types

import numpy as np


def swappable():
    """{name: function} of the public functions of `mrcnn_edu.ops` (the names `use` accepts)."""
    from mrcnn_edu import ops
    return {name: value for name, value in vars(ops).items()
            if not name.startswith("_") and callable(value) and not isinstance(value, types.ModuleType)}


def modules_to_patch():
    """The package modules whose global names may hold an ops function."""
    import mrcnn_edu.model  # noqa: F401  imported first, so its `from ... import` names exist
    prefixes = ("mrcnn_edu.ops", "mrcnn_edu.model", "mrcnn_edu.engine")
    return [module for name, module in list(sys.modules.items())
            if module is not None and name.startswith(prefixes)]


def tensors_to_numpy(value):
    """Tensors -> numpy (detached, on the CPU); lists and tuples element by element."""
    import torch
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16
            value = value.float()
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(tensors_to_numpy(v) for v in value)
    return value


def numpy_to_tensors(value, dtype, device):
    """numpy arrays (and numpy scalars) -> tensors on `device`; floats in `dtype`."""
    import torch
    if isinstance(value, (np.ndarray, np.generic)):
        tensor = torch.from_numpy(np.array(value))
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        return tensor.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(numpy_to_tensors(v, dtype, device) for v in value)
    return value


def first_tensor(values):
    import torch
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (list, tuple)):
            found = first_tensor(value)
            if found is not None:
                return found
    return None


def needs_grad(values):
    import torch
    return any((isinstance(v, torch.Tensor) and v.requires_grad)
               or (isinstance(v, (list, tuple)) and needs_grad(v)) for v in values)


def as_torch_op(name, fn):
    """fn made callable the way the model calls `mrcnn_edu.ops.<name>`: see the module docstring."""
    if getattr(fn, "__module__", "") and fn.__module__.startswith("mrcnn_edu.ops"):
        return fn  # already a torch twin
    import torch
    try:
        accepted = set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        accepted = set()
    mode = {}  # "numpy" or "torch", decided on the first call

    def call_numpy(args, kwargs):
        # dtype= and device= are for torch outputs only (ops.generate_anchors takes them)
        dtype, device = kwargs.pop("dtype", None), kwargs.pop("device", None)
        if torch.is_grad_enabled() and needs_grad(list(args) + list(kwargs.values())):
            raise RuntimeError(
                f"use({name}=...): the model passes {name} a tensor that needs a gradient, and a "
                f"numpy function cannot pass one back. Write {name} in torch to train with it.")
        template = first_tensor(list(args) + list(kwargs.values()))
        if dtype is None:
            dtype = template.dtype if template is not None and template.is_floating_point() else torch.float32
        if device is None:
            device = template.device if template is not None else torch.device("cpu")
        out = fn(*tensors_to_numpy(args), **tensors_to_numpy(kwargs))
        return numpy_to_tensors(out, dtype, device)

    @functools.wraps(fn)
    def op(*args, **kwargs):
        for key in ("dtype", "device"):
            if key in kwargs and key in accepted:  # fn takes them itself: a torch function
                mode.setdefault("kind", "torch")
        if mode.get("kind") == "torch":
            return fn(*args, **kwargs)
        if mode.get("kind") == "numpy":
            return call_numpy(args, dict(kwargs))
        try:
            out = call_numpy(args, dict(kwargs))
        except (TypeError, AttributeError):  # numpy input broke it: written for torch tensors
            out = fn(*args, **kwargs)
            mode["kind"] = "torch"
            return out
        mode["kind"] = "numpy"
        return out

    return op


def loops_over(functions):
    """{batched form: its loop over the stage} for each swapped stage that the model calls in a
    batched form (RoIAlign on all FPN levels at once, mask targets of all images at once):
    without the loop, the model would never call your function."""
    import importlib
    roi_align = importlib.import_module("mrcnn_edu.ops.roi_align")  # the modules, not the
    masks = importlib.import_module("mrcnn_edu.ops.masks")  # functions `ops` exports
    loops = {"roi_align": ("multiscale_roi_align", roi_align._multiscale_level_by_level),
             "mask_targets": ("batch_mask_targets", masks._batch_mask_targets_image_by_image)}
    return {batched: loop for name, (batched, loop) in loops.items() if name in functions}


@contextlib.contextmanager
def use(**functions):
    """Swap `mrcnn_edu.ops` functions for yours inside a `with` block, e.g.

        with use(nms=my_nms, box_iou=my_box_iou):
            train(cfg, root, run_dir, evaluate_after=False)

    Unknown names raise ValueError (with the list of names that can be swapped), a value that is
    not callable raises TypeError. Everything is restored when the block ends.
    """
    available = swappable()
    unknown = sorted(set(functions) - set(available))
    if unknown:
        raise ValueError(f"use(): no mrcnn_edu.ops function called {', '.join(unknown)}; "
                         f"these can be swapped: {', '.join(sorted(available))}")
    for name, fn in functions.items():
        if not callable(fn):
            raise TypeError(f"use({name}=...): expected a function, got {type(fn).__name__}")
    functions = {**loops_over(functions), **functions}
    swapped = []  # (module, name, original), to put back in reverse order
    try:
        modules = modules_to_patch()
        for name, fn in functions.items():
            original, replacement = available[name], as_torch_op(name, fn)
            for module in modules:
                if vars(module).get(name) is original:
                    swapped.append((module, name, original))
                    setattr(module, name, replacement)
        yield
    finally:
        for module, name, original in reversed(swapped):
            setattr(module, name, original)
