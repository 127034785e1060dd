"""The checking machinery behind the "your turn" cells of the lessons: `check`, `hint`, `solution`.

An `Exercise` is a contract (usually a reference function's: same name, same signature), the
trusted reference that answers it, a list of `Case`s (the lesson's hand example with exact
numbers, named edge cases, seeded random inputs of realistic size), tiered hints, a written
solution, and `Mutant`s: realistic wrong answers, each with the sentence that names the slip.

`check(name, fn)` runs the learner's function on every case, prints one line per case, and on a
failure shows the smallest failing input, expected and actual output, and -- when one of the
mutants reproduces the learner's output on every failing case -- which mistake it most likely
is. It returns a `CheckResult`, truthy only when every case passed, so `assert check(...)` works.

Inputs are numpy arrays and Python scalars. A learner's function may be numpy or torch: it is
called with numpy first, and with float64/int64 torch tensors when that raises a TypeError or
AttributeError (or when it is one of `mrcnn_edu.ops`' twins). Outputs of either kind are
converted to numpy before comparing.
"""
from __future__ import annotations

import inspect
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    """One input for the learner's function and the reference."""
    name: str  # "touching boxes (edge only)"
    kind: str  # "hand" | "edge" | "random"
    args: tuple  # positional arguments: numpy arrays and Python scalars
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Mutant:
    """A realistic wrong answer: same signature as the exercise, one classic slip."""
    name: str  # short id, "plus_one_widths"
    diagnosis: str  # "your widths use x2 - x1 + 1 (the old Caffe convention, lesson 01)"
    fn: Callable


@dataclass(frozen=True)
class Exercise:
    """A checked exercise; see the module docstring."""
    name: str  # == the reference function's name when its contract is that function's
    lesson: int
    contract: str  # the docstring the lesson's stub shows
    reference: Callable  # trusted implementation (mrcnn_edu.reference.* or an exact thin wrapper)
    cases: Callable  # () -> list[Case]: hand, edge, then seeded random cases
    hints: tuple  # (nudge, formula); the third tier is the solution
    solution: Callable  # from mrcnn_edu.exercises.solutions
    mutants: tuple = ()  # realistic wrong variants, at least 3
    compare: Callable = None  # (expected, actual) -> (ok, detail); None: `compare_outputs`
    shrink: Callable = None  # Case -> [smaller Case, ...] smallest first; None: no shrinking


@dataclass
class CheckResult:
    """What `check` found. Truthy only when the function was attempted and every case passed."""
    name: str
    passed: bool = False
    attempted: bool = True
    cases: list = field(default_factory=list)  # [(case name, kind, ok, seconds)]
    diagnosis: str | None = None  # the matching mutant's diagnosis, if any
    mutant: str | None = None  # that mutant's name
    error: str | None = None  # the learner's traceback when it crashed

    def __bool__(self):
        return self.passed

    def __repr__(self):  # deterministic: notebooks echo it
        if not self.attempted:
            return f"CheckResult({self.name}: not attempted)"
        good = sum(ok for _, _, ok, _ in self.cases)
        return f"CheckResult({self.name}: {good}/{len(self.cases)} cases passed)"


# ---------------------------------------------------------------- conversions and comparison

def is_tensor(x):
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_numpy(x):
    """Torch tensors (any device) -> numpy; tuples and lists converted element by element."""
    if is_tensor(x):
        return x.detach().cpu().numpy()
    if isinstance(x, (tuple, list)) and any(is_tensor(v) or isinstance(v, np.ndarray) for v in x):
        return tuple(to_numpy(v) for v in x)
    return x


def to_torch(x):
    """numpy arrays -> torch tensors of the same dtype (float64 stays float64); the rest as is."""
    import torch
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x))  # a copy: the learner may write into it
    return x


def copy_args(args):
    """Fresh copies of array arguments, so a function that writes into its input harms no one."""
    return tuple(np.array(a) if isinstance(a, np.ndarray) else a for a in args)


