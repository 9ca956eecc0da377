"""The run records a model card reads, made with the real stage functions (validate, combine,
the train config's environment record) over a split folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from reidpipe import environment
from reidpipe.data.combine import combine_splits
from reidpipe.data.validate import run_validation
from reidpipe.deploy.model_card import read_run_records

METRICS = {
    "plain": {
        "mAP": 0.4123,
        "mINP": 0.2324,
        "rank1": 0.472,
        "rank5": 0.688,
        "rank10": 0.8,
        "rank20": 0.864,
        "num_queries": 19,
        "num_skipped": 0,
        "ap_method": "non_interpolated",
        "distance": "cosine",
    },
    "reranked": {
        "mAP": 0.4581,
        "mINP": 0.3101,
        "rank1": 0.424,
        "rank5": 0.632,
        "rank10": 0.736,
        "rank20": 0.84,
        "num_queries": 19,
        "num_skipped": 0,
        "ap_method": "non_interpolated",
        "distance": "cosine",
        "k1": 20,
        "k2": 6,
        "lambda_value": 0.3,
    },
}
VERIFICATION = {
    "open_set_fraction": 0.1,
    "open_set_seed": 0,
    "held_out_pids": [3],
    "gallery_images_held_out": 12,
    "distance": "cosine",
    "num_genuine_pairs": 90,
    "num_impostor_pairs": 1800,
    "num_known_queries": 17,
    "num_open_set_queries": 2,
    "operating_points": [
        {
            "far": far,
            "threshold": threshold,
            "tar": tar,
            "far_achieved": achieved,
            "true_accepts": accepts,
            "false_accepts": accepts,
            "no_match_accuracy": no_match,
            "known_rank1_accepted": no_match,
            "why_null": why,
        }
        for far, threshold, tar, achieved, accepts, no_match, why in (
            (1e-2, 0.4321, 0.61, 0.0094, 17, 0.5, {}),
            (1e-3, 0.2468, 0.33, 0.00056, 1, 1.0, {}),
            (1e-4, None, None, None, None, None, {"threshold": "1800 impostor pairs: too few"}),
        )
    ],
}


def write_run_records(
    root: Path, splits: Path, params, arch: str, verification: bool = True
) -> dict[str, Path]:
    """The files ``reidpipe package`` reads besides the export: metrics, verification, train
    config, validation report and training set, under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": root / "metrics.json",
        "config": root / "config.yaml",
        "validation": root / "validation.json",
        "train_set": root / "train_set",
        "splits": splits,
    }
    paths["metrics"].write_text(json.dumps(METRICS))
    if verification:
        paths["verification"] = root / "verification.json"
        paths["verification"].write_text(json.dumps(VERIFICATION))
    config = params.arch(arch)
    paths["config"].write_text(
        yaml.safe_dump(
            {
                "name": arch,
                "model": dataclasses.asdict(config.model),
                "pretrained_weights": "none",
                "environment": environment.record("cpu", 1),
            }
        )
    )
    dataset_dir = json.loads((splits / "split.json").read_text())["dataset_dir"]
    run_validation(dataset_dir, paths["validation"], strict=False)
    combine_splits({"market1501": splits}, paths["train_set"])
    return paths


def run_records(paths: dict[str, Path]):
    return read_run_records(
        paths["metrics"],
        paths["config"],
        paths["splits"],
        paths["train_set"],
        paths["validation"],
        paths.get("verification"),
    )


def cli_args(paths: dict[str, Path]) -> list[str]:
    """``reidpipe package``'s flags for these records."""
    flags = [
        "--metrics",
        paths["metrics"],
        "--train-config",
        paths["config"],
        "--splits",
        paths["splits"],
        "--train-set",
        paths["train_set"],
        "--validation",
        paths["validation"],
    ]
    if "verification" in paths:
        flags += ["--verification", paths["verification"]]
    return [str(flag) for flag in flags]
