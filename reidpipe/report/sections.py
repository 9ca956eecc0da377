"""The report's sections as blocks: metrics with deltas, hardest queries, training curves,
export parity and TensorRT status, dataset validation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    DEPLOY_DIR,
    FIGURES_DIR,
    ONNX_DIR,
    PACKAGE_MANIFEST_FILE,
    PARITY_FILE,
    TENSORRT_DIR,
    TRAIN_CONFIG_FILE,
    TRT_STATUS_FILE,
    VERIFICATION_FILE,
)
from reidpipe.json_files import read_json_file
from reidpipe.report import figures as report_figures
from reidpipe.report.document import (
    Block,
    Bullets,
    Cell,
    Figure,
    Heading,
    Metric,
    Paragraph,
    Table,
)
from reidpipe.report.readers import METRIC_COLUMNS, ArchResults, Baseline

SAMPLE_SEED = 0
_BATCH_HEADERS = ["graph", "batch", "max abs diff", "1 - min cosine"]


def _baseline_value(baseline: Baseline, arch: str, ranking: str, key: str) -> float | None:
    try:
        value = baseline.metrics[arch][ranking][key]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * float(value):.1f}%"


def metrics_section(
    archs: Sequence[ArchResults],
    baseline: Baseline,
    main_set: str,
    cross: Mapping[tuple[str, str], dict[str, dict[str, Any]]],
) -> list[Block]:
    """One table, test set x arch: ``main_set`` (data.source) from ``archs``, then each further
    test set from ``cross`` ((test set, arch) -> metrics; baseline key ``arch@test set``)."""
    entries = [(main_set, a.name, a.name, a.metrics) for a in archs]
    entries += [
        (test_set, arch, f"{arch}@{test_set}", metrics)
        for (test_set, arch), metrics in cross.items()
    ]
    rows: list[list[Cell]] = []
    new = []
    for test_set, arch, key_name, metrics in entries:
        if baseline.metrics is not None and key_name not in baseline.metrics:
            new.append(key_name)
        for ranking, block in metrics.items():
            cells: list[Cell] = [test_set, arch, report_figures.RANKING_LABELS[ranking]]
            for key, _ in METRIC_COLUMNS:
                value = float(block[key])
                before = _baseline_value(baseline, key_name, ranking, key)
                cells.append(Metric(value, None if before is None else value - before))
            cells.append(block.get("num_queries", "n/a"))
            rows.append(cells)
    cross_note = (
        f" Test sets: {main_set} (the main source) and, across domains, "
        f"{', '.join(dict.fromkeys(t for t, _ in cross))}."
        if cross
        else ""
    )
    blocks: list[Block] = [
        Heading(2, "Retrieval metrics"),
        Paragraph(
            "Query vs gallery, in percent. mAP: mean average precision; R1/R5/R10: "
            "matching rate within the top 1/5/10 (CMC); mINP: mean inverse negative "
            "penalty. Re-ranked: k-reciprocal re-ranking (Zhong et al., 2017)."
            + cross_note
            + " "
            + baseline.note
        ),
        Table(
            ["test set", "arch", "ranking"]
            + [f"{title} (%)" for _, title in METRIC_COLUMNS]
            + ["queries"],
            rows,
        ),
    ]
    if new:
        blocks.append(Paragraph(f"Not in the baseline (no delta): {', '.join(new)}."))
    return blocks


def sample_queries(arch: ArchResults, count: int, top_k: int) -> list[report_figures.SampledQuery]:
    """A fixed-seed sample of the queries that have a true match, in query order."""
    ranking = arch.ranking
    frame = arch.per_query
    candidates = np.flatnonzero(frame[f"ap_{ranking}"].notna().to_numpy())
    rng = np.random.default_rng(SAMPLE_SEED)
    chosen = np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    return [_query_row(arch, int(index), top_k) for index in chosen]


def _query_row(arch: ArchResults, index: int, top_k: int) -> report_figures.SampledQuery:
    """The query at position ``index`` of the per-query table, with its top-k gallery items."""
    ranking = arch.ranking
    row = arch.per_query.iloc[index]
    return report_figures.SampledQuery(
        path=str(arch.query["path"].iloc[index]),
        pid=int(row["pid"]),
        camid=int(row["camid"]),
        ap=float(row[f"ap_{ranking}"]),
        top=top_indices(row[f"top_{ranking}"], len(arch.gallery), top_k),
    )


def _hardest_rows(arch: ArchResults, count: int) -> pd.DataFrame:
    """The ``count`` scored queries with the lowest AP, lowest first."""
    ranking = arch.ranking
    frame = arch.per_query.dropna(subset=[f"ap_{ranking}"])
    return frame.sort_values(f"ap_{ranking}", kind="stable").head(count)


def hardest_queries(arch: ArchResults, count: int, top_k: int) -> list[report_figures.SampledQuery]:
    """The hardest-query table's queries, in its order, with their top-k gallery items."""
    positions = arch.per_query.index.get_indexer(_hardest_rows(arch, count).index)
    return [_query_row(arch, int(position), top_k) for position in positions]


