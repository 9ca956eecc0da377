"""`reidpipe report`: tables against metrics.json, git baseline deltas, deployment status, figures,
self-contained HTML, bad input. Inputs are real stage outputs of a tiny dataset of real JPEGs."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.market_fixtures import make_tiny_market

from reidpipe import market, train_log
from reidpipe.cli import main
from reidpipe.data.validate import run_validation
from reidpipe.deploy.tensorrt_build import build_trt, unavailable_reason
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.embeddings import Embeddings, EmbeddingSet, write_embeddings
from reidpipe.evaluation.evaluate import evaluate_embeddings, write_evaluation
from reidpipe.evaluation.verification import open_set_verification
from reidpipe.filenames import PARITY_FILE, TRT_STATUS_FILE
from reidpipe.params import (
    ArchRecipe,
    DataParams,
    DeployParams,
    EvaluateParams,
    Params,
    PipelineParams,
    ReportParams,
    ReRankingParams,
    SourceParams,
)
from reidpipe.report.build import build_report

ARCHS = ["net_a", "net_b"]
METRIC_KEYS = ["mAP", "rank1", "rank5", "rank10", "mINP"]


def _embedding_set(
    paths: list[Path], rng: np.random.Generator, centers: np.ndarray, noise: float
) -> EmbeddingSet:
    names = [market.parse_name(p.name) for p in paths]
    pids = np.array([n.pid for n in names])
    feats = centers[np.clip(pids, 0, None) % len(centers)] + noise * rng.standard_normal(
        (len(paths), centers.shape[1])
    )
    meta = pd.DataFrame(
        {"path": [str(p) for p in paths], "pid": pids, "camid": [n.camid for n in names]}
    )
    return EmbeddingSet(features=feats.astype(np.float32), meta=meta)


def _write_arch(root: Path, dataset: Path, arch: str, noise: float) -> None:
    rng = np.random.default_rng(len(arch) + int(10 * noise))
    centers = rng.standard_normal((64, 16))
    query = sorted((dataset / market.QUERY_DIR).glob("*.jpg"))
    gallery = sorted((dataset / market.GALLERY_DIR).glob("*.jpg"))
    emb = Embeddings(
        query=_embedding_set(query, rng, centers, noise),
        gallery=_embedding_set(gallery, rng, centers, noise),
    )
    out = root / "results" / arch
    write_embeddings(out / "embeddings", emb)
    evaluate = EvaluateParams(max_rank=20)
    result = evaluate_embeddings(emb, evaluate, ReRankingParams(k1=4, k2=2), top_k=10, device="cpu")
    result.verification = open_set_verification(emb, evaluate)
    write_evaluation(
        result,
        out / "metrics.json",
        out / "cmc.csv",
        out / "per_query.csv",
        out / "verification.json",
    )
    log = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "steps": [5, 10, 15, 20],
            "loss": [8.1, 5.9, 4.2, 3.5],
            "id_loss": [3.1, 3.0, 2.4, 2.0],
            "triplet_loss": [5.0, 2.9, 1.8, 1.5],
            "center_loss": [0.0] * 4,
            "lr": [3.5e-6, 3.5e-4, 3.5e-4, 3.5e-5],
            "val_mAP": [np.nan, 0.31, np.nan, 0.52],
            "val_rank1": [np.nan, 0.4, np.nan, 0.7],
            "seconds": [9.5, 9.1, 9.0, 9.2],
        }
    )
    (root / "models" / arch).mkdir(parents=True)
    log[list(train_log.COLUMNS)].to_csv(root / "models" / arch / "train_log.csv", index=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/ and models/ of two archs: real evaluation outputs over real JPEGs."""
    root = tmp_path_factory.mktemp("report")
    dataset = make_tiny_market(root / "data", train_ids=2, test_ids=12)
    run_validation(dataset, root / "results" / "validation.json", strict=False)
    _write_arch(root, dataset, "net_a", noise=0.8)
    _write_arch(root, dataset, "net_b", noise=1.2)
    return root


