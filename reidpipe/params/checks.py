"""The rules that relate keys of several sections (the per-key types and ranges are checked
while the dataclasses are built, ``reidpipe/params/validation.py``)."""

from __future__ import annotations

import os
import re
import typing

from reidpipe.dataset_registry import source_spec
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import DATA_DIR
from reidpipe.params.schema import Params
from reidpipe.params.sections.data import SourceName


def check_consistency(params: Params) -> None:
    """Raise a ReidpipeError naming the keys of the first rule ``params`` breaks."""
    _check_archs(params)
    _check_sources(params)
    _check_export_and_deploy(params)


def _check_archs(params: Params) -> None:
    """pipeline.archs against archs; each arch's merged sections against each other."""
    archs = params.pipeline.archs
    if not archs or len(set(archs)) != len(archs):
        raise ReidpipeError(
            f"params: pipeline.archs = {archs} must name at least one architecture, each once"
        )
    for name in archs:
        if name not in params.archs:
            raise ReidpipeError(
                f"params: pipeline.archs names {name!r}, which has no recipe under 'archs' "
                f"(defined: {sorted(params.archs)})"
            )
    for name in params.archs:
        cfg = params.arch(name)
        key = f"archs.{name}"
        if len(cfg.dataset.pixel_mean) != cfg.model.input_channels:
            raise ReidpipeError(
                f"params: {key}: dataset.pixel_mean needs "
                f"{cfg.model.input_channels} values, got {cfg.dataset.pixel_mean}"
            )
        if len(cfg.dataset.pixel_std) != cfg.model.input_channels:
            raise ReidpipeError(
                f"params: {key}: dataset.pixel_std needs "
                f"{cfg.model.input_channels} values, got {cfg.dataset.pixel_std}"
            )
        if any(s <= 0 for s in cfg.dataset.pixel_std):
            raise ReidpipeError(
                f"params: {key}: dataset.pixel_std must be > 0, got {cfg.dataset.pixel_std}"
            )
        if cfg.dataset.sampler != "softmax" and cfg.dataset.batch_size % cfg.dataset.num_instances:
            raise ReidpipeError(
                f"params: {key}: dataset.batch_size ({cfg.dataset.batch_size}) must be a multiple "
                f"of dataset.num_instances ({cfg.dataset.num_instances}) for P x K sampling"
            )
        if cfg.model.pretrain_choice == "self" and not cfg.model.pretrained_model_path:
            raise ReidpipeError(
                f"params: {key}: model.pretrain_choice is 'self' but "
                "model.pretrained_model_path is empty"
            )
        steps = cfg.train.optim.lr_steps
        if steps != sorted(steps):
            raise ReidpipeError(f"params: {key}: train.optim.lr_steps must increase, got {steps}")


def _check_sources(params: Params) -> None:
    """Source names and folders, each source's block against its registry entry, and the
    train and test source lists."""
    _check_source_names(params)
    _check_source_blocks(params)
    _check_source_lists(params)


def _check_source_names(params: Params) -> None:
    """The further sources' names and folders, and the main source's folder."""
    for name in params.data.sources:
        if not re.fullmatch(r"[A-Za-z0-9_]+", name) or name == params.data.source:
            raise ReidpipeError(
                f"params: data.sources.{name}: a source name is letters, digits and _ and differs "
                f"from data.source ({params.data.source!r})"
            )
    for name, entry in params.data.sources.items():
        if entry.dataset_dir not in ("", f"{DATA_DIR}/{name}"):
            raise ReidpipeError(
                f"params: data.sources.{name}.dataset_dir = {entry.dataset_dir!r}: the pipeline "
                f"keeps further sources in {DATA_DIR}/{name}; leave it empty and give your copy "
                "with archive_path (a zip or a folder, hard-linked in)"
            )
    if not params.data.dataset_dir:
        raise ReidpipeError(
            "params: data.dataset_dir is empty; expected the main dataset's folder "
            f"(e.g. {DATA_DIR}/{source_spec(params.data.source).folder})"
        )


def _check_source_blocks(params: Params) -> None:
    """Each source's block against its registry entry; no two sources in one folder."""
    folders: dict[str, str] = {}
    for name in params.source_names():
        key = "data" if name == params.data.source else f"data.sources.{name}"
        block = params.source(name)
        if block.source not in typing.get_args(SourceName):
            raise ReidpipeError(
                f"params: {key}.source is empty and {name!r} is not a source; "
                f"set it to one of {', '.join(typing.get_args(SourceName))}"
            )
        try:
            source = block.dataset_source()
        except ReidpipeError as exc:
            raise ReidpipeError(f"params: {key}: {exc}") from None
        if block.strict and source.stats is None:
            raise ReidpipeError(
                f"params: {key}.strict is true but {source.spec.title} has no "
                "official statistics to check; set it to false"
            )
        folder = os.path.normpath(block.dataset_dir)
        if folder in folders:
            raise ReidpipeError(
                f"params: sources {folders[folder]!r} and {name!r} share the "
                f"dataset folder {block.dataset_dir}; give each its own"
            )
        folders[folder] = name


def _check_source_lists(params: Params) -> None:
    """data.train_sources and pipeline.eval_sources: known sources, each once, the main one in."""
    for key, names in (
        ("data.train_sources", params.data.train_sources),
        ("pipeline.eval_sources", params.pipeline.eval_sources),
    ):
        unknown = [n for n in names if n not in params.source_names()]
        if unknown or len(set(names)) != len(names):
            raise ReidpipeError(
                f"params: {key} = {names} must name each source once, from data.source and the "
                f"keys of data.sources ({params.source_names()}); unknown: {unknown}"
            )
        if names and params.data.source not in names:
            raise ReidpipeError(
                f"params: {key} = {names} must include data.source ({params.data.source!r}): "
                "the main source is always trained on and evaluated (the ONNX and TensorRT "
                "gates run on its test set)"
            )


def _check_export_and_deploy(params: Params) -> None:
    """Deploy batch sizes; each arch's export (``archs.<name>.export`` validated) against
    deploy.precision."""
    d = params.deploy
    if not d.min_batch <= d.opt_batch <= d.max_batch:
        raise ReidpipeError(
            f"params: deploy batch sizes must satisfy min_batch <= opt_batch <= max_batch, got "
            f"{d.min_batch}/{d.opt_batch}/{d.max_batch}"
        )
    for name in params.archs:
        export = params.export_for(name)
        if d.precision == "int8" and not (export.int8 and export.int8_activations == "int8"):
            raise ReidpipeError(
                "params: deploy.precision int8 builds from export's INT8 ONNX with int8 "
                f"activations; got for {name} export.int8 {export.int8}, "
                f"export.int8_activations {export.int8_activations!r} (TensorRT cannot parse "
                "uint8 Q/DQ)"
            )
