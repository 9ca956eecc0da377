"""dvc.yaml, generated from the stage table for the params files it is run with
(``reidpipe stages --dvc-yaml``): the same commands, outputs and code as the Snakemake rules, each
wildcard a ``foreach``/``matrix`` over the values the params files give, and each stage's params
its own entry in the tracked values file (``params.tracked.json``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from reidpipe.filenames import TRACKED_PARAMS_FILE
from reidpipe.params import DEFAULT_PARAMS_FILE, merged_params_dict, params_from_dict
from reidpipe.stages.table import STAGES, AllOf, Stage, When, template_wildcards
from reidpipe.stages.tracked import resolve, wildcard_values


def _dvc_template(template: str, wildcards: Sequence[str]) -> str:
    def item(match: re.Match) -> str:
        return "${item}" if len(wildcards) == 1 else f"${{item.{match.group(1)}}}"

    return re.sub(r"(?<!\$)\{(\w+)\}", item, template)


def _dvc_stage(st: Stage, config: Mapping[str, Any], files: Sequence[str]) -> dict[str, Any] | None:
    """The stage's dvc.yaml entry under ``config`` (read from ``files``); ``None`` when the
    params ask for no job of it."""
    params = params_from_dict(config)
    wildcards = st.wildcards
    lists = {w: wildcard_values(config, w) for w in wildcards}
    if not st.wanted(params) or any(not values for values in lists.values()):
        return None

    def path(template: str) -> str:
        return _dvc_template(resolve(template, config), wildcards)

    def inside(dep: str, other: str) -> bool:
        return dep != other and dep.startswith(other.rstrip("/") + "/")

    outputs = st.outputs_under(params)
    refs = {f"input.{k}": resolve(v, config) for k, v in st.inputs.items() if isinstance(v, str)}
    refs.update({f"output.{k}": resolve(o.path, config) for k, o in outputs.items()})
    command = re.sub(r"\{((?:input|output)\.\w+)\}", lambda m: refs[m.group(1)], st.command)
    command += f" --params {' '.join(files)} --provenance {refs['output.provenance']}"
    data_deps = [
        path(v) if isinstance(v, str) else resolve(v.path, config).split("/{")[0]
        for v in st.inputs.values()
        if not _expands_to_nothing(v, config)
    ]
    data_deps = list(dict.fromkeys(data_deps))
    data_deps = [d for d in data_deps if not any(inside(d, o) for o in data_deps)]
    if st.reads_all_params:  # the files whole: `dvc exp run -S` reaches every key of them
        tracked: list[Any] = [{file: None} for file in files]
    else:  # the job's entry in what tracked_params writes
        key = ".".join([st.name, *(f"{{{w}}}" for w in wildcards)])
        tracked = [{TRACKED_PARAMS_FILE: [path(key)]}]
    body: dict[str, Any] = {
        "cmd": path(command),
        "deps": st.code_packages() + data_deps,
        "params": tracked,
    }
    groups: dict[str, list] = {"outs": [], "metrics": [], "plots": []}
    for out in outputs.values():
        if out.dvc == "out":
            groups["outs"].append(path(out.path))
        elif out.dvc == "git":
            groups["outs"].append({path(out.path): {"cache": False}})
        elif out.dvc == "metric":
            groups["metrics"].append({path(out.path): {"cache": False}})
        else:
            groups["plots"].append({path(out.path): {"cache": False, "x": out.plot_x}})
    body.update({k: v for k, v in groups.items() if v})
    if not wildcards:
        return body
    if len(wildcards) == 1:
        return {"foreach": lists[wildcards[0]], "do": body}
    return {"matrix": lists, **body}


def _expands_to_nothing(value: str | AllOf | When, config: Mapping[str, Any]) -> bool:
    if isinstance(value, str):
        return False
    params = params_from_dict(config)
    if isinstance(value, When):
        return not value.needed(params)
    return any(
        not (value.over[w](params) if w in value.over else wildcard_values(config, w))
        for w in template_wildcards(value.path)
    )


DVC_HEADER = """\
# Generated from the stage table (reidpipe/stages/table.py) for the params files: {files}
# by `reidpipe stages --dvc-yaml --params {files} --out dvc.yaml`. Edit the table, not
# this file (a test fails when the committed one is stale). Paths, archs and sources are written
# out: regenerate it after changing data.dataset_dir, pipeline.archs, pipeline.seeds or the
# sources. A stage's params are its entry in {tracked}: the validated values it reads,
# written from the params files by the first stage.
"""


def dvc_yaml(files: Sequence[str] = (DEFAULT_PARAMS_FILE,)) -> str:
    """dvc.yaml for the params ``files`` (merged in order, as ``--params`` merges them)."""
    config = merged_params_dict(files)
    stages = {
        st.name: entry for st in STAGES if (entry := _dvc_stage(st, config, files)) is not None
    }
    header = DVC_HEADER.format(files=" ".join(files), tracked=TRACKED_PARAMS_FILE)
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=1000)