def top_indices(value: Any, gallery_size: int, top_k: int) -> list[int]:
    if not isinstance(value, str):  # an empty cell: nothing left after filtering
        return []
    try:
        indices = [int(v) for v in value.split()][:top_k]
    except ValueError:
        raise ReidpipeError(
            f"per_query.csv: top-k cell {value!r} is not space-separated gallery indices"
        ) from None
    if any(not 0 <= i < gallery_size for i in indices):
        raise ReidpipeError(
            f"per_query.csv: top-k cell {value!r} names a gallery index outside "
            f"0..{gallery_size - 1} (gallery.csv has {gallery_size} rows)"
        )
    return indices


def hardest_section(arch: ArchResults, count: int) -> list[Block]:
    ranking = arch.ranking
    frame = _hardest_rows(arch, count)
    headers = ["query", "identity", "camera"]
    for r in arch.metrics:
        label = report_figures.RANKING_LABELS[r]
        headers += [f"AP {label} (%)", f"first-hit rank {label}"]
    rows: list[list[Cell]] = []
    for _, row in frame.iterrows():
        cells: list[Cell] = [Path(str(row["path"])).name, int(row["pid"]), int(row["camid"])]
        for r in arch.metrics:
            first = row[f"first_hit_{r}"]
            cells += [_pct(row[f"ap_{r}"]).rstrip("%"), "n/a" if pd.isna(first) else int(first)]
        rows.append(cells)
    skipped = int(arch.per_query[f"ap_{ranking}"].isna().sum())
    text = (
        f"The {len(rows)} queries with the lowest AP ({report_figures.RANKING_LABELS[ranking]} "
        "ranking), with the rank of their first true match (1 = top)."
    )
    if skipped:
        text += f" {skipped} queries without any true match in the gallery are not scored."
    return [Heading(3, "Hardest queries"), Paragraph(text), Table(headers, rows)]


def _config_summary(config: dict[str, Any], path: Path) -> str:
    model, dataset, train = (config.get(k) or {} for k in ("model", "dataset", "train"))
    optim = train.get("optim") or {}
    parts = [
        f"backbone `{model.get('backbone', '?')}`",
        f"input {model.get('input_height', '?')}x{model.get('input_width', '?')} (HxW)",
        f"feat_dim {model.get('feat_dim', '?')}",
        f"{train.get('num_epochs', '?')} epochs",
        f"{optim.get('name', '?')} base lr {optim.get('base_lr', '?')}",
        f"batch {dataset.get('batch_size', '?')} (P x K, K = {dataset.get('num_instances', '?')})",
    ]
    return f"Recipe (`{path}`): " + ", ".join(parts) + "."


