"""GPU acceptance check: the CUDA and TensorRT paths of both default recipes in under 10 minutes.

Parts (each one function returning a row; a failing part is recorded with its error and the rest
go on):

- ``train_<arch>``: training steps (forward + backward + optimiser step, batches held in memory)
  of each ``pipeline.archs`` recipe of params.yaml at its 256x128 input, in the precision
  ``train.precision: auto`` chooses (``reidpipe.training.train.auto_precision``) and the
  recipe's determinism setting; images/s per GPU against the rate implied by TAO's published
  training times (Market-1501's 12,936 training images x 120 epochs in 1.25 h on one A100 for
  ResNet-50, 1.5 h for Swin-T).
- ``loader_<arch>``: the training data loader's images/s with the recipe's ``num_workers`` on
  Market-size (64x128) JPEGs from reidpipe's synthetic generator; it must exceed the training rate.
- ``ddp_2gpu``: ``reidpipe train`` on two GPUs (DDP), its per-epoch rate from train_log.csv.
- ``extract_evaluate``: embedding extraction and evaluation (with re-ranking) on the GPU.
- ``onnx_export``: ``export-onnx``'s exporter with its parity gates (FP32, FP16, INT8).
- ``trt_fp16`` / ``trt_int8``: ``build-trt`` engines from that export, with their parity gates.

Peak GPU memory (``torch.cuda.max_memory_allocated``, reset per part) is reported for each part.
Pretrained weights are off (``model.pretrain_choice: ''``): nothing is downloaded, and throughput
does not depend on the weights. Without CUDA the CPU-measurable parts run (training and
extraction at 64x32 to exercise the code paths) and the rest are listed as skipped with the reason.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --quick --out /tmp/gpu_check.json    # seconds, on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reidpipe import atomic
from reidpipe.data.split import make_split
from reidpipe.data.synth import generate_synthetic_market
from reidpipe.filenames import INT8_FILE, ONNX_FILE, TRAIN_LOG_FILE
from reidpipe.params import ArchConfig, ExportParams, Params, load_params

if TYPE_CHECKING:
    from reidpipe.input_contract import Preprocess
    from reidpipe.training.datamodule import ReidDataModule
    from reidpipe.training.lightning_module import ReidModule

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "params.yaml"

# TAO ReIdentificationNet's published training times on one A100 (Market-1501, 120 epochs).
MARKET_TRAIN_IMAGES = 12_936
TAO_EPOCHS = 120
TAO_A100_HOURS = {"resnet50": 1.25, "swin_tiny": 1.5}
SMALL_INPUT = (64, 32)  # H x W of the CPU-only runs: exercises the code path, nothing more
DEPLOY_ARCH = "resnet50"  # the arch exported and built with TensorRT (one, for the budget)
DDP_ARCH = "resnet50"
WEIGHTS_NOTE = (
    "pretrained weights off (model.pretrain_choice: ''): random init, no downloads; "
    "throughput does not depend on the weights"
)
Batch = tuple[torch.Tensor, torch.Tensor]  # images, labels


@dataclasses.dataclass(frozen=True)
class Budget:
    """Steps and limits per part; the defaults keep the whole run under 10 minutes on one GPU."""

    synthetic_ids: int = 120  # ~1,300 query + gallery, ~900 train images
    val_ids: int = 8
    warmup_steps: int = 5
    timed_steps: int = 30
    train_budget_s: float = 60.0  # timed steps stop early past this
    cpu_warmup_steps: int = 1
    cpu_timed_steps: int = 2
    loader_batches: int = 20
    ddp_steps_per_epoch: int = 20
    ddp_timeout_s: float = 240.0
    overrides: tuple[str, ...] = ()  # params --set overrides on top of params.yaml


QUICK = Budget(
    synthetic_ids=6,
    val_ids=1,
    warmup_steps=1,
    timed_steps=1,
    cpu_warmup_steps=0,
    cpu_timed_steps=1,
    loader_batches=2,
    ddp_steps_per_epoch=2,
    overrides=(
        "archs.resnet50.model.backbone=resnet18",  # config/demo.yaml's sizes
        "archs.swin_tiny.model.backbone_kwargs={embed_dim: 32, "
        "depths: [1, 1, 2, 1], num_heads: [1, 2, 4, 8]}",
        "dataset.batch_size=8",
        "dataset.num_workers=1",
        "export.int8_calibration_images=8",
        "export.parity_batch_sizes=[1,2]",
    ),
)


@dataclasses.dataclass(frozen=True)
class PartPlan:
    device: str | None  # "cuda", "cpu", or None: skipped
    note: str = ""  # why it is skipped, or how the run differs from the GPU one


def plan_parts(
    cuda_available: bool, device_count: int, tensorrt_installed: bool, archs: list[str]
) -> dict[str, PartPlan]:
    """Which parts run where, from what the machine has."""
    small = f"no CUDA device: on CPU at {SMALL_INPUT[0]}x{SMALL_INPUT[1]} (code path only)"
    plan: dict[str, PartPlan] = {}
    for arch in archs:
        plan[f"train_{arch}"] = PartPlan("cuda") if cuda_available else PartPlan("cpu", small)
        plan[f"loader_{arch}"] = PartPlan("cpu")
    if not cuda_available:
        plan["ddp_2gpu"] = PartPlan(None, "no CUDA device")
    elif device_count < 2:
        plan["ddp_2gpu"] = PartPlan(None, f"{device_count} GPU: DDP needs 2")
    else:
        plan["ddp_2gpu"] = PartPlan("cuda")
    plan["extract_evaluate"] = PartPlan("cuda") if cuda_available else PartPlan("cpu", small)
    plan["onnx_export"] = PartPlan("cuda") if cuda_available else PartPlan("cpu", small)
    missing = [
        why
        for why, absent in (
            ("no CUDA device", not cuda_available),
            ("TensorRT not installed", not tensorrt_installed),
        )
        if absent
    ]
    for precision in ("fp16", "int8"):
        plan[f"trt_{precision}"] = (
            PartPlan(None, "; ".join(missing)) if missing else PartPlan("cuda")
        )
    return plan


@dataclasses.dataclass
class Context:
    params: Params
    budget: Budget
    splits: Path
    work: Path
    small: bool  # compute parts at SMALL_INPUT (no CUDA, or --quick)
    quick: bool  # the loader too
    results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def arch(self, name: str, small: bool | None = None) -> ArchConfig:
        cfg = self.params.arch(name)
        if not (self.small if small is None else small):
            return cfg
        model = dataclasses.replace(
            cfg.model, input_height=SMALL_INPUT[0], input_width=SMALL_INPUT[1]
        )
        return dataclasses.replace(cfg, model=model)


def tao_images_per_s(arch: str) -> float:
    return MARKET_TRAIN_IMAGES * TAO_EPOCHS / (TAO_A100_HOURS[arch] * 3600.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------- parts
def part_train(ctx: Context, arch: str, device_name: str) -> dict[str, Any]:
    from lightning.pytorch.trainer.connectors.accelerator_connector import _set_torch_flags

    from reidpipe.training.train import auto_precision, deterministic_mode

    cfg = ctx.arch(arch)
    device = torch.device(device_name)
    precision = cfg.train.precision
    if precision == "auto":
        precision = auto_precision(
            torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        )
    deterministic = deterministic_mode(
        cfg.train.deterministic, "gpu" if device.type == "cuda" else "cpu"
    )
    saved_flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    _set_torch_flags(deterministic=deterministic)  # what the Trainer sets for the recipe
    try:
        return _timed_training(ctx, arch, cfg, device, precision, deterministic)
    finally:  # the other parts run as the pipeline runs them, without these flags
        torch.use_deterministic_algorithms(saved_flags[0], warn_only=saved_flags[1])
        torch.backends.cudnn.benchmark = saved_flags[2]


def _timed_training(
    ctx: Context,
    arch: str,
    cfg: ArchConfig,
    device: torch.device,
    precision: str,
    deterministic: bool | str,
) -> dict[str, Any]:
    from reidpipe.training.datamodule import ReidDataModule
    from reidpipe.training.lightning_module import ReidModule

    torch.manual_seed(0)
    datamodule = ReidDataModule(ctx.splits, cfg)
    module = ReidModule(cfg, datamodule.num_classes).to(device)
    batches = _first_batches(datamodule, device, 2)
    step = _training_step(module, cfg, device, precision)
    on_gpu = device.type == "cuda"
    warmup = ctx.budget.warmup_steps if on_gpu else ctx.budget.cpu_warmup_steps
    timed = ctx.budget.timed_steps if on_gpu else ctx.budget.cpu_timed_steps
    rate, steps = _steps_rate(step, batches, device, warmup, timed, ctx.budget.train_budget_s)
    row: dict[str, Any] = {
        "backbone": cfg.model.backbone,
        "input": [cfg.model.input_height, cfg.model.input_width],
        "batch_size": len(batches[0][0]),
        "precision": precision,
        "deterministic": deterministic,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "images_per_s": round(rate, 1),
    }
    if arch in TAO_A100_HOURS:
        tao = tao_images_per_s(arch)
        row.update(tao_a100_images_per_s=round(tao, 1), ratio_to_tao=round(rate / tao, 3))
    summary = f"{rate:.1f} img/s, precision {precision}, batch {row['batch_size']}"
    if "ratio_to_tao" in row:
        summary += f"; TAO A100 {row['tao_a100_images_per_s']} img/s -> x{row['ratio_to_tao']}"
    return {**row, "summary": summary}


def _first_batches(datamodule: ReidDataModule, device: torch.device, count: int) -> list[Batch]:
    """The training loader's first ``count`` batches, moved to ``device`` and held there."""
    batches = []
    for images, labels in datamodule.train_dataloader():
        batches.append((images.to(device), labels.to(device)))
        if len(batches) == count:
            break
    return batches