def _params(**report: int) -> Params:
    return Params(
        pipeline=PipelineParams(archs=list(ARCHS)),
        archs={name: ArchRecipe() for name in ARCHS},
        report=ReportParams(**report),
    )


def _copy(workspace: Path, tmp_path: Path) -> Path:
    for name in ("results", "models"):
        shutil.copytree(workspace / name, tmp_path / name)
    return tmp_path


def _report(root: Path, **report: int) -> tuple[str, str]:
    """Build the report; small figures unless asked (the figures' cost is not under test)."""
    report = {"sampled_queries": 2, "top_k": 4, **report}
    build_report(_params(**report), root / "results", root / "models", root / "reports")
    return (
        (root / "reports" / "index.md").read_text(encoding="utf-8"),
        (root / "reports" / "index.html").read_text(encoding="utf-8"),
    )


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        check=True,
        capture_output=True,
    )


def test_tables_show_metrics_json_values(workspace: Path, tmp_path: Path) -> None:
    root = _copy(workspace, tmp_path)
    md, page = _report(root)
    assert "No baseline" in md and "No baseline" in page
    written = json.loads((root / "reports" / "metrics.json").read_text())
    assert list(written) == ARCHS
    for arch in ARCHS:
        source = json.loads((root / "results" / arch / "metrics.json").read_text())
        assert written[arch] == source
        for ranking, label in (("plain", "plain"), ("reranked", "re-ranked")):
            cells = [f"{100 * source[ranking][k]:.1f}" for k in METRIC_KEYS]
            row = f"| market1501 | {arch} | {label} | " + " | ".join(cells) + " |"
            assert row in md, row
            html_row = (
                f'<td class="t">market1501</td><td class="t">{arch}</td><td class="t">{label}</td>'
            ) + "".join(f"<td>{c}</td>" for c in cells)
            assert html_row in page, html_row
    # The two archs differ (different noise), so a swapped table would fail.
    assert written["net_a"]["plain"]["mAP"] != written["net_b"]["plain"]["mAP"]


def test_html_is_self_contained_and_figures_are_pngs(workspace: Path, tmp_path: Path) -> None:
    root = _copy(workspace, tmp_path)
    md, page = _report(root, sampled_queries=4, top_k=10)
    out = root / "reports"
    figures = ["figures/cmc.png"] + [
        f"figures/{a}_{kind}.png" for a in ARCHS for kind in ("matches", "training", "verification")
    ]
    for name in figures:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300
        assert f"]({name})" in md
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert len(sources) == len(figures)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page and "<style>" in page
    assert "4 sampled queries (seed 0) with their top-10 gallery images" in md
    # Hardest queries: the lowest re-ranked AP comes first.
    per_query = pd.read_csv(root / "results" / "net_b" / "per_query.csv")
    worst = per_query.sort_values("ap_reranked", kind="stable").iloc[0]
    assert f"| {Path(worst['path']).name} | {worst['pid']} |" in md
    # Training section from the train log; the validation summary from validation.json.
    assert (
        "4 epochs logged; final loss 3.500. Training time 0.6 min (sum of epoch times, "
        "validation included); last epoch 9.2 s."
    ) in md
    assert (
        "| gallery | 26 | 12 | 2, 3 | 1 | 1 | 64x128 (26) |" in md
    )  # 12 ids x 2 + junk + distractor