KINDS = {"b": "bool", "i": "integer", "u": "integer", "f": "float"}


def compare_arrays(expected, actual, rtol=1e-5, atol=1e-6, where=""):
    """(ok, detail) for one array: shape, dtype kind (bool / integer / float), then values."""
    expected = np.asarray(expected)
    if actual is None:
        return False, f"{where}returned None; expected an array of shape {expected.shape}"
    try:
        actual = np.asarray(actual)
    except Exception as err:  # a ragged list, an object numpy cannot hold
        return False, f"{where}could not read the output as an array: {err}"
    if actual.shape != expected.shape:
        return False, f"{where}shape {actual.shape}, expected {expected.shape}"
    want, got = KINDS.get(expected.dtype.kind, "other"), KINDS.get(actual.dtype.kind, "other")
    if want != got and expected.size:  # an empty result has no values to be of a wrong kind
        return False, f"{where}dtype {actual.dtype} ({got}), expected a {want} array ({expected.dtype})"
    if want == "float":
        close = np.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    else:
        close = actual == expected
    if close.all():
        return True, ""
    bad = np.argwhere(~close)
    first = tuple(int(i) for i in bad[0])
    detail = (f"{where}{len(bad)} of {close.size} values differ; first at index {first}: "
              f"got {actual[first].item()!r}, expected {expected[first].item()!r}")
    if want == "float" and np.isnan(actual).any():
        detail += f" ({int(np.isnan(actual).sum())} NaN in your output)"
    return False, detail


def compare_outputs(expected, actual, rtol=1e-5, atol=1e-6):
    """Default comparison: arrays with `compare_arrays`; tuples element by element."""
    if isinstance(expected, tuple):
        if not isinstance(actual, (tuple, list)) or len(actual) != len(expected):
            return False, f"expected a tuple of {len(expected)} arrays, got {type(actual).__name__}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            ok, detail = compare_arrays(e, a, rtol, atol, where=f"output [{i}]: ")
            if not ok:
                return False, detail
        return True, ""
    return compare_arrays(expected, actual, rtol, atol)


# ---------------------------------------------------------------- shrinking a failing case

def prefix_shrinker(*groups):
    """A `shrink` for cases whose arrays can be cut to their first n entries along some axes.

    Each group is [(arg index, axis), ...] cut to the same n together (boxes and their scores,
    say); groups are cut independently to n as well. Candidates n = 1, 2, 3, 4, 6, 8, ... below
    the full size, smallest first.
    """
    def shrink(case):
        full = max(case.args[i].shape[axis] for group in groups for i, axis in group)
        sizes = sorted({1, 2, 3, 4} | {int(2 ** (k / 2)) for k in range(4, 40)})
        out = []
        for n in (s for s in sizes if s < full):
            args = list(case.args)
            for group in groups:
                for i, axis in group:
                    args[i] = np.take(args[i], np.arange(min(n, args[i].shape[axis])), axis=axis)
            out.append(Case(f"{case.name}, first {n}", case.kind, tuple(args), dict(case.kwargs)))
        return out
    return shrink


# ---------------------------------------------------------------- the registry and lookups

def exercise(name_or_exercise):
    """The Exercise for a name (or the Exercise itself); a clear error for an unknown name."""
    if isinstance(name_or_exercise, Exercise):
        return name_or_exercise
    from . import EXERCISES  # the table in __init__, built explicitly from the stage modules
    if name_or_exercise not in EXERCISES:
        raise KeyError(f"no exercise called {name_or_exercise!r}; there are: "
                       + ", ".join(sorted(EXERCISES)))
    return EXERCISES[name_or_exercise]


def argument_names(ex, case):
    """Names for a case's positional arguments, from the reference's signature."""
    try:
        params = list(inspect.signature(ex.reference).parameters)
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"arg{i}" for i in range(len(case.args))]


# ---------------------------------------------------------------- running the learner