def _training_step(
    module: ReidModule, cfg: ArchConfig, device: torch.device, precision: str
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimiser step of the recipe's loss on a batch, under autocast (and a gradient
    scaler for fp16) as ``precision`` asks. Puts the network in training mode."""
    from reidpipe.training.losses import reid_loss
    from reidpipe.training.schedule import make_optimizer

    optimizer = make_optimizer(module.net, cfg.train.optim)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    module.net.train()

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            scores, feat = module.net(images)
            loss = reid_loss(module.plan, scores, feat, labels, module.center)["loss"]
        optimizer.zero_grad()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def _steps_rate(
    step: Callable[[torch.Tensor, torch.Tensor], None],
    batches: list[Batch],
    device: torch.device,
    warmup: int,
    timed: int,
    budget_s: float,
) -> tuple[float, int]:
    """Images per second over up to ``timed`` steps after ``warmup`` untimed ones (at least
    one timed step; none started past ``budget_s``), and the number of timed steps."""
    for i in range(warmup):
        step(*batches[i % len(batches)])
    _sync(device)
    start, seen, steps = time.perf_counter(), 0, 0
    while steps < timed and (steps == 0 or time.perf_counter() - start < budget_s):
        images, labels = batches[steps % len(batches)]
        step(images, labels)
        seen += len(images)
        steps += 1
    _sync(device)
    return seen / (time.perf_counter() - start), steps


def part_loader(ctx: Context, arch: str, device_name: str) -> dict[str, Any]:
    from bench_train import loader_rate  # benchmarks/bench_train.py, next to this script

    from reidpipe.training.datamodule import ReidDataModule

    cfg = ctx.arch(arch, small=ctx.quick)  # real-size inputs wherever it runs, but --quick
    rate = loader_rate(ReidDataModule(ctx.splits, cfg), ctx.budget.loader_batches)
    row: dict[str, Any] = {
        "num_workers": cfg.dataset.num_workers,
        "input": [cfg.model.input_height, cfg.model.input_width],
        "source_jpegs": "64x128 synthetic (Market size)",
        "images_per_s": round(rate, 1),
    }
    train = ctx.results.get(f"train_{arch}", {})
    summary = f"{rate:.1f} img/s with {cfg.dataset.num_workers} workers"
    if "images_per_s" in train:
        row["train_images_per_s"] = train["images_per_s"]
        row["train_device"] = train["device"]
        row["keeps_up"] = rate > train["images_per_s"]
        summary += (
            f"; training ({train['device']}) {train['images_per_s']} img/s: "
            f"{'keeps up' if row['keeps_up'] else 'DOES NOT keep up'}"
        )
    return {**row, "summary": summary}


def part_ddp(ctx: Context, arch: str, device_name: str) -> dict[str, Any]:
    """``reidpipe train`` on two GPUs (Lightning launches the ranks): three short epochs, the
    second one's time (workers started, no validation) gives the rate."""
    out = ctx.work / "ddp"
    command = [
        sys.executable,
        "-m",
        "reidpipe",
        "train",
        "--params",
        str(PARAMS_FILE),
        "--arch",
        arch,
        "--splits",
        str(ctx.splits),
        "--out",
        str(out),
    ]
    for override in (
        "model.pretrain_choice=''",
        *ctx.budget.overrides,
        "train.num_gpus=2",
        "train.num_epochs=3",
        f"train.max_steps_per_epoch={ctx.budget.ddp_steps_per_epoch}",
        "train.validation_interval=100",
        "train.checkpoint_interval=100",
    ):
        command += ["--set", override]
    done = subprocess.run(command, capture_output=True, text=True, timeout=ctx.budget.ddp_timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"reidpipe train exited {done.returncode}: {done.stderr.strip()[-800:]}")
    with open(out / TRAIN_LOG_FILE, newline="") as handle:
        epoch2 = next(r for r in csv.DictReader(handle) if r["epoch"] == "2")
    global_batch = ctx.params.arch(arch).dataset.batch_size
    rate = int(epoch2["steps"]) * global_batch / float(epoch2["seconds"])
    return {
        "arch": arch,
        "gpus": 2,
        "global_batch": global_batch,
        "per_gpu_batch": global_batch // 2,
        "steps": int(epoch2["steps"]),
        "images_per_s": round(rate, 1),
        "images_per_s_per_gpu": round(rate / 2, 1),
        "peak_gpu_mib_note": "ranks are child processes: not measured here",
        "summary": f"{rate:.1f} img/s on 2 GPUs ({rate / 2:.1f} per GPU, per-GPU batch "
        f"{global_batch // 2}; loader included)",
    }


