"""What the Snakefile and dvc.yaml share: the params each stage reads and config loading.

``STAGE_PARAMS`` is the single list of parameter keys each stage reads. dvc.yaml declares exactly
these under each stage's ``params:`` (a test checks it), and the Snakemake rules hand the same
values to ``params:`` so that a changed value reruns exactly the stages that read it.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from reidpipe.errors import ReidpipeError
from reidpipe.params import (
    DEFAULT_PARAMS_FILE,
    Params,
    merged_params_dict,
    params_from_dict,
)

STAGE_PARAMS: dict[str, list[str]] = {
    "download": ["data.source", "data.dataset_dir", "data.urls", "data.archive_path", "data.md5",
                 "data.allow_unknown_checksum", "data.max_extract_bytes", "data.synthetic_ids",
                 "data.synthetic_seed"],
    "validate": ["data.strict"],
    "split": ["split.val_ids", "split.seed"],
    "train": ["model", "dataset", "train", "archs.{arch}"],
    "extract": ["model.input_height", "model.input_width", "model.with_flip_feature",
                "dataset.pixel_mean", "dataset.pixel_std", "dataset.num_workers", "extract",
                "archs.{arch}"],
    "evaluate": ["re_ranking", "evaluate", "report.top_k"],
    "export_onnx": ["export", "extract.batch_size", "extract.channel_order", "extract.input_scale",
                    "evaluate", "archs.{arch}"],
    "build_trt": ["deploy", "extract.batch_size", "evaluate", "model.with_flip_feature",
                  "archs.{arch}"],
    "report": ["pipeline.archs", "report"],
}


def stage_param_keys(stage: str, arch: str | None = None) -> list[str]:
    keys = STAGE_PARAMS[stage]
    return [key.format(arch=arch) for key in keys]


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ReidpipeError(f"params: missing key {dotted!r}")
        node = node[part]
    return node


def stage_param_values(config: Mapping[str, Any], stage: str, arch: str | None = None) -> dict[str, Any]:
    """The values of the keys ``stage`` reads, for Snakemake's params-change rerun trigger."""
    return {key: _lookup(config, key) for key in stage_param_keys(stage, arch)}


def param_files(cli_configfiles: Sequence[str]) -> list[str]:
    """The files a Snakemake run merged, in merge order: params.yaml, then each --configfile."""
    files = [DEFAULT_PARAMS_FILE]
    for path in map(str, cli_configfiles):
        if all(not os.path.samefile(path, known) for known in files if os.path.exists(known)):
            files.append(os.path.relpath(path) if os.path.isabs(path) else path)
    return files


def workflow_params(config: Mapping[str, Any], files: Sequence[str]) -> Params:
    """Validate Snakemake's config before any job starts; errors become WorkflowErrors.

    The stages get ``files`` as ``--params``, so a value that reached ``config`` any other way
    (``snakemake --config``) would be checked here but never seen by a stage: it is refused.
    """
    from snakemake.exceptions import WorkflowError

    try:
        if dict(config) != merged_params_dict(files):
            raise ReidpipeError(
                "values given with `snakemake --config` do not reach the stages (and --config "
                "cannot set nested keys); put them in a YAML file and add it with --configfile")
        return params_from_dict(config)
    except ReidpipeError as exc:
        raise WorkflowError(str(exc)) from None
