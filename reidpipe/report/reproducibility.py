"""The report's "Reproducibility" section: where each arch was trained, how that differs between
the archs and from the baseline's, and how far the metrics move over training seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reidpipe.environment import CONFIG_KEY, DECIDING_KEYS, differences, shown
from reidpipe.report.document import Block, Bullets, Heading, Paragraph, Table
from reidpipe.report.readers import METRIC_COLUMNS, ArchResults, Baseline


def environments(archs: Sequence[ArchResults]) -> dict[str, dict[str, Any]]:
    """Each arch's recorded training environment (archs trained before records existed: none)."""
    return {
        arch.name: arch.config[CONFIG_KEY]
        for arch in archs
        if arch.config and isinstance(arch.config.get(CONFIG_KEY), dict)
    }


def environment_blocks(
    recorded: Mapping[str, Mapping[str, Any]], baseline: Baseline
) -> list[Block]:
    if not recorded:
        return [
            Paragraph(
                "No training environment recorded (models trained before reidpipe recorded one)."
            )
        ]
    names = list(recorded)
    blocks: list[Block] = [
        Table(
            ["", *names],
            [
                [key, *(shown(recorded[n].get(key, "unknown")) for n in names)]
                for key in DECIDING_KEYS
            ],
        )
    ]
    notes = [
        f"{a} vs {b}: {'; '.join(found)}"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if (found := differences(recorded[a], recorded[b]))
    ]
    notes += [
        f"{name}, baseline vs this run: {'; '.join(found)}"
        for name in names
        if baseline.environment
        and name in baseline.environment
        and (found := differences(baseline.environment[name], recorded[name]))
    ]
    if notes:
        blocks += [
            Paragraph(
                "These runs differ in what can decide floating-point results, so "
                "their metrics may differ as runs of different seeds do (see the "
                "seed spread) rather than repeat bit for bit:"
            ),
            Bullets(notes),
        ]
    else:
        blocks.append(
            Paragraph(
                "Every run compared here (the archs and, where committed, the "
                "baseline's) was trained in the same environment."
            )
        )
    return blocks


def spread_blocks(spread: Mapping[str, Any]) -> list[Block]:
    seeds = ", ".join(map(str, spread["seeds"]))
    rows = []
    for arch, rankings in spread["archs"].items():
        for ranking, metrics in rankings.items():
            for key, title in METRIC_COLUMNS:
                stats = metrics[key]
                single = stats.get("single")
                rows.append(
                    [
                        arch,
                        ranking,
                        title,
                        "—" if single is None else f"{100 * single:.1f}",
                        f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}",
                        f"{100 * stats['min']:.1f}–{100 * stats['max']:.1f}",
                    ]
                )
    return [
        Paragraph(
            f"Each arch trained once per seed ({seeds}), everything else equal: mean ± "
            "sample standard deviation and min–max over the seeds, in percent, next to "
            "the single run's value."
        ),
        Table(["arch", "ranking", "metric", "single run", "mean ± std", "min–max"], rows),
    ]


def reproducibility_section(
    archs: Sequence[ArchResults], baseline: Baseline, spread: Mapping[str, Any] | None
) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Reproducibility"),
        Heading(3, "Training environment"),
        *environment_blocks(environments(archs), baseline),
    ]
    if spread is not None:
        blocks += [Heading(3, "Seed spread"), *spread_blocks(spread)]
    return blocks