class NotAttempted(Exception):
    """The learner's function still raises NotImplementedError (the stub)."""


class LearnerCrash(Exception):
    """The learner's function raised: carries the trimmed traceback text."""


def learner_traceback(err):
    """The traceback of an exception raised inside the learner's code, without our frames."""
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next  # our own frames: the learner needs only theirs
    return "".join(traceback.format_exception(type(err), err, tb))


def call(fn, case, torch_mode):
    """fn on a copy of the case's inputs, (output as numpy, seconds); NotAttempted/LearnerCrash."""
    args = copy_args(case.args)
    if torch_mode:
        args = tuple(to_torch(a) for a in args)
    start = time.perf_counter()
    try:
        out = fn(*args, **case.kwargs)
    except NotImplementedError:
        raise NotAttempted() from None
    except Exception as err:
        raise LearnerCrash(learner_traceback(err)) from err
    return to_numpy(out), time.perf_counter() - start


def choose_mode(fn, case):
    """True when fn must get torch tensors: an `mrcnn_edu.ops` twin, or a function that fails
    with numpy input in the way torch code does (TypeError / AttributeError) but runs on torch.
    Raises NotAttempted for the stub, before anything is printed."""
    if getattr(fn, "__module__", "") and fn.__module__.startswith("mrcnn_edu.ops"):
        return True
    try:
        call(fn, case, torch_mode=False)  # NotAttempted (the stub) goes up to `check`
        return False
    except LearnerCrash as crash:
        if not isinstance(crash.__cause__, (TypeError, AttributeError)):
            return False
    try:
        call(fn, case, torch_mode=True)
        return True
    except (LearnerCrash, NotAttempted):
        return False


def show(value, indent=0):
    """Compact text of an input or output for the failure report; continuation lines of an
    array are aligned under its first row, which starts `indent` characters into the line."""
    with np.printoptions(precision=4, suppress=True, threshold=60, edgeitems=3):
        if isinstance(value, tuple) and any(isinstance(v, np.ndarray) for v in value):
            return "(" + ", ".join(show(v) for v in value) + ")"
        if isinstance(value, np.ndarray):
            return np.array2string(value, separator=", ", prefix=" " * indent)
        return repr(value)


def diagnose(ex, failures):
    """The first mutant whose output equals the learner's on every failing case, or None.

    failures: [(case, learner output)]. A mutant that passes one of those cases cannot be the
    learner's slip there, so it must also fail each of them.
    """
    compare = ex.compare or compare_outputs
    for mutant in ex.mutants:
        try:
            if all(not compare(ex.reference(*copy_args(c.args), **c.kwargs),
                               mutant.fn(*copy_args(c.args), **c.kwargs))[0]
                   and compare(mutant.fn(*copy_args(c.args), **c.kwargs), got)[0]
                   for c, got in failures):
                return mutant
        except Exception:  # a mutant that crashes on this input simply does not match
            continue
    return None


def smallest_failure(ex, fn, case, torch_mode):
    """A smaller version of a failing case that still fails (same kind of failure), or the case."""
    if ex.shrink is None or case.kind != "random":
        return case
    compare = ex.compare or compare_outputs
    for small in ex.shrink(case):
        try:
            got, _ = call(fn, small, torch_mode)
        except (LearnerCrash, NotAttempted):
            continue
        if not compare(ex.reference(*copy_args(small.args), **small.kwargs), got)[0]:
            return small
    return case


