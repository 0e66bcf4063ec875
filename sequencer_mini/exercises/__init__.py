"""Layer 6, exercises that answer back (next to ``book``, above every other layer): the book's checked coding
exercises, one module per chapter, on the shared machinery of :mod:`sequencer_mini.exercises.checking`.

Each exercise is an :class:`~sequencer_mini.exercises.checking.Exercise`: ``check(answer)`` runs the learner's
code against a reference on random inputs and returns a :class:`~sequencer_mini.exercises.checking.Result`
whose message names the property that failed, the input, and the misconception when the answer behaves
like one of the exercise's registered ``mistakes``; ``hint()`` and ``solution()`` help. In a chapter:
the task, a stub cell, a check cell (``check_yours``), then the collapsed solution.
May import every layer below ``book``; nothing imports it.
"""
from __future__ import annotations

from sequencer_mini.exercises import ch01, ch02, ch03, ch04, ch05, ch09
from sequencer_mini.exercises.checking import Exercise, Mistake, Result

#: Every checked exercise of the book, by name (``tests/test_exercises.py`` checks each one).
EXERCISES: dict[str, Exercise] = {
    ex.name: ex for ex in (ch01.lstm_cell, ch02.bilstm, ch03.patch_embed, ch04.bilstm2d, ch05.block, ch09.erf)
}

__all__ = ["EXERCISES", "Exercise", "Mistake", "Result"]