def test_deltas_against_committed_baseline(workspace: Path, tmp_path: Path) -> None:
    root = _copy(workspace, tmp_path)
    source = json.loads((root / "results" / "net_a" / "metrics.json").read_text())
    baseline = {"net_a": json.loads(json.dumps(source))}  # net_b is new
    baseline["net_a"]["plain"]["mAP"] -= 0.0123
    baseline["net_a"]["reranked"]["rank1"] += 0.05
    (root / "reports").mkdir()
    (root / "reports" / "metrics.json").write_text(json.dumps(baseline))
    _git(root, "init", "-q")
    _git(root, "add", "reports/metrics.json")
    _git(root, "commit", "-q", "-m", "baseline")
    # The working-tree copy is not the baseline: only the committed one counts.
    (root / "reports" / "metrics.json").write_text(json.dumps({"net_a": source}))
    md, page = _report(root)
    assert f"against {root / 'reports' / 'metrics.json'} at commit" in md
    plain = source["plain"]
    assert (
        f"| market1501 | net_a | plain | {100 * plain['mAP']:.1f} (+1.2) | {100 * plain['rank1']:.1f} (+0.0) |"
        in md
    )
    reranked = source["reranked"]
    assert (
        f"| market1501 | net_a | re-ranked | {100 * reranked['mAP']:.1f} (+0.0) | {100 * reranked['rank1']:.1f} (-5.0) |"
        in md
    )
    assert f'{100 * plain["mAP"]:.1f} <span class="up">(+1.2)</span>' in page
    assert '<span class="down">(-5.0)</span>' in page
    assert "Not in the baseline (no delta): net_b." in md
    assert (
        f"| market1501 | net_b | plain | {100 * json.loads((root / 'results/net_b/metrics.json').read_text())['plain']['mAP']:.1f} |"
        in md
    )
    # After the report the working tree holds the new metrics (the DVC metrics file).
    assert json.loads((root / "reports" / "metrics.json").read_text())["net_a"] == source


PARITY = {
    "arch": "net_a",
    "opset": 18,
    "export_seconds": 4.2,
    "status": "passed",
    "gates": {"max_abs_diff": 0.001, "min_cosine": 0.9999, "max_metric_delta_points": 0.1},
    "batch_parity": [
        {"batch_size": 1, "max_abs_diff": 2.1e-6, "min_cosine": 0.9999998, "mean_cosine": 0.9999999}
    ],
    "retrieval": {
        "torch": {"mAP": 0.8123, "rank1": 0.9},
        "onnx": {"mAP": 0.8122, "rank1": 0.9},
        "delta_points": {"mAP": 0.01, "rank1": 0.0},
    },
    "fp16": {
        "batch_parity": [
            {"batch_size": 7, "max_abs_diff": 3.0e-3, "min_cosine": 0.99991, "mean_cosine": 0.99995}
        ]
    },
}


def test_deployment_status(workspace: Path, tmp_path: Path) -> None:
    """ONNX parity, TensorRT skipped with its reason (the real build-trt on this machine) or
    disabled, and "not run" where the files are missing."""
    root = _copy(workspace, tmp_path)
    onnx_dir = root / "results" / "net_a" / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / PARITY_FILE).write_text(json.dumps(PARITY))
    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT can build here; this test checks how a skipped build is reported")
    status = build_trt(
        "net_a",
        onnx_dir,
        root / "results",
        root / "results" / "net_a" / "tensorrt",
        DeployParams(tensorrt="auto"),
        EvaluateParams(),
        batch_size=8,
    )
    assert status["status"] == "skipped"
    md, page = _report(root)
    for text in (md, page):
        assert (
            f"TensorRT: skipped (reason: {html.escape(reason) if text is page else reason})."
            in text
        )
        assert "ONNX export: not run" in text  # net_b
        assert "TensorRT: not run" in text  # net_b
        assert "mAP PyTorch 81.2% vs ONNX Runtime 81.2% (|delta| 0.010 points)" in text
    assert "| ONNX FP32 vs PyTorch | 1 | 2.10e-06 | 2.0e-07 |" in md
    assert "| ONNX FP16 vs FP32 | 7 | 3.00e-03 | 9.0e-05 |" in md
    build_trt(
        "net_b",
        onnx_dir,
        root / "results",
        root / "results" / "net_b" / "tensorrt",
        DeployParams(tensorrt="off"),
        EvaluateParams(),
        batch_size=8,
    )
    md, _ = _report(root)
    assert "TensorRT: disabled (reason: deploy.tensorrt is 'off')." in md


