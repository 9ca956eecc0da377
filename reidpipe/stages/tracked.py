"""The params a job reads, looked up in the validated params (``params_from_dict``, then
``dataclasses.asdict``), with the ``--set`` of the stage's own command applied: so an empty
section, another key order or a default written out changes nothing. The same lookup gives the
wildcards' values and the ``${key}`` parts of path templates."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
from collections.abc import Mapping
from typing import Any

from reidpipe.errors import ReidpipeError
from reidpipe.params import params_from_dict
from reidpipe.params.merge import apply_override, parse_override
from reidpipe.stages.table import STAGES, WILDCARDS, Stage, stage


def lookup(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ReidpipeError(f"params: missing key {dotted!r}")
        node = node[part]
    return node


def stage_param_keys(name: str, **wildcards: str) -> list[str]:
    return [key.format(**wildcards) for key in stage(name).params]


_VALIDATED: dict[str, dict[str, Any]] = {}


def canonical_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The validated params of ``config`` as plain data, every default filled in: where tracked
    values, wildcard values and ``${...}`` path parts are looked up."""
    key = json.dumps(config, sort_keys=True, default=repr)
    if key not in _VALIDATED:
        _VALIDATED[key] = dataclasses.asdict(params_from_dict(config))
    return _VALIDATED[key]


_PARAM_REF = re.compile(r"\$\{([\w.]+)\}")


def resolve(template: str, config: Mapping[str, Any]) -> str:
    """``template`` with each ``${key}`` replaced by the key's value."""
    return _PARAM_REF.sub(lambda m: str(lookup(canonical_params(config), m.group(1))), template)


def wildcard_values(config: Mapping[str, Any], wildcard: str) -> list[str]:
    values = WILDCARDS[wildcard]
    if isinstance(values, str):
        return [str(v) for v in lookup(canonical_params(config), values)]
    return values(params_from_dict(config))


def _job_config(
    config: Mapping[str, Any], st: Stage, wildcards: Mapping[str, str]
) -> Mapping[str, Any]:
    """``config`` with the ``--set`` overrides of the stage's own command (train_seed sets
    train.seed), which the job's run sees too."""
    overrides = [text.format(**wildcards) for text in re.findall(r"--set\s+(\S+)", st.command)]
    if not overrides:
        return config
    data = copy.deepcopy(dict(config))
    for text in overrides:
        apply_override(data, *parse_override(text))
    return data


def tracked_values(config: Mapping[str, Any], name: str, **wildcards: str) -> dict[str, Any]:
    """The values job ``name`` (with ``wildcards``) reads, nested by key path, from the
    validated params: what Snakemake's params, DVC's params and the job's provenance hold."""
    st = stage(name)
    if st.reads_all_params:
        return all_tracked_values(config)
    namespace = canonical_params(_job_config(config, st, wildcards))
    values: dict[str, Any] = {}
    for key in stage_param_keys(name, **wildcards):
        *parents, last = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = lookup(namespace, key)
    return values


def jobs(config: Mapping[str, Any]) -> list[tuple[Stage, dict[str, str]]]:
    """Every job the params ask for: its stage and wildcard values."""
    params = params_from_dict(config)
    found = []
    for st in STAGES:
        if st.wanted(params):
            names = st.wildcards
            found += [
                (st, dict(zip(names, combo)))
                for combo in itertools.product(*(wildcard_values(config, w) for w in names))
            ]
    return found


def all_tracked_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every job's tracked values (tracked_params' own aside), nested by stage and then by each
    wildcard's value: ``validate``, ``train.resnet50``, ``extract_cross.resnet50.duke`` (the
    keys dvc.yaml's params name)."""
    values: dict[str, Any] = {}
    for st, wildcards in jobs(config):
        if not st.reads_all_params:
            *parents, last = [st.name, *wildcards.values()]
            node = values
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = tracked_values(config, st.name, **wildcards)
    return values