def training_section(arch: ArchResults, models_dir: Path, out_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading(3, "Training")]
    if arch.config is not None:
        blocks.append(
            Paragraph(_config_summary(arch.config, models_dir / arch.name / TRAIN_CONFIG_FILE))
        )
    if arch.train_log is None or arch.train_log.empty:
        blocks.append(Paragraph(f"No training log (`{models_dir / arch.name / 'train_log.csv'}`)."))
        return blocks
    file = f"{FIGURES_DIR}/{arch.name}_training.png"
    report_figures.training_figure(arch.name, arch.train_log, out_dir / file)
    last = arch.train_log.iloc[-1]
    text = f"{int(last['epoch'])} epochs logged; final loss {float(last['loss']):.3f}."
    if "seconds" in arch.train_log.columns:
        seconds = arch.train_log["seconds"].astype(float)
        text += (
            f" Training time {seconds.sum() / 60:.1f} min (sum of epoch times, validation "
            f"included); last epoch {seconds.iloc[-1]:.1f} s."
        )
    blocks += [
        Paragraph(text),
        Figure(
            file, f"{arch.name}: loss terms, learning rate and validation mAP / rank-1 per epoch"
        ),
    ]
    return blocks


def _batch_rows(label: str, entries: Sequence[dict[str, Any]]) -> list[list[Cell]]:
    return [
        [
            label,
            row.get("batch_size", "?"),
            f"{row.get('max_abs_diff', math.nan):.2e}",
            f"{1 - row.get('min_cosine', math.nan):.1e}",
        ]
        for row in entries
    ]


def _retrieval_text(
    retrieval: dict[str, Any], ref: str, new: str, ref_label: str, new_label: str, gate: Any
) -> str:
    a, b = retrieval.get(ref) or {}, retrieval.get(new) or {}
    deltas = retrieval.get("delta_points") or {}
    parts = [
        f"{title} {ref_label} {_pct(a.get(key))} vs {new_label} {_pct(b.get(key))} "
        f"(|delta| {deltas.get(key, math.nan):.3f} points)"
        for key, title in (("mAP", "mAP"), ("rank1", "R1"))
    ]
    return "; ".join(parts) + f"; gate {gate if gate is not None else '?'} points"


def _parity_blocks(parity: dict[str, Any] | None) -> list[Block]:
    if parity is None:
        return [Paragraph(f"ONNX export: not run (no {ONNX_DIR}/{PARITY_FILE}).")]
    gates = parity.get("gates") or {}
    blocks: list[Block] = [
        Paragraph(
            f"ONNX export: {parity.get('status', 'unknown')}, opset "
            f"{parity.get('opset', '?')}, exported in {parity.get('export_seconds', '?')} "
            f"s. ONNX Runtime vs PyTorch: "
            + _retrieval_text(
                parity.get("retrieval") or {},
                "torch",
                "onnx",
                "PyTorch",
                "ONNX Runtime",
                gates.get("max_metric_delta_points"),
            )
            + "; per-batch gates: max abs diff "
            f"{gates.get('max_abs_diff', '?')}, min cosine {gates.get('min_cosine', '?')}."
        )
    ]
    rows = _batch_rows("ONNX FP32 vs PyTorch", parity.get("batch_parity") or [])
    rows += _batch_rows("ONNX FP16 vs FP32", (parity.get("fp16") or {}).get("batch_parity") or [])
    rows += _batch_rows("ONNX INT8 vs FP32", (parity.get("int8") or {}).get("batch_parity") or [])
    if rows:
        blocks.append(Table(_BATCH_HEADERS, rows))
    blocks.append(Paragraph(_int8_text(parity.get("int8"))))
    return blocks


def _int8_text(int8: dict[str, Any] | None) -> str:
    if not int8:
        return "INT8: disabled (export.int8 is off)."
    if int8.get("status") != "passed":
        return f"INT8: no {int8.get('file', 'INT8 file')} (reason: {int8.get('reason')})."
    calibration = int8.get("calibration") or {}
    gates = int8.get("gates") or {}
    return (
        f"INT8: `{int8.get('file')}` ({int8.get('format')}, weights "
        f"{int8.get('weights')}, {int8.get('activations')} activations), calibrated on "
        f"{calibration.get('images', '?')} train images (seed {calibration.get('seed', '?')}, "
        f"{_calibration_method(calibration)})"
        ". ONNX Runtime FP32 vs INT8: "
        + _retrieval_text(
            int8.get("retrieval") or {},
            "onnx",
            "int8",
            "FP32",
            "INT8",
            gates.get("max_metric_delta_points"),
        )
        + f"; min cosine gate "
        f"{gates.get('min_cosine', '?')}."
    )


