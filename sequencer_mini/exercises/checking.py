"""The checking machinery shared by every exercise: run the learner's code against a reference, name what
differs, and recognise known mistakes.

:meth:`Exercise.check` runs the answer and the reference on the same random inputs (several cases, some
with unequal sides) and compares, in order: that the answer can be called (or built, for a module), what it
returns (type, then shape), its values and, where the exercise is about a layer, the gradients with respect
to its inputs and parameters. At the first difference it stops with one message: which property, on which
input. When the answer's output (or its build problem) equals that of one of the registered
:attr:`Exercise.mistakes`, the message adds that mistake's explanation, which names the misconception.
Nothing the learner passes makes it raise: an exception from their code, a wrong type or a wrong shape each
becomes a plain sentence in the :class:`Result`.
"""
from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sequencer_mini.core.budget import budget

__all__ = ["Case", "Exercise", "Mistake", "Result"]


@dataclass(frozen=True)
class Result:
    """What :meth:`Exercise.check` found: ``passed`` and one message for the learner."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer and the misconception it shows, in one sentence."""

    answer: Callable[..., Any]
    message: str


@dataclass(frozen=True)
class Case:
    """One test input: ``make()`` returns fresh keyword arguments (seeded), ``label`` says what they are."""

    label: str
    make: Callable[[], dict[str, Any]]


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"{type(value).__name__} {value!r}"[:80]


def _flat(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (tuple, list)) else [value]


def _compare(out: Any, ref: Any, what: str, label: str, atol: float) -> str | None:
    """The first difference between ``out`` and ``ref`` as a sentence, or ``None`` when they agree."""
    refs, outs = _flat(ref), _flat(out)
    if isinstance(ref, (tuple, list)) and (not isinstance(out, (tuple, list)) or len(outs) != len(refs)):
        return f"{what} should be a tuple of {len(refs)} tensors; yours is {_describe(out)} ({label})."
    for k, (o, r) in enumerate(zip(outs, refs, strict=True)):
        name = what if len(refs) == 1 else f"item {k} of {what}"
        if not isinstance(o, Tensor):
            return f"{name} should be a tensor of shape {tuple(r.shape)}; yours is {_describe(o)} ({label})."
        if tuple(o.shape) != tuple(r.shape):
            return f"{name} has shape {tuple(o.shape)}; it should be {tuple(r.shape)} ({label})."
        o64, r64 = o.detach().double(), r.detach().double()
        if not torch.isfinite(o64).all():
            return f"{name} contains NaN or infinite values ({label})."
        gap = (o64 - r64).abs()
        if gap.max() > atol + 1e-4 * r64.abs().max():
            where = tuple(int(i) for i in torch.unravel_index(gap.argmax(), gap.shape))
            return (f"{name} differs from the reference ({label}): largest difference "
                    f"{gap.max().item():.3g} at index {where}.")
    return None


