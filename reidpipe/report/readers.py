"""Reading the stage outputs the report is built from: metrics, CMC, per-query rankings, training
logs, parity and TensorRT status, and the baseline metrics committed at git HEAD."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reidpipe import train_log
from reidpipe.bounded_yaml import read_yaml_file
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    CMC_FILE,
    DEPLOY_DIR,
    EMBEDDINGS_DIR,
    ENVIRONMENT_FILE,
    METRICS_FILE,
    ONNX_DIR,
    PACKAGE_MANIFEST_FILE,
    PARITY_FILE,
    PER_QUERY_FILE,
    TENSORRT_DIR,
    TRAIN_CONFIG_FILE,
    TRAIN_LOG_FILE,
    TRT_STATUS_FILE,
    VERIFICATION_FILE,
    embedding_table,
)
from reidpipe.json_files import read_json_file

RANKINGS = ("plain", "reranked")
# (metrics.json key, column title): all fractions, shown as percentages.
METRIC_COLUMNS = (
    ("mAP", "mAP"),
    ("rank1", "R1"),
    ("rank5", "R5"),
    ("rank10", "R10"),
    ("mINP", "mINP"),
)
# What the report needs of train_log.csv (a log without "steps" reads too)
TRAIN_LOG_COLUMNS = ("epoch", *train_log.SHOWN_COLUMNS)


def _read_csv(
    path: Path, columns: Sequence[str], what: str, numeric: Sequence[str] = ()
) -> pd.DataFrame:
    """``path`` with at least ``columns``; the ``numeric`` ones (those present) must hold numbers
    or be empty."""
    try:
        frame = pd.read_csv(path, dtype={"path": str})
    except FileNotFoundError:
        raise ReidpipeError(f"{path} does not exist ({what})") from None
    except IsADirectoryError:
        raise ReidpipeError(f"{path} is a directory, not a CSV file ({what})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReidpipeError(f"{path} is not a readable CSV: {exc}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReidpipeError(f"{path} lacks columns {missing} ({what})")
    for column in (c for c in numeric if c in frame.columns):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & values.isna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ReidpipeError(
                f"{path}: column {column!r} row {row + 1} holds "
                f"{frame[column].iloc[row]!r}, expected a number ({what})"
            )
        frame[column] = values
    return frame


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics(path: Path) -> dict[str, dict[str, Any]]:
    """An evaluate stage's metrics.json: a "plain" block and optionally a "reranked" one."""
    data = read_json_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("plain"), dict):
        raise ReidpipeError(
            f"{path}: expected an object with a 'plain' metrics block "
            "(written by `reidpipe evaluate`)"
        )
    for ranking in RANKINGS:
        block = data.get(ranking)
        if block is None:
            continue
        for key, _ in METRIC_COLUMNS:
            value = block.get(key) if isinstance(block, dict) else None
            if not _is_number(value) or not 0 <= value <= 1:  # NaN fails the range too
                raise ReidpipeError(
                    f"{path}: {ranking}.{key} = {value!r}, expected a fraction from 0 to 1"
                )
        count = block.get("num_queries", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ReidpipeError(
                f"{path}: {ranking}.num_queries = {count!r}, expected a whole number >= 0"
            )
    return {r: data[r] for r in RANKINGS if r in data}


# The parts of parity.json / status.json the report formats as numbers; other keys are shown as
# they are. A dict maps keys to specs ("*": every key), [spec] is a list of such items, NUMBER a
# real number (NaN included: a failed FP16 gate records one). Absent or null parts are left out.
NUMBER = "a number"
_SCORES = {"mAP": NUMBER, "rank1": NUMBER}
_RETRIEVAL = {
    "delta_points": {"*": NUMBER},
    "torch": _SCORES,
    "onnx": _SCORES,
    "onnxruntime": _SCORES,
    "tensorrt": _SCORES,
    "int8": _SCORES,
    "min_cosine": NUMBER,
}
_BATCH_ROWS = [{"batch_size": NUMBER, "max_abs_diff": NUMBER, "min_cosine": NUMBER}]
PARITY_SPEC = {
    "gates": {"*": NUMBER},
    "retrieval": _RETRIEVAL,
    "batch_parity": _BATCH_ROWS,
    "fp16": {"batch_parity": _BATCH_ROWS},
    "int8": {"batch_parity": _BATCH_ROWS, "retrieval": _RETRIEVAL, "gates": {"*": NUMBER}},
    "latency": {"*": [{"batch_size": NUMBER, "median_ms": NUMBER, "images_per_second": NUMBER}]},
}
PACKAGE_SPEC = {
    "triton": {"max_batch_size": NUMBER},
    "deepstream": {
        "offsets": [NUMBER],
        "netScaleFactor": NUMBER,
        "networkMode": NUMBER,
        "folded_channel_scale": [NUMBER],
    },
}
VERIFICATION_SPEC = {
    "open_set_fraction": NUMBER,
    "held_out_pids": [NUMBER],
    "gallery_images_held_out": NUMBER,
    **{
        f"num_{what}": NUMBER
        for what in (
            "genuine_pairs",
            "impostor_pairs",
            "known_queries",
            "open_set_queries",
            "queries_without_candidates",
            "junk_queries",
        )
    },
    "known_rank1": NUMBER,
    "histogram_edges": [NUMBER],
    "genuine_histogram": [NUMBER],
    "impostor_histogram": [NUMBER],
    "operating_points": [
        {
            key: NUMBER
            for key in (
                "far",
                "threshold",
                "tar",
                "far_achieved",
                "true_accepts",
                "false_accepts",
                "no_match_accuracy",
                "known_rank1_accepted",
            )
        }
    ],
}
TRT_STATUS_SPEC = {
    "latency": [
        {"batch_size": NUMBER, "median_ms": NUMBER, "p90_ms": NUMBER, "images_per_second": NUMBER}
    ],
    "parity": {
        "retrieval": _RETRIEVAL,
        "batch_parity": _BATCH_ROWS,
        "max_metric_delta_points": NUMBER,
    },
    "versions": {},
}


def check_spec(path: Path, value: Any, spec: Any, key: str = "") -> None:
    """One error naming ``path`` and the dotted key whose value does not match ``spec``."""
    if value is None:
        return
    where = f"{path}: {key or 'the top level'}"
    if spec is NUMBER:
        if not _is_number(value):
            raise ReidpipeError(f"{where} = {value!r}, expected a number")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise ReidpipeError(f"{where} = {value!r}, expected a list")
        for index, item in enumerate(value):
            check_spec(path, item, spec[0], f"{key}[{index}]")
    else:
        if not isinstance(value, dict):
            raise ReidpipeError(f"{where} = {value!r}, expected a JSON object")
        for name, item in value.items():
            if name in spec or "*" in spec:
                check_spec(path, item, spec.get(name, spec.get("*")), f"{key}.{name}".lstrip("."))


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
    package: dict[str, Any] | None = None
    verification: dict[str, Any] | None = None

    @property
    def ranking(self) -> str:
        """The ranking the figures and the hardest-query table show: re-ranked when evaluated."""
        return "reranked" if "reranked" in self.metrics else "plain"


def _optional_json(path: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    if path.is_dir():
        raise ReidpipeError(f"{path} is a directory, not a JSON file")
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise ReidpipeError(f"{path}: expected a JSON object")
    check_spec(path, data, spec)
    return data


def _read_per_query(arch_dir: Path, metrics: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """per_query.csv with the AP, first-hit rank and top-k columns of each ranking in ``metrics``."""
    columns = ["path", "pid", "camid"]
    for ranking in metrics:
        columns += [f"ap_{ranking}", f"first_hit_{ranking}", f"top_{ranking}"]
    return _read_csv(
        arch_dir / PER_QUERY_FILE,
        columns,
        "per-query table from `reidpipe evaluate --per-query`",
        numeric=["pid", "camid", *(f"{k}_{r}" for r in metrics for k in ("ap", "first_hit"))],
    )


def _read_image_tables(
    arch_dir: Path, per_query: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The query and gallery tables of the arch's embeddings; per_query.csv must list the same
    queries in the same order (its top-k cells index the gallery table)."""
    emb = arch_dir / EMBEDDINGS_DIR
    query = _read_csv(
        emb / embedding_table("query"), ["path", "pid", "camid"], "from `reidpipe extract`"
    )
    gallery = _read_csv(
        emb / embedding_table("gallery"), ["path", "pid", "camid"], "from `reidpipe extract`"
    )
    if len(query) != len(per_query) or not query["path"].equals(per_query["path"]):
        raise ReidpipeError(
            f"{arch_dir / PER_QUERY_FILE} does not list the queries of "
            f"{emb / embedding_table('query')} in the same order; re-run `reidpipe evaluate`"
        )
    return query, gallery


def _read_train_log(model_dir: Path) -> pd.DataFrame | None:
    log_path = model_dir / TRAIN_LOG_FILE
    if not log_path.is_file():
        return None
    return _read_csv(
        log_path,
        TRAIN_LOG_COLUMNS,
        "from `reidpipe train`",
        numeric=[*TRAIN_LOG_COLUMNS, "seconds"],
    )


def _read_train_config(model_dir: Path) -> dict[str, Any] | None:
    config_path = model_dir / TRAIN_CONFIG_FILE
    if not config_path.is_file():
        return None
    config = read_yaml_file(config_path, "trained model config")
    if not isinstance(config, dict):
        raise ReidpipeError(f"{config_path}: expected a mapping")
    return config


def load_arch(name: str, results_dir: Path, models_dir: Path) -> ArchResults:
    """Everything the report shows for one arch; evaluation outputs are required, the rest
    (training log, config, ONNX and TensorRT results) optional."""
    arch_dir = results_dir / name
    metrics = read_metrics(arch_dir / METRICS_FILE)
    cmc = _read_csv(
        arch_dir / CMC_FILE,
        ["rank", "plain"],
        "CMC curve from `reidpipe evaluate`",
        numeric=["rank", *RANKINGS],
    )
    per_query = _read_per_query(arch_dir, metrics)
    query, gallery = _read_image_tables(arch_dir, per_query)
    return ArchResults(
        name=name,
        metrics=metrics,
        cmc=cmc,
        per_query=per_query,
        query=query,
        gallery=gallery,
        train_log=_read_train_log(models_dir / name),
        config=_read_train_config(models_dir / name),
        parity=_optional_json(arch_dir / ONNX_DIR / PARITY_FILE, PARITY_SPEC),
        tensorrt=_optional_json(arch_dir / TENSORRT_DIR / TRT_STATUS_FILE, TRT_STATUS_SPEC),
        package=_optional_json(arch_dir / DEPLOY_DIR / PACKAGE_MANIFEST_FILE, PACKAGE_SPEC),
        verification=read_verification(arch_dir / VERIFICATION_FILE),
    )


def read_verification(path: Path) -> dict[str, Any] | None:
    """An evaluate stage's verification.json, when there is one: histograms whose lengths agree
    with their edges, and a list of operating points."""
    data = _optional_json(path, VERIFICATION_SPEC)
    if data is None:
        return None
    edges = data.get("histogram_edges")
    for key in ("genuine_histogram", "impostor_histogram"):
        counts = data.get(key)
        if (
            not isinstance(edges, list)
            or not isinstance(counts, list)
            or len(counts) + 1 != len(edges)
            or not counts
        ):
            raise ReidpipeError(
                f"{path}: {key} has {len(counts or [])} bins and histogram_edges "
                f"{len(edges or [])} edges; expected one edge more than bins "
                "(written by `reidpipe evaluate --verification`)"
            )
    if not isinstance(data.get("operating_points"), list):
        raise ReidpipeError(
            f"{path}: operating_points = {data.get('operating_points')!r}, expected a list"
        )
    return data


@dataclass
class Baseline:
    """The metrics committed at git HEAD, or why there are none."""

    metrics: dict[str, Any] | None
    note: str
    environment: dict[str, Any] | None = None  # each arch's training environment, when committed


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
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done if done.returncode == 0 else None

    shown = git("show", f"HEAD:./{relative.as_posix()}")
    if shown is None:
        return Baseline(
            None,
            f"No baseline: {out_dir / METRICS_FILE} is not committed at git "
            "HEAD (or this is not a git repository), so no deltas are shown.",
        )
    commit = git("rev-parse", "--short", "HEAD")
    where = f"commit {commit.stdout.strip()}" if commit else "HEAD"
    try:
        data = json.loads(shown.stdout)
    except json.JSONDecodeError:
        return Baseline(
            None,
            f"No baseline: {out_dir / METRICS_FILE} at {where} is not valid "
            "JSON, so no deltas are shown.",
        )
    if not isinstance(data, dict):
        return Baseline(
            None,
            f"No baseline: {out_dir / METRICS_FILE} at {where} is not a JSON "
            "object, so no deltas are shown.",
        )
    environment = git("show", f"HEAD:./{(relative.parent / ENVIRONMENT_FILE).as_posix()}")
    try:
        recorded = json.loads(environment.stdout) if environment else None
    except json.JSONDecodeError:
        recorded = None
    return Baseline(
        data,
        f"Deltas in parentheses are percentage points against "
        f"{out_dir / METRICS_FILE} at {where} (git HEAD).",
        recorded if isinstance(recorded, dict) else None,
    )