def _calibration_method(calibration: dict[str, Any]) -> str:
    method = str(calibration.get("method", "?"))
    if "percentile" in calibration:
        return f"{method} {calibration['percentile']}"
    return method


def _latency_text(rows: Sequence[dict[str, Any]]) -> str:
    return (
        ", ".join(
            f"{r.get('median_ms', math.nan):.1f} ms @ {r.get('batch_size', '?')}" for r in rows
        )
        or "not measured"
    )


_PRECISION_HEADERS = [
    "precision",
    "min cosine",
    "mAP",
    "R1",
    "ONNX Runtime latency",
    "TensorRT latency",
]


def _min_cosine(entries: Sequence[dict[str, Any]]) -> str:
    values = [r.get("min_cosine", math.nan) for r in entries]
    return f"{min(values):.5f}" if values else "-"


def _retrieval_cells(block: dict[str, Any] | None) -> list[Cell]:
    """mAP and R1 where the precision's retrieval was measured."""
    return (
        [_pct((block or {}).get("mAP")), _pct((block or {}).get("rank1"))] if block else ["-", "-"]
    )


def _precision_row(
    precision: str, cells: list[Cell], status: dict[str, Any] | None, measured: bool = True
) -> list[Cell]:
    """``precision``'s row: its cells, then the TensorRT latency where the engine was built at
    this precision (and the precision has an ONNX file to build from: ``measured``)."""
    built = (status or {}).get("status") == "built"
    trt = built and measured and precision.lower() == status.get("precision")
    return [precision, *cells, _latency_text(status.get("latency") or []) if trt else "-"]


def _precision_table(parity: dict[str, Any] | None, status: dict[str, Any] | None) -> list[Block]:
    """FP32 / FP16 / INT8 side by side: lowest cosine against the reference, retrieval where
    measured, ONNX Runtime latency from export-onnx and TensorRT latency from build-trt."""
    if parity is None:
        return []
    retrieval = parity.get("retrieval") or {}
    int8 = parity.get("int8") or {}
    latency = parity.get("latency") or {}
    fp32: list[Cell] = [
        "vs PyTorch " + _min_cosine(parity.get("batch_parity") or []),
        *_retrieval_cells(retrieval.get("onnx")),
        _latency_text(latency.get("fp32") or []),
    ]
    rows = [_precision_row("FP32", fp32, status)]
    if parity.get("fp16"):
        fp16: list[Cell] = [
            "vs FP32 " + _min_cosine(parity["fp16"].get("batch_parity") or []),
            "-",
            "-",
            _latency_text(latency.get("fp16") or []),
        ]
        rows.append(_precision_row("FP16", fp16, status))
    if int8.get("status") == "passed":
        passed: list[Cell] = [
            "vs FP32 " + _min_cosine(int8.get("batch_parity") or []),
            *_retrieval_cells((int8.get("retrieval") or {}).get("int8")),
            _latency_text(latency.get("int8") or []),
        ]
        rows.append(_precision_row("INT8", passed, status))
    elif int8:
        failed: list[Cell] = [str(int8.get("reason")), "-", "-", "-"]
        rows.append(_precision_row("INT8", failed, status, measured=False))
    return [Table(_PRECISION_HEADERS, rows)]


def _package_blocks(manifest: dict[str, Any] | None, deploy_link: str) -> list[Block]:
    """The package's Triton and DeepStream settings, and a link to the model card
    (``deploy_link``: the arch's deploy folder, relative to the report)."""
    if manifest is None:
        return [
            Paragraph(f"Deployment package: not run (no {DEPLOY_DIR}/{PACKAGE_MANIFEST_FILE}).")
        ]
    triton, ds = manifest.get("triton") or {}, manifest.get("deepstream") or {}
    folded = ds.get("folded_channel_scale")
    card = manifest.get("model_card") or {}
    return [
        Paragraph(
            f"Deployment package `{DEPLOY_DIR}/`: Triton model `{triton.get('model')}` "
            f"({triton.get('platform')}, `{triton.get('model_file')}`, dynamic batching up to "
            f"{triton.get('max_batch_size')}); DeepStream ReID section `{ds.get('config')}` "
            f"(offsets {ds.get('offsets')}, netScaleFactor {ds.get('netScaleFactor')}, networkMode "
            f"{ds.get('networkMode')}"
            + (f", per-channel scale {folded} folded into `{ds.get('onnx')}`" if folded else "")
            + ")."
            + (
                f" Model card: [{card.get('markdown')}]({deploy_link}/{card.get('markdown')}) "
                f"([JSON]({deploy_link}/{card.get('json')}))."
                if card
                else ""
            )
        )
    ]