def part_extract_evaluate(ctx: Context, arch: str, device_name: str) -> dict[str, Any]:
    from reidpipe.evaluation.evaluate import evaluate_embeddings
    from reidpipe.evaluation.extract import (
        extract_embeddings,
        image_sets_from_splits,
        torch_forward,
    )
    from reidpipe.input_contract import Preprocess
    from reidpipe.training.model import build_model

    cfg = ctx.arch(arch)
    params = ctx.params
    pre = Preprocess.from_params(cfg, params.extract)
    torch.manual_seed(0)
    forward = torch_forward(build_model(cfg.model, num_classes=751, weights=False), device_name)
    sets = image_sets_from_splits(ctx.splits)
    count = sum(len(frame) for frame in sets.values())
    start = time.perf_counter()
    embeddings = extract_embeddings(
        forward, sets, pre, params.extract.batch_size, cfg.model.with_flip_feature
    )
    extract_s = time.perf_counter() - start
    start = time.perf_counter()
    result = evaluate_embeddings(embeddings, params.evaluate, params.re_ranking, device=device_name)
    evaluate_s = time.perf_counter() - start
    rate = count / extract_s
    return {
        "arch": arch,
        "input": [pre.height, pre.width],
        "images": count,
        "extract_images_per_s": round(rate, 1),
        "evaluate_seconds": round(evaluate_s, 3),
        "re_ranking": params.re_ranking.re_ranking,
        "metrics": sorted(result.metrics),
        "summary": f"extract {rate:.1f} img/s ({count} images); evaluate "
        f"{'+ re-rank ' if params.re_ranking.re_ranking else ''}{evaluate_s:.2f} s",
    }


