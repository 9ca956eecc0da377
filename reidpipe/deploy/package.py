"""Deployment package per architecture: a Triton model repository (``triton``) and a DeepStream
NvDCF ReID section (``deepstream``), both derived from the exported ONNX (tensor names, dims,
types) and its input contract, with a README from ``templates/package_readme.md``,
``package.json`` (the manifest the report reads) and the model card (``model_card``).

Triton: ``triton/<arch>/config.pbtxt`` + ``triton/<arch>/1/model.onnx`` served by the ONNX
Runtime backend, or by the TensorRT backend from ``model.plan`` when ``build-trt`` built an
engine (its optimisation profile ends at ``deploy.max_batch``, Triton's ``max_batch_size``).
DeepStream: ``deepstream/deepstream_reid.yml`` and the ONNX it names (``deploy.precision``'s
graph, its per-channel scale folded in when DeepStream's single scale cannot express it).
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import onnx

from reidpipe import atomic
from reidpipe.deploy.channel_scale import fold_channel_scale
from reidpipe.deploy.deepstream import (
    DEEPSTREAM_CONFIG,
    DEEPSTREAM_DIR,
    DeepStreamInput,
    deepstream_input,
    deepstream_section,
)
from reidpipe.deploy.model_card import (
    RunRecords,
    build_card,
    card_markdown,
    recipe_record,
    recommended_threshold,
    threshold_text,
)
from reidpipe.deploy.onnx_io import EMBED_LIMIT_BYTES, model_files, save_onnx
from reidpipe.deploy.triton import (
    TRITON_CONFIG,
    TRITON_DIR,
    TRITON_PLAN,
    TRITON_VERSION,
    TensorSpec,
    io_specs,
    triton_config,
)
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    INT8_FILE,
    MODEL_CARD_JSON,
    MODEL_CARD_MARKDOWN,
    ONNX_FILE,
    PACKAGE_MANIFEST_FILE,
    PARITY_FILE,
    TRT_ENGINE_FILE,
    TRT_STATUS_FILE,
)
from reidpipe.input_contract import Preprocess, read_input_contract
from reidpipe.json_files import read_json_file
from reidpipe.params import DeployParams, Params

README_FILE = "README.md"
README_TEMPLATE = "templates/package_readme.md"  # string.Template, beside this module
# Files beside this module that are part of its code: a stage that runs it depends on them too
# (reidpipe.code_deps), so an edited template reruns the package stage.
CODE_DATA_FILES = (README_TEMPLATE,)


def _place(source: Path, target: Path) -> None:
    """Hard-link (same file system: no second copy of the weights) or copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _deepstream_source(onnx_dir: Path, parity: dict[str, Any], precision: str) -> Path:
    if precision != "int8":
        return onnx_dir / ONNX_FILE
    int8 = parity.get("int8") or {}
    if int8.get("status") != "passed":
        raise ReidpipeError(
            f"deploy.precision is int8 but {onnx_dir} has no {INT8_FILE}: "
            f"{int8.get('reason') or 'export.int8 is off'}"
        )
    return onnx_dir / INT8_FILE


def _embedding_io(onnx_file: Path) -> tuple[TensorSpec, TensorSpec]:
    """The exported graph's one image input and its one N x D embedding output."""
    model = onnx.load(str(onnx_file), load_external_data=False)
    inputs, outputs = io_specs(model, onnx_file)
    if len(inputs) != 1 or len(outputs) != 1 or len(outputs[0].dims) != 1:
        raise ReidpipeError(
            f"{onnx_file}: expected one image input and one N x D "
            f"output, got inputs {inputs} and outputs {outputs}"
        )
    return inputs[0], outputs[0]


def _write_triton(
    folder: Path,
    arch: str,
    onnx_file: Path,
    engine: Path | None,
    max_batch: int,
    image: TensorSpec,
    embedding: TensorSpec,
) -> dict[str, Any]:
    """Triton's model repository under ``folder``: the ONNX, the TensorRT engine when one was
    built (then served instead), config.pbtxt. Returns its entry of package.json."""
    version = folder / TRITON_DIR / arch / TRITON_VERSION
    for file in model_files(onnx_file):
        _place(file, version / file.name)
    if engine is not None:
        _place(engine, version / TRITON_PLAN)
    platform, model_file = (
        ("tensorrt_plan", TRITON_PLAN) if engine is not None else ("onnxruntime_onnx", ONNX_FILE)
    )
    atomic.write_text(
        folder / TRITON_DIR / arch / TRITON_CONFIG,
        triton_config(arch, platform, model_file, max_batch, [image], [embedding]),
    )
    return {
        "model": arch,
        "platform": platform,
        "model_file": model_file,
        "max_batch_size": max_batch,
        "dynamic_batching": True,
    }