def _tensorrt_blocks(status: dict[str, Any] | None) -> list[Block]:
    """``reidpipe build-trt``'s status.json: built (latency, parity with ONNX Runtime), or
    skipped / disabled with the reason."""
    if status is None:
        return [Paragraph(f"TensorRT: not run (no {TENSORRT_DIR}/{TRT_STATUS_FILE}).")]
    state = str(status.get("status", "unknown"))
    if state != "built":
        reason = status.get("reason") or "no reason recorded"
        return [Paragraph(f"TensorRT: {state} (reason: {reason}).")]
    versions = status.get("versions") or {}
    reused = status.get("timing_cache_reused")
    blocks: list[Block] = [
        Paragraph(
            f"TensorRT: built from `{status.get('onnx', '?')}` with TensorRT "
            f"{versions.get('tensorrt', '?')} on {versions.get('cuda_device', '?')}, precision "
            f"{status.get('precision', '?')}, in {status.get('build_seconds', '?')} s"
            + ("" if reused is None else f" (timing cache {'reused' if reused else 'new'})")
            + "."
        )
    ]
    latency = status.get("latency") or []
    if latency:
        blocks.append(
            Table(
                ["batch", "median latency (ms)", "p90 latency (ms)", "images/s"],
                [
                    [
                        r.get("batch_size", "?"),
                        f"{r.get('median_ms', math.nan):.3f}",
                        f"{r.get('p90_ms', math.nan):.3f}",
                        f"{r.get('images_per_second', math.nan):.1f}",
                    ]
                    for r in latency
                ],
            )
        )
    parity = status.get("parity") or {}
    retrieval = parity.get("retrieval") or {}
    if retrieval:
        blocks.append(
            Paragraph(
                "TensorRT vs ONNX Runtime: "
                + _retrieval_text(
                    retrieval,
                    "onnxruntime",
                    "tensorrt",
                    "ONNX Runtime",
                    "TensorRT",
                    parity.get("max_metric_delta_points"),
                )
                + "."
            )
        )
    rows = _batch_rows("TensorRT vs ONNX Runtime", parity.get("batch_parity") or [])
    if rows:
        blocks.append(Table(_BATCH_HEADERS, rows))
    return blocks


def export_section(arch: ArchResults, deploy_link: str) -> list[Block]:
    """``deploy_link``: the arch's deploy folder relative to the report (its model card's link)."""
    return [
        Heading(3, "Deployment"),
        *_parity_blocks(arch.parity),
        *_tensorrt_blocks(arch.tensorrt),
        *_precision_table(arch.parity, arch.tensorrt),
        *_package_blocks(arch.package, deploy_link),
    ]


