"""`mrcnn_edu.exercises.core`: how `check`, `hint` and `solution` behave for every kind of answer."""
import numpy as np
import pytest
import torch

from mrcnn_edu import ops, reference
from mrcnn_edu.exercises import Case, Exercise, Mutant, check, core, hint, solution
from mrcnn_edu.exercises.stage_01_boxes import BOX_IOU, plus_one_widths


def stub(boxes1, boxes2):
    """The lesson's stub."""
    raise NotImplementedError


def test_the_stub_is_not_attempted_falsy_and_prints_one_fixed_line(capsys):
    result = check("box_iou", stub)
    out = capsys.readouterr().out
    assert not result and result.attempted is False and result.cases == []
    assert out == ("box_iou: not attempted yet -- replace the stub's `raise NotImplementedError` "
                   "with your code, then run this cell again\n")
    assert repr(result) == "CheckResult(box_iou: not attempted)"


def test_a_correct_answer_prints_one_pass_line_per_case(capsys):
    result = check("box_iou", reference.box_iou)
    lines = capsys.readouterr().out.splitlines()
    cases = BOX_IOU.cases()
    assert result and result.passed and len(result.cases) == len(cases)
    assert [ln.split()[0] for ln in lines[1:-1]] == ["PASS"] * len(cases)
    assert all(ln.rstrip().endswith("ms") for ln in lines[1:-1])  # each line has its time
    assert lines[-1] == f"box_iou: all {len(cases)} cases passed."
    assert all(seconds >= 0 for _, _, _, seconds in result.cases)


def test_numpy_and_torch_answers_are_both_accepted():
    def torch_iou(boxes1, boxes2):  # written for tensors: .clamp does not exist in numpy
        lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
        rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        a1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(-1)
        a2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(-1)
        union = a1[:, None] + a2[None, :] - inter
        return torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(union))
    assert check("box_iou", torch_iou, verbose=False)
    assert core.choose_mode(torch_iou, BOX_IOU.cases()[0]) is True
    assert core.choose_mode(BOX_IOU.solution, BOX_IOU.cases()[0]) is False
    assert check("box_iou", ops.box_iou, verbose=False)


def test_a_crash_is_the_learners_error_with_their_traceback(capsys):
    def crashes(boxes1, boxes2):
        widths = boxes1[:, 2] - boxes1[:, 0]
        return widths[:, None] / boxes2[:, 7]  # a typo: column 7
    result = check("box_iou", crashes)
    out = capsys.readouterr().out
    assert not result and result.attempted
    assert "an error in your code, not in the checker" in out
    assert "in crashes" in out and "IndexError" in out and "boxes2[:, 7]" in out
    assert "exercises/core.py" not in result.error  # only the learner's frames
    assert all(not ok for _, _, ok, _ in result.cases)
    assert "ERROR" in out


def test_not_callable_and_unknown_names_are_clear_errors():
    with pytest.raises(TypeError, match="fn must be your function"):
        check("box_iou", np.zeros((2, 4)))
    with pytest.raises(KeyError, match="no exercise called 'boxiou'.*box_iou"):
        check("boxiou", stub)


@pytest.mark.parametrize("answer, detail", [
    (lambda b1, b2: None, "returned None"),
    (lambda b1, b2: reference.box_iou(b1, b2).ravel(), "shape (1,), expected (1, 1)"),
    (lambda b1, b2: (reference.box_iou(b1, b2) > 0.5), "dtype bool"),
    (lambda b1, b2: reference.box_iou(b1, b2) * np.nan, "NaN"),
])
def test_wrong_outputs_fail_with_a_reason(capsys, answer, detail):
    result = check("box_iou", answer)
    assert not result and result.attempted
    assert detail in capsys.readouterr().out


def test_failure_report_shows_the_smallest_failing_input(capsys):
    def wrong_on_big_boxes(boxes1, boxes2):  # right on every hand and edge case (all tiny boxes)
        iou = reference.box_iou(boxes1, boxes2)
        return np.where((boxes1[:, 2:3] > 100) & (boxes2[None, :, 2] > 100), iou * 0.5, iou)
    result = check("box_iou", wrong_on_big_boxes)
    out = capsys.readouterr().out
    assert not result and result.diagnosis is None
    assert "Smallest failing input (random: 200 x 50 boxes in a 640 x 640 image, first" in out
    shrunk = out.split("Smallest failing input")[1]
    assert "expected:" in shrunk and "got:" in shrunk and 'hint("box_iou")' in out


def test_the_learner_cannot_change_the_inputs_the_reference_sees():
    def writes_into_input(boxes1, boxes2):
        out = reference.box_iou(boxes1, boxes2)
        boxes1[:] = 0  # vandalism
        boxes2[:] = 0
        return out
    assert check("box_iou", writes_into_input, verbose=False)


def test_diagnosis_needs_the_mutant_to_match_on_every_failing_case():
    # wrong in two different ways: +1 widths on some inputs, a NaN-free but different rule on others
    def two_slips(boxes1, boxes2):
        if len(boxes1) == 1 and len(boxes2) == 1:
            return plus_one_widths(boxes1, boxes2)
        return reference.box_iou(boxes1, boxes2) ** 2
    result = check("box_iou", two_slips, verbose=False)
    assert not result and result.diagnosis is None


def test_hints_come_in_tiers_ending_with_the_solution(capsys, monkeypatch):
    monkeypatch.setattr(core, "HINTS_GIVEN", {})
    hint("box_iou")
    first = capsys.readouterr().out
    hint("box_iou")
    second = capsys.readouterr().out
    hint("box_iou")
    third = capsys.readouterr().out
    assert first.startswith("Hint 1 of 3 for box_iou:") and BOX_IOU.hints[0] in first
    assert second.startswith("Hint 2 of 3 for box_iou:") and BOX_IOU.hints[1] in second
    assert third.startswith("Hint 3 of 3 for box_iou: the solution.") and "def box_iou(" in third
    hint("box_iou")
    assert "def box_iou(" in capsys.readouterr().out  # stays at the solution
    solution("box_iou")
    assert capsys.readouterr().out.startswith("def box_iou(boxes1, boxes2):")


def test_an_exercise_object_can_be_checked_directly():
    def double(x):
        return 2 * x
    ex = Exercise(
        name="double", lesson=0, contract="double(x) -> 2 x", reference=double,
        cases=lambda: [Case("one", "hand", (np.array([1.0, 2.0]),))], hints=("", ""),
        solution=double, mutants=(Mutant("triple", "you tripled", lambda x: 3 * x),))
    assert check(ex, double, verbose=False)
    result = check(ex, lambda x: 3 * x, verbose=False)
    assert not result and result.mutant == "triple" and result.diagnosis == "you tripled"
    assert repr(result) == "CheckResult(double: 0/1 cases passed)"


def test_compare_accepts_an_empty_result_of_any_dtype_but_not_a_wrong_kind():
    assert core.compare_outputs(np.zeros(0, np.int64), np.array([]))[0]
    ok, detail = core.compare_outputs(np.array([1, 2]), np.array([1.0, 2.0]))
    assert not ok and "integer" in detail
    assert core.compare_outputs((np.ones(2),), [torch.ones(2).numpy()])[0]
