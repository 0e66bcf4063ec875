"""Self-check quizzes at the end of each chapter: multiple-choice and numeric questions that answer back in the
rendered book with no kernel (jupyterquiz's JavaScript, vendored in ``book/_vendor/jupyterquiz``).

:func:`quiz` displays one quiz as HTML: a container, the question bank as JSON, and a few lines of script that
hand the bank to jupyterquiz's ``show_questions`` once the page has loaded it (``_config.yml`` adds the
vendored script to every page, served by the book itself, so no request leaves the book's host). Where no
script runs (a notebook viewer, or Jupyter without the book's JavaScript), the container shows the questions
as plain text with each choice's feedback folded under it, so the quiz still reads.

The bank uses jupyterquiz's JSON format. :func:`check_bank` holds the book's rules for it: 3-5 questions,
every wrong choice with feedback that says why it is wrong, numeric questions with a correct value and
feedback for the near misses. ``tests/test_exercises.py`` checks every chapter's bank; the browser test
answers quizzes in the built book.
"""
from __future__ import annotations

import html
import json
import re
from typing import Any

__all__ = ["QUIZ_COLORS", "check_bank", "choice", "number", "quiz", "quiz_html"]

#: jupyterquiz's colour variables (its default palette). The questions paint their own purple panel; the
#: feedback and the numeric field's label sit on the page, so ``book/_theme/book.css`` gives those three a
#: lighter shade in the book's dark theme.
QUIZ_COLORS: dict[str, str] = {
    "--jq-multiple-choice-bg": "#392061",
    "--jq-mc-button-bg": "#fafafa",
    "--jq-mc-button-border": "#e0e0e0e0",
    "--jq-mc-button-inset-shadow": "#555555",
    "--jq-many-choice-bg": "#f75c03ff",
    "--jq-numeric-bg": "#392061ff",
    "--jq-numeric-input-bg": "#c0c0c0",
    "--jq-numeric-input-label": "#101010",
    "--jq-numeric-input-shadow": "#999999",
    "--jq-string-bg": "#4c1a57",
    "--jq-incorrect-color": "#c80202",
    "--jq-correct-color": "#007a10",
    "--jq-text-color": "#fafafa",
    "--jq-link-color": "#9abafa",
}


def choice(question: str, right: tuple[str, str], *wrong: tuple[str, str]) -> dict[str, Any]:
    """A multiple-choice question: ``right`` and each of ``wrong`` are ``(answer, feedback)``.

    The right answer's place among the choices follows from the question's text (the same on every run, not
    always first).
    """
    answers = [{"answer": a, "correct": False, "feedback": f} for a, f in wrong]
    answers.insert(sum(map(ord, question)) % (len(wrong) + 1), {"answer": right[0], "correct": True,
                                                                 "feedback": right[1]})
    return {"question": question, "type": "multiple_choice", "answers": answers}


def number(question: str, value: float, feedback: str, *wrong: tuple[tuple[float, float], str], otherwise: str,
           precision: int | None = None) -> dict[str, Any]:
    """A numeric question: ``value`` is right (compared to ``precision`` significant digits when given);
    each of ``wrong`` is ``((low, high), feedback)`` for a typical wrong answer in ``[low, high)``; ``otherwise``
    answers anything else."""
    answers: list[dict[str, Any]] = [{"type": "value", "value": value, "correct": True, "feedback": feedback}]
    answers += [{"type": "range", "range": [lo, hi], "correct": False, "feedback": f} for (lo, hi), f in wrong]
    answers.append({"type": "default", "feedback": otherwise})
    q: dict[str, Any] = {"question": question, "type": "numeric", "answers": answers}
    if precision is not None:
        q["precision"] = precision
    return q