def validation_section(path: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Dataset validation")]
    if not path.is_file():
        return blocks + [
            Paragraph(f"Not available: {path} does not exist (run `reidpipe validate`).")
        ]
    data = read_json_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("splits"), dict):
        raise ReidpipeError(
            f"{path}: expected `reidpipe validate`'s report (an object with 'splits')"
        )
    verdict = "valid" if data.get("valid") else "INVALID"
    mode = "strict (Market-1501 statistics)" if data.get("strict") else "non-strict (layout)"
    blocks.append(
        Paragraph(
            f"`{data.get('dataset_dir', '?')}`: {verdict}, {mode} check; "
            f"{data.get('num_problems', 0)} problem(s), "
            f"{len(data.get('warnings') or [])} warning(s), "
            f"{len(data.get('ignored_files') or [])} ignored file(s)."
        )
    )
    rows: list[list[Cell]] = []
    for split, stats in data["splits"].items():
        sizes = stats.get("image_sizes") or {}
        rows.append(
            [
                split,
                stats.get("images", "?"),
                stats.get("ids", "?"),
                ", ".join(str(c) for c in stats.get("cameras") or []),
                stats.get("junk", "?"),
                stats.get("distractors", "?"),
                ", ".join(f"{size} ({n})" for size, n in sizes.items()),
            ]
        )
    blocks.append(
        Table(
            [
                "split",
                "images",
                "identities",
                "cameras",
                "junk (id -1)",
                "distractors (id 0)",
                "image sizes WxH (count)",
            ],
            rows,
        )
    )
    notes = [f"warning: {w}" for w in data.get("warnings") or []]
    notes += [
        f"problem: {p.get('file')}: {p.get('problem')}"
        for p in (data.get("problems") or [])[:10]
        if isinstance(p, dict)
    ]
    if notes:
        blocks.append(Bullets(notes))
    return blocks


def _count(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,}"


_VERIFICATION_HEADERS = [
    "target FAR",
    "threshold (distance)",
    "TAR",
    "achieved FAR",
    "no-match accuracy",
    "known accepted",
]


def _verification_text(data: dict[str, Any]) -> str:
    """Which identities were held out, the pairs and queries counted, and what the figures mean."""
    held_out = data.get("held_out_pids") or []
    setup = (
        f"{len(held_out)} query identities (evaluate.open_set_fraction "
        f"{data.get('open_set_fraction')}) were held out: their "
        f"{_count(data.get('gallery_images_held_out'))} gallery images are left out of these "
        "figures only (the retrieval metrics use the whole gallery)"
        if held_out
        else "No identities were held out (evaluate.open_set_fraction 0)"
    )
    return (
        f"{setup}. {data.get('distance', '?')} distance, the ranking's; "
        f"{_count(data.get('num_genuine_pairs'))} genuine pairs (same identity, another camera), "
        f"{_count(data.get('num_impostor_pairs'))} impostor pairs; "
        f"{_count(data.get('num_known_queries'))} queries with a match and "
        f"{_count(data.get('num_open_set_queries'))} open-set queries (no match in the gallery). "
        "A pair is accepted when its distance is at most the threshold; the threshold of a "
        "target FAR is the largest that accepts at most that share of the impostor pairs. "
        "No-match accuracy: open-set queries whose nearest gallery image is rejected. Known "
        "accepted: queries with a match whose nearest image is a true match and accepted."
    )


def _operating_point_row(point: dict[str, Any]) -> list[Cell]:
    """One target FAR: its threshold and figures, or why it has no threshold."""
    threshold = point.get("threshold")
    if threshold is None:
        reason = (point.get("why_null") or {}).get("threshold", "none")
        return [f"{point.get('far'):g}", f"none: {reason}", "-", "-", "-", "-"]
    return [
        f"{point.get('far'):g}",
        f"{threshold:.4f}",
        _pct(point.get("tar")),
        f"{point.get('far_achieved', math.nan):.2e}",
        _pct(point.get("no_match_accuracy")),
        _pct(point.get("known_rank1_accepted")),
    ]


def verification_section(arch: ArchResults, out_dir: Path) -> list[Block]:
    """verification.json: the genuine/impostor distance distributions with each FAR's threshold,
    and per FAR the threshold, TAR and the "no match" accuracy on the open-set queries."""
    heading = Heading(3, "Verification thresholds (open set)")
    data = arch.verification
    if data is None:
        return [
            heading,
            Paragraph(
                f"Not available: no {VERIFICATION_FILE} (run `reidpipe evaluate --verification`)."
            ),
        ]
    text = _verification_text(data)
    file = f"{FIGURES_DIR}/{arch.name}_verification.png"
    report_figures.verification_figure(arch.name, data, out_dir / file)
    return [
        heading,
        Paragraph(text),
        Figure(
            file,
            f"{arch.name}: distance distributions of genuine and impostor "
            "pairs, with the threshold of each target FAR",
        ),
        Table(
            _VERIFICATION_HEADERS,
            [_operating_point_row(point) for point in data["operating_points"]],
        ),
    ]
