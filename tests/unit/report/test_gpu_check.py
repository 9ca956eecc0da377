"""benchmarks/gpu_check.py: which parts run where, failure isolation, and a real --quick CPU run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from support import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ARCHS = ["resnet50", "swin_tiny"]


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def test_plan_without_cuda_runs_the_cpu_parts_and_names_each_skip_reason():
    plan = gpu_check.plan_parts(False, 0, False, ARCHS)
    assert {name: p.device for name, p in plan.items()} == {
        "train_resnet50": "cpu",
        "loader_resnet50": "cpu",
        "train_swin_tiny": "cpu",
        "loader_swin_tiny": "cpu",
        "ddp_2gpu": None,
        "extract_evaluate": "cpu",
        "onnx_export": "cpu",
        "trt_fp16": None,
        "trt_int8": None,
    }
    assert plan["ddp_2gpu"].note == "no CUDA device"
    assert plan["trt_int8"].note == "no CUDA device; TensorRT not installed"
    assert "no CUDA device" in plan["train_resnet50"].note


def test_plan_one_gpu_without_tensorrt():
    plan = gpu_check.plan_parts(True, 1, False, ARCHS)
    assert plan["train_swin_tiny"] == gpu_check.PartPlan("cuda")
    assert plan["extract_evaluate"].device == plan["onnx_export"].device == "cuda"
    assert plan["ddp_2gpu"] == gpu_check.PartPlan(None, "1 GPU: DDP needs 2")
    assert plan["trt_fp16"] == gpu_check.PartPlan(None, "TensorRT not installed")
    assert plan["loader_resnet50"].device == "cpu"


def test_plan_two_gpus_with_tensorrt_runs_everything_on_cuda():
    plan = gpu_check.plan_parts(True, 2, True, ARCHS)
    assert all(p.device == "cuda" for n, p in plan.items() if not n.startswith("loader_"))
    assert not any(p.note for p in plan.values())


def test_a_failing_part_is_recorded_and_a_skipped_one_not_run():
    def broken(ctx, device):
        raise RuntimeError("engine exploded")

    row = gpu_check.run_part("trt_fp16", gpu_check.PartPlan("cpu"), broken, ctx=None)
    assert row["status"] == "failed" and row["error"] == "RuntimeError: engine exploded"
    skipped = gpu_check.run_part(
        "ddp_2gpu", gpu_check.PartPlan(None, "1 GPU: DDP needs 2"), broken, ctx=None
    )
    assert skipped["status"] == "skipped" and skipped["summary"] == "skipped: 1 GPU: DDP needs 2"


def test_tao_rates_follow_from_the_published_hours():
    # 12,936 images x 120 epochs in 1.25 h / 1.5 h on one A100
    assert gpu_check.tao_images_per_s("resnet50") == pytest.approx(344.96, abs=0.01)
    assert gpu_check.tao_images_per_s("swin_tiny") == pytest.approx(287.47, abs=0.01)


@pytest.mark.skipif(gpu_check.torch.cuda.is_available(), reason="checks the CPU-only run")
def test_quick_cpu_run_writes_json_and_table(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = {row["part"]: row for row in report["parts"]}
    assert list(rows) == [
        "train_resnet50",
        "train_swin_tiny",
        "loader_resnet50",
        "loader_swin_tiny",
        "ddp_2gpu",
        "extract_evaluate",
        "onnx_export",
        "trt_fp16",
        "trt_int8",
    ]
    for name in (
        "train_resnet50",
        "train_swin_tiny",
        "loader_resnet50",
        "loader_swin_tiny",
        "extract_evaluate",
        "onnx_export",
    ):
        assert rows[name]["status"] == "ok", (name, rows[name].get("error"))
    assert rows["train_resnet50"]["images_per_s"] > 0
    assert rows["train_resnet50"]["precision"] == "32"  # auto_precision on CPU
    assert rows["loader_swin_tiny"]["keeps_up"] in (True, False)
    assert rows["onnx_export"]["status"] == "ok" and rows["onnx_export"]["fp16_min_cosine"] > 0.99
    assert rows["ddp_2gpu"]["summary"] == "skipped: no CUDA device"
    assert (
        "TensorRT not installed" in rows["trt_int8"]["note"]
        or importlib.util.find_spec("tensorrt") is not None
    )
    assert "pretrain_choice: ''" in report["weights"]
    assert "| part | status | device | result | peak GPU MiB | seconds |" in done.stdout
    assert "| ddp_2gpu | skipped | - | skipped: no CUDA device |" in done.stdout