def part_onnx_export(ctx: Context, arch: str, device_name: str) -> dict[str, Any]:
    from reidpipe.deploy.export_onnx import export_onnx
    from reidpipe.input_contract import Preprocess
    from reidpipe.training.model import build_model

    cfg = ctx.arch(arch)
    params = ctx.params
    export = params.export_for(arch)
    pre = Preprocess.from_params(cfg, params.extract)
    torch.manual_seed(0)
    net = build_model(cfg.model, num_classes=751, weights=False)
    out = ctx.work / "onnx"
    report = export_onnx(
        net,
        pre,
        arch,
        ctx.splits,
        out,
        export,
        params.evaluate,
        params.extract.batch_size,
        flip=cfg.model.with_flip_feature,
        device="auto",
    )  # ONNX Runtime on CUDA where its CUDA provider is there
    row = _export_row(arch, pre, out, report)
    fp16 = "off" if row["fp16_min_cosine"] is None else f"{row['fp16_min_cosine']:.6f}"
    summary = (
        f"gates passed; fp32 max abs diff {row['fp32_max_abs_diff']:.2g}, fp16 min cos "
        f"{fp16}; int8 gate {row['int8_status']}"
    )
    if export.int8 and row["int8_status"] != "passed":
        # Random weights can fail the INT8 accuracy gate; TensorRT's INT8 parity is against ONNX
        # Runtime running the same QDQ graph, so an ungated copy still tests that build.
        _write_ungated_int8(ctx.splits, out, pre, export)
        row["int8_file"] = "written ungated for the TensorRT build"
        summary += " (QDQ copy written ungated for TensorRT)"
    return {**row, "summary": summary}


