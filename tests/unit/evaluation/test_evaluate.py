"""Market-1501 evaluation: hand-computed cases, a per-query reference, the CLI, bad input."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import ROOT
from support.evaluate_run import evaluate_argv
from support.references import dense_re_ranking

from reidpipe.cli import main
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation import rerank
from reidpipe.evaluation.embeddings import (
    Embeddings,
    EmbeddingSet,
    read_embeddings,
    write_embeddings,
)
from reidpipe.evaluation.evaluate import (
    REPORTED_RANKS,
    evaluate_embeddings,
    rank_queries,
    summarise,
)
from reidpipe.evaluation.verification import hold_out_identities, verification_figures
from reidpipe.params import EvaluateParams, ReRankingParams

# Gallery of the hand-computed cases: (pid, camid).
G_PIDS = np.array([1, -1, 0, 1, 2, 1, 3])
G_CAMS = np.array([1, 2, 2, 2, 3, 3, 1])
# Query 0: pid 1 cam 1. g0 is the same pid and camera (removed), g1 junk (removed), g2 a
# distractor (kept as a negative). Filtered ranking: g2 -, g3 +, g4 -, g5 +, g6 -.
# Query 1: pid 2 cam 3; its only gallery image g4 is from the same camera: skipped.
# Query 2: pid 3 cam 2; g6 (camera 1) is nearest.
Q_PIDS = np.array([1, 2, 3])
Q_CAMS = np.array([1, 3, 2])
DIST = np.array(
    [
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        [0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0.7],
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.1],
    ],
    dtype=np.float32,
)


def ranked(dist: np.ndarray, **kwargs) -> object:
    return rank_queries(lambda s, e: dist[s:e], len(dist), Q_PIDS, Q_CAMS, G_PIDS, G_CAMS, **kwargs)


def test_hand_computed_protocol() -> None:
    r = ranked(DIST, max_rank=5, top_k=6)
    # Query 0: hits at filtered ranks 2 and 4: AP = (1/2 + 2/4) / 2, INP = 2 / 4.
    assert r.ap[0] == pytest.approx(0.5)
    assert r.inp[0] == pytest.approx(0.5)
    assert r.first_hit[0] == 2 and r.num_matches[0] == 2
    assert r.top[0].tolist() == [2, 3, 4, 5, 6, -1]
    assert r.num_matches[1] == 0 and np.isnan(r.ap[1]) and r.first_hit[1] == 0
    assert r.ap[2] == pytest.approx(1.0) and r.first_hit[2] == 1
    assert r.top[2].tolist()[:2] == [6, 5]
    np.testing.assert_allclose(r.cmc, [0.5, 1.0, 1.0, 1.0, 1.0])
    summary = summarise(r)
    assert summary["mAP"] == pytest.approx(0.75)
    assert summary["mINP"] == pytest.approx(0.75)
    assert summary["rank1"] == pytest.approx(0.5)
    assert summary["rank5"] == pytest.approx(1.0)
    assert summary["num_queries"] == 2 and summary["num_skipped"] == 1


def test_trapezoidal_ap() -> None:
    r = ranked(DIST, ap_method="trapezoidal")
    # MATLAB compute_AP: 0.5 * (0 + 1/2) / 2 + 0.5 * (1/3 + 2/4) / 2 = 1/3.
    assert r.ap[0] == pytest.approx(1.0 / 3.0)
    # A first hit at rank 1 counts precision 1 on both sides of the trapezoid.
    assert r.ap[2] == pytest.approx(1.0)


def test_ties_keep_gallery_order() -> None:
    flat = np.full_like(DIST, 0.5)
    r = ranked(flat, top_k=5)
    assert r.top[0].tolist() == [2, 3, 4, 5, 6]
    assert r.ap[0] == pytest.approx(0.5)
    # Query 2: filtered order g0 g2 g3 g4 g5 g6 -> its match g6 is 6th.
    assert r.first_hit[2] == 6
    assert r.ap[2] == pytest.approx(1.0 / 6.0)
    tied = DIST.copy()
    tied[0, 3] = tied[0, 2]  # the match g3 ties the distractor g2, which comes first
    assert ranked(tied).first_hit[0] == 2
    tied[0, 2] = tied[0, 3] = -0.0
    tied[0, 3] = 0.0  # -0.0 and 0.0 are a tie too
    assert ranked(tied).first_hit[0] == 2


def reference_ap(dist_row, q_pid, q_cam, g_pids, g_cams, trapezoidal) -> tuple[float, int, float]:
    order = np.argsort(dist_row, kind="stable")
    kept = [j for j in order if g_pids[j] != -1 and not (g_pids[j] == q_pid and g_cams[j] == q_cam)]
    good = [g_pids[j] == q_pid for j in kept]
    n_good = sum(good)
    if n_good == 0:
        return float("nan"), 0, float("nan")
    ap, hits, old_precision = 0.0, 0, 1.0
    ranks = []
    for rank, is_good in enumerate(good, start=1):
        hits += is_good
        precision = hits / rank
        if is_good:
            ranks.append(rank)
            ap += (precision + old_precision) / 2 if trapezoidal else precision
        old_precision = precision
    return ap / n_good, ranks[0], n_good / ranks[-1]


@pytest.mark.parametrize("method", ["non_interpolated", "trapezoidal"])
def test_matches_per_query_reference(method: str) -> None:
    rng = np.random.default_rng(7)
    nq, ng = 40, 300
    q_pids, g_pids = rng.integers(0, 12, nq), rng.integers(-1, 12, ng)
    q_cams, g_cams = rng.integers(1, 4, nq), rng.integers(1, 4, ng)
    dist = rng.random((nq, ng)).astype(np.float32)
    dist[:, ::7] = dist[:, 1::7][:, : dist[:, ::7].shape[1]]  # plenty of exact ties
    r = rank_queries(
        lambda s, e: dist[s:e], nq, q_pids, q_cams, g_pids, g_cams, ap_method=method, top_k=25
    )
    for i in range(nq):
        ap, first, inp = reference_ap(
            dist[i], q_pids[i], q_cams[i], g_pids, g_cams, method == "trapezoidal"
        )
        np.testing.assert_allclose(r.ap[i], ap, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(r.inp[i], inp, atol=1e-12, equal_nan=True)
        assert r.first_hit[i] == first
        order = np.argsort(dist[i], kind="stable")
        kept = [
            j
            for j in order
            if g_pids[j] != -1 and not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])
        ]
        assert r.top[i].tolist() == kept[:25]


def unit_circle(angles) -> np.ndarray:
    angles = np.asarray(angles, dtype=np.float64)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def hand_embeddings() -> Embeddings:
    """Features on the unit circle whose cosine distances order the gallery like DIST."""
    gallery = unit_circle(0.1 * np.arange(1, 8))
    query = unit_circle([0.0, 0.5, 0.7])
    meta = lambda pids, cams, prefix: pd.DataFrame(  # noqa: E731
        {"path": [f"{prefix}/{i}.jpg" for i in range(len(pids))], "pid": pids, "camid": cams}
    )
    return Embeddings(
        query=EmbeddingSet(query, meta(Q_PIDS, Q_CAMS, "q")),
        gallery=EmbeddingSet(gallery, meta(G_PIDS, G_CAMS, "g")),
    )


def write_params(path: Path, re_ranking: bool = True, distance: str = "cosine") -> Path:
    base = ROOT / "params.yaml"
    text = base.read_text(encoding="utf-8")
    text = text.replace("re_ranking: true", f"re_ranking: {str(re_ranking).lower()}")
    text = text.replace("distance: cosine", f"distance: {distance}")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_cli_writes_metrics_cmc_and_per_query(tmp_path: Path, distance: str) -> None:
    write_embeddings(tmp_path / "emb", hand_embeddings())
    params = write_params(tmp_path / "params.yaml", distance=distance)
    out = tmp_path / "metrics.json"
    settings = ["--set", "re_ranking.k1=3", "--set", "evaluate.max_rank=6"]
    code = main(evaluate_argv(params, tmp_path / "emb", tmp_path, *settings))
    assert code == 0
    metrics = json.loads(out.read_text())
    plain = metrics["plain"]
    assert plain["mAP"] == pytest.approx(0.75) and plain["rank1"] == pytest.approx(0.5)
    assert plain["num_queries"] == 2 and plain["num_skipped"] == 1
    assert plain["ap_method"] == "non_interpolated" and plain["distance"] == distance
    cmc = pd.read_csv(tmp_path / "cmc.csv")
    assert list(cmc.columns) == ["rank", "plain", "reranked"]
    assert cmc["rank"].tolist() == list(range(1, 7))
    assert cmc["plain"].tolist() == [0.5] + [1.0] * 5
    pq = pd.read_csv(tmp_path / "per_query.csv", keep_default_na=True)
    assert pq.loc[0, "path"] == "q/0.jpg" and pq.loc[0, "ap_plain"] == pytest.approx(0.5)
    assert pq.loc[0, "first_hit_plain"] == 2 and pq.loc[0, "top_plain"] == "2 3 4 5 6"
    assert pd.isna(pq.loc[1, "ap_plain"]) and pd.isna(pq.loc[1, "first_hit_plain"])
    assert {"ap_reranked", "first_hit_reranked", "top_reranked", "inp_plain"} <= set(pq.columns)


def clustered_embeddings(seed: int = 3, nq: int = 30, ng: int = 90) -> Embeddings:
    """Features around 9 identity centres; some gallery junk and distractors."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(10, 8))
    pids = rng.integers(1, 10, nq + ng)
    feats = (centres[pids] + rng.normal(size=(nq + ng, 8))).astype(np.float32)
    g_pids = pids[nq:].copy()
    g_pids[rng.random(ng) < 0.1] = -1
    g_pids[rng.random(ng) < 0.1] = 0

    def meta(p: np.ndarray, prefix: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "path": [f"{prefix}/{i}.jpg" for i in range(len(p))],
                "pid": p,
                "camid": rng.integers(1, 4, len(p)),
            }
        )

    return Embeddings(
        query=EmbeddingSet(feats[:nq], meta(pids[:nq], "q")),
        gallery=EmbeddingSet(feats[nq:], meta(g_pids, "g")),
    )