def test_built_tensorrt_engine_report(workspace: Path, tmp_path: Path) -> None:
    """A built engine's status.json, written by hand in build-trt's schema: building one needs a
    CUDA GPU and TensorRT, which this test cannot assume."""
    root = _copy(workspace, tmp_path)
    trt = root / "results" / "net_a" / "tensorrt"
    trt.mkdir()
    status = {
        "status": "built",
        "reason": None,
        "mode": "auto",
        "arch": "net_a",
        "precision": "fp16",
        "versions": {"tensorrt": "10.9.0", "torch": "2.9", "cuda_device": "NVIDIA H100"},
        "onnx": "model_fp16.onnx",
        "build_seconds": 31.5,
        "timing_cache_reused": False,
        "latency": [
            {"batch_size": 1, "median_ms": 0.8123, "p90_ms": 0.9, "images_per_second": 1231.1},
            {"batch_size": 64, "median_ms": 7.5, "p90_ms": 7.9, "images_per_second": 8533.3},
        ],
        "parity": {
            "batch_parity": [{"batch_size": 16, "max_abs_diff": 4e-3, "min_cosine": 0.99995}],
            "retrieval": {
                "onnxruntime": {"mAP": 0.5, "rank1": 0.6},
                "tensorrt": {"mAP": 0.499, "rank1": 0.6},
                "delta_points": {"mAP": 0.1, "rank1": 0.0},
            },
            "max_metric_delta_points": 0.3,
        },
    }
    (trt / TRT_STATUS_FILE).write_text(json.dumps(status))
    md, _ = _report(root)
    assert (
        "TensorRT: built from `model_fp16.onnx` with TensorRT 10.9.0 on NVIDIA H100, "
        "precision fp16, in 31.5 s (timing cache new)."
    ) in md
    assert "| 1 | 0.812 | 0.900 | 1231.1 |" in md and "| 64 | 7.500 | 7.900 | 8533.3 |" in md
    assert "mAP ONNX Runtime 50.0% vs TensorRT 49.9% (|delta| 0.100 points)" in md
    assert "| TensorRT vs ONNX Runtime | 16 | 4.00e-03 | 5.0e-05 |" in md