def _write_deepstream(
    folder: Path,
    pre: Preprocess,
    ds: DeepStreamInput,
    source: Path,
    embedding_dim: int,
    deploy: DeployParams,
    embed_limit: int,
) -> dict[str, Any]:
    """DeepStream's folder under ``folder``: the ONNX its section names (with the per-channel
    scale folded in when DeepStream's one netScaleFactor cannot express it) and the section.
    Returns its entry of package.json."""
    ds_dir = folder / DEEPSTREAM_DIR
    ds_dir.mkdir()
    if ds.channel_scale is None:
        for file in model_files(source):
            _place(file, ds_dir / file.name)
    else:
        folded = fold_channel_scale(onnx.load(str(source)), ds.channel_scale, pre)
        save_onnx(folded, ds_dir / source.name, embed_limit)
    section = deepstream_section(pre, ds, embedding_dim, deploy, source.name)
    atomic.write_yaml(ds_dir / DEEPSTREAM_CONFIG, section)
    return {
        "config": f"{DEEPSTREAM_DIR}/{DEEPSTREAM_CONFIG}",
        "onnx": f"{DEEPSTREAM_DIR}/{source.name}",
        "folded_channel_scale": list(ds.channel_scale) if ds.channel_scale is not None else None,
        **section["ReID"],
    }


def package(
    arch: str,
    onnx_dir: str | Path,
    trt_dir: str | Path,
    out_dir: str | Path,
    deploy: DeployParams,
    run: RunRecords,
    recipe: dict[str, Any],
    embed_limit: int = EMBED_LIMIT_BYTES,
) -> dict[str, Any]:
    """Write ``out_dir`` (Triton repository, DeepStream section, README, package.json, model
    card from ``run`` and ``recipe``)."""
    onnx_dir, trt_dir, out_dir = Path(onnx_dir), Path(trt_dir), Path(out_dir)
    parity, trt = (
        read_json_file(path, " (run the stage that writes it first)")
        for path in (onnx_dir / PARITY_FILE, trt_dir / TRT_STATUS_FILE)
    )
    pre = read_input_contract(onnx_dir / ONNX_FILE)
    image, embedding = _embedding_io(onnx_dir / ONNX_FILE)
    ds = deepstream_input(pre, deploy.deepstream_fold_normalisation)
    ds_source = _deepstream_source(onnx_dir, parity, deploy.precision)
    engine = trt_dir / TRT_ENGINE_FILE if trt.get("status") == "built" else None

    with atomic.atomic_dir(out_dir) as tmp:
        triton = _write_triton(
            tmp, arch, onnx_dir / ONNX_FILE, engine, deploy.max_batch, image, embedding
        )
        deepstream = _write_deepstream(
            tmp, pre, ds, ds_source, embedding.dims[0], deploy, embed_limit
        )
        manifest = _manifest(arch, pre, image, embedding, triton, deepstream, trt, parity)
        manifest["recommended_threshold"] = recommended_threshold(run.verification)
        manifest["model_card"] = {"markdown": MODEL_CARD_MARKDOWN, "json": MODEL_CARD_JSON}
        card = build_card(arch, recipe, run, manifest, parity, trt)
        atomic.write_json(tmp / MODEL_CARD_JSON, card)
        atomic.write_text(tmp / MODEL_CARD_MARKDOWN, card_markdown(card))
        atomic.write_text(tmp / README_FILE, package_readme(manifest))
        atomic.write_json(tmp / PACKAGE_MANIFEST_FILE, manifest)
    return manifest