def test_cli_verification_figures_and_unchanged_metrics(tmp_path: Path) -> None:
    """--verification writes the figures verification_figures gives on the same embeddings with
    the same held-out ids (their gallery images dropped); metrics, CMC and per-query table are
    byte-identical with or without it and whatever evaluate.open_set_fraction is."""
    emb = clustered_embeddings()
    write_embeddings(tmp_path / "emb", emb)
    params = write_params(tmp_path / "params.yaml")
    outputs = ("metrics.json", "cmc.csv", "per_query.csv")

    def run(name: str, *extra: str) -> Path:
        out = tmp_path / name
        out.mkdir()
        settings = ["--set", "re_ranking.k1=5", *extra]
        assert main(evaluate_argv(params, tmp_path / "emb", out, *settings)) == 0
        return out

    plain = run("without")
    q, g = emb.query, emb.gallery
    q_pids, q_cams = q.meta["pid"].to_numpy(), q.meta["camid"].to_numpy()
    g_pids, g_cams = g.meta["pid"].to_numpy(), g.meta["camid"].to_numpy()
    for fraction, seed in ((0.1, 0), (0.3, 7), (0.0, 0)):
        out = run(
            f"fraction{fraction}",
            "--verification",
            str(tmp_path / f"v{fraction}.json"),
            "--set",
            f"evaluate.open_set_fraction={fraction}",
            "--set",
            f"evaluate.open_set_seed={seed}",
        )
        for name in outputs:
            assert (out / name).read_bytes() == (plain / name).read_bytes(), name
        written = json.loads((tmp_path / f"v{fraction}.json").read_text())
        kept = np.ones(len(g_pids), dtype=bool)
        held_out: list[int] = []
        if fraction:
            split = hold_out_identities(q_pids, g_pids, fraction, seed)
            kept, held_out = split.gallery_kept, split.unknown_pids.tolist()
        expected = verification_figures(
            q.features, g.features[kept], q_pids, q_cams, g_pids[kept], g_cams[kept]
        ).to_json()
        assert written == json.loads(
            json.dumps(
                {
                    "open_set_fraction": fraction,
                    "open_set_seed": seed,
                    "held_out_pids": held_out,
                    "gallery_images_held_out": int((~kept).sum()),
                    **expected,
                }
            )
        )
        assert len(held_out) == (max(1, round(fraction * 9)) if fraction else 0)
        open_set = written["num_open_set_queries"]
        assert open_set >= np.isin(q_pids, held_out).sum() and (open_set > 0) == bool(fraction)
        points = written["operating_points"]
        assert [p["far"] for p in points] == [1e-2, 1e-3, 1e-4]
        assert points[0]["threshold"] is not None and points[0]["tar"] > 0
        assert (points[0]["no_match_accuracy"] is None) == (not fraction)