def check(name_or_exercise, fn, *, verbose=True):
    """Check a learner's `fn` against the exercise's reference on every case; see the module
    docstring. Returns a CheckResult (truthy only when every case passed); never raises for a
    wrong or crashing `fn`, only for a `fn` that is not callable or an unknown exercise name."""
    ex = exercise(name_or_exercise)
    if not callable(fn):
        raise TypeError(f"check({ex.name!r}, fn): fn must be your function (numpy or torch), "
                        f"got {type(fn).__name__} {fn!r:.60}")
    say = print if verbose else (lambda *a, **k: None)
    result = CheckResult(ex.name)
    compare = ex.compare or compare_outputs
    cases = ex.cases()
    try:
        torch_mode = choose_mode(fn, cases[0])
        say(f"{ex.name}: {len(cases)} cases (lesson {ex.lesson:02d}), "
            f"calling your function with {'torch tensors' if torch_mode else 'numpy arrays'}")
        failures, first_crash = [], None
        for case in cases:
            crashed = False
            try:
                got, seconds = call(fn, case, torch_mode)
                expected = ex.reference(*copy_args(case.args), **case.kwargs)
                ok, detail = compare(expected, got)
            except LearnerCrash as crash:
                crashed, seconds, ok = True, 0.0, False
                first_crash = first_crash or (case, str(crash))
            result.cases.append((case.name, case.kind, ok, seconds))
            status = "PASS" if ok else ("ERROR" if crashed else "FAIL")
            say(f"  {status:5s} {case.kind:6s} {case.name:52s} {seconds * 1e3:8.1f} ms")
            if not ok and not crashed:
                failures.append((case, got, detail))
    except NotAttempted:
        result.attempted = False
        result.cases = []
        say(f"{ex.name}: not attempted yet -- replace the stub's `raise NotImplementedError` "
            f"with your code, then run this cell again")
        return result

    good = sum(ok for _, _, ok, _ in result.cases)
    result.passed = good == len(result.cases)
    if result.passed:
        say(f"{ex.name}: all {good} cases passed.")
        return result
    say(f"{ex.name}: {good} of {len(result.cases)} cases passed.")
    if first_crash:
        case, text = first_crash
        result.error = text
        say(f"\nYour function raised an error on '{case.name}' (an error in your code, "
            f"not in the checker):\n{text.rstrip()}")
    if failures:
        case, got, detail = failures[0]
        small = smallest_failure(ex, fn, case, torch_mode)
        if small is not case:
            got, _ = call(fn, small, torch_mode)
            detail = compare(ex.reference(*copy_args(small.args), **small.kwargs), got)[1]
        say(f"\nSmallest failing input ({small.kind}: {small.name}):")
        named = list(zip(argument_names(ex, small), small.args)) + list(small.kwargs.items())
        for arg_name, value in named:
            say(f"  {arg_name} = {show(value, len(arg_name) + 5)}")
        say(f"  expected: {show(ex.reference(*copy_args(small.args), **small.kwargs), 12)}")
        say(f"  got:      {show(got, 12)}")
        say(f"  {detail}")
        mutant = diagnose(ex, [(c, g) for c, g, _ in failures])
        if mutant is not None:
            result.diagnosis, result.mutant = mutant.diagnosis, mutant.name
            say(f"Most likely: {mutant.diagnosis}.")
    say(f'Stuck? hint("{ex.name}") gives a hint; call it again for more.')
    return result


# ---------------------------------------------------------------- hints and solutions

HINTS_GIVEN = {}  # exercise name -> how many tiers were shown so far


def solution_source(name_or_exercise):
    return inspect.getsource(exercise(name_or_exercise).solution)


def solution(name_or_exercise):
    """Print the written solution of an exercise (its source code)."""
    print(solution_source(name_or_exercise))


def hint(name_or_exercise):
    """Print the next hint tier of an exercise: a nudge, then the formula, then the solution."""
    ex = exercise(name_or_exercise)
    tier = HINTS_GIVEN.get(ex.name, 0)
    HINTS_GIVEN[ex.name] = min(tier + 1, len(ex.hints))
    if tier < len(ex.hints):
        print(f"Hint {tier + 1} of {len(ex.hints) + 1} for {ex.name}: {ex.hints[tier]}")
    else:
        print(f"Hint {len(ex.hints) + 1} of {len(ex.hints) + 1} for {ex.name}: the solution.\n")
        solution(ex)
