"""Accuracy per group (category) and overall: the one tally of ``reclip eval sim`` and the demo.

A cell is ``{'n': expressions, 'correct': right answers, 'accuracy': correct / n}``
(a fraction; 0.0 for an empty group). ``reclip eval refcoco`` / ``jsonl`` summarise stored
per-record entries instead (:func:`reclip_ros.evaluation.engine.summarize`), with failures
counted separately, in percent.
"""

from __future__ import annotations

from typing import Dict, Iterable

OVERALL = 'overall'


class AccuracyTally:
    """Counts right answers per group and overall.

    Args:
        groups: groups listed even when nothing is added to them, in this order
            (others follow in the order they first appear); ``overall`` comes last.
    """

    def __init__(self, groups: Iterable[str] = ()) -> None:
        self._cells: Dict[str, dict] = {group: self._empty() for group in groups}
        self._overall = self._empty()

    @staticmethod
    def _empty() -> dict:
        return {'n': 0, 'correct': 0, 'accuracy': 0.0}

    def add(self, group: str, correct: bool) -> None:
        """Count one answer of *group*."""
        for cell in (self._cells.setdefault(group, self._empty()), self._overall):
            cell['n'] += 1
            cell['correct'] += int(bool(correct))
            cell['accuracy'] = cell['correct'] / cell['n']

    def table(self) -> Dict[str, dict]:
        """``{group: cell, ..., 'overall': cell}`` (copies)."""
        out = {group: dict(cell) for group, cell in self._cells.items()}
        out[OVERALL] = dict(self._overall)
        return out
