"""The environment that decides a run's floating-point results: recorded with each trained model
(``config.yaml``) and compared between runs (the report, the CI gate).

With the same packages, CPU, threads and settings, training is bit-reproducible; a different CPU
(ATen, oneDNN and MKL choose kernels by ISA at run time), thread count (reduction order) or any GPU
gives different bits, which a long training amplifies into a different trajectory (README,
"Reproducibility"). Only :func:`record` imports torch; comparing records is plain dict work.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

CONFIG_KEY = "environment"  # where a trained model's config.yaml holds its record

# Environment variables that change which kernels run or how many threads share a reduction.
KERNEL_ENV_VARS = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "CUBLAS_WORKSPACE_CONFIG",
)
# CPU flags that decide kernel dispatch (AVX2 vs AVX-512 paths, VNNI/AMX integer and bf16 paths).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")
PACKAGES = ("numpy", "timm", "lightning", "torchvision", "pillow", "onnxruntime")
# The keys whose difference makes two runs' numbers differ in their bits (``python`` and the
# package versions outside torch are recorded for the audit, and compared too).
DECIDING_KEYS = (
    "cpu_model",
    "cpu_isa",
    "cpu_flags",
    "torch",
    "onednn",
    "cpu_blas",
    "cuda",
    "cudnn",
    "gpu_model",
    "gpu_count",
    "world_size",
    "intra_op_threads",
    "deterministic",
    "kernel_env",
    "packages",
)


# What ``pipeline.cpu_isa`` sets: ATen's vectorised kernels, oneDNN's convolutions and MKL's GEMMs
# are each chosen by ISA at run time; these cap all three at AVX2 (measured: an AVX-512 machine
# then trains the demo to the same bits as an AVX2 one; README "Reproducibility").
CPU_ISA_PINS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
}


def pin_cpu_isa(isa: str) -> str:
    """Cap this process's CPU kernels at ``isa`` (``native``: leave them); returns a note for the
    log. It must come before torch computes anything: each library reads its variable once, at its
    first use. Where it comes too late (a Python caller that already ran torch), the variables are
    put back and the note is a warning: the run keeps the kernels it has, and its recorded
    environment (``record``) says which."""
    if isa == "native":
        return ""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return (
            f"warning: pipeline.cpu_isa = {isa} applies to x86-64 CPUs; this is "
            f"{platform.machine()}: its native kernels are used"
        )
    previous = {name: os.environ.get(name) for name in CPU_ISA_PINS[isa]}
    os.environ.update(CPU_ISA_PINS[isa])
    if "torch" in sys.modules:
        import torch

        dispatched = torch.backends.cpu.get_cpu_capability()
        if dispatched != isa.upper():
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name)
                else:
                    os.environ[name] = value
            return (
                f"warning: pipeline.cpu_isa = {isa} not applied: this process already "
                f"computed with {dispatched} kernels (or the CPU lacks {isa}), and keeps them"
            )
    return f"CPU kernels capped at {isa.upper()} (pipeline.cpu_isa)"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model(cpuinfo: Mapping[str, str]) -> str:
    """Model name with family/model numbers: CPUs of one marketing name differ by generation."""
    name = cpuinfo.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in cpuinfo:
        name += f" (family {cpuinfo['cpu family']} model {cpuinfo.get('model', '?')})"
    return name


def cpu_flags(cpuinfo: Mapping[str, str]) -> list[str]:
    present = set(cpuinfo.get("flags", "").split())
    return [flag for flag in ISA_FLAGS if flag in present]


def _build_fact(config: str, pattern: str) -> str:
    found = re.search(pattern, config)
    return found.group(1) if found else ""


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def record(accelerator: str, world_size: int) -> dict[str, Any]:
    """The facts of this process that decide a training run's numbers (call it where the run's
    threads, determinism and devices are already set)."""
    import torch

    config = torch.__config__.show()
    cpuinfo = _cpuinfo()
    on_gpu = accelerator == "gpu" and torch.cuda.is_available()
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if on_gpu else []
    )
    return {
        "cpu_model": cpu_model(cpuinfo),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(cpuinfo),
        "torch": str(torch.__version__),
        "onednn": _build_fact(config, r"MKL-DNN v([\d.]+)"),
        "cpu_blas": _build_fact(config, r"BLAS_INFO=(\w+)")
        + " "
        + _build_fact(config, r"Math Kernel Library Version ([\w.-]+)"),
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version()) if on_gpu else "unused",
        "gpu_model": sorted(set(gpus))[0] if len(set(gpus)) == 1 else ", ".join(gpus) or "none",
        "gpu_count": len(gpus),
        "world_size": world_size,
        "intra_op_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "kernel_env": {name: os.environ[name] for name in KERNEL_ENV_VARS if name in os.environ},
        "packages": _package_versions(),
        "python": platform.python_version(),
        "platform": f"{sys.platform} {platform.machine()}",
    }


def differences(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """``key: first vs second`` for each deciding key whose values differ (a record without the
    key, written before records existed, counts as unknown)."""
    found = []
    for key in DECIDING_KEYS:
        a, b = first.get(key, "unknown"), second.get(key, "unknown")
        if a != b:
            found.append(f"{key}: {shown(a)} vs {shown(b)}")
    return found


def shown(value: Any) -> str:
    """A recorded value as one line of text."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return str(value)