def _export_row(arch: str, pre: Preprocess, out: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The part's row from export-onnx's parity report."""
    import onnxruntime

    int8 = report.get("int8") or {}
    return {
        "arch": arch,
        "input": [pre.height, pre.width],
        "onnx_dir": str(out),
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "export_seconds": report["export_seconds"],
        "gates": report["status"],
        "fp32_max_abs_diff": max(r["max_abs_diff"] for r in report["batch_parity"]),
        "fp32_delta_points": report["retrieval"]["delta_points"],
        "fp16_min_cosine": min(r["min_cosine"] for r in report["fp16"]["batch_parity"])
        if report.get("fp16")
        else None,
        "int8_status": int8.get("status"),
        "int8_reason": int8.get("reason"),
    }


def _write_ungated_int8(splits: Path, out: Path, pre: Preprocess, export: ExportParams) -> None:
    """The QDQ INT8 copy of ``out``'s model, calibrated as export-onnx calibrates it, without
    its gate."""
    from reidpipe.data.manifest import read_split
    from reidpipe.deploy.int8 import calibration_sample, quantize_int8

    calibration = calibration_sample(
        list(read_split(splits, "train")["path"]),
        export.int8_calibration_images,
        export.int8_seed,
    )
    quantize_int8(out / ONNX_FILE, out / INT8_FILE, calibration, pre, export)


def part_trt(ctx: Context, precision: str, device_name: str) -> dict[str, Any]:
    from reidpipe.deploy.tensorrt_build import build_trt

    export = ctx.results.get("onnx_export", {})
    if export.get("status") != "ok":
        raise RuntimeError(
            f"needs the ONNX export, which did not pass: "
            f"{export.get('error') or export.get('note') or 'not run'}"
        )
    cfg = ctx.arch(DEPLOY_ARCH)
    params = ctx.params
    deploy = dataclasses.replace(params.deploy, tensorrt="required", precision=precision)
    status = build_trt(
        DEPLOY_ARCH,
        export["onnx_dir"],
        ctx.splits,
        ctx.work / f"trt_{precision}",
        deploy,
        params.evaluate,
        params.extract.batch_size,
        flip=cfg.model.with_flip_feature,
    )
    opt = next(
        (r for r in status["latency"] if r["batch_size"] == deploy.opt_batch), status["latency"][-1]
    )
    deltas = status["parity"]["retrieval"]["delta_points"]
    worst_cos = min(r["min_cosine"] for r in status["parity"]["batch_parity"])
    return {
        "arch": DEPLOY_ARCH,
        "tensorrt": status["versions"]["tensorrt"],
        "onnx": status["onnx"],
        "build_seconds": status["build_seconds"],
        "latency_opt_batch": opt,
        "parity_delta_points": deltas,
        "parity_min_cosine": worst_cos,
        "gate_max_delta_points": deploy.max_metric_delta,
        "peak_gpu_mib_note": "TensorRT's own allocations are outside torch's counter",
        "summary": f"built in {status['build_seconds']} s; batch {opt['batch_size']}: "
        f"{opt['images_per_second']} img/s; gate passed (max delta "
        f"{max(deltas.values()):.3f} pts, min cos {worst_cos:.4f})",
    }


def part_runners(archs: list[str]) -> dict[str, Callable[[Context, str], dict[str, Any]]]:
    """Part name -> a call taking (context, device); in the order they run (each loader after
    its arch's training, TensorRT after the export)."""
    runners: dict[str, Callable[[Context, str], dict[str, Any]]] = {}
    for arch in archs:
        runners[f"train_{arch}"] = lambda ctx, dev, a=arch: part_train(ctx, a, dev)
    for arch in archs:
        runners[f"loader_{arch}"] = lambda ctx, dev, a=arch: part_loader(ctx, a, dev)
    runners["ddp_2gpu"] = lambda ctx, dev: part_ddp(ctx, DDP_ARCH, dev)
    runners["extract_evaluate"] = lambda ctx, dev: part_extract_evaluate(ctx, DEPLOY_ARCH, dev)
    runners["onnx_export"] = lambda ctx, dev: part_onnx_export(ctx, DEPLOY_ARCH, dev)
    for precision in ("fp16", "int8"):
        runners[f"trt_{precision}"] = lambda ctx, dev, p=precision: part_trt(ctx, p, dev)
    return runners


def run_part(
    name: str, plan: PartPlan, runner: Callable[[Context, str], dict[str, Any]], ctx: Context
) -> dict[str, Any]:
    """One part's row: its results, or status skipped/failed with the reason or the error."""
    row: dict[str, Any] = {"part": name, "device": plan.device, "note": plan.note}
    if plan.device is None:
        return {**row, "status": "skipped", "summary": f"skipped: {plan.note}"}
    on_gpu = plan.device == "cuda"
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        row.update(runner(ctx, plan.device))
        row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - one failing part must not stop the others: record and go on
        message = f"{type(exc).__name__}: {str(exc).strip()[-600:]}"
        row.update(
            status="failed",
            error=message,
            summary=f"FAILED: {message[:200]}",
            traceback=traceback.format_exc()[-2000:],
        )
    row["seconds"] = round(time.perf_counter() - start, 2)
    if on_gpu:
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(f"  {name}: {row['status']} in {row['seconds']} s: {row['summary']}", flush=True)
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| part | status | device | result | peak GPU MiB | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        device = row["device"] or "-"
        if row.get("note") and row["status"] != "skipped":
            device += f" ({row['note']})"
        peak = row.get("peak_gpu_mib", "-")
        summary = str(row["summary"]).replace("|", "/")
        lines.append(
            f"| {row['part']} | {row['status']} | {device} | {summary} | {peak} | "
            f"{row.get('seconds', '-')} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "cuda_device_count": torch.cuda.device_count() if cuda else 0,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and step counts: checks the script runs (tests)",
    )
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else Budget()
    params = load_params([PARAMS_FILE], ["model.pretrain_choice=''", *budget.overrides])
    archs = list(params.pipeline.archs)
    cuda = torch.cuda.is_available()
    plan = plan_parts(
        cuda,
        torch.cuda.device_count() if cuda else 0,
        importlib.util.find_spec("tensorrt") is not None,
        archs,
    )
    print(WEIGHTS_NOTE, flush=True)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        generate_synthetic_market(work / "synthetic-market", budget.synthetic_ids, 0)
        make_split(work / "synthetic-market", work / "splits", budget.val_ids, 0)
        ctx = Context(
            params, budget, work / "splits", work, small=args.quick or not cuda, quick=args.quick
        )
        for name, runner in part_runners(archs).items():
            row = run_part(name, plan[name], runner, ctx)
            ctx.results[name] = row
            rows.append(row)
    report = {
        "machine": machine(),
        "quick": args.quick,
        "weights": WEIGHTS_NOTE,
        "total_seconds": round(time.perf_counter() - started, 1),
        "parts": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(args.out, report)
    print()
    print(markdown_table(rows))
    print(f"\n{WEIGHTS_NOTE}. Total {report['total_seconds']} s. Wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