def test_cli_and_bad_input(workspace: Path, tmp_path: Path) -> None:
    root = _copy(workspace, tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"pipeline": {"archs": ARCHS}, "archs": {a: {} for a in ARCHS}}))
    argv = [
        "report",
        "--results",
        str(root / "results"),
        "--models",
        str(root / "models"),
        "--out",
        str(root / "reports"),
        "--params",
        str(params),
    ]
    assert main(argv + ["--set", "report.sampled_queries=2", "--set", "report.top_k=4"]) == 0
    assert (root / "reports" / "index.html").is_file()
    leftovers = [p.name for p in (root / "reports").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    (root / "results" / "net_b" / "metrics.json").write_text(json.dumps({"plain": {"mAP": "x"}}))
    with pytest.raises(ReidpipeError, match=r"net_b/metrics.json: plain.mAP = 'x'"):
        build_report(_params(), root / "results", root / "models", root / "reports")
    (root / "results" / "net_b" / "metrics.json").unlink()
    with pytest.raises(ReidpipeError, match=r"net_b/metrics.json does not exist"):
        build_report(_params(), root / "results", root / "models", root / "reports")
    assert main(argv) == 2


def _set(data: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


GOOD_PARITY = {
    "status": "passed",
    "batch_parity": [{"batch_size": 1, "max_abs_diff": 1e-6, "min_cosine": 1.0}],
    "retrieval": {
        "torch": {"mAP": 0.5, "rank1": 0.6},
        "onnx": {"mAP": 0.5, "rank1": 0.6},
        "delta_points": {"mAP": 0.0, "rank1": 0.0},
    },
}


@pytest.mark.parametrize(
    "file, dotted, value, message",
    [
        ("metrics.json", "plain.mAP", -7.5, "plain.mAP = -7.5, expected a fraction from 0 to 1"),
        ("metrics.json", "plain.rank1", float("nan"), "plain.rank1 = nan, expected a fraction"),
        ("metrics.json", "reranked.mINP", 1.5, "reranked.mINP = 1.5, expected a fraction"),
        ("metrics.json", "plain.num_queries", 2.5, "plain.num_queries = 2.5, expected a whole"),
        (
            "onnx/parity.json",
            "batch_parity",
            "all good",
            "batch_parity = 'all good', expected a list",
        ),
        (
            "onnx/parity.json",
            "batch_parity.0.max_abs_diff",
            "tiny",
            "batch_parity[0].max_abs_diff = 'tiny', expected a number",
        ),
        (
            "onnx/parity.json",
            "retrieval.onnx.mAP",
            "0.5",
            "retrieval.onnx.mAP = '0.5', expected a number",
        ),
        (
            "tensorrt/status.json",
            "latency",
            [{"batch_size": 1, "median_ms": "fast"}],
            "latency[0].median_ms = 'fast', expected a number",
        ),
        (
            "tensorrt/status.json",
            "parity",
            ["not", "an", "object"],
            "parity = ['not', 'an', 'object'], expected a JSON object",
        ),
        (
            "verification.json",
            "genuine_histogram",
            [3, 4],
            "genuine_histogram has 2 bins and histogram_edges 101 edges; expected one edge more",
        ),
        (
            "verification.json",
            "operating_points",
            [{"far": 0.01, "threshold": "low"}],
            "operating_points[0].threshold = 'low', expected a number",
        ),
    ],
)
def test_malformed_inputs_are_named_and_leave_no_report(
    workspace: Path, tmp_path: Path, file, dotted, value, message
) -> None:
    """Out-of-range, NaN and mistyped values are refused with the file and key, before anything
    is written: no reports/ folder appears (today's -750 % or NaN in reports/metrics.json)."""
    root = _copy(workspace, tmp_path)
    path = root / "results" / "net_b" / file
    data = json.loads(path.read_text()) if path.is_file() else {"status": "built"}
    if file == "onnx/parity.json":
        data = json.loads(json.dumps(GOOD_PARITY))
    if dotted == "batch_parity.0.max_abs_diff":
        data["batch_parity"][0]["max_abs_diff"] = value
    else:
        _set(data, dotted, value)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))  # json writes NaN as the bare literal, which it reads back
    with pytest.raises(ReidpipeError) as error:
        build_report(_params(), root / "results", root / "models", root / "reports")
    assert f"net_b/{file}: {message}" in str(error.value)
    assert not (root / "reports").exists()


def test_verification_section(workspace: Path, tmp_path: Path) -> None:
    """Each arch's verification.json as a table (threshold, TAR, achieved FAR, no-match accuracy
    per target FAR; a FAR without a threshold says why) and the distance-distribution figure;
    an arch without one says so."""
    root = _copy(workspace, tmp_path)
    (root / "results" / "net_a" / "verification.json").unlink()
    md, page = _report(root)
    data = json.loads((root / "results" / "net_b" / "verification.json").read_text())
    assert data["held_out_pids"] and data["num_open_set_queries"] > 0
    assert md.count("### Verification thresholds (open set)") == 2
    assert (
        f"{len(data['held_out_pids'])} query identities (evaluate.open_set_fraction 0.1) "
        f"were held out: their {data['gallery_images_held_out']} gallery images"
    ) in md
    rows = 0
    for point in data["operating_points"]:
        if point["threshold"] is None:
            row = f"| {point['far']:g} | none: {point['why_null']['threshold']} | - | - | - | - |"
        else:
            row = (
                f"| {point['far']:g} | {point['threshold']:.4f} | {100 * point['tar']:.1f}% | "
                f"{point['far_achieved']:.2e} | {100 * point['no_match_accuracy']:.1f}% | "
                f"{100 * point['known_rank1_accepted']:.1f}% |"
            )
            rows += 1
        assert row in md, row
    assert rows >= 1  # at least one FAR has a threshold on this data
    with Image.open(root / "reports" / "figures" / "net_b_verification.png") as image:
        assert image.format == "PNG" and image.width > 300
    assert "](figures/net_b_verification.png)" in md
    assert not (root / "reports" / "figures" / "net_a_verification.png").exists()
    assert "Not available: no verification.json (run `reidpipe evaluate --verification`)." in md
    assert "Verification thresholds (open set)" in page


