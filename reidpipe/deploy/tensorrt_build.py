"""TensorRT engine from the exported ONNX: build, latency per batch size, parity with ONNX Runtime.

TensorRT 10 and 11 differ in how precision is chosen: 10 takes the FP32 ONNX and
``BuilderFlag.FP16``; 11 has no precision flags (networks are strongly typed) and builds the FP16
ONNX as typed by ``export-onnx``. INT8 builds export's QDQ graph (explicit quantization) as a
strongly typed network on both. The engine has one optimisation profile for the batch axis
(``deploy.min_batch/opt_batch/max_batch``); the timing cache is kept next to the engine and reused
by the next build. Buffers are torch CUDA tensors (``data_ptr``), run with ``execute_async_v3``.

``deploy.tensorrt``: ``auto`` builds when TensorRT and a CUDA device are there and otherwise
writes ``status.json`` saying skipped and why; ``required`` fails with that reason; ``off`` writes
a disabled status. ``status.json`` is always written, so the pipeline completes without a GPU.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidpipe import atomic
from reidpipe.deploy.parity import batch_parity, parity_images, retrieval_parity
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.extract import extract_embeddings, image_sets_from_splits
from reidpipe.evaluation.onnx_runtime import onnx_forward
from reidpipe.filenames import (
    FP16_FILE,
    INT8_FILE,
    ONNX_FILE,
    PARITY_FILE,
    TRT_ENGINE_FILE,
    TRT_STATUS_FILE,
)
from reidpipe.input_contract import Forward, Preprocess, read_input_contract
from reidpipe.params import DeployParams, EvaluateParams, Params

CACHE_FILE = "timing.cache"
LATENCY_WARMUP = 10
LATENCY_ITERATIONS = 50


def unavailable_reason() -> str | None:
    """Why TensorRT cannot build here (every missing piece), or None when it can."""
    reasons = []
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - an ImportError, or a broken install failing to load its libraries
        reasons.append(f"tensorrt not importable: {exc}")
    if not torch.cuda.is_available():
        reasons.append("no CUDA device (torch.cuda.is_available() is False)")
    return "; ".join(reasons) or None


def profile_shapes(deploy: DeployParams, pre: Preprocess) -> dict[str, list[int]]:
    """min/opt/max NCHW shapes of the optimisation profile."""
    if not deploy.min_batch <= deploy.opt_batch <= deploy.max_batch:
        raise ReidpipeError(
            f"deploy batch sizes must satisfy min_batch <= opt_batch <= "
            f"max_batch, got {deploy.min_batch}/{deploy.opt_batch}/"
            f"{deploy.max_batch}"
        )
    return {
        name: [batch, 3, pre.height, pre.width]
        for name, batch in (
            ("min", deploy.min_batch),
            ("opt", deploy.opt_batch),
            ("max", deploy.max_batch),
        )
    }


def latency_batch_sizes(deploy: DeployParams, extra: Sequence[int] = ()) -> list[int]:
    """The profile's min/opt/max and ``extra`` sizes that fit in the profile, ascending."""
    sizes = {deploy.min_batch, deploy.opt_batch, deploy.max_batch, *extra}
    return sorted(b for b in sizes if deploy.min_batch <= b <= deploy.max_batch)


def build_plan(has_fp16_flag: bool, precision: str) -> tuple[str, bool, bool]:
    """(ONNX file to parse, whether to set BuilderFlag.FP16, whether to create the network
    strongly typed) for a TensorRT version and precision.

    TensorRT 11 (no FP16 flag) takes precision from the graph: the FP16 ONNX for fp16. INT8 is
    explicit quantization of the QDQ graph on either version: strongly typed, no precision flag
    (TensorRT's guidance for Q/DQ networks), so layers outside Q/DQ pairs stay FP32.
    """
    if precision == "int8":
        return INT8_FILE, False, True
    if precision == "fp32":
        return ONNX_FILE, False, False
    if has_fp16_flag:
        return ONNX_FILE, True, False
    return FP16_FILE, False, False