@dataclass
class Exercise:
    """One checked coding exercise.

    Attributes:
        name: the exercise's name (its key in ``sequencer_mini.exercises.EXERCISES``).
        chapter: the chapter it belongs to.
        task: what to write, one paragraph (the notebook states it too).
        reference: an answer that passes.
        mistakes: typical wrong answers, by name, each with the sentence that explains it.
        hints: shown one at a time by :meth:`hint`.
        cases: the test inputs.
        call: how an answer is run on one case's inputs (default: ``answer(**inputs)``); for a module
            exercise it builds the module, checks its parameters and loads the reference weights, and
            returns a sentence instead of an output when that fails.
        grads: the names of the inputs whose gradients are compared (tensors or modules).
        atol: the tolerance of every comparison.
    """

    name: str
    chapter: int
    task: str
    reference: Callable[..., Any]
    mistakes: dict[str, Mistake]
    hints: Sequence[str]
    cases: Sequence[Case]
    call: Callable[[Any, dict[str, Any]], Any] | None = None
    grads: Sequence[str] = ()
    atol: float = 1e-5
    _hint_index: int = field(default=0, repr=False)

    @property
    def _ref(self) -> str:
        """How a notebook names this exercise: ``ch05.block``."""
        return f"ch{self.chapter:02d}.{self.name}"

    # -- running one answer ----------------------------------------------------------------------------------
    def _run(self, answer: Any, inputs: dict[str, Any]) -> tuple[Any, str | None]:
        """``(output, None)``, or ``(None, sentence)`` when the answer could not be run."""
        try:
            out = self.call(answer, inputs) if self.call is not None else answer(**inputs)
        except NotImplementedError:
            return None, _STUB + ("the stub is not filled in yet. Write your code in the cell above, run it, "
                                  "then run this check again.")
        except Exception as err:  # the learner's code: any error becomes a sentence, never a traceback
            return None, f"your code raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if isinstance(out, _Refused):
            return None, out.reason
        return out, None

    def _grads(self, out: Any, inputs: dict[str, Any]) -> list[Tensor]:
        """Gradients of a fixed random projection of ``out`` with respect to the inputs named in ``grads``."""
        leaves: list[Tensor] = []
        for key in self.grads:
            value = inputs[key]
            leaves += list(value.parameters()) if isinstance(value, nn.Module) else [value]
        outs = [o for o in _flat(out) if isinstance(o, Tensor) and o.requires_grad]
        if not outs:
            return [torch.zeros_like(leaf) for leaf in leaves]
        gen = torch.Generator().manual_seed(1234)
        total = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
        grads = torch.autograd.grad(total, leaves, allow_unused=True)  # type: ignore[arg-type]
        return [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves, strict=True)]

    def _grad_names(self, inputs: dict[str, Any]) -> list[str]:
        names: list[str] = []
        for key in self.grads:
            value = inputs[key]
            if isinstance(value, nn.Module):
                names += [f"{key}.{n}" for n, _ in value.named_parameters()]
            else:
                names.append(key)
        return names

    def _diagnose(self, case: Case, out: Any, refused: str | None, grads: list[Tensor] | None = None) -> str:
        """The explanation of the registered mistake that behaves like the answer, or a general pointer."""
        for mistake in self.mistakes.values():
            inputs = case.make()
            m_out, m_refused = self._run(mistake.answer, inputs)
            if refused is not None or m_refused is not None:
                if refused is not None and refused == m_refused:
                    return " " + mistake.message
                continue
            try:
                if grads is None:
                    if _compare(out, m_out, "output", case.label, self.atol) is None:
                        return " " + mistake.message
                else:
                    m_grads = self._grads(m_out, inputs)
                    if all(_compare(g, m, "gradient", case.label, self.atol) is None
                           for g, m in zip(grads, m_grads, strict=True)):
                        return " " + mistake.message
            except Exception:  # a mistake that cannot even be compared is not this one
                continue
        return f" `{self._ref}.hint()` gives a hint, `{self._ref}.solution()` the reference."

    # -- the learner's API -----------------------------------------------------------------------------------
    def check(self, answer: Any) -> Result:
        """Run ``answer`` against the reference on every case; one message says what passed or what failed."""
        if not callable(answer):
            return Result(False, f"✗ check() needs your code itself: pass the function or class by its name, "
                                 f"without calling it (got {_describe(answer)}).")
        for case in self.cases:
            inputs = case.make()
            out, refused = self._run(answer, inputs)
            if refused is not None:
                if refused.startswith(_STUB):
                    return Result(False, f"✗ Not yet: {refused} `{self._ref}.hint()` gives a hint.")
                return Result(False, f"✗ On {case.label}: {refused}." + self._diagnose(case, None, refused))
            ref_inputs = case.make()
            ref, _ = self._run(self.reference, ref_inputs)
            problem = _compare(out, ref, "your output", case.label, self.atol)
            if problem is not None:
                return Result(False, "✗ " + problem[0].upper() + problem[1:] + self._diagnose(case, out, None))
            if self.grads:
                try:
                    mine = self._grads(out, inputs)
                except Exception as err:  # e.g. an output detached from the graph
                    return Result(False, f"✗ The values are right but no gradient flows back ({case.label}): "
                                         f"{type(err).__name__}. Avoid .detach(), .data, .item() and NumPy.")
                theirs = self._grads(ref, ref_inputs)
                for name, g, r in zip(self._grad_names(inputs), mine, theirs, strict=True):
                    problem = _compare(g, r, f"the gradient with respect to {name}", case.label, self.atol)
                    if problem is not None:
                        return Result(False, "✗ The values are right, but " + problem
                                      + self._diagnose(case, out, None, grads=mine))
        checked = "values and gradients" if self.grads else "values"
        return Result(True, f"✓ Correct: your code matches the reference ({checked}) on {len(self.cases)} random "
                            f"inputs: " + "; ".join(c.label for c in self.cases) + ".")

    def check_yours(self, answer: Any) -> Result:
        """:meth:`check` in a chapter's check cell: your answer on Colab and locally; under the book's tests
        (``SEQUENCER_BUDGET=ci``) the reference instead, so that an unfilled stub never fails a build, and the
        reference must pass."""
        if budget() == "ci":
            result = self.check(self.reference)
            assert result.passed, result.message  # the checker itself is broken, not the learner's code
            return Result(True, "(SEQUENCER_BUDGET=ci: the reference solution was checked, not the stub) "
                          + result.message)
        return self.check(answer)

    def hint(self) -> str:
        """The next hint (they cycle); returned so that a cell ending with ``ex.hint()`` shows it."""
        text = self.hints[self._hint_index % len(self.hints)]
        self._hint_index += 1
        return _Text(f"Hint {(self._hint_index - 1) % len(self.hints) + 1}/{len(self.hints)}: {text}")

    def solution(self) -> str:
        """The reference solution's source code."""
        return _Text(textwrap.dedent(inspect.getsource(self.reference)))


_STUB = "your code raised NotImplementedError: "


class _Text(str):
    """A string that a notebook shows as plain text (no quotes)."""

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class _Refused:
    """A module exercise's ``call`` returns this when the answer cannot be built or loaded."""

    reason: str


def refuse(reason: str) -> _Refused:
    """For a module exercise's ``call``: the answer cannot be run, for ``reason`` (a sentence, no traceback)."""
    return _Refused(reason)
