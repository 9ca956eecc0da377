"""``reidpipe gate``: a run's metrics against a committed baseline, within bands from the seed spread.

Bit-equality holds only where the baseline was made: same CPU, packages, threads (README,
"Reproducibility"). Elsewhere float differences grow over a training run into a different
trajectory, which moves the metrics the way another seed does. So each metric may move from the
baseline by what the seeds move it:

    |value - baseline| <= t(0.995, n - 1) * s * sqrt(2)

the 99 % two-sided prediction bound for the difference of two runs that differ as two seeds do,
with ``s`` the sample standard deviation of the ``n`` seed runs (Student's t, since ``s`` comes
from a few runs). A metric outside its band is a regression to look at, not drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from scipy import stats

from reidpipe.environment import differences
from reidpipe.report.readers import METRIC_COLUMNS, RANKINGS

CONFIDENCE = 0.99


def band(std: float, runs: int) -> float:
    """Half-width of a metric's band, from its standard deviation over ``runs`` seed runs."""
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, runs - 1)) * std * math.sqrt(2)


@dataclass
class GateRow:
    arch: str
    ranking: str
    metric: str
    baseline: float | None
    value: float | None
    band: float | None
    problem: str = ""  # why the row fails without a comparison (a missing value or spread)

    @property
    def passed(self) -> bool:
        if self.problem or self.baseline is None or self.value is None or self.band is None:
            return False
        return abs(self.value - self.baseline) <= self.band


def gate_rows(baseline: Mapping[str, Any], current: Mapping[str, Any],
              spread: Mapping[str, Any]) -> list[GateRow]:
    """One row per arch, ranking and metric of the baseline (cross-domain entries, ``arch@set``,
    have no spread of their own and are not gated)."""
    runs = len(spread["seeds"])
    rows = []
    for arch in (name for name in baseline if "@" not in name):
        for ranking in (r for r in RANKINGS if r in baseline[arch]):
            for key, _ in METRIC_COLUMNS:
                expected = baseline[arch][ranking].get(key)
                value = current.get(arch, {}).get(ranking, {}).get(key)
                measured = spread["archs"].get(arch, {}).get(ranking, {}).get(key)
                problem = ("not in this run's metrics" if value is None else
                           "no seed spread measured for it" if measured is None else "")
                rows.append(GateRow(arch, ranking, key, expected, value,
                                    band(measured["std"], runs) if measured else None, problem))
    return rows


def _fraction(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def gate_table(rows: list[GateRow]) -> str:
    lines = ["| arch | ranking | metric | baseline | this run | difference | band (±) | result |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        moved = (f"{row.value - row.baseline:+.4f}"
                 if row.value is not None and row.baseline is not None else "—")
        result = "pass" if row.passed else f"**FAIL**{': ' + row.problem if row.problem else ''}"
        lines.append(f"| {row.arch} | {row.ranking} | {row.metric} | {_fraction(row.baseline)} | "
                     f"{_fraction(row.value)} | {moved} | {_fraction(row.band)} | {result} |")
    return "\n".join(lines)


def environment_notes(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Per arch, how the environment of this run's training differs from the baseline's."""
    notes = []
    for arch in sorted(set(baseline) | set(current)):
        found = differences(baseline.get(arch, {}), current.get(arch, {}))
        if found:
            notes.append(f"{arch}: trained in another environment than the baseline "
                         f"(baseline vs this run): {'; '.join(found)}")
    return notes
