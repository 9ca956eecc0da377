"""``reidpipe report``: reports/ rebuilt from the stage outputs alone (no embedding is recomputed).

Writes ``index.md`` (figures as sibling PNGs), a self-contained ``index.html`` (figures as base64
data URIs, inline CSS), ``metrics.json`` (``{arch: {"plain": {...}, "reranked": {...}}}``, the DVC
metrics file) and the figures ``figures/cmc.png``, ``figures/<arch>_matches.png``,
``figures/<arch>_training.png``.
Deltas are taken against the ``metrics.json`` committed at git HEAD in the output folder, when
there is one. Both documents are rendered from one list of blocks, so they cannot disagree.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import pandas as pd
import yaml

from reidpipe import atomic, report_figures
from reidpipe.errors import ReidpipeError
from reidpipe.params import Params

METRICS_FILE = "metrics.json"
FIGURES_DIR = "figures"
RANKINGS = ("plain", "reranked")
# (metrics.json key, column title): all fractions, shown as percentages.
METRIC_COLUMNS = (("mAP", "mAP"), ("rank1", "R1"), ("rank5", "R5"), ("rank10", "R10"),
                  ("mINP", "mINP"))
TRAIN_LOG_COLUMNS = ("epoch", "loss", "id_loss", "triplet_loss", "center_loss", "lr", "val_mAP",
                     "val_rank1")
SAMPLE_SEED = 0
# File names of `reidpipe export-onnx` and `reidpipe build-trt` (not imported: both modules pull
# in torch and onnx, which the report does not need).
PARITY_FILE = "parity.json"
TRT_STATUS_FILE = "status.json"


# ------------------------------------------------------------------------------ document blocks


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


Cell = Union[str, int, float, Metric]


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


Block = Union[Heading, Paragraph, Bullets, Table, Figure]


def _cell_text(cell: Cell) -> str:
    if isinstance(cell, Metric):
        return cell.text()
    if isinstance(cell, float):
        return f"{cell:.4g}"
    return str(cell)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    lines = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            def row(cells: Sequence[Cell]) -> str:
                return "| " + " | ".join(_cell_text(c).replace("|", "\\|") for c in cells) + " |"
            lines += [row(block.headers), "|" + "---|" * len(block.headers)]
            lines += [row(r) for r in block.rows] + [""]
        else:
            lines += [f"![{block.caption}]({block.file})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1300px;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:1.8em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.8em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f5f8}td.t,th.t{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.up{color:#1a7f37}.down{color:#c62828}.same{color:#666}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:13px}
code{background:#f3f3f3;padding:0 3px}
"""


def _cell_html(cell: Cell) -> str:
    if isinstance(cell, Metric) and cell.delta is not None and not math.isnan(cell.value):
        points = round(100 * cell.delta, 1)
        css = "up" if points > 0 else "down" if points < 0 else "same"
        return (f"{100 * cell.value:.1f} <span class=\"{css}\">({100 * cell.delta:+.1f})"
                "</span>")
    return html.escape(_cell_text(cell))


_TEXT_CLASS = ' class="t"'