def check_bank(questions: list[dict[str, Any]]) -> list[str]:
    """The problems of a question bank under the book's rules; an empty list when it is fine."""
    problems: list[str] = []
    if not 3 <= len(questions) <= 5:
        problems.append(f"a chapter's quiz has 3-5 questions, this one has {len(questions)}")
    for n, q in enumerate(questions, 1):
        kind, answers = q.get("type"), q.get("answers", [])
        if not q.get("question"):
            problems.append(f"question {n} has no text")
        if kind == "multiple_choice":
            correct = [a for a in answers if a.get("correct")]
            wrong = [a for a in answers if not a.get("correct")]
            if len(correct) != 1 or len(wrong) < 2:
                problems.append(f"question {n}: one correct choice and at least two wrong ones")
            for a in wrong:
                if len(a.get("feedback", "")) < 20:
                    problems.append(f"question {n}: the wrong choice {a.get('answer')!r} needs feedback saying why")
        elif kind == "numeric":
            if not any(a.get("correct") and ("value" in a or "range" in a) for a in answers):
                problems.append(f"question {n}: a numeric question needs a correct value or range")
            if not any(not a.get("correct") and a.get("feedback") for a in answers):
                problems.append(f"question {n}: a numeric question needs feedback for wrong answers")
        else:
            problems.append(f"question {n}: type must be 'multiple_choice' or 'numeric', got {kind!r}")
    return problems


def _fallback(questions: list[dict[str, Any]]) -> str:
    """The quiz as static HTML: questions, choices, feedback folded (shown where no script runs)."""
    parts = []
    for n, q in enumerate(questions, 1):
        items = []
        for a in q["answers"]:
            if "answer" in a:
                label = html.escape(str(a["answer"]))
            elif "value" in a:
                label = html.escape(str(a["value"]))
            elif "range" in a:
                label = f"between {a['range'][0]} and {a['range'][1]}"
            else:
                label = "anything else"
            verdict = "right" if a.get("correct") else "not right"
            items.append(f"<li>{label} <details><summary>{verdict}</summary>"
                         f"{html.escape(a.get('feedback', ''))}</details></li>")
        parts.append(f"<p><b>{n}.</b> {html.escape(q['question'])}</p><ul>{''.join(items)}</ul>")
    return "".join(parts)


def quiz_html(questions: list[dict[str, Any]], name: str) -> str:
    """The HTML of one quiz (see the module's docstring); ``name`` makes its element ids, one per page."""
    problems = check_bank(questions)
    if problems:
        raise ValueError("quiz " + name + ": " + "; ".join(problems))
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ValueError(f"quiz name must be letters, digits and _, got {name!r}")
    div = f"quiz_{name}"
    style = "; ".join(f"{k}: {v}" for k, v in QUIZ_COLORS.items())
    bank = json.dumps(questions).replace("</", "<\\/")
    return (
        f'<div class="sequencer-quiz" id="{div}" data-shufflequestions="False" data-shuffleanswers="False" '
        f'data-preserveresponses="false" data-numquestions="{len(questions)}" data-maxwidth="600" '
        f'style="border-radius: 10px; text-align: left; {style}">'
        f'<div class="sequencer-quiz-static">{_fallback(questions)}</div></div>\n'
        f'<script type="application/json" id="{div}_bank">{bank}</script>\n'
        "<script>\n"
        "(function () {\n"
        "  var tries = 0;\n"
        "  function go() {\n"
        f'    var box = document.getElementById("{div}");\n'
        "    if (box && typeof show_questions === 'function') {\n"
        "      var bank = JSON.parse(document.getElementById(box.id + '_bank').textContent);\n"
        "      var fallback = box.querySelector('.sequencer-quiz-static');\n"
        "      if (fallback) { fallback.remove(); }\n"
        "      show_questions(bank, box);\n"
        "      box.dataset.rendered = 'true';\n"
        "    } else if (tries++ < 100) {\n"
        "      setTimeout(go, 100);\n"
        "    }\n"
        "  }\n"
        "  go();\n"
        "})();\n"
        "</script>"
    )


def quiz(questions: list[dict[str, Any]], name: str) -> None:
    """Display one chapter's quiz (HTML; the rendered book makes it interactive)."""
    # import cost: IPython is only needed where a quiz is displayed (it is there in every notebook)
    from IPython.display import HTML, display

    display(HTML(quiz_html(questions, name)))
