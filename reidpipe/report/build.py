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
from reidpipe.report.readers import load_arch, read_baseline, read_metrics
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


def build_report(
    params: Params, results_dir: str | Path, models_dir: str | Path, out_dir: str | Path
) -> ReportResult:
    """Write the report files into ``out_dir`` (each replaced atomically; others left alone)."""
    results_dir, models_dir, out_dir = Path(results_dir), Path(models_dir), Path(out_dir)
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
    opts = params.report
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    except OSError as exc:
        raise ReidpipeError(f"cannot write the report into {out_dir}: {exc.strerror}") from None
    try:
        (staging / FIGURES_DIR).mkdir()
        report_figures.cmc_figure({a.name: a.cmc for a in archs}, staging / FIGURES_DIR / "cmc.png")
        blocks: list[Block] = [
            Paragraph(
                f"Architectures: {', '.join(names)}. Built by `reidpipe report` from "
                f"`{results_dir}` and `{models_dir}`; nothing is recomputed."
            ),
            *metrics_section(archs, baseline, params.data.source, cross),
            Figure(
                f"{FIGURES_DIR}/cmc.png",
                "CMC curves of all architectures: solid = plain ranking, dashed = "
                "re-ranked; legend gives rank-1",
            ),
        ]
        blocks += validation_section(results_dir / VALIDATION_FILE)
        blocks += reproducibility_section(archs, baseline, spread)
        for arch in archs:
            blocks.append(Heading(2, f"Architecture {arch.name}"))
            top_k = min(
                opts.top_k,
                max(
                    (
                        len(top_indices(v, len(arch.gallery), opts.top_k))
                        for v in arch.per_query[f"top_{arch.ranking}"]
                    ),
                    default=0,
                ),
            )
            queries = sample_queries(arch, opts.sampled_queries, top_k)
            file = f"{FIGURES_DIR}/{arch.name}_matches.png"
            report_figures.matches_figure(
                arch.name, arch.ranking, queries, arch.gallery, max(top_k, 1), staging / file
            )
            blocks += [
                Heading(3, "Sampled matches"),
                Figure(
                    file,
                    f"{arch.name}: {len(queries)} sampled queries (seed "
                    f"{SAMPLE_SEED}) with their top-{top_k} gallery images",
                ),
            ]
            model = (
                attention_model(arch, models_dir, params.extract) if opts.attention_maps else None
            )
            if opts.attention_maps:
                blocks += attention_blocks(
                    arch, model, models_dir, queries, top_k, "sampled", staging
                )
            blocks += hardest_section(arch, opts.hardest_queries)
            if opts.attention_maps:
                blocks += attention_blocks(
                    arch,
                    model,
                    models_dir,
                    hardest_queries(arch, opts.hardest_queries, top_k),
                    top_k,
                    "hardest",
                    staging,
                )
            blocks += verification_section(arch, staging)
            blocks += training_section(arch, models_dir, staging)
            deploy_link = Path(os.path.relpath(results_dir / arch.name / DEPLOY_DIR, out_dir))
            blocks += export_section(arch, deploy_link.as_posix())
        title = "reidpipe report"
        (staging / REPORT_MARKDOWN).write_text(render_markdown(title, blocks), encoding="utf-8")
        (staging / REPORT_HTML).write_text(render_html(title, blocks, staging), encoding="utf-8")
        (staging / METRICS_FILE).write_text(  # allow_nan: DVC and browsers reject NaN
            json.dumps(
                {
                    **{a.name: a.metrics for a in archs},
                    **{f"{arch}@{test_set}": m for (test_set, arch), m in cross.items()},
                },
                indent=2,
                allow_nan=False,
            )
            + "\n",
            encoding="utf-8",
        )
        (staging / ENVIRONMENT_FILE).write_text(
            json.dumps(environments(archs), indent=2) + "\n", encoding="utf-8"
        )
        files = sorted(p.name for p in staging.iterdir())
        for name in files:
            if name == FIGURES_DIR:
                atomic.replace_dir(staging / name, out_dir / name)
            else:
                os.replace(staging / name, out_dir / name)
    except BaseException:
        if created:  # a failed first report leaves no empty folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ReportResult(files=files, baseline=baseline.note)
