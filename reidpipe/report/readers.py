"""Reading the stage outputs the report is built from: metrics, CMC, per-query rankings, training
logs, parity and TensorRT status, and the baseline metrics committed at git HEAD."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    CMC_FILE,
    EMBEDDINGS_DIR,
    METRICS_FILE,
    ONNX_DIR,
    PARITY_FILE,
    PER_QUERY_FILE,
    TENSORRT_DIR,
    TRAIN_CONFIG_FILE,
    TRAIN_LOG_FILE,
    TRT_STATUS_FILE,
    embedding_table,
)

RANKINGS = ("plain", "reranked")
# (metrics.json key, column title): all fractions, shown as percentages.
METRIC_COLUMNS = (("mAP", "mAP"), ("rank1", "R1"), ("rank5", "R5"), ("rank10", "R10"),
                  ("mINP", "mINP"))
TRAIN_LOG_COLUMNS = ("epoch", "loss", "id_loss", "triplet_loss", "center_loss", "lr", "val_mAP",
                     "val_rank1")


def read_json(path: Path) -> Any:
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
    data = read_json(path)
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
    data = read_json(path)
    if not isinstance(data, dict):
        raise ReidpipeError(f"{path}: expected a JSON object")
    return data


def load_arch(name: str, results_dir: Path, models_dir: Path) -> ArchResults:
    """Everything the report shows for one arch; evaluation outputs are required, the rest
    (training log, config, ONNX and TensorRT results) optional."""
    arch_dir = results_dir / name
    metrics = read_metrics(arch_dir / METRICS_FILE)
    cmc = _read_csv(arch_dir / CMC_FILE, ["rank", "plain"], "CMC curve from `reidpipe evaluate`")
    columns = ["path", "pid", "camid"]
    for ranking in metrics:
        columns += [f"ap_{ranking}", f"first_hit_{ranking}", f"top_{ranking}"]
    per_query = _read_csv(arch_dir / PER_QUERY_FILE, columns,
                          "per-query table from `reidpipe evaluate --per-query`")
    emb = arch_dir / EMBEDDINGS_DIR
    query = _read_csv(emb / embedding_table("query"), ["path", "pid", "camid"], "from `reidpipe extract`")
    gallery = _read_csv(emb / embedding_table("gallery"), ["path", "pid", "camid"], "from `reidpipe extract`")
    if len(query) != len(per_query) or not query["path"].equals(per_query["path"]):
        raise ReidpipeError(f"{arch_dir / PER_QUERY_FILE} does not list the queries of "
                            f"{emb / embedding_table('query')} in the same order; re-run `reidpipe evaluate`")
    train_log = None
    log_path = models_dir / name / TRAIN_LOG_FILE
    if log_path.is_file():
        train_log = _read_csv(log_path, TRAIN_LOG_COLUMNS, "from `reidpipe train`")
    config = None
    config_path = models_dir / name / TRAIN_CONFIG_FILE
    if config_path.is_file():
        try:
            config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ReidpipeError(f"{config_path} is not valid YAML: {exc}") from None
        if not isinstance(config, dict):
            raise ReidpipeError(f"{config_path}: expected a mapping")
    return ArchResults(name=name, metrics=metrics, cmc=cmc, per_query=per_query, query=query,
                       gallery=gallery, train_log=train_log, config=config,
                       parity=_optional_json(arch_dir / ONNX_DIR / PARITY_FILE),
                       tensorrt=_optional_json(arch_dir / TENSORRT_DIR / TRT_STATUS_FILE))


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
