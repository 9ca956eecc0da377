"""Every dataset layout end to end (validate -> split -> combine -> a few training steps ->
extract -> evaluate), a two-source training run, and the refusals that keep test data out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support import ROOT
from support.repo_copy import SMALL, make_repo, run, snakemake
from support.tiny_run import EVERY_EPOCH, tiny_params

from reidpipe.cli import main
from reidpipe.data.manifest import read_split
from reidpipe.dataset_registry import SYNTH_LAYOUTS

TINY = tiny_params(
    split={"val_ids": 1},
    model={"backbone": "resnet18", "feat_dim": 16},
    dataset={"val_batch_size": 32},
    train={
        "num_epochs": 1,
        **EVERY_EPOCH,
        "max_steps_per_epoch": 2,
        "optim": {"lr_steps": [1], "warmup_epochs": 0},
    },
    report={"top_k": 3},
)


def params_for(tmp_path: Path, data: dict) -> list[str]:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data": data}))
    return ["--params", str(ROOT / "params.yaml"), str(path)]


def synthetic_block(folder: Path, layout: str) -> dict:
    return {
        "source": "synthetic",
        "synthetic_layout": layout,
        "dataset_dir": str(folder),
        "strict": False,
        "synthetic_ids": 8,
        "synthetic_seed": 3,
    }


def test_each_layout_validates_splits_trains_extracts_and_evaluates(synthetic_layouts, tmp_path):
    torch.set_num_threads(1)
    for layout in SYNTH_LAYOUTS:
        folder, summary = synthetic_layouts[layout]
        work = tmp_path / layout
        work.mkdir()
        params = params_for(work, synthetic_block(folder, layout))
        assert main(["validate", str(folder), "--report", str(work / "v.json"), *params]) == 0
        report = json.loads((work / "v.json").read_text())
        assert report["splits"]["query"]["images"] == summary.query_images
        assert main(["split", str(folder), "--out", str(work / "splits"), *params]) == 0
        assert (
            main(["combine", "--main", str(work / "splits"), "--out", str(work / "train"), *params])
            == 0
        )
        assert (
            main(
                [
                    "train",
                    "--arch",
                    "tiny",
                    "--splits",
                    str(work / "train"),
                    "--out",
                    str(work / "model"),
                    *params,
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "extract",
                    "--arch",
                    "tiny",
                    "--model",
                    str(work / "model"),
                    "--splits",
                    str(work / "splits"),
                    "--out",
                    str(work / "emb"),
                    "--device",
                    "cpu",
                    *params,
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "evaluate",
                    "--embeddings",
                    str(work / "emb"),
                    "--out",
                    str(work / "metrics.json"),
                    "--device",
                    "cpu",
                    *params,
                ]
            )
            == 0
        )
        metrics = json.loads((work / "metrics.json").read_text())
        queries = read_split(work / "splits", "query")
        assert metrics["plain"]["num_queries"] + metrics["plain"]["num_skipped"] == len(queries)
        assert 0 < metrics["plain"]["mAP"] <= 1, layout


def test_strict_validation_checks_the_sources_own_statistics(synthetic_layouts, tmp_path):
    folder, _ = synthetic_layouts["msmt17"]
    params = params_for(tmp_path, {"source": "msmt17", "dataset_dir": str(folder)})
    assert main(["validate", str(folder), "--report", str(tmp_path / "v.json"), *params]) == 2
    problems = [p["problem"] for p in json.loads((tmp_path / "v.json").read_text())["problems"]]
    assert any("MSMT17 has 82161 images here" in p for p in problems)
    assert any("MSMT17 has cameras 1-15" in p for p in problems)


def test_msmt17_list_entries_without_files_are_problems(synthetic_layouts, tmp_path):
    folder, _ = synthetic_layouts["msmt17"]
    lists = (folder / "list_query.txt").read_text()
    copy = tmp_path / "msmt"
    shutil.copytree(folder, copy)
    (copy / "list_query.txt").write_text(
        lists + "0999/0999_000_01_0113morning_0001_0.jpg 999\nnot a list line\n"
    )
    params = params_for(tmp_path, synthetic_block(copy, "msmt17"))
    assert main(["validate", str(copy), "--report", str(tmp_path / "v.json"), *params]) == 2
    problems = json.loads((tmp_path / "v.json").read_text())["problems"]
    assert {
        "file": str(copy / "test" / "0999" / "0999_000_01_0113morning_0001_0.jpg"),
        "problem": "listed but missing",
    } in problems
    assert any(
        p["file"].endswith("list_query.txt:" + str(len(lists.splitlines()) + 2)) for p in problems
    )


def test_two_sources_train_one_model(synthetic_layouts, tmp_path):
    """Market and DukeMTMC layouts (both numbering people from 1) train together."""
    torch.set_num_threads(1)
    market, _ = synthetic_layouts["market1501"]
    duke, _ = synthetic_layouts["dukemtmc"]
    duke_block = {k: v for k, v in synthetic_block(duke, "dukemtmc").items() if k != "dataset_dir"}
    data = {
        **synthetic_block(market, "market1501"),
        "train_sources": ["synthetic", "duke"],
        "sources": {"duke": duke_block},
    }
    params = params_for(tmp_path, data)
    assert main(["split", str(market), "--out", str(tmp_path / "main"), *params]) == 0
    duke_splits = tmp_path / "sources" / "duke" / "splits"
    assert main(["split", str(duke), "--out", str(duke_splits), "--source", "duke", *params]) == 0
    assert (
        main(
            [
                "combine",
                "--main",
                str(tmp_path / "main"),
                "--sources",
                str(tmp_path / "sources"),
                "--out",
                str(tmp_path / "train"),
                *params,
            ]
        )
        == 0
    )
    train = read_split(tmp_path / "train", "train")
    per_source = [read_split(folder, "train") for folder in (tmp_path / "main", duke_splits)]
    assert len(train) == sum(len(t) for t in per_source)
    assert train["label"].nunique() == sum(t["pid"].nunique() for t in per_source)
    assert not set(train[train["source"] == "synthetic"]["pid"]) & set(
        train[train["source"] == "duke"]["pid"]
    )
    val = pd.concat([read_split(tmp_path / "train", s) for s in ("val_query", "val_gallery")])
    assert set(val["source"]) == {"synthetic", "duke"}  # held-out ids from each source
    assert (
        main(
            [
                "train",
                "--arch",
                "tiny",
                "--splits",
                str(tmp_path / "train"),
                "--out",
                str(tmp_path / "model"),
                *params,
            ]
        )
        == 0
    )
    log = pd.read_csv(tmp_path / "model" / "train_log.csv")
    assert log["val_mAP"].notna().all()


def test_unknown_train_source_is_refused(tmp_path, capsys):
    params = params_for(
        tmp_path, {"source": "synthetic", "strict": False, "train_sources": ["synthetic", "msmt"]}
    )
    assert main(["params", *params]) == 2
    assert "data.train_sources" in capsys.readouterr().err


def test_further_sources_live_in_data_name_and_include_the_main_source(tmp_path, capsys):
    params = params_for(
        tmp_path,
        {
            "source": "synthetic",
            "strict": False,
            "sources": {"duke": {"source": "dukemtmc", "dataset_dir": "elsewhere"}},
        },
    )
    assert main(["params", *params]) == 2
    assert "keeps further sources in data/duke" in capsys.readouterr().err
    params = params_for(
        tmp_path,
        {
            "source": "synthetic",
            "strict": False,
            "sources": {"duke": {"source": "dukemtmc"}},
            "train_sources": ["duke"],
        },
    )
    assert main(["params", *params]) == 2
    assert "must include data.source ('synthetic')" in capsys.readouterr().err
    params = params_for(tmp_path, {"source": "dukemtmc", "strict": False, "dataset_dir": ""})
    assert main(["params", *params]) == 2
    assert "data.dataset_dir is empty" in capsys.readouterr().err


@pytest.mark.slow
def test_two_sources_train_and_every_test_set_is_reported(tmp_path: Path) -> None:
    """Snakemake end to end with a further training source and a further test set."""
    cross = dict(
        SMALL,
        pipeline={"archs": ["resnet_demo"], "eval_sources": ["synthetic", "duke", "cuhk"]},
        train={
            "num_epochs": 1,
            "checkpoint_interval": 1,
            "validation_interval": 1,
            "max_steps_per_epoch": 2,
        },
        # the FP16 and INT8 copies have their own tests: here only the FP32 graph
        export={"parity_batch_sizes": [1], "fp16": False, "int8": False},
    )
    cross["data"] = dict(
        SMALL["data"],
        train_sources=["synthetic", "duke"],
        sources={
            "duke": {
                "source": "synthetic",
                "synthetic_layout": "dukemtmc",
                "synthetic_ids": 12,
                "synthetic_seed": 1,
            },
            "cuhk": {
                "source": "synthetic",
                "synthetic_layout": "cuhk03",
                "synthetic_ids": 12,
                "synthetic_seed": 2,
            },
        },
    )
    repo = make_repo(tmp_path, cross)
    run(repo, *snakemake())
    combined = json.loads((repo / "results" / "train_set" / "sources.json").read_text())
    assert list(combined["sources"]) == ["synthetic", "duke"]
    assert combined["sources"]["duke"]["pid_offset"] > 0
    assert (repo / "data" / "cuhk" / "labeled" / "query").is_dir()
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert sorted(metrics) == ["resnet_demo", "resnet_demo@cuhk", "resnet_demo@duke"]
    md = (repo / "reports" / "index.md").read_text()
    for test_set in ("synthetic", "duke", "cuhk"):
        for label in ("plain", "re-ranked"):
            assert f"| {test_set} | resnet_demo | {label} |" in md
    on_duke = json.loads(
        (repo / "results" / "resnet_demo" / "cross" / "duke" / "metrics.json").read_text()
    )
    assert metrics["resnet_demo@duke"] == on_duke and on_duke["plain"]["num_queries"] > 0