def _contract(pre: Preprocess, image: TensorSpec, embedding: TensorSpec) -> dict[str, Any]:
    """The input contract: what the model takes (tensor and preprocessing) and gives."""
    return {
        "input": {
            "name": image.name,
            "shape": ["batch", *image.dims],
            "dtype": image.data_type,
            "height": pre.height,
            "width": pre.width,
            "channel_order": pre.channel_order,
            "input_scale": pre.input_scale,
            "mean": list(pre.mean),
            "std": list(pre.std),
        },
        "output": {
            "name": embedding.name,
            "shape": ["batch", embedding.dims[0]],
            "dtype": embedding.data_type,
            "l2_normalised": False,
        },
    }


def _manifest(
    arch: str,
    pre: Preprocess,
    image: TensorSpec,
    embedding: TensorSpec,
    triton: dict[str, Any],
    deepstream: dict[str, Any],
    trt: dict[str, Any],
    parity: dict[str, Any],
) -> dict[str, Any]:
    """package.json: the contract, what Triton and DeepStream serve, TensorRT's and INT8's
    status."""
    return {
        "arch": arch,
        "contract": _contract(pre, image, embedding),
        "triton": triton,
        "deepstream": deepstream,
        "tensorrt": {
            "status": trt.get("status"),
            "reason": trt.get("reason"),
            "engine": triton["platform"] == "tensorrt_plan",
        },
        "int8": {
            "status": (parity.get("int8") or {}).get("status", "disabled"),
            "reason": (parity.get("int8") or {}).get("reason"),
        },
    }


def package_readme(manifest: dict[str, Any]) -> str:
    """The package's README: the input contract and how to serve the model."""
    contract = manifest["contract"]
    inp, out = contract["input"], contract["output"]
    ds, triton = manifest["deepstream"], manifest["triton"]
    tensorrt, int8 = manifest["tensorrt"], manifest["int8"]
    fold = (
        ""
        if ds["folded_channel_scale"] is None
        else f" Its per-channel std cannot be one netScaleFactor, so `{ds['onnx']}` multiplies "
        f"channel c by {ds['folded_channel_scale']} first and netScaleFactor is 1."
    )
    served_from = (
        "`model.plan` (TensorRT engine from `build-trt`, served by the TensorRT "
        "backend; it runs only on the GPU model and TensorRT version it was built "
        "with)"
        if triton["platform"] == "tensorrt_plan"
        else f"`model.onnx` (ONNX Runtime backend; TensorRT: {tensorrt['status']}"
        f"{' - ' + tensorrt['reason'] if tensorrt['reason'] else ''})"
    )
    template = resources.files(__package__).joinpath(README_TEMPLATE).read_text(encoding="utf-8")
    return Template(template).substitute(
        arch=manifest["arch"],
        input_name=inp["name"],
        input_dtype=inp["dtype"],
        input_shape=" x ".join(map(str, inp["shape"])),
        channel_order=inp["channel_order"],
        height=inp["height"],
        width=inp["width"],
        input_scale=inp["input_scale"],
        scale="pixels / 255, then" if inp["input_scale"] == 1 else "pixels in 0-255, then",
        mean=inp["mean"],
        std=inp["std"],
        output_name=out["name"],
        output_dtype=out["dtype"],
        output_shape=" x ".join(map(str, out["shape"])),
        triton_dir=TRITON_DIR,
        triton_model=triton["model"],
        served_from=served_from,
        max_batch=triton["max_batch_size"],
        deepstream_config=ds["config"],
        offsets=ds["offsets"],
        net_scale_factor=ds["netScaleFactor"],
        color_format=ds["colorFormat"],
        network_mode=ds["networkMode"],
        fold=fold,
        engine_file=ds["modelEngineFile"],
        threshold=threshold_text(manifest["recommended_threshold"]),
        model_card=manifest["model_card"]["markdown"],
        int8=f"{int8['status']}{': ' + int8['reason'] if int8['reason'] else ''}",
    )


def package_stage(
    params: Params,
    arch: str,
    onnx_dir: str | Path,
    trt_dir: str | Path,
    out_dir: str | Path,
    run: RunRecords,
) -> dict[str, Any]:
    """``reidpipe package`` for one architecture."""
    params.arch(arch)  # an unknown name fails here, naming the defined ones
    return package(
        arch, onnx_dir, trt_dir, out_dir, params.deploy, run, recipe_record(params, arch)
    )