def test_cli_open_set_fraction_out_of_range(tmp_path: Path) -> None:
    write_embeddings(tmp_path / "emb", hand_embeddings())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reidpipe",
            "evaluate",
            "--params",
            str(write_params(tmp_path / "params.yaml")),
            "--embeddings",
            str(tmp_path / "emb"),
            "--out",
            str(tmp_path / "m.json"),
            "--verification",
            str(tmp_path / "v.json"),
            "--set",
            "evaluate.open_set_fraction=0.9",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "evaluate.open_set_fraction" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "v.json").exists()


def oracle_ranking(
    dist: np.ndarray,
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    max_rank: int,
    top_k: int,
) -> dict[str, object]:
    """Per-query AP, INP, first hit and filtered top-k of a dense distance matrix, and their CMC
    and summary, from ``reference_ap`` (the protocol written out query by query)."""
    rows = [
        reference_ap(dist[i], q_pids[i], q_cams[i], g_pids, g_cams, False) for i in range(len(dist))
    ]
    ap, first, inp = (np.array(column, dtype=float) for column in zip(*rows))
    top = []
    for i in range(len(dist)):
        kept = [
            j
            for j in np.argsort(dist[i], kind="stable")
            if g_pids[j] != -1 and not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])
        ]
        top.append(" ".join(map(str, kept[:top_k])))
    hits = first[first > 0]
    summary = {
        "mAP": np.nanmean(ap),
        "mINP": np.nanmean(inp),
        **{f"rank{r}": (hits <= r).mean() for r in REPORTED_RANKS},
        "num_queries": len(hits),
        "num_skipped": int((first == 0).sum()),
    }
    return {
        "ap": ap,
        "inp": inp,
        "first_hit": first,
        "top": top,
        "cmc": np.array([(hits <= r).mean() for r in range(1, max_rank + 1)]),
        "summary": summary,
    }


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_cli_re_ranked_results_match_the_dense_oracle(tmp_path: Path, distance: str) -> None:
    """What `reidpipe evaluate` writes for the re-ranked ranking (metrics, CMC, per-query table),
    with k1/k2/lambda from --set, equals the paper's re-ranking computed densely
    (tests/unit/evaluation/test_rerank.py) on the features the plain ranking uses, ranked by the protocol."""
    k1, k2, lam, max_rank, top_k = 7, 3, 0.45, 12, 10
    rng = np.random.default_rng(3)
    nq, ng, dim = 14, 70, 8
    centres = 2.0 * rng.normal(size=(9, dim))
    pids = rng.integers(1, 9, nq + ng)
    feats = (centres[pids] + rng.normal(size=(nq + ng, dim))).astype(np.float32)
    g_pids = pids[nq:].copy()
    g_pids[rng.random(ng) < 0.1] = -1  # junk: never ranked
    g_pids[rng.random(ng) < 0.1] = 0  # distractors: negatives
    q_cams, g_cams = rng.integers(1, 4, nq), rng.integers(1, 4, ng)

    def meta(p: np.ndarray, cams: np.ndarray, prefix: str) -> pd.DataFrame:
        return pd.DataFrame(
            {"path": [f"{prefix}/{i}.jpg" for i in range(len(p))], "pid": p, "camid": cams}
        )

    write_embeddings(
        tmp_path / "emb",
        Embeddings(
            query=EmbeddingSet(feats[:nq], meta(pids[:nq], q_cams, "q")),
            gallery=EmbeddingSet(feats[nq:], meta(g_pids, g_cams, "g")),
        ),
    )
    params = write_params(tmp_path / "params.yaml", distance=distance)
    settings = {
        "re_ranking.k1": k1,
        "re_ranking.k2": k2,
        "re_ranking.lambda_value": lam,
        "evaluate.max_rank": max_rank,
        "report.top_k": top_k,
    }
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    assert main(evaluate_argv(params, tmp_path / "emb", tmp_path, *sets)) == 0

    if distance == "cosine":
        feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    expected = dense_re_ranking(feats[:nq], feats[nq:], k1, k2, lam)
    oracle = oracle_ranking(expected, pids[:nq], q_cams, g_pids, g_cams, max_rank, top_k)
    got = json.loads((tmp_path / "metrics.json").read_text())["reranked"]
    assert {key: got[key] for key in oracle["summary"]} == pytest.approx(
        oracle["summary"], abs=1e-9
    )
    assert (got["k1"], got["k2"], got["lambda_value"]) == (k1, k2, lam)
    cmc = pd.read_csv(tmp_path / "cmc.csv")
    np.testing.assert_allclose(cmc["reranked"], oracle["cmc"], atol=1e-12)
    pq = pd.read_csv(tmp_path / "per_query.csv", keep_default_na=False, na_values=[""])
    np.testing.assert_allclose(pq["ap_reranked"], oracle["ap"], atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(pq["inp_reranked"], oracle["inp"], atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(pq["first_hit_reranked"].fillna(0), oracle["first_hit"])
    assert pq["top_reranked"].fillna("").astype(str).tolist() == oracle["top"]
    # the oracle is not the plain ranking: re-ranking moved some queries' results
    assert pq["top_reranked"].tolist() != pq["top_plain"].tolist()


def lock_is_held(path: Path) -> bool:
    """Whether some open file holds the flock on ``path`` (as GPU leases do)."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


@pytest.mark.parametrize("device, takes_gpu", [("auto", True), ("cpu", False)])
def test_cli_holds_a_gpu_while_it_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, takes_gpu: bool
) -> None:
    """evaluate re-ranks on CUDA where there is one: like extract, it takes a GPU through the
    device locks for the whole run (and sets CUDA_VISIBLE_DEVICES to it); --device cpu takes
    none. The machine is made to report one GPU; the locks are real flock()s."""
    from reidpipe import devices
    from reidpipe.evaluation import evaluate as evaluate_module

    locks = tmp_path / "locks"
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(locks))
    monkeypatch.delenv(devices.CUDA_ENV, raising=False)
    monkeypatch.setattr(devices, "count_gpus", lambda: 1)
    seen = []
    evaluate = evaluate_module.evaluate_embeddings

    def watched(*args: object, **kwargs: object) -> object:
        seen.append(
            (
                (locks / "gpu0.lock").exists() and lock_is_held(locks / "gpu0.lock"),
                os.environ.get(devices.CUDA_ENV),
            )
        )
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate_embeddings", watched)
    write_embeddings(tmp_path / "emb", hand_embeddings())
    assert (
        main(
            [
                "evaluate",
                "--params",
                str(write_params(tmp_path / "params.yaml")),
                "--embeddings",
                str(tmp_path / "emb"),
                "--out",
                str(tmp_path / "m.json"),
                "--set",
                "re_ranking.k1=3",
                "--device",
                device,
            ]
        )
        == 0
    )
    if takes_gpu:
        assert seen == [(True, "0")]
        assert not lock_is_held(locks / "gpu0.lock")  # released at the end
    else:
        assert seen == [(False, None)] and not locks.exists()


def test_cpu_evaluate_never_imports_torch(tmp_path: Path) -> None:
    """The command's CPU path runs on NumPy alone: importing torch would cost seconds of it."""
    write_embeddings(tmp_path / "emb", hand_embeddings())
    params = write_params(tmp_path / "params.yaml")
    script = (
        "import sys\nfrom reidpipe.cli import main\n"
        f"code = main(['evaluate', '--params', {str(params)!r}, '--embeddings', "
        f"{str(tmp_path / 'emb')!r}, '--out', {str(tmp_path / 'm.json')!r}, "
        "'--set', 're_ranking.k1=3', '--device', 'cpu'])\n"
        "print(code, 'torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert proc.stdout.split()[-2:] == ["0", "False"]
    assert json.loads((tmp_path / "m.json").read_text())["reranked"]["k1"] == 3


def test_re_ranking_off_and_trapezoidal_label() -> None:
    result = evaluate_embeddings(
        hand_embeddings(),
        EvaluateParams(ap_method="trapezoidal"),
        ReRankingParams(re_ranking=False),
        device="cpu",
    )
    assert list(result.metrics) == ["plain"]
    assert result.metrics["plain"]["ap_method"] == "trapezoidal"
    assert result.metrics["plain"]["mAP"] == pytest.approx((1 / 3 + 1) / 2)
    assert list(result.cmc.columns) == ["rank", "plain"]


def test_no_query_with_a_match_is_an_error() -> None:
    emb = hand_embeddings()
    emb.query.meta["pid"] = [2, 2, 2]
    emb.query.meta["camid"] = [3, 3, 3]
    with pytest.raises(ReidpipeError, match="none of the 3 queries"):
        evaluate_embeddings(emb, EvaluateParams(), ReRankingParams(re_ranking=False), device="cpu")


def corrupt(folder: Path, how: str) -> None:
    if how == "nan":
        feats = np.load(folder / "gallery.npy")
        feats[3, 0] = np.nan
        np.save(folder / "gallery.npy", feats)
    elif how == "inf":
        feats = np.load(folder / "query.npy")
        feats[1, 1] = np.inf
        np.save(folder / "query.npy", feats)
    elif how == "dim":
        np.save(folder / "query.npy", np.ones((3, 5), dtype=np.float32))
    elif how == "rows":
        frame = pd.read_csv(folder / "gallery.csv")
        frame.iloc[:-1].to_csv(folder / "gallery.csv", index=False)
    elif how == "empty":
        np.save(folder / "query.npy", np.zeros((0, 2), dtype=np.float32))
        pd.read_csv(folder / "query.csv").iloc[:0].to_csv(folder / "query.csv", index=False)
    elif how == "missing":
        (folder / "gallery.csv").unlink()


@pytest.mark.parametrize(
    "how, message",
    [
        ("nan", r"gallery.npy: 1 row\(s\) hold NaN or inf, first row 3"),
        ("inf", r"query.npy: 1 row\(s\) hold NaN or inf, first row 1"),
        ("dim", r"query dimension 5 != gallery dimension 2"),
        ("rows", r"gallery.csv has 6 rows but .*gallery.npy has 7"),
        ("empty", r"query.npy holds no query embeddings"),
        ("missing", r"gallery.csv is missing"),
    ],
)
def test_bad_embeddings_are_clear_errors(
    tmp_path: Path, how: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "emb"
    write_embeddings(folder, hand_embeddings())
    corrupt(folder, how)
    with pytest.raises(ReidpipeError, match=message):
        read_embeddings(folder)
    code = main(
        [
            "evaluate",
            "--embeddings",
            str(folder),
            "--out",
            str(tmp_path / "m.json"),
            "--params",
            str(write_params(tmp_path / "p.yaml")),
        ]
    )
    assert code == 2
    assert "reidpipe evaluate: error:" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_plain_scores_from_the_re_ranking_pass(
    monkeypatch: pytest.MonkeyPatch, distance: str
) -> None:
    """With re-ranking on, the plain ranking comes from the pass's query x gallery strips (several,
    junk and distractors in the gallery); it must equal the plain-only evaluation."""
    monkeypatch.setattr(rerank, "_BLOCK_ELEMENTS", 256)
    monkeypatch.setattr(rerank, "_STRIP_ELEMENTS", 2000)
    rng = np.random.default_rng(11)
    nq, ng, dim = 37, 160, 6
    pids = rng.integers(1, 9, nq + ng)
    feats = (np.eye(9, dim)[pids] + 0.8 * rng.normal(size=(nq + ng, dim))).astype(np.float32)
    g_pids = pids[nq:].copy()
    g_pids[rng.random(ng) < 0.15] = -1
    g_pids[rng.random(ng) < 0.1] = 0

    def meta(p: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "path": [f"{i}.jpg" for i in range(len(p))],
                "pid": p,
                "camid": rng.integers(1, 4, len(p)),
            }
        )

    emb = Embeddings(
        query=EmbeddingSet(feats[:nq], meta(pids[:nq])),
        gallery=EmbeddingSet(feats[nq:], meta(g_pids)),
    )
    params = EvaluateParams(distance=distance)
    fused = evaluate_embeddings(
        emb, params, ReRankingParams(re_ranking=True, k1=5), top_k=7, device="cpu"
    )
    alone = evaluate_embeddings(
        emb, params, ReRankingParams(re_ranking=False), top_k=7, device="cpu"
    )
    for key, value in alone.metrics["plain"].items():
        assert fused.metrics["plain"][key] == pytest.approx(value, abs=1e-6), key
    pd.testing.assert_frame_equal(
        fused.per_query[alone.per_query.columns], alone.per_query, atol=1e-6
    )