def _is_numeric(cell: Cell) -> bool:
    """Numbers are right-aligned (the CSS default), text left-aligned."""
    if isinstance(cell, (Metric, int, float)):
        return True
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def render_html(title: str, blocks: Sequence[Block], figures_dir: Path) -> str:
    """One self-contained page: figures from ``figures_dir`` embedded as data URIs."""
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline_code(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline_code(i)}</li>" for i in block.items)
                         + "</ul>")
        elif isinstance(block, Table):
            first = block.rows[0] if block.rows else [""] * len(block.headers)
            head = "".join(f"<th{'' if _is_numeric(c) else _TEXT_CLASS}>{html.escape(h)}</th>"
                           for h, c in zip(block.headers, first))
            body = "".join("<tr>" + "".join(
                f"<td{'' if _is_numeric(c) else _TEXT_CLASS}>{_cell_html(c)}</td>" for c in row)
                + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode((figures_dir / block.file).read_bytes()).decode("ascii")
            parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" "
                         f"alt=\"{html.escape(block.caption)}\"><figcaption>"
                         f"{html.escape(block.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _inline_code(text: str) -> str:
    """Escape ``text``; markdown `code` spans become <code>."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


# ------------------------------------------------------------------------------------- inputs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReidpipeError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReidpipeError(f"{path} is not valid JSON: {exc}") from None


def _read_csv(path: Path, columns: Sequence[str], what: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"path": str})
    except FileNotFoundError:
        raise ReidpipeError(f"{path} does not exist ({what})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReidpipeError(f"{path} is not a readable CSV: {exc}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReidpipeError(f"{path} lacks columns {missing} ({what})")
    return frame


def read_metrics(path: Path) -> dict[str, dict[str, Any]]:
    """An evaluate stage's metrics.json: a "plain" block and optionally a "reranked" one."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("plain"), dict):
        raise ReidpipeError(f"{path}: expected an object with a 'plain' metrics block "
                            "(written by `reidpipe evaluate`)")
    for ranking in RANKINGS:
        block = data.get(ranking)
        if block is None:
            continue
        for key, _ in METRIC_COLUMNS:
            value = block.get(key) if isinstance(block, dict) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ReidpipeError(f"{path}: {ranking}.{key} = {value!r}, expected a number")
    return {r: data[r] for r in RANKINGS if r in data}


@dataclass
class ArchResults:
    name: str
    metrics: dict[str, dict[str, Any]]
    cmc: pd.DataFrame
    per_query: pd.DataFrame
    query: pd.DataFrame
    gallery: pd.DataFrame
    train_log: pd.DataFrame | None
    config: dict[str, Any] | None
    parity: dict[str, Any] | None
    tensorrt: dict[str, Any] | None

    @property
    def ranking(self) -> str:
        """The ranking the figures and the hardest-query table show: re-ranked when evaluated."""
        return "reranked" if "reranked" in self.metrics else "plain"


def _optional_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ReidpipeError(f"{path}: expected a JSON object")
    return data


def load_arch(name: str, results_dir: Path, models_dir: Path) -> ArchResults:
    """Everything the report shows for one arch; evaluation outputs are required, the rest
    (training log, config, ONNX and TensorRT results) optional."""
    arch_dir = results_dir / name
    metrics = read_metrics(arch_dir / METRICS_FILE)
    cmc = _read_csv(arch_dir / "cmc.csv", ["rank", "plain"], "CMC curve from `reidpipe evaluate`")
    columns = ["path", "pid", "camid"]
    for ranking in metrics:
        columns += [f"ap_{ranking}", f"first_hit_{ranking}", f"top_{ranking}"]
    per_query = _read_csv(arch_dir / "per_query.csv", columns,
                          "per-query table from `reidpipe evaluate --per-query`")
    emb = arch_dir / "embeddings"
    query = _read_csv(emb / "query.csv", ["path", "pid", "camid"], "from `reidpipe extract`")
    gallery = _read_csv(emb / "gallery.csv", ["path", "pid", "camid"], "from `reidpipe extract`")
    if len(query) != len(per_query) or not query["path"].equals(per_query["path"]):
        raise ReidpipeError(f"{arch_dir / 'per_query.csv'} does not list the queries of "
                            f"{emb / 'query.csv'} in the same order; re-run `reidpipe evaluate`")
    train_log = None
    log_path = models_dir / name / "train_log.csv"
    if log_path.is_file():
        train_log = _read_csv(log_path, TRAIN_LOG_COLUMNS, "from `reidpipe train`")
    config = None
    config_path = models_dir / name / "config.yaml"
    if config_path.is_file():
        try:
            config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ReidpipeError(f"{config_path} is not valid YAML: {exc}") from None
        if not isinstance(config, dict):
            raise ReidpipeError(f"{config_path}: expected a mapping")
    return ArchResults(name=name, metrics=metrics, cmc=cmc, per_query=per_query, query=query,
                       gallery=gallery, train_log=train_log, config=config,
                       parity=_optional_json(arch_dir / "onnx" / PARITY_FILE),
                       tensorrt=_optional_json(arch_dir / "tensorrt" / TRT_STATUS_FILE))


@dataclass
class Baseline:
    """The metrics committed at git HEAD, or why there are none."""

    metrics: dict[str, Any] | None
    note: str


def read_baseline(out_dir: Path) -> Baseline:
    """``git show HEAD:<out_dir>/metrics.json``; no git, no repository or no such committed file
    all just mean "no baseline"."""
    folder = out_dir.resolve()
    relative = Path(METRICS_FILE)
    while not folder.is_dir():
        relative = Path(folder.name) / relative
        folder = folder.parent

    def git(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                  text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done if done.returncode == 0 else None

    shown = git("show", f"HEAD:./{relative.as_posix()}")
    if shown is None:
        return Baseline(None, f"No baseline: {out_dir / METRICS_FILE} is not committed at git "
                              "HEAD (or this is not a git repository), so no deltas are shown.")
    commit = git("rev-parse", "--short", "HEAD")
    where = f"commit {commit.stdout.strip()}" if commit else "HEAD"
    try:
        data = json.loads(shown.stdout)
    except json.JSONDecodeError:
        return Baseline(None, f"No baseline: {out_dir / METRICS_FILE} at {where} is not valid "
                              "JSON, so no deltas are shown.")
    if not isinstance(data, dict):
        return Baseline(None, f"No baseline: {out_dir / METRICS_FILE} at {where} is not a JSON "
                              "object, so no deltas are shown.")
    return Baseline(data, f"Deltas in parentheses are percentage points against "
                          f"{out_dir / METRICS_FILE} at {where} (git HEAD).")


def _baseline_value(baseline: Baseline, arch: str, ranking: str, key: str) -> float | None:
    try:
        value = baseline.metrics[arch][ranking][key]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# ------------------------------------------------------------------------------------ sections


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * float(value):.1f}%"


def metrics_section(archs: Sequence[ArchResults], baseline: Baseline) -> list[Block]:
    rows: list[list[Cell]] = []
    new = []
    for arch in archs:
        if baseline.metrics is not None and arch.name not in baseline.metrics:
            new.append(arch.name)
        for ranking, block in arch.metrics.items():
            cells: list[Cell] = [arch.name, report_figures.RANKING_LABELS[ranking]]
            for key, _ in METRIC_COLUMNS:
                value = float(block[key])
                before = _baseline_value(baseline, arch.name, ranking, key)
                cells.append(Metric(value, None if before is None else value - before))
            cells.append(block.get("num_queries", "n/a"))
            rows.append(cells)
    blocks: list[Block] = [
        Heading(2, "Retrieval metrics"),
        Paragraph("Query vs gallery, in percent. mAP: mean average precision; R1/R5/R10: "
                  "matching rate within the top 1/5/10 (CMC); mINP: mean inverse negative "
                  "penalty. Re-ranked: k-reciprocal re-ranking (Zhong et al., 2017). "
                  + baseline.note),
        Table(["arch", "ranking"] + [f"{title} (%)" for _, title in METRIC_COLUMNS] + ["queries"],
              rows)]
    if new:
        blocks.append(Paragraph(f"Not in the baseline (no delta): {', '.join(new)}."))
    return blocks


def _sample_queries(arch: ArchResults, count: int, top_k: int) -> list[report_figures.SampledQuery]:
    """A fixed-seed sample of the queries that have a true match, in query order."""
    ranking = arch.ranking
    frame = arch.per_query
    candidates = np.flatnonzero(frame[f"ap_{ranking}"].notna().to_numpy())
    rng = np.random.default_rng(SAMPLE_SEED)
    chosen = np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    queries = []
    for index in chosen:
        row = frame.iloc[int(index)]
        queries.append(report_figures.SampledQuery(
            path=str(arch.query["path"].iloc[int(index)]), pid=int(row["pid"]),
            camid=int(row["camid"]), ap=float(row[f"ap_{ranking}"]),
            top=_top_indices(row[f"top_{ranking}"], len(arch.gallery), top_k)))
    return queries


def _top_indices(value: Any, gallery_size: int, top_k: int) -> list[int]:
    if not isinstance(value, str):  # an empty cell: nothing left after filtering
        return []
    try:
        indices = [int(v) for v in value.split()][:top_k]
    except ValueError:
        raise ReidpipeError(f"per_query.csv: top-k cell {value!r} is not space-separated gallery "
                            "indices") from None
    if any(not 0 <= i < gallery_size for i in indices):
        raise ReidpipeError(f"per_query.csv: top-k cell {value!r} names a gallery index outside "
                            f"0..{gallery_size - 1} (gallery.csv has {gallery_size} rows)")
    return indices


def hardest_section(arch: ArchResults, count: int) -> list[Block]:
    ranking = arch.ranking
    frame = arch.per_query.dropna(subset=[f"ap_{ranking}"])
    frame = frame.sort_values(f"ap_{ranking}", kind="stable").head(count)
    headers = ["query", "identity", "camera"]
    for r in arch.metrics:
        label = report_figures.RANKING_LABELS[r]
        headers += [f"AP {label} (%)", f"first-hit rank {label}"]
    rows: list[list[Cell]] = []
    for _, row in frame.iterrows():
        cells: list[Cell] = [Path(str(row["path"])).name, int(row["pid"]), int(row["camid"])]
        for r in arch.metrics:
            first = row[f"first_hit_{r}"]
            cells += [_pct(row[f"ap_{r}"]).rstrip("%"),
                      "n/a" if pd.isna(first) else int(first)]
        rows.append(cells)
    skipped = int(arch.per_query[f"ap_{ranking}"].isna().sum())
    text = (f"The {len(rows)} queries with the lowest AP ({report_figures.RANKING_LABELS[ranking]} "
            "ranking), with the rank of their first true match (1 = top).")
    if skipped:
        text += f" {skipped} queries without any true match in the gallery are not scored."
    return [Heading(3, "Hardest queries"), Paragraph(text), Table(headers, rows)]


def _config_summary(config: dict[str, Any], path: Path) -> str:
    model, dataset, train = (config.get(k) or {} for k in ("model", "dataset", "train"))
    optim = train.get("optim") or {}
    parts = [f"backbone `{model.get('backbone', '?')}`",
             f"input {model.get('input_height', '?')}x{model.get('input_width', '?')} (HxW)",
             f"feat_dim {model.get('feat_dim', '?')}",
             f"{train.get('num_epochs', '?')} epochs",
             f"{optim.get('name', '?')} base lr {optim.get('base_lr', '?')}",
             f"batch {dataset.get('batch_size', '?')} (P x K, K = "
             f"{dataset.get('num_instances', '?')})"]
    return f"Recipe (`{path}`): " + ", ".join(parts) + "."


def training_section(arch: ArchResults, models_dir: Path, out_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading(3, "Training")]
    if arch.config is not None:
        blocks.append(Paragraph(_config_summary(arch.config, models_dir / arch.name / "config.yaml")))
    if arch.train_log is None or arch.train_log.empty:
        blocks.append(Paragraph(f"No training log (`{models_dir / arch.name / 'train_log.csv'}`)."))
        return blocks
    file = f"{FIGURES_DIR}/{arch.name}_training.png"
    report_figures.training_figure(arch.name, arch.train_log, out_dir / file)
    last = arch.train_log.iloc[-1]
    text = f"{int(last['epoch'])} epochs logged; final loss {float(last['loss']):.3f}."
    if "seconds" in arch.train_log.columns:
        seconds = arch.train_log["seconds"].astype(float)
        text += (f" Training time {seconds.sum() / 60:.1f} min (sum of epoch times, validation "
                 f"included); last epoch {seconds.iloc[-1]:.1f} s.")
    blocks += [Paragraph(text), Figure(file, f"{arch.name}: loss terms, learning rate and "
                                             "validation mAP / rank-1 per epoch")]
    return blocks


_BATCH_HEADERS = ["graph", "batch", "max abs diff", "1 - min cosine"]


def _batch_rows(label: str, entries: Sequence[dict[str, Any]]) -> list[list[Cell]]:
    return [[label, row.get("batch_size", "?"), f"{row.get('max_abs_diff', math.nan):.2e}",
             f"{1 - row.get('min_cosine', math.nan):.1e}"] for row in entries]


def _retrieval_text(retrieval: dict[str, Any], ref: str, new: str, ref_label: str,
                    new_label: str, gate: Any) -> str:
    a, b = retrieval.get(ref) or {}, retrieval.get(new) or {}
    deltas = retrieval.get("delta_points") or {}
    parts = [f"{title} {ref_label} {_pct(a.get(key))} vs {new_label} {_pct(b.get(key))} "
             f"(|delta| {deltas.get(key, math.nan):.3f} points)"
             for key, title in (("mAP", "mAP"), ("rank1", "R1"))]
    return "; ".join(parts) + f"; gate {gate if gate is not None else '?'} points"


def _parity_blocks(parity: dict[str, Any] | None) -> list[Block]:
    if parity is None:
        return [Paragraph(f"ONNX export: not run (no onnx/{PARITY_FILE}).")]
    gates = parity.get("gates") or {}
    blocks: list[Block] = [
        Paragraph(f"ONNX export: {parity.get('status', 'unknown')}, opset "
                  f"{parity.get('opset', '?')}, exported in {parity.get('export_seconds', '?')} "
                  f"s. ONNX Runtime vs PyTorch: " + _retrieval_text(
                      parity.get("retrieval") or {}, "torch", "onnx", "PyTorch", "ONNX Runtime",
                      gates.get("max_metric_delta_points")) + "; per-batch gates: max abs diff "
                  f"{gates.get('max_abs_diff', '?')}, min cosine {gates.get('min_cosine', '?')}.")]
    rows = _batch_rows("ONNX FP32 vs PyTorch", parity.get("batch_parity") or [])
    rows += _batch_rows("ONNX FP16 vs FP32",
                        (parity.get("fp16") or {}).get("batch_parity") or [])
    if rows:
        blocks.append(Table(_BATCH_HEADERS, rows))
    return blocks


def _tensorrt_blocks(status: dict[str, Any] | None) -> list[Block]:
    """``reidpipe build-trt``'s status.json: built (latency, parity with ONNX Runtime), or
    skipped / disabled with the reason."""
    if status is None:
        return [Paragraph(f"TensorRT: not run (no tensorrt/{TRT_STATUS_FILE}).")]
    state = str(status.get("status", "unknown"))
    if state != "built":
        reason = status.get("reason") or "no reason recorded"
        return [Paragraph(f"TensorRT: {state} (reason: {reason}).")]
    versions = status.get("versions") or {}
    reused = status.get("timing_cache_reused")
    blocks: list[Block] = [Paragraph(
        f"TensorRT: built from `{status.get('onnx', '?')}` with TensorRT "
        f"{versions.get('tensorrt', '?')} on {versions.get('cuda_device', '?')}, precision "
        f"{status.get('precision', '?')}, in {status.get('build_seconds', '?')} s"
        + ("" if reused is None else f" (timing cache {'reused' if reused else 'new'})") + ".")]
    latency = status.get("latency") or []
    if latency:
        blocks.append(Table(["batch", "median latency (ms)", "p90 latency (ms)", "images/s"],
                            [[r.get("batch_size", "?"), f"{r.get('median_ms', math.nan):.3f}",
                              f"{r.get('p90_ms', math.nan):.3f}",
                              f"{r.get('images_per_second', math.nan):.1f}"] for r in latency]))
    parity = status.get("parity") or {}
    retrieval = parity.get("retrieval") or {}
    if retrieval:
        blocks.append(Paragraph("TensorRT vs ONNX Runtime: " + _retrieval_text(
            retrieval, "onnxruntime", "tensorrt", "ONNX Runtime", "TensorRT",
            parity.get("max_metric_delta_points")) + "."))
    rows = _batch_rows("TensorRT vs ONNX Runtime", parity.get("batch_parity") or [])
    if rows:
        blocks.append(Table(_BATCH_HEADERS, rows))
    return blocks


def export_section(arch: ArchResults) -> list[Block]:
    return [Heading(3, "Deployment"), *_parity_blocks(arch.parity),
            *_tensorrt_blocks(arch.tensorrt)]


def validation_section(path: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Dataset validation")]
    if not path.is_file():
        return blocks + [Paragraph(f"Not available: {path} does not exist (run `reidpipe "
                                   "validate`).")]
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("splits"), dict):
        raise ReidpipeError(f"{path}: expected `reidpipe validate`'s report (an object with "
                            "'splits')")
    verdict = "valid" if data.get("valid") else "INVALID"
    mode = "strict (Market-1501 statistics)" if data.get("strict") else "non-strict (layout)"
    blocks.append(Paragraph(f"`{data.get('dataset_dir', '?')}`: {verdict}, {mode} check; "
                            f"{data.get('num_problems', 0)} problem(s), "
                            f"{len(data.get('warnings') or [])} warning(s), "
                            f"{len(data.get('ignored_files') or [])} ignored file(s)."))
    rows: list[list[Cell]] = []
    for split, stats in data["splits"].items():
        sizes = stats.get("image_sizes") or {}
        rows.append([split, stats.get("images", "?"), stats.get("ids", "?"),
                     ", ".join(str(c) for c in stats.get("cameras") or []),
                     stats.get("junk", "?"), stats.get("distractors", "?"),
                     ", ".join(f"{size} ({n})" for size, n in sizes.items())])
    blocks.append(Table(["split", "images", "identities", "cameras", "junk (id -1)",
                         "distractors (id 0)", "image sizes WxH (count)"], rows))
    notes = [f"warning: {w}" for w in data.get("warnings") or []]
    notes += [f"problem: {p.get('file')}: {p.get('problem')}"
              for p in (data.get("problems") or [])[:10] if isinstance(p, dict)]
    if notes:
        blocks.append(Bullets(notes))
    return blocks


# ------------------------------------------------------------------------------------- report


@dataclass
class ReportResult:
    files: list[str] = field(default_factory=list)
    baseline: str = ""


def build_report(params: Params, results_dir: str | Path, models_dir: str | Path,
                 out_dir: str | Path) -> ReportResult:
    """Write the report files into ``out_dir`` (each replaced atomically; others left alone)."""
    results_dir, models_dir, out_dir = Path(results_dir), Path(models_dir), Path(out_dir)
    names = list(params.pipeline.archs)
    if not names:
        raise ReidpipeError("params: pipeline.archs is empty; nothing to report")
    archs = [load_arch(name, results_dir, models_dir) for name in names]
    baseline = read_baseline(out_dir)
    opts = params.report
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        (staging / FIGURES_DIR).mkdir()
        report_figures.cmc_figure({a.name: a.cmc for a in archs}, staging / FIGURES_DIR / "cmc.png")
        blocks: list[Block] = [
            Paragraph(f"Architectures: {', '.join(names)}. Built by `reidpipe report` from "
                      f"`{results_dir}` and `{models_dir}`; nothing is recomputed."),
            *metrics_section(archs, baseline),
            Figure(f"{FIGURES_DIR}/cmc.png", "CMC curves of all architectures: solid = plain ranking, dashed = "
                              "re-ranked; legend gives rank-1")]
        blocks += validation_section(results_dir / "validation.json")
        for arch in archs:
            blocks.append(Heading(2, f"Architecture {arch.name}"))
            top_k = min(opts.top_k, max((len(_top_indices(v, len(arch.gallery), opts.top_k))
                                         for v in arch.per_query[f"top_{arch.ranking}"]),
                                        default=0))
            queries = _sample_queries(arch, opts.sampled_queries, top_k)
            file = f"{FIGURES_DIR}/{arch.name}_matches.png"
            report_figures.matches_figure(arch.name, arch.ranking, queries, arch.gallery,
                                          max(top_k, 1), staging / file)
            blocks += [Heading(3, "Sampled matches"),
                       Figure(file, f"{arch.name}: {len(queries)} sampled queries (seed "
                                    f"{SAMPLE_SEED}) with their top-{top_k} gallery images")]
            blocks += hardest_section(arch, opts.hardest_queries)
            blocks += training_section(arch, models_dir, staging)
            blocks += export_section(arch)
        title = "reidpipe report"
        (staging / "index.md").write_text(render_markdown(title, blocks), encoding="utf-8")
        (staging / "index.html").write_text(render_html(title, blocks, staging),
                                            encoding="utf-8")
        (staging / METRICS_FILE).write_text(
            json.dumps({a.name: a.metrics for a in archs}, indent=2) + "\n", encoding="utf-8")
        files = sorted(p.name for p in staging.iterdir())
        for name in files:
            if name == FIGURES_DIR:
                atomic.replace_dir(staging / name, out_dir / name)
            else:
                os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ReportResult(files=files, baseline=baseline.note)
