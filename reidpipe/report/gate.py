"""``reidpipe gate``: a run's metrics against a committed baseline: bit-equal where the run's
environment is the baseline's, within bands from the seed spread where it is not.

Where the recorded environment (``reidpipe.environment``: CPU, kernels, packages, threads, GPUs)
is the baseline's, training reproduces its bits, so any difference is a real change. Elsewhere
float differences grow over a training run into another trajectory, which moves the metrics the
way another seed does, so each metric must lie within the 99 % prediction interval of one more
run, from the committed runs of the recipe (the seed-spread runs and the baseline, ``n`` in all):

    |value - mean| <= t(0.995, n - 1) * s * sqrt(1 + 1/n)

``mean`` and ``s`` (sample standard deviation) over the ``n`` runs; Student's t since ``s`` comes
from a few runs. The spread must have been measured beside this baseline (its record of the single
run equals the baseline's value); a stale one is a failure, not a band.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scipy import stats

from reidpipe.environment import differences
from reidpipe.report.readers import METRIC_COLUMNS, RANKINGS

CONFIDENCE = 0.99


def prediction_band(runs: list[float]) -> tuple[float, float]:
    """(centre, half-width) of the interval one more run falls in with ``CONFIDENCE``."""
    n = len(runs)
    half = (
        float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))
        * statistics.stdev(runs)
        * math.sqrt(1 + 1 / n)
    )
    return statistics.fmean(runs), half


@dataclass
class GateRow:
    arch: str
    ranking: str
    metric: str
    baseline: float | None
    value: float | None
    centre: float | None = None
    band: float | None = None  # None with ``exact``: the value must equal the baseline
    exact: bool = False
    problem: str = ""  # why the row fails without a comparison

    @property
    def passed(self) -> bool:
        if self.problem or self.baseline is None or self.value is None:
            return False
        if self.exact:
            return self.value == self.baseline
        return self.band is not None and abs(self.value - self.centre) <= self.band


def _row(
    arch: str,
    ranking: str,
    key: str,
    expected: float | None,
    value: float | None,
    measured: Mapping[str, Any] | None,
    exact: bool,
) -> GateRow:
    row = GateRow(arch, ranking, key, expected, value, exact=exact)
    if value is None:
        row.problem = "not in this run's metrics"
    elif exact:
        pass
    elif measured is None:
        row.problem = "no seed spread measured for it"
    elif measured.get("single") != expected:
        row.problem = (
            f"the seed spread was measured beside another baseline "
            f"({measured.get('single')}): measure it again (config/seeds.yaml)"
        )
    else:
        row.centre, row.band = prediction_band([*measured["by_seed"].values(), expected])
    return row


def gate_rows(
    baseline: Mapping[str, Any],
    current: Mapping[str, Any],
    spread: Mapping[str, Any],
    same_environment: frozenset[str] = frozenset(),
) -> list[GateRow]:
    """One row per arch, ranking and metric of the baseline; the archs in ``same_environment``
    were trained where their baseline was, so theirs must be equal (cross-domain entries,
    ``arch@set``, have no spread of their own and are not gated)."""
    rows = []
    for arch in (name for name in baseline if "@" not in name):
        for ranking in (r for r in RANKINGS if r in baseline[arch]):
            for key, _ in METRIC_COLUMNS:
                rows.append(
                    _row(
                        arch,
                        ranking,
                        key,
                        baseline[arch][ranking].get(key),
                        current.get(arch, {}).get(ranking, {}).get(key),
                        spread["archs"].get(arch, {}).get(ranking, {}).get(key),
                        arch in same_environment,
                    )
                )
    return rows


def same_environment(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> frozenset[str]:
    """The archs recorded in both environments with no deciding difference."""
    return frozenset(
        arch
        for arch in set(baseline) & set(current)
        if not differences(baseline[arch], current[arch])
    )


def _fraction(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def gate_table(rows: list[GateRow]) -> str:
    lines = [
        "| arch | ranking | metric | baseline | this run | difference | allowed | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        moved = (
            f"{row.value - row.baseline:+.4f}"
            if row.value is not None and row.baseline is not None
            else "—"
        )
        allowed = (
            "equal (same environment)"
            if row.exact
            else "—"
            if row.band is None
            else f"{row.centre - row.band:.4f} to {row.centre + row.band:.4f}"
        )
        result = "pass" if row.passed else f"**FAIL**{': ' + row.problem if row.problem else ''}"
        lines.append(
            f"| {row.arch} | {row.ranking} | {row.metric} | {_fraction(row.baseline)} | "
            f"{_fraction(row.value)} | {moved} | {allowed} | {result} |"
        )
    return "\n".join(lines)


def environment_notes(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Per arch, how the environment of this run's training differs from the baseline's."""
    notes = []
    for arch in sorted(set(baseline) | set(current)):
        found = differences(baseline.get(arch, {}), current.get(arch, {}))
        if found:
            notes.append(
                f"{arch}: trained in another environment than the baseline "
                f"(baseline vs this run): {'; '.join(found)}"
            )
    return notes