def build_engine(
    onnx_path: Path,
    shapes: dict[str, list[int]],
    deploy: DeployParams,
    fp16_flag: bool,
    strongly_typed: bool,
    timing_cache: bytes,
) -> tuple[bytes, bytes, bool]:
    """Serialized engine, timing cache, and whether ``timing_cache`` (possibly empty) was
    accepted to seed the build (TensorRT rejects one from another GPU or version)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 11 has no STRONGLY_TYPED flag to set: every network is strongly typed there.
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(1 << int(typed) if strongly_typed and typed is not None else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ReidpipeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, deploy.workspace_mib << 20)
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache)
    accepted = config.set_timing_cache(cache, ignore_mismatch=False)
    cache_reused = bool(timing_cache) and bool(accepted)
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ReidpipeError(
            f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)"
        )
    return bytes(serialized), bytes(config.get_timing_cache().serialize()), cache_reused


class EngineRunner:
    """Runs a serialized engine on torch CUDA tensors, in chunks that fit the profile: at most
    its max batch, and a chunk below its min batch padded with zeros up to it (the padding's
    outputs dropped), since the engine refuses shapes outside the profile."""

    def __init__(self, engine_bytes: bytes, min_batch: int, max_batch: int) -> None:
        import tensorrt as trt

        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ReidpipeError("TensorRT cannot deserialize the engine it just built")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        inputs = [n for n in names if modes[n] == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if modes[n] == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ReidpipeError(
                f"engine has inputs {inputs} and outputs {outputs}; expected one of each"
            )
        self.input, self.output = inputs[0], outputs[0]
        for name in (self.input, self.output):
            dtype = self.engine.get_tensor_dtype(name)
            if dtype != trt.DataType.FLOAT:
                raise ReidpipeError(
                    f"engine tensor {name!r} is {dtype}; expected FP32 I/O "
                    "(export-onnx keeps FP32 inputs and outputs)"
                )
        self.min_batch, self.max_batch = min_batch, max_batch
        self.stream = torch.cuda.Stream()

    def run_device(self, images: torch.Tensor) -> torch.Tensor:
        """One batch (<= max_batch) already on the GPU -> output on the GPU. Runs on its own
        stream: TensorRT syncs extra on the legacy default stream."""
        images = images.contiguous()
        if not self.context.set_input_shape(self.input, tuple(images.shape)):
            raise ReidpipeError(
                f"input shape {tuple(images.shape)} is outside the engine's "
                "optimisation profile (deploy.min_batch/max_batch)"
            )
        out = torch.empty(
            tuple(self.context.get_tensor_shape(self.output)),
            dtype=torch.float32,
            device=images.device,
        )
        self.context.set_tensor_address(self.input, images.data_ptr())
        self.context.set_tensor_address(self.output, out.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise ReidpipeError(f"TensorRT execution failed at batch {images.shape[0]}")
        self.stream.synchronize()
        return out

    def __call__(self, images: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(images), self.max_batch):
            chunk = np.asarray(images[start : start + self.max_batch], dtype=np.float32)
            size = len(chunk)
            if size < self.min_batch:
                padding = np.zeros((self.min_batch - size, *chunk.shape[1:]), dtype=np.float32)
                chunk = np.concatenate([chunk, padding])
            out = self.run_device(torch.from_numpy(np.ascontiguousarray(chunk)).cuda())
            parts.append(out.cpu().numpy()[:size])
        return np.concatenate(parts)


def measure_latency(
    runner: EngineRunner, pre: Preprocess, batch_sizes: Sequence[int]
) -> list[dict[str, float]]:
    """Wall time of one synchronous engine call per batch size (input already on the GPU,
    output left there), median and p90 of repeated runs."""
    rows = []
    for size in batch_sizes:
        images = torch.rand(size, 3, pre.height, pre.width, device="cuda")
        for _ in range(LATENCY_WARMUP):
            runner.run_device(images)
        times = []
        for _ in range(LATENCY_ITERATIONS):
            start = time.perf_counter()
            runner.run_device(images)
            times.append((time.perf_counter() - start) * 1000.0)
        median = statistics.median(times)
        rows.append(
            {
                "batch_size": int(size),
                "median_ms": round(median, 4),
                "p90_ms": round(float(np.percentile(times, 90)), 4),
                "images_per_second": round(size * 1000.0 / median, 1),
            }
        )
    return rows


def _status(
    mode: str, status: str, reason: str | None, arch: str, deploy: DeployParams
) -> dict[str, Any]:
    """The status.json skeleton; a built engine fills in the rest."""
    return {
        "status": status,
        "reason": reason,
        "mode": mode,
        "arch": arch,
        "precision": deploy.precision,
        "versions": _versions(),
        "onnx": None,
        "profile": None,
        "workspace_mib": deploy.workspace_mib,
        "build_seconds": None,
        "timing_cache_reused": None,
        "latency": [],
        "parity": None,
        "files": {},
    }


def _versions() -> dict[str, str | None]:
    try:
        import tensorrt

        trt_version: str | None = tensorrt.__version__
    except Exception:  # noqa: BLE001 - not importable: the status names the reason
        trt_version = None
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"tensorrt": trt_version, "torch": torch.__version__, "cuda_device": cuda}


def _engine_parity(
    runner: Forward,
    onnx_dir: Path,
    pre: Preprocess,
    splits_dir: str | Path,
    deploy: DeployParams,
    evaluate: EvaluateParams,
    batch_size: int,
    flip: bool,
) -> dict[str, Any]:
    sets = image_sets_from_splits(splits_dir)
    # An INT8 engine is checked against ONNX Runtime running the same QDQ graph: its distance
    # to FP32 is export's INT8 gate, not TensorRT's.
    reference_file = INT8_FILE if deploy.precision == "int8" else ONNX_FILE
    reference, _ = onnx_forward(onnx_dir / reference_file, pre)
    sizes = latency_batch_sizes(deploy)
    images = parity_images(list(sets["query"]["path"]), pre, max(sizes))
    return {
        "reference": f"onnxruntime {reference_file}",
        "batch_parity": batch_parity(reference, runner, images, sizes),
        "retrieval": retrieval_parity(
            {
                name: extract_embeddings(forward, sets, pre, batch_size, flip)
                for name, forward in (("onnxruntime", reference), ("tensorrt", runner))
            },
            evaluate,
            flip,
        ),
        "max_metric_delta_points": deploy.max_metric_delta,
    }


def _write_status_only(out_dir: Path, status: dict[str, Any]) -> dict[str, Any]:
    """The folder of a build that did not run: ``status.json`` alone."""
    with atomic.atomic_dir(out_dir) as tmp:
        atomic.write_json(tmp / TRT_STATUS_FILE, status)
    return status


def build_trt(
    arch: str,
    onnx_dir: str | Path,
    splits_dir: str | Path,
    out_dir: str | Path,
    deploy: DeployParams,
    evaluate: EvaluateParams,
    batch_size: int,
    flip: bool = False,
) -> dict[str, Any]:
    """Build (or skip, per ``deploy.tensorrt``) and write ``out_dir``; returns the status."""
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    mode = deploy.tensorrt
    if mode == "off":
        return _write_status_only(
            out_dir, _status(mode, "disabled", "deploy.tensorrt is 'off'", arch, deploy)
        )
    _check_export_folder(onnx_dir)
    reason = unavailable_reason()
    if reason is not None:
        if mode == "required":
            raise ReidpipeError(f"deploy.tensorrt is 'required' but {reason}")
        return _write_status_only(out_dir, _status(mode, "skipped", reason, arch, deploy))

    pre = read_input_contract(onnx_dir / ONNX_FILE)
    onnx_name, fp16_flag, strongly_typed = _installed_build_plan(onnx_dir, deploy.precision)
    shapes = profile_shapes(deploy, pre)
    cache_in = _previous_timing_cache(out_dir)
    start = time.perf_counter()
    engine, cache_out, cache_reused = build_engine(
        onnx_dir / onnx_name, shapes, deploy, fp16_flag, strongly_typed, cache_in
    )
    status = _status(mode, "built", None, arch, deploy)
    status.update(
        onnx=onnx_name,
        builder_fp16_flag=fp16_flag,
        strongly_typed=strongly_typed,
        profile={"input": "batch x 3 x H x W", **shapes},
        build_seconds=round(time.perf_counter() - start, 3),
        timing_cache_reused=cache_reused,
    )
    runner = EngineRunner(engine, deploy.min_batch, deploy.max_batch)
    status["latency"] = measure_latency(runner, pre, latency_batch_sizes(deploy))
    status["parity"] = _engine_parity(
        runner, onnx_dir, pre, splits_dir, deploy, evaluate, min(batch_size, deploy.max_batch), flip
    )
    _check_parity_gate(status["parity"], arch, deploy, out_dir)
    _write_engine_folder(out_dir, engine, cache_out, status)
    return status


def _check_export_folder(onnx_dir: Path) -> None:
    if not (onnx_dir / PARITY_FILE).is_file():
        raise ReidpipeError(
            f"{onnx_dir / PARITY_FILE} does not exist: {onnx_dir} is not an "
            "`reidpipe export-onnx` folder (run it first)"
        )


def _installed_build_plan(onnx_dir: Path, precision: str) -> tuple[str, bool, bool]:
    """:func:`build_plan` for the installed TensorRT, once the ONNX file it parses is known to
    be in ``onnx_dir``."""
    import tensorrt as trt

    onnx_name, fp16_flag, strongly_typed = build_plan(hasattr(trt.BuilderFlag, "FP16"), precision)
    if not (onnx_dir / onnx_name).is_file():
        int8 = json.loads((onnx_dir / PARITY_FILE).read_text()).get("int8") or {}
        why = (
            f"export's INT8 copy was left out: {int8['reason']}"
            if int8.get("reason")
            else "export.fp16 / export.int8 true writes it"
        )
        raise ReidpipeError(
            f"{onnx_dir / onnx_name} does not exist; TensorRT {trt.__version__} "
            f"needs it for precision {precision} ({why})"
        )
    return onnx_name, fp16_flag, strongly_typed


def _previous_timing_cache(out_dir: Path) -> bytes:
    """The timing cache the last build left in ``out_dir``; empty when there is none."""
    old_cache = out_dir / CACHE_FILE
    return old_cache.read_bytes() if old_cache.is_file() else b""


def _check_parity_gate(
    parity: dict[str, Any], arch: str, deploy: DeployParams, out_dir: Path
) -> None:
    """Fails (removing ``out_dir``) when a retrieval metric of the engine is further than
    ``deploy.max_metric_delta`` points from ONNX Runtime's."""
    deltas = parity["retrieval"]["delta_points"]
    failed = {k: d for k, d in deltas.items() if not d <= deploy.max_metric_delta}
    if failed:
        atomic.remove_output_dir(out_dir)  # no stale engine passes for this model's
        raise ReidpipeError(
            f"TensorRT parity gate failed for {arch}: "
            + ", ".join(
                f"{k} differs from ONNX Runtime by {d:.3f} points" for k, d in failed.items()
            )
            + f" > deploy.max_metric_delta {deploy.max_metric_delta}"
        )


def _write_engine_folder(
    out_dir: Path, engine: bytes, cache_out: bytes, status: dict[str, Any]
) -> None:
    """The engine, its timing cache and ``status.json`` (which lists their sizes)."""
    with atomic.atomic_dir(out_dir) as tmp:
        (tmp / TRT_ENGINE_FILE).write_bytes(engine)
        (tmp / CACHE_FILE).write_bytes(cache_out)
        status["files"] = {TRT_ENGINE_FILE: len(engine), CACHE_FILE: len(cache_out)}
        atomic.write_json(tmp / TRT_STATUS_FILE, status)


def build_trt_stage(
    params: Params, arch: str, onnx_dir: str | Path, splits_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """``reidpipe build-trt`` for one architecture."""
    cfg = params.arch(arch)
    return build_trt(
        arch,
        onnx_dir,
        splits_dir,
        out_dir,
        params.deploy,
        params.evaluate,
        params.extract.batch_size,
        flip=cfg.model.with_flip_feature,
    )
