"""CPU inference throughput: PyTorch eager FP32 vs ONNX Runtime FP32 and INT8.

The ReID networks of params.yaml (``resnet50``: BoT ResNet-50, last stride 1; ``swin_tiny``) at
their 256x128 input, random weights (speed does not depend on them). Each is exported with the
pipeline's own exporter and quantized with its own INT8 code in two formats: ``ort_int8``, the
default export settings (symmetric int8 on the inputs of Conv/Gemm/MatMul: what TensorRT takes)
and ``ort_uint8`` (asymmetric, every op ONNX Runtime quantizes, outputs too: its U8S8 kernels,
the fast path on x86 CPUs). Calibration uses random JPEGs (accuracy is not measured here). Per batch size: median milliseconds per batch over repeated calls after a
warm-up, and images per second. Results are printed and written as JSON.

    python benchmarks/bench_infer.py                              # everything
    python benchmarks/bench_infer.py --models resnet50 --batches 16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reidpipe.atomic import write_json
from reidpipe.params import ExportParams

if TYPE_CHECKING:
    import onnxruntime
    import torch

    from reidpipe.input_contract import Preprocess

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet50", "swin_tiny")
# ort_* sessions use reidpipe's session options (exact U8U8 integer kernels on x86 CPUs
# without VNNI, as the INT8 gate runs them); ort_uint8_u8s8 runs the uint8 file with ONNX
# Runtime's default options: faster U8S8 kernels, which saturate on such CPUs.
RUNTIMES = ("torch_fp32", "ort_fp32", "ort_int8", "ort_uint8", "ort_uint8_u8s8")
FILE_OF = {"ort_uint8_u8s8": "ort_uint8"}
CALIBRATION_IMAGES = 16
MIN_REPEATS, MAX_REPEATS, CASE_BUDGET_S = 2, 10, 15.0
TARGET = ("resnet50", 16, "ort_uint8", 2.0)  # INT8 >= 2x PyTorch eager at batch 16
# The INT8 files: the default export settings (symmetric int8, Q/DQ on Conv/Gemm/MatMul inputs:
# TensorRT's format) and ONNX Runtime's CPU format (uint8 activations, every op it can quantize,
# outputs too, so it fuses QLinearConv / QLinearMatMul and runs its integer kernels).
INT8_FORMATS = {
    "ort_int8": ExportParams(),
    "ort_uint8": dataclasses.replace(
        ExportParams(), int8_activations="uint8", int8_op_types=[], int8_quantize_outputs=True
    ),
}


def _time(call: Callable[[], object]) -> tuple[float, int]:
    """Median ms of ``call`` after one warm-up: at least MIN_REPEATS calls, more while the case
    stays under CASE_BUDGET_S."""
    call()
    times: list[float] = []
    while len(times) < MIN_REPEATS or (len(times) < MAX_REPEATS and sum(times) < CASE_BUDGET_S):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0, len(times)


def _calibration_images(folder: Path, pre) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(CALIBRATION_IMAGES):
        pixels = rng.integers(0, 256, (pre.height, pre.width, 3), dtype=np.uint8)
        path = folder / f"calib_{index}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def bench_model(name: str, batches: list[int], runtimes: list[str]) -> list[dict[str, object]]:
    import torch

    from reidpipe.input_contract import Preprocess
    from reidpipe.params import ExtractParams, load_params
    from reidpipe.training.model import build_model

    cfg = load_params([str(ROOT / "params.yaml")]).arch(name)
    pre = Preprocess.from_params(cfg, ExtractParams())
    torch.manual_seed(0)
    net = build_model(cfg.model, num_classes=751, weights=False).eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as work:
        files = _model_files(net, pre, name, Path(work), runtimes)
        sessions, failed = _sessions(files, runtimes)
        for batch in batches:
            images = (
                np.random.default_rng(batch)
                .standard_normal((batch, 3, pre.height, pre.width))
                .astype(np.float32)
            )
            for runtime in runtimes:
                if runtime in failed:
                    rows.append(
                        {
                            "model": name,
                            "runtime": runtime,
                            "batch": batch,
                            "error": failed[runtime],
                        }
                    )
                    continue
                call = _inference_call(runtime, net, sessions, images)
                rows.append(_timed_row(name, pre, runtime, batch, call))
    return rows


def _model_files(
    net: torch.nn.Module, pre: Preprocess, name: str, folder: Path, runtimes: list[str]
) -> dict[str, Path]:
    """The ONNX file of each runtime: the FP32 export, and the INT8 formats ``runtimes`` use
    quantized from it."""
    from reidpipe.deploy.export_onnx import export_graph
    from reidpipe.deploy.int8 import quantize_int8
    from reidpipe.input_contract import contract_metadata

    files = {"ort_fp32": folder / "model.onnx"}
    export_graph(net, pre, files["ort_fp32"], 18, contract_metadata(pre, name, 0))
    calibration = _calibration_images(folder, pre)
    for name_, export in INT8_FORMATS.items():
        if any(FILE_OF.get(r, r) == name_ for r in runtimes):
            files[name_] = folder / f"{name_}.onnx"
            quantize_int8(files["ort_fp32"], files[name_], calibration, pre, export)
    return files


def _sessions(
    files: dict[str, Path], runtimes: list[str]
) -> tuple[dict[str, onnxruntime.InferenceSession], dict[str, str]]:
    """An ONNX Runtime session per ``ort_*`` runtime, and the error of each that failed to
    open (printed as it happens)."""
    import onnxruntime as ort

    from reidpipe.evaluation.onnx_runtime import session_options

    sessions, failed = {}, {}
    for runtime in runtimes:
        if runtime == "torch_fp32":
            continue
        options = ort.SessionOptions() if runtime == "ort_uint8_u8s8" else session_options()
        try:
            sessions[runtime] = ort.InferenceSession(
                str(files[FILE_OF.get(runtime, runtime)]),
                options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors are untyped; record and go on
            failed[runtime] = f"{type(exc).__name__}: {str(exc).strip()[-300:]}"
            print(f"    {runtime}: session failed: {failed[runtime]}", flush=True)
    return sessions, failed


def _inference_call(
    runtime: str,
    net: torch.nn.Module,
    sessions: dict[str, onnxruntime.InferenceSession],
    images: np.ndarray,
) -> Callable[[], object]:
    """One forward of ``images`` with ``runtime``: eager PyTorch, or its ONNX Runtime session."""
    import torch

    if runtime == "torch_fp32":
        tensor = torch.from_numpy(images)

        def call() -> object:
            with torch.inference_mode():
                return net(tensor)

        return call
    session = sessions[runtime]
    return lambda: session.run(None, {"input": images})


def _timed_row(
    name: str, pre: Preprocess, runtime: str, batch: int, call: Callable[[], object]
) -> dict[str, object]:
    """``call`` timed, as a result row (printed)."""
    load = os.getloadavg()[0]
    ms, repeats = _time(call)
    row = {
        "model": name,
        "input": [3, pre.height, pre.width],
        "runtime": runtime,
        "batch": batch,
        "ms_per_batch": round(ms, 2),
        "images_per_s": round(batch * 1000.0 / ms, 2),
        "repeats": repeats,
        "load_avg_1m_before": round(load, 2),
    }
    print("   ", json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "infer.json"))
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    rows = []
    for name in args.models:
        print(f"{name} ...", flush=True)
        rows += bench_model(name, args.batches, args.runtimes)
    speedups = {}
    for row in rows:
        eager = next(
            (
                r
                for r in rows
                if r["model"] == row["model"]
                and r["batch"] == row["batch"]
                and r["runtime"] == "torch_fp32"
            ),
            None,
        )
        if eager is not None and row["runtime"] != "torch_fp32" and "error" not in row:
            key = f"{row['model']}/b{row['batch']}/{row['runtime']}"
            speedups[key] = round(float(row["images_per_s"]) / float(eager["images_per_s"]), 2)
    model, batch, runtime, factor = TARGET
    target_key = f"{model}/b{batch}/{runtime}"
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "results": rows,
        "speedup_vs_torch_eager": speedups,
        "target": {
            "case": target_key,
            "min_speedup": factor,
            "speedup": speedups.get(target_key),
            "met": (speedups.get(target_key) or 0) >= factor,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    print(json.dumps(report["target"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
