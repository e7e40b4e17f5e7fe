"""Confusion matrices of the classifying scorers: what a caption named (rows) against what the
scorer read in the picture (columns). Colour and shape come from the shapes scorer (column "none":
no shape was found for that part of the caption), digits from the digits classifier."""

from __future__ import annotations

from ..data.digits import DIGIT_WORDS
from ..data.shapes import COLORS, SHAPES

NOT_FOUND = "none"
# attribute -> (row labels, column labels); rows are what a caption can name
LABELS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "color": (tuple(COLORS), tuple(COLORS) + (NOT_FOUND,)),
    "shape": (SHAPES, SHAPES + (NOT_FOUND,)),
    "digit": (tuple(str(d) for d in range(len(DIGIT_WORDS))), tuple(str(d) for d in range(len(DIGIT_WORDS)))),
}

Confusion = dict[str, dict[str, dict[str, int]]]  # attribute -> named -> read -> count


def _label(value) -> str:
    return NOT_FOUND if value is None else str(value)


def add_readings(confusion: Confusion, readings: dict[str, list[tuple]]) -> None:
    """Count one picture's (named, read) pairs; an attribute's full matrix appears on its first pair."""
    for attribute, pairs in readings.items():
        rows, columns = LABELS[attribute]
        matrix = confusion.setdefault(attribute, {row: {column: 0 for column in columns} for row in rows})
        for named, read in pairs:
            matrix[_label(named)][_label(read)] += 1


def accuracy_by_row(matrix: dict[str, dict[str, int]]) -> dict[str, float | None]:
    """Share read right per named value (None: the caption never named it)."""
    return {row: (counts.get(row, 0) / sum(counts.values()) if sum(counts.values()) else None)
            for row, counts in matrix.items()}


def most_confused(matrix: dict[str, dict[str, int]]) -> tuple[str, str, int] | None:
    """The largest off-diagonal cell: (named, read, count), None when every reading was right."""
    cells = [(count, named, read) for named, counts in matrix.items() for read, count in counts.items()
             if read != named and count]
    if not cells:
        return None
    count, named, read = max(cells, key=lambda c: (c[0], c[1], c[2]))
    return named, read, count