def test_non_numeric_training_log_is_named(workspace: Path, tmp_path: Path) -> None:
    root = _copy(workspace, tmp_path)
    log = root / "models" / "net_a" / "train_log.csv"
    frame = pd.read_csv(log)
    frame["loss"] = frame["loss"].astype(object)
    frame.loc[2, "loss"] = "diverged"
    frame.to_csv(log, index=False)
    with pytest.raises(
        ReidpipeError,
        match=r"train_log.csv: column 'loss' row 3 holds "
        r"'diverged', expected a number",
    ):
        build_report(_params(), root / "results", root / "models", root / "reports")


def test_precisions_side_by_side_and_package(workspace: Path, tmp_path: Path) -> None:
    """FP32 / FP16 / INT8 in one table (cosine, retrieval, ONNX Runtime and TensorRT latency),
    the INT8 gate's reason when it failed, and the deployment package's summary."""
    root = _copy(workspace, tmp_path)
    arch = root / "results" / "net_a"
    (arch / "onnx").mkdir()
    int8 = {
        "status": "passed",
        "reason": None,
        "file": "model_int8.onnx",
        "format": "QDQ",
        "weights": "int8 per channel, symmetric",
        "activations": "int8",
        "calibration": {"method": "minmax", "images": 64, "seed": 0},
        "gates": {"min_cosine": 0.98, "max_metric_delta_points": 1.0},
        "batch_parity": [
            {"batch_size": 1, "max_abs_diff": 0.02, "min_cosine": 0.9951},
            {"batch_size": 7, "max_abs_diff": 0.03, "min_cosine": 0.9932},
        ],
        "retrieval": {
            "onnx": {"mAP": 0.8122, "rank1": 0.9},
            "int8": {"mAP": 0.8071, "rank1": 0.9},
            "delta_points": {"mAP": 0.51, "rank1": 0.0},
        },
    }
    latency = {
        precision: [
            {"batch_size": 1, "median_ms": ms, "images_per_second": 1000 / ms},
            {"batch_size": 7, "median_ms": 5 * ms, "images_per_second": 1},
        ]
        for precision, ms in (("fp32", 4.0), ("fp16", 9.0), ("int8", 2.0))
    }
    (arch / "onnx" / PARITY_FILE).write_text(
        json.dumps({**PARITY, "int8": int8, "latency": latency})
    )
    (arch / "tensorrt").mkdir()
    (arch / "tensorrt" / TRT_STATUS_FILE).write_text(
        json.dumps(
            {
                "status": "built",
                "precision": "int8",
                "onnx": "model_int8.onnx",
                "latency": [
                    {
                        "batch_size": 16,
                        "median_ms": 0.7,
                        "p90_ms": 0.8,
                        "images_per_second": 22857.1,
                    }
                ],
            }
        )
    )
    (arch / "deploy").mkdir()
    (arch / "deploy" / "package.json").write_text(
        json.dumps(
            {
                "triton": {
                    "model": "net_a",
                    "platform": "tensorrt_plan",
                    "model_file": "model.plan",
                    "max_batch_size": 64,
                },
                "deepstream": {
                    "config": "deepstream/deepstream_reid.yml",
                    "onnx": "deepstream/model_int8.onnx",
                    "offsets": [123.675, 116.28, 103.53],
                    "netScaleFactor": 1.0,
                    "networkMode": 2,
                    "folded_channel_scale": [0.0171, 0.0175, 0.0174],
                },
            }
        )
    )
    md, _ = _report(root)
    assert "| precision | min cosine | mAP | R1 | ONNX Runtime latency | TensorRT latency |" in md
    assert "| FP32 | vs PyTorch 1.00000 | 81.2% | 90.0% | 4.0 ms @ 1, 20.0 ms @ 7 | - |" in md
    assert "| FP16 | vs FP32 0.99991 | - | - | 9.0 ms @ 1, 45.0 ms @ 7 | - |" in md
    assert (
        "| INT8 | vs FP32 0.99320 | 80.7% | 90.0% | 2.0 ms @ 1, 10.0 ms @ 7 | 0.7 ms @ 16 |" in md
    )
    assert (
        "INT8: `model_int8.onnx` (QDQ, weights int8 per channel, symmetric, int8 "
        "activations), calibrated on 64 train images (seed 0, minmax)"
    ) in md
    assert "mAP FP32 81.2% vs INT8 80.7% (|delta| 0.510 points)" in md
    assert (
        "Triton model `net_a` (tensorrt_plan, `model.plan`, dynamic batching up to 64); "
        "DeepStream ReID section `deepstream/deepstream_reid.yml` (offsets [123.675, 116.28, "
        "103.53], netScaleFactor 1.0, networkMode 2, per-channel scale [0.0171, 0.0175, "
        "0.0174] folded into `deepstream/model_int8.onnx`)."
    ) in md
    failed = {**int8, "status": "failed", "reason": "INT8 gate failed: batch 7: min cosine"}
    (arch / "onnx" / PARITY_FILE).write_text(json.dumps({**PARITY, "int8": failed}))
    md, _ = _report(root)
    assert "INT8: no model_int8.onnx (reason: INT8 gate failed: batch 7: min cosine)." in md
    assert "| INT8 | INT8 gate failed: batch 7: min cosine | - | - | - | - |" in md
    assert "Deployment package: not run" in md  # net_b


