"""Which settings change a training run's bits on this machine (README, "Reproducibility").

Trains the demo's ``resnet_demo`` for a few epochs once per variant (each a fresh ``reidpipe
train`` process with its own environment variables and ``--set`` values), then compares every
variant's weights with the first reference run: bit-identical or not, how many tensors differ and
the largest absolute difference. Needs the demo's training set (``make demo`` makes it).

    python benchmarks/determinism.py [--epochs 3] [--out benchmarks/results/determinism.json]
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
AVX2_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}

# name -> (environment variables, --set values). The references run with the demo's own settings.
VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "reference": ({}, []),
    "reference, again": ({}, []),
    "1 intra-op thread": ({}, ["train.num_threads=1"]),
    "deterministic algorithms off": ({}, ["train.deterministic=false"]),
    "no loader workers": ({}, ["dataset.num_workers=0"]),
    "2 loader workers": ({}, ["dataset.num_workers=2"]),
    "ONEDNN_MAX_CPU_ISA=AVX2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, []),
    "ATEN_CPU_CAPABILITY=avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, []),
    "MKL_CBWR=AVX2": ({"MKL_CBWR": "AVX2"}, []),
    "all three pinned to AVX2": (AVX2_PINS, []),
    "all three pinned to AVX2, again": (AVX2_PINS, []),
}


def train(name: str, env: dict[str, str], sets: list[str], splits: Path, out: Path,
          epochs: int) -> float:
    command = [sys.executable, "-m", "reidpipe", "train", "--arch", "resnet_demo",
               "--splits", str(splits), "--out", str(out),
               "--params", str(ROOT / "params.yaml"), str(ROOT / "config" / "demo.yaml"),
               "--set", f"train.num_epochs={epochs}", "--set", f"train.validation_interval={epochs}",
               "--set", f"train.checkpoint_interval={epochs}"]
    for value in sets:
        command += ["--set", value]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, **env},
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return time.perf_counter() - start


def compare(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict:
    differing = [key for key in reference if not torch.equal(reference[key], other[key])]
    largest = max((float((reference[k].double() - other[k].double()).abs().max())
                   for k in differing), default=0.0)
    return {"bit_identical": not differing, "tensors_differing": len(differing),
            "tensors": len(reference), "max_abs_difference": largest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=Path, default=ROOT / "results" / "train_set")
    parser.add_argument("--epochs", type=int, default=3)
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
            results[name] = {"env": env, "set": sets, "seconds": round(seconds, 1),
                             **compare(states["reference"], states[name])}
    report = {"epochs": args.epochs,
              "environment": environment.record("cpu", 1), "variants": results}
    atomic.write_text(args.out, json.dumps(report, indent=2) + "\n")
    for name, row in results.items():
        print(f"{name:34s} identical={row['bit_identical']!s:5s} "
              f"differing={row['tensors_differing']:3d}/{row['tensors']} "
              f"max|diff|={row['max_abs_difference']:.3g}")


if __name__ == "__main__":
    main()
