"""The report as a list of blocks (headings, paragraphs, tables, figures), rendered to Markdown
and HTML by ``render`` so both documents cannot disagree."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Metric:
    """A fraction shown as a percentage, with its change in points against the baseline."""

    value: float
    delta: float | None = None

    def text(self) -> str:
        if math.isnan(self.value):
            return "n/a"
        if self.delta is None:
            return f"{100 * self.value:.1f}"
        return f"{100 * self.value:.1f} ({100 * self.delta:+.1f})"


Cell = str | int | float | Metric


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]


@dataclass
class Figure:
    file: str
    caption: str


Block = Heading | Paragraph | Bullets | Table | Figure
