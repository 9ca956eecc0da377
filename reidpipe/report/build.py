"""``reidpipe report``: reports/ rebuilt from the stage outputs alone (no embedding is recomputed).

Writes ``index.md`` (figures as sibling PNGs), a self-contained ``index.html`` (figures as base64
data URIs, inline CSS), ``metrics.json`` (``{arch: {"plain": {...}, "reranked": {...}}}``, the DVC
metrics file), ``environment.json`` (each arch's training environment, kept in git so the next
report and the CI gate can say what differs) and the figures ``figures/cmc.png``,
``figures/<arch>_matches.png``, ``figures/<arch>_training.png``,
``figures/<arch>_verification.png`` and, with ``report.attention_maps``, the Grad-CAM figures
``figures/<arch>_attention_sampled.png`` and ``figures/<arch>_attention_hardest.png``
(``reidpipe.report.attention``; they need each arch's trained model).
Deltas are taken against the ``metrics.json`` committed at git HEAD in the output folder, when
there is one. Both documents are rendered from one list of blocks, so they cannot disagree.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reidpipe import atomic
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    CROSS_DIR,
    DEPLOY_DIR,
    ENVIRONMENT_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    REPORT_HTML,
    REPORT_MARKDOWN,
    SEED_SPREAD_FILE,
    VALIDATION_FILE,
)
from reidpipe.params import Params
from reidpipe.report import figures as report_figures
from reidpipe.report.attention import attention_blocks, attention_model
from reidpipe.report.document import Block, Figure, Heading, Paragraph
from reidpipe.report.readers import ArchResults, Baseline, load_arch, read_baseline, read_metrics
from reidpipe.report.render import render_html, render_markdown
from reidpipe.report.reproducibility import environments, reproducibility_section
from reidpipe.report.sections import (
    SAMPLE_SEED,
    export_section,
    hardest_queries,
    hardest_section,
    metrics_section,
    sample_queries,
    top_indices,
    training_section,
    validation_section,
    verification_section,
)
from reidpipe.report.spread import read_spread


@dataclass
class ReportResult:
    files: list[str] = field(default_factory=list)
    baseline: str = ""


@dataclass
class _Inputs:
    """What the report is built from, read before anything is written."""

    params: Params
    results_dir: Path
    models_dir: Path
    out_dir: Path
    archs: list[ArchResults]
    cross: dict[tuple[str, str], dict[str, dict[str, Any]]]  # (test set, arch) -> metrics
    baseline: Baseline
    spread: dict[str, Any] | None  # pipeline.seeds' spread, where this run measures one


def _read_inputs(params: Params, results_dir: Path, models_dir: Path, out_dir: Path) -> _Inputs:
    names = list(params.pipeline.archs)
    if not names:
        raise ReidpipeError("params: pipeline.archs is empty; nothing to report")
    archs = [load_arch(name, results_dir, models_dir) for name in names]
    cross = {
        (test_set, name): read_metrics(results_dir / name / CROSS_DIR / test_set / METRICS_FILE)
        for test_set in params.cross_sources()
        for name in names
    }
    baseline = read_baseline(out_dir)
    # The spread is an input only where this run measures one (pipeline.seeds)
    spread = read_spread(out_dir / SEED_SPREAD_FILE) if params.spread_seeds() else None
    return _Inputs(params, results_dir, models_dir, out_dir, archs, cross, baseline, spread)


def _staging_dir(out_dir: Path) -> Path:
    """A fresh folder inside ``out_dir`` (created if need be) to write the report into."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    except OSError as exc:
        raise ReidpipeError(f"cannot write the report into {out_dir}: {exc.strerror}") from None


def _overview_blocks(inputs: _Inputs, staging: Path) -> list[Block]:
    """What comes before the archs' sections: metrics of all archs and test sets, the CMC
    curves, the dataset validation and reproducibility."""
    archs = inputs.archs
    report_figures.cmc_figure({a.name: a.cmc for a in archs}, staging / FIGURES_DIR / "cmc.png")
    blocks: list[Block] = [
        Paragraph(
            f"Architectures: {', '.join(a.name for a in archs)}. Built by `reidpipe report` from "
            f"`{inputs.results_dir}` and `{inputs.models_dir}`; nothing is recomputed."
        ),
        *metrics_section(archs, inputs.baseline, inputs.params.data.source, inputs.cross),
        Figure(
            f"{FIGURES_DIR}/cmc.png",
            "CMC curves of all architectures: solid = plain ranking, dashed = "
            "re-ranked; legend gives rank-1",
        ),
    ]
    blocks += validation_section(inputs.results_dir / VALIDATION_FILE)
    blocks += reproducibility_section(archs, inputs.baseline, inputs.spread)
    return blocks