def test_cross_domain_test_sets_join_the_metrics_table(workspace: Path, tmp_path: Path) -> None:
    """pipeline.eval_sources beyond data.source: one row per test set x arch x ranking."""
    root = _copy(workspace, tmp_path)
    cross = {}
    for i, arch in enumerate(ARCHS):
        metrics = json.loads((root / "results" / arch / "metrics.json").read_text())
        for block in metrics.values():  # another test set: other numbers
            for key in METRIC_KEYS:
                block[key] = round(block[key] * (0.5 - 0.1 * i), 6)
        folder = root / "results" / arch / "cross" / "duke"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        cross[arch] = metrics
    params = _params(sampled_queries=2, top_k=4)
    params.data = DataParams(sources={"duke": SourceParams(source="dukemtmc")})
    params.pipeline.eval_sources = ["market1501", "duke"]
    build_report(params, root / "results", root / "models", root / "reports")
    md = (root / "reports" / "index.md").read_text(encoding="utf-8")
    for arch in ARCHS:
        for ranking, label in (("plain", "plain"), ("reranked", "re-ranked")):
            cells = [f"{100 * cross[arch][ranking][k]:.1f}" for k in METRIC_KEYS]
            assert f"| duke | {arch} | {label} | " + " | ".join(cells) + " |" in md
        assert f"| market1501 | {arch} | plain |" in md
    written = json.loads((root / "reports" / "metrics.json").read_text())
    assert written["net_b@duke"] == cross["net_b"] and "net_b" in written
    (root / "results" / "net_b" / "cross" / "duke" / "metrics.json").unlink()
    with pytest.raises(ReidpipeError, match=r"net_b/cross/duke/metrics.json does not exist"):
        build_report(params, root / "results", root / "models", root / "reports")
