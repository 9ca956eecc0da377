"""Which settings change a training run's bits on this machine (README, "Reproducibility").

Trains the demo's ``resnet_demo`` for a few epochs once per variant (each a fresh ``reidpipe
train`` process with its own environment variables and ``--set`` values), then compares every
variant's weights with the first reference run: bit-identical or not, how many tensors differ and
the largest absolute difference. Needs the demo's training set (``make demo`` makes it).

    python benchmarks/determinism.py [--epochs 1] [--out benchmarks/results/determinism.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from reidpipe import atomic, environment
from reidpipe.filenames import MODEL_FILE

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ["pipeline.cpu_isa=native"]

# name -> (environment variables, --set values). The reference runs with the demo's own settings
# (CPU kernels capped at AVX2, 2 intra-op threads, 1 loader worker, deterministic algorithms);
# the "native" rows let this CPU use its own kernels, then cap one library at a time.
VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "reference": ({}, []),
    "reference, again": ({}, []),
    "native kernels": ({}, NATIVE),
    "native kernels, again": ({}, NATIVE),
    "native, oneDNN capped (ONEDNN_MAX_CPU_ISA=AVX2)": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, NATIVE),
    "native, ATen capped (ATEN_CPU_CAPABILITY=avx2)": ({"ATEN_CPU_CAPABILITY": "avx2"}, NATIVE),
    "native, MKL capped (MKL_CBWR=AVX2)": ({"MKL_CBWR": "AVX2"}, NATIVE),
    "1 intra-op thread": ({}, ["train.num_threads=1"]),
    "4 intra-op threads": ({}, ["train.num_threads=4"]),
    "deterministic algorithms off": ({}, ["train.deterministic=false"]),
    "no loader workers": ({}, ["dataset.num_workers=0"]),
    "2 loader workers": ({}, ["dataset.num_workers=2"]),
    "2 loader workers, again": ({}, ["dataset.num_workers=2"]),
}


def train(
    name: str, env: dict[str, str], sets: list[str], splits: Path, out: Path, epochs: int
) -> float:
    command = [
        sys.executable,
        "-m",
        "reidpipe",
        "train",
        "--arch",
        "resnet_demo",
        "--splits",
        str(splits),
        "--out",
        str(out),
        "--params",
        str(ROOT / "params.yaml"),
        str(ROOT / "config" / "demo.yaml"),
        "--set",
        f"train.num_epochs={epochs}",
        "--set",
        f"train.validation_interval={epochs}",
        "--set",
        f"train.checkpoint_interval={epochs}",
    ]
    for value in sets:
        command += ["--set", value]
    start = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return time.perf_counter() - start


def compare(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict:
    differing = [key for key in reference if not torch.equal(reference[key], other[key])]
    largest = max(
        (float((reference[k].double() - other[k].double()).abs().max()) for k in differing),
        default=0.0,
    )
    return {
        "bit_identical": not differing,
        "tensors_differing": len(differing),
        "tensors": len(reference),
        "max_abs_difference": largest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=Path, default=ROOT / "results" / "train_set")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/determinism.json")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        states = {}
        for name, (env, sets) in VARIANTS.items():
            out = Path(scratch) / str(len(states))
            seconds = train(name, env, sets, args.splits, out, args.epochs)
            saved = torch.load(out / MODEL_FILE, map_location="cpu", weights_only=True)
            states[name] = saved["state_dict"]
            results[name] = {
                "env": env,
                "set": sets,
                "seconds": round(seconds, 1),
                **compare(states["reference"], states[name]),
            }
            if "native kernels" in states:
                results[name]["vs_native"] = compare(states["native kernels"], states[name])
    report = {
        "epochs": args.epochs,
        "environment": environment.record("cpu", 1),
        "variants": results,
    }
    atomic.write_text(args.out, json.dumps(report, indent=2) + "\n")
    for name, row in results.items():
        native = row.get("vs_native", {})
        print(
            f"{name:50s} vs reference: identical={row['bit_identical']!s:5s} "
            f"differing={row['tensors_differing']:3d}/{row['tensors']} "
            f"max|diff|={row['max_abs_difference']:.3g}"
            + (f"; vs native: identical={native['bit_identical']}" if native else "")
        )


if __name__ == "__main__":
    main()