def _shown_top_k(arch: ArchResults, top_k: int) -> int:
    """report.top_k, or fewer where no query has that many ranked gallery items left."""
    longest = max(
        (
            len(top_indices(v, len(arch.gallery), top_k))
            for v in arch.per_query[f"top_{arch.ranking}"]
        ),
        default=0,
    )
    return min(top_k, longest)


def _matches_blocks(
    arch: ArchResults, queries: list[report_figures.SampledQuery], top_k: int, staging: Path
) -> list[Block]:
    file = f"{FIGURES_DIR}/{arch.name}_matches.png"
    report_figures.matches_figure(
        arch.name, arch.ranking, queries, arch.gallery, max(top_k, 1), staging / file
    )
    return [
        Heading(3, "Sampled matches"),
        Figure(
            file,
            f"{arch.name}: {len(queries)} sampled queries (seed "
            f"{SAMPLE_SEED}) with their top-{top_k} gallery images",
        ),
    ]


def _arch_blocks(inputs: _Inputs, arch: ArchResults, staging: Path) -> list[Block]:
    """One arch's section: sampled matches, hardest queries (each with their attention maps
    where report.attention_maps asks), verification, training and deployment."""
    opts, models_dir = inputs.params.report, inputs.models_dir
    blocks: list[Block] = [Heading(2, f"Architecture {arch.name}")]
    top_k = _shown_top_k(arch, opts.top_k)
    queries = sample_queries(arch, opts.sampled_queries, top_k)
    blocks += _matches_blocks(arch, queries, top_k, staging)
    model = (
        attention_model(arch, models_dir, inputs.params.extract) if opts.attention_maps else None
    )
    if opts.attention_maps:
        blocks += attention_blocks(arch, model, models_dir, queries, top_k, "sampled", staging)
    blocks += hardest_section(arch, opts.hardest_queries)
    if opts.attention_maps:
        hardest = hardest_queries(arch, opts.hardest_queries, top_k)
        blocks += attention_blocks(arch, model, models_dir, hardest, top_k, "hardest", staging)
    blocks += verification_section(arch, staging)
    blocks += training_section(arch, models_dir, staging)
    deploy_link = Path(os.path.relpath(inputs.results_dir / arch.name / DEPLOY_DIR, inputs.out_dir))
    blocks += export_section(arch, deploy_link.as_posix())
    return blocks


def _write_files(inputs: _Inputs, blocks: list[Block], staging: Path) -> None:
    """Both documents, metrics.json and environment.json."""
    title = "reidpipe report"
    (staging / REPORT_MARKDOWN).write_text(render_markdown(title, blocks), encoding="utf-8")
    (staging / REPORT_HTML).write_text(render_html(title, blocks, staging), encoding="utf-8")
    metrics = {
        **{a.name: a.metrics for a in inputs.archs},
        **{f"{arch}@{test_set}": m for (test_set, arch), m in inputs.cross.items()},
    }
    (staging / METRICS_FILE).write_text(  # allow_nan: DVC and browsers reject NaN
        json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    (staging / ENVIRONMENT_FILE).write_text(
        json.dumps(environments(inputs.archs), indent=2) + "\n", encoding="utf-8"
    )


def _publish(staging: Path, out_dir: Path) -> list[str]:
    """Each file (and the figures folder) of ``staging`` moved over its namesake in ``out_dir``."""
    files = sorted(p.name for p in staging.iterdir())
    for name in files:
        if name == FIGURES_DIR:
            atomic.replace_dir(staging / name, out_dir / name)
        else:
            os.replace(staging / name, out_dir / name)
    return files


def build_report(
    params: Params, results_dir: str | Path, models_dir: str | Path, out_dir: str | Path
) -> ReportResult:
    """Write the report files into ``out_dir`` (each replaced atomically; others left alone)."""
    out_dir = Path(out_dir)
    inputs = _read_inputs(params, Path(results_dir), Path(models_dir), out_dir)
    created = not out_dir.exists()
    staging = _staging_dir(out_dir)
    try:
        (staging / FIGURES_DIR).mkdir()
        blocks = _overview_blocks(inputs, staging)
        for arch in inputs.archs:
            blocks += _arch_blocks(inputs, arch, staging)
        _write_files(inputs, blocks, staging)
        files = _publish(staging, out_dir)
    except BaseException:
        if created:  # a failed first report leaves no empty folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ReportResult(files=files, baseline=inputs.baseline.note)
