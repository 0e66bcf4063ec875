"""The checked exercises (``sequencer_mini.exercises``) and the chapter quizzes (``sequencer_mini.book.quiz``).

For every exercise: the reference passes; each registered mistake fails with a message that contains that
mistake's own explanation (all distinct within an exercise); answers of the wrong kind (not callable, a stub,
a wrong type or shape, code that raises, an output cut from the graph) get a sentence, never an exception.
The references are also checked against the library or PyTorch, so the checker's notion of "right" is
the book's. The notebooks: chapters 1-5 and 9 have a stub, a check cell and a solution per exercise;
chapters 1-10 end with a quiz whose bank follows the book's rules.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from sequencer_mini.analysis.erf import effective_receptive_fields
from sequencer_mini.book.quiz import check_bank, quiz_html
from sequencer_mini.exercises import EXERCISES, ch02, ch04, ch09
from sequencer_mini.exercises.checking import Result
from sequencer_mini.models.bilstm2d import BiLSTM2D

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = {n: next(BOOK.glob(f"{n:02d}_*.ipynb")) for n in range(1, 11)}
EXERCISE_CHAPTERS = (1, 2, 3, 4, 5, 9)


@pytest.fixture(params=sorted(EXERCISES), scope="module")
def exercise(request):
    return EXERCISES[request.param]


def test_every_chapter_with_exercises_is_covered():
    assert sorted({ex.chapter for ex in EXERCISES.values()}) == list(EXERCISE_CHAPTERS)


def test_reference_passes(exercise):
    result = exercise.check(exercise.reference)
    assert isinstance(result, Result) and result.passed, result.message
    assert result.message.startswith("✓")


def test_each_mistake_fails_with_its_own_message(exercise):
    assert len(exercise.mistakes) >= 3
    messages = [m.message for m in exercise.mistakes.values()]
    assert len(set(messages)) == len(messages), "two mistakes share a message"
    results = {}
    for name, mistake in exercise.mistakes.items():
        result = exercise.check(mistake.answer)
        assert not result.passed, f"{exercise.name}: mistake {name!r} passed"
        assert mistake.message in result.message, f"{exercise.name}: {name!r} got: {result.message}"
        results[name] = result.message
    assert len(set(results.values())) == len(results)


def _stub(*args, **kwargs):
    raise NotImplementedError


def _raises(*args, **kwargs):
    raise KeyError("oops")


@pytest.mark.parametrize("answer, says", [
    (3, "without calling it"),
    (torch.zeros(2), "without calling it"),
    (_stub, "stub is not filled in"),
    (_raises, "raised KeyError"),
    (lambda *a, **k: "a string", "str"),
    (lambda *a, **k: torch.zeros(1, 2, 3), "shape"),
])
def test_wrong_kinds_of_answer_get_a_sentence(exercise, answer, says):
    if exercise.name == "lstm_cell" and says in ("str", "shape"):
        says = "nn.Module"  # the cell exercise builds a class first
    result = exercise.check(answer)
    assert not result.passed and says in result.message, result.message
    assert "Traceback" not in result.message and result.message.count("\n") == 0


def test_an_output_cut_from_the_graph_is_named():
    def detached(x, forward_lstm, backward_lstm):
        return ch02.bilstm_solution(x, forward_lstm, backward_lstm).detach()
    result = EXERCISES["bilstm"].check(detached)
    assert not result.passed and "gradient" in result.message, result.message


def test_hint_and_solution(exercise):
    first, second = str(exercise.hint()), str(exercise.hint())
    assert first.startswith("Hint 1/") and second.startswith("Hint 2/")
    assert "def " in str(exercise.solution()) or "class " in str(exercise.solution())


def test_check_yours_uses_the_reference_at_the_ci_budget(exercise, monkeypatch):
    monkeypatch.setenv("SEQUENCER_BUDGET", "ci")
    assert exercise.check_yours(_stub).passed
    monkeypatch.setenv("SEQUENCER_BUDGET", "cpu")
    assert not exercise.check_yours(_stub).passed


# -- the references are the book's: checked against PyTorch and the library ----------------------------------

def test_lstm_cell_reference_is_nn_lstmcell():
    ref = nn.LSTMCell(5, 4)
    mine = EXERCISES["lstm_cell"].reference(5, 4)
    mine.load_state_dict(ref.state_dict())
    x, h, c = torch.randn(3, 5), torch.randn(3, 4), torch.randn(3, 4)
    for a, b in zip(mine(x, (h, c)), ref(x, (h, c)), strict=True):
        torch.testing.assert_close(a, b)


def test_bilstm_reference_is_nn_lstm_bidirectional():
    torch.manual_seed(0)
    both = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    fwd, bwd = nn.LSTM(3, 4, batch_first=True), nn.LSTM(3, 4, batch_first=True)
    sd = both.state_dict()
    fwd.load_state_dict({k: v for k, v in sd.items() if not k.endswith("_reverse")})
    bwd.load_state_dict({k.removesuffix("_reverse"): v for k, v in sd.items() if k.endswith("_reverse")})
    x = torch.randn(2, 6, 3)
    torch.testing.assert_close(ch02.bilstm_solution(x, fwd, bwd), both(x)[0])


def test_bilstm2d_reference_is_the_library_layer():
    layer = BiLSTM2D(8, 2, with_fc=False).eval()  # cat of 4 directions of 2 = 8 channels, as without an FC
    x = torch.randn(2, 3, 5, 8)
    torch.testing.assert_close(ch04.bilstm2d_solution(x, layer.rnn_v, layer.rnn_h), layer(x))


def test_erf_reference_is_the_library_erf():
    case = ch09.erf.cases[0].make()
    model = nn.Sequential(case["features"], nn.Identity())
    (lib,) = effective_receptive_fields(model, case["images"], ["1"], layout="bhwc", return_raw=True, thresholds=())
    torch.testing.assert_close(ch09.erf_solution(case["features"], case["images"]).double(), lib.map.double())


# -- the notebooks -----------------------------------------------------------------------------------------

def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _src(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("chapter", EXERCISE_CHAPTERS)
def test_chapter_has_stub_check_and_solution(chapter):
    cells = _cells(CHAPTERS[chapter])
    names = [ex.name for ex in EXERCISES.values() if ex.chapter == chapter]
    for name in names:
        checks = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and f".{name}.check_yours(" in _src(c)]
        assert checks, f"chapter {chapter}: no check cell for exercise {name}"
        i = checks[0]
        assert "NotImplementedError" in _src(cells[i - 1]), f"chapter {chapter}: no stub right before the check"
        later = [c for c in cells[i + 1:] if c["cell_type"] == "code"]
        assert later and "hide-cell" in later[0].get("metadata", {}).get("tags", []), \
            f"chapter {chapter}: the solution after the check cell is not collapsed (hide-cell)"


@pytest.mark.parametrize("chapter", range(1, 11))
def test_chapter_ends_with_a_quiz(chapter):
    code = [c for c in _cells(CHAPTERS[chapter]) if c["cell_type"] == "code"]
    last = code[-1]
    assert "quiz(" in _src(last), f"chapter {chapter}: the last code cell is not its quiz"
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in last.get("outputs", []))
    assert 'class="sequencer-quiz"' in html, f"chapter {chapter}: the quiz's output is not recorded"
    bank = re.search(r'<script type="application/json" id="quiz_\w+_bank">(.*?)</script>', html, re.S)
    assert bank and check_bank(json.loads(bank.group(1).replace("<\\/", "</"))) == []


def test_quiz_rules():
    good = {"question": "q?", "type": "multiple_choice", "answers": [
        {"answer": "a", "correct": True, "feedback": "Right."},
        {"answer": "b", "correct": False, "feedback": "No: b is the other thing entirely."},
        {"answer": "c", "correct": False, "feedback": "No: c is something else entirely."}]}
    assert check_bank([good] * 3) == []
    assert check_bank([good] * 2)  # too few
    bad = dict(good, answers=[*good["answers"][:2], {"answer": "c", "correct": False}])
    assert any("needs feedback" in p for p in check_bank([good, good, bad]))
    with pytest.raises(ValueError):
        quiz_html([good] * 6, "x")
    html = quiz_html([good] * 3, "c1")
    assert "https://" not in html and 'id="quiz_c1"' in html
