"""The stage table: each stage's command, code, inputs, outputs and the params it reads.

Both workflow tools are wired from it: the Snakemake rules (``workflow/rules/*.smk``) take their
inputs, outputs, command and tracked params from here, and ``dvc.yaml`` is generated from it
(``reidpipe stages --dvc-yaml --out dvc.yaml``; a test fails when the committed file is stale).
File names inside outputs are the constants of ``reidpipe.filenames``, shared with the stage code
and the report.

Path templates: ``{arch}`` (a wildcard: one job per value of ``pipeline.archs``) and
``${data.dataset_dir}`` (a parameter value, DVC's interpolation syntax). Commands name inputs and
outputs as ``{input.NAME}``/``{output.NAME}``; ``--params FILES`` is appended by each tool.
A stage's code is the import closure of its CLI module (``reidpipe.code_deps``): files for
Snakemake, packages for DVC.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import yaml

from reidpipe import code_deps
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    CMC_FILE,
    DEPLOY_DIR,
    CROSS_DIR,
    ENVIRONMENT_FILE,
    DATA_DIR,
    EMBEDDINGS_DIR,
    FIGURES_DIR,
    METRICS_FILE,
    MODEL_FILE,
    MODELS_DIR,
    ONNX_DIR,
    PER_QUERY_FILE,
    REPORT_HTML,
    REPORT_MARKDOWN,
    REPORTS_DIR,
    RESULTS_DIR,
    SEED_SPREAD_FILE,
    SEEDS_DIR,
    SOURCES_DIR,
    SPLITS_DIR,
    TENSORRT_DIR,
    TRAIN_SET_DIR,
    TRAIN_CONFIG_FILE,
    TRAIN_LOG_FILE,
    VALIDATION_FILE,
)
from reidpipe.params import (
    DEFAULT_PARAMS_FILE,
    Params,
    merged_params_dict,
    params_from_dict,
)

# Each wildcard and the values it takes: a list parameter (DVC interpolates it), or a list the
# params derive from several keys (a ``Params`` method; dvc.yaml then lists the values params.yaml
# gives, so changing the sources means regenerating dvc.yaml).
WILDCARDS: dict[str, str | Callable[[Params], list[str]]] = {
    "arch": "pipeline.archs",
    "source": Params.extra_sources,     # further sources: prepared in data/<name>
    "test_set": Params.cross_sources,   # further test sets: cross-domain evaluation
    "seed": Params.spread_seeds,        # the seed-spread runs
}

DATASET = "${data.dataset_dir}"
VALIDATION = f"{RESULTS_DIR}/{VALIDATION_FILE}"
SPLITS = f"{RESULTS_DIR}/{SPLITS_DIR}"
ARCH_MODEL = f"{MODELS_DIR}/{{arch}}"
ARCH_RESULTS = f"{RESULTS_DIR}/{{arch}}"
EMBEDDINGS = f"{ARCH_RESULTS}/{EMBEDDINGS_DIR}"
ONNX = f"{ARCH_RESULTS}/{ONNX_DIR}"
TENSORRT = f"{ARCH_RESULTS}/{TENSORRT_DIR}"
DEPLOY = f"{ARCH_RESULTS}/{DEPLOY_DIR}"
SOURCE_DATASET = f"{DATA_DIR}/{{source}}"
SOURCE_RESULTS = f"{RESULTS_DIR}/{SOURCES_DIR}/{{source}}"
SOURCE_SPLITS = f"{SOURCE_RESULTS}/{SPLITS_DIR}"
TRAIN_SET = f"{RESULTS_DIR}/{TRAIN_SET_DIR}"
CROSS = f"{ARCH_RESULTS}/{CROSS_DIR}/{{test_set}}"
SEED_MODEL = f"{MODELS_DIR}/{SEEDS_DIR}/{{arch}}/seed{{seed}}"
SEED_RESULTS = f"{RESULTS_DIR}/{SEEDS_DIR}/{{arch}}/seed{{seed}}"
SEED_SPREAD = f"{REPORTS_DIR}/{SEED_SPREAD_FILE}"


@dataclass(frozen=True)
class Output:
    """One output. ``dvc``: ``out`` (cached), ``git`` (kept in git, ``cache: false``), ``metric``
    or ``plot`` (in git, listed under DVC's metrics/plots; ``plot_x`` is the plot's x column)."""

    path: str
    directory: bool = False
    dvc: Literal["out", "git", "metric", "plot"] = "out"
    plot_x: str = ""


@dataclass(frozen=True)
class AllOf:
    """An input taken for every value of its wildcards (the report reads every arch). DVC cannot
    expand a list outside ``foreach``, so there the dependency is the folder above the wildcard.
    ``over`` maps a wildcard to other values than its own (a ``Params`` method)."""

    path: str
    over: Mapping[str, Callable[[Params], list[str]]] = field(default_factory=dict)


@dataclass(frozen=True)
class When:
    """An input taken only when ``needed`` says so for the params (the report reads the seed
    spread only when the run measures one)."""

    path: str
    needed: Callable[[Params], bool]


def _measures_spread(params: Params) -> bool:
    return bool(params.spread_seeds())


@dataclass(frozen=True)
class Stage:
    name: str
    command: str
    outputs: Mapping[str, Output]
    inputs: Mapping[str, str | AllOf | When] = field(default_factory=dict)
    params: Sequence[str] = ()
    cli: str = ""  # the module under reidpipe.cli running the stage; default: the stage's name
    # Whether the params ask for the stage at all (a stage with wildcards also has no job when a
    # wildcard has no values)
    wanted: Callable[[Params], bool] = lambda params: True

    @property
    def cli_module(self) -> str:
        return f"reidpipe.cli.{self.cli or self.name}"

    @property
    def wildcards(self) -> list[str]:
        """The wildcards of the stage's outputs: one job per combination of their values."""
        found = {w for out in self.outputs.values() for w in _wildcards(out.path)}
        return [w for w in WILDCARDS if w in found]

    def code_files(self) -> list[str]:
        return code_deps.code_files(["reidpipe.cli", self.cli_module])

    def code_packages(self) -> list[str]:
        return code_deps.code_packages(["reidpipe.cli", self.cli_module])


def _wildcards(path: str) -> list[str]:
    return re.findall(r"(?<!\$)\{(\w+)\}", path)


STAGES: tuple[Stage, ...] = (
    Stage("download",
          command="reidpipe download --out {output.dataset}",
          outputs={"dataset": Output(DATASET, directory=True)},
          params=("data.source", "data.dataset_dir", "data.urls", "data.archive_path", "data.md5",
                  "data.allow_unknown_checksum", "data.max_extract_bytes", "data.cuhk03_variant",
                  "data.split_dirs", "data.synthetic_ids", "data.synthetic_seed",
                  "data.synthetic_layout")),
    # The source decides how file names are read: validate and split read its layout keys.
    Stage("validate",
          command="reidpipe validate {input.dataset} --report {output.report}",
          inputs={"dataset": DATASET},
          outputs={"report": Output(VALIDATION, dvc="git")},
          params=("data.source", "data.cuhk03_variant", "data.split_dirs",
                  "data.synthetic_layout", "data.strict")),
    Stage("split",
          command="reidpipe split {input.dataset} --out {output.splits}",
          inputs={"validation": VALIDATION, "dataset": DATASET},
          outputs={"splits": Output(SPLITS, directory=True)},
          params=("data.source", "data.cuhk03_variant", "data.split_dirs",
                  "data.synthetic_layout", "split.val_ids", "split.seed")),
    # Further sources (data.sources), each in data/<name>: the same three data stages.
    Stage("download_source",
          command="reidpipe download --source {source} --out {output.dataset}",
          outputs={"dataset": Output(SOURCE_DATASET, directory=True)},
          params=("data.sources.{source}",), cli="download"),
    Stage("validate_source",
          command="reidpipe validate {input.dataset} --source {source} --report {output.report}",
          inputs={"dataset": SOURCE_DATASET},
          outputs={"report": Output(f"{SOURCE_RESULTS}/{VALIDATION_FILE}", dvc="git")},
          params=("data.sources.{source}",), cli="validate"),
    Stage("split_source",
          command="reidpipe split {input.dataset} --source {source} --out {output.splits}",
          inputs={"validation": f"{SOURCE_RESULTS}/{VALIDATION_FILE}", "dataset": SOURCE_DATASET},
          outputs={"splits": Output(SOURCE_SPLITS, directory=True)},
          params=("data.sources.{source}", "split.val_ids", "split.seed"), cli="split"),
    Stage("combine",
          command="reidpipe combine --main {input.main} --sources "
                  f"{RESULTS_DIR}/{SOURCES_DIR} --out {{output.train_set}}",
          inputs={"main": SPLITS,
                  "more": AllOf(SOURCE_SPLITS, over={"source": Params.extra_train_sources})},
          outputs={"train_set": Output(TRAIN_SET, directory=True)},
          params=("data.source", "data.train_sources")),
    Stage("train",
          command="reidpipe train --arch {arch} --splits {input.splits} --out " + ARCH_MODEL,
          inputs={"splits": TRAIN_SET},
          outputs={"model": Output(f"{ARCH_MODEL}/{MODEL_FILE}"),
                   "config": Output(f"{ARCH_MODEL}/{TRAIN_CONFIG_FILE}"),
                   "train_log": Output(f"{ARCH_MODEL}/{TRAIN_LOG_FILE}")},
          params=("model", "dataset", "train", "archs.{arch}", "pipeline.cpu_isa")),
    Stage("extract",
          command="reidpipe extract --arch {arch} --model " + ARCH_MODEL
                  + " --splits {input.splits} --out {output.embeddings}",
          inputs={"model": f"{ARCH_MODEL}/{MODEL_FILE}", "splits": SPLITS},
          outputs={"embeddings": Output(EMBEDDINGS, directory=True)},
          params=("model.input_height", "model.input_width", "model.with_flip_feature",
                  "dataset.pixel_mean", "dataset.pixel_std", "dataset.num_workers", "extract",
                  "archs.{arch}", "pipeline.cpu_isa")),
    Stage("evaluate",
          command="reidpipe evaluate --embeddings {input.embeddings} --out {output.metrics}"
                  " --cmc {output.cmc} --per-query {output.per_query}",
          inputs={"embeddings": EMBEDDINGS},
          outputs={"metrics": Output(f"{ARCH_RESULTS}/{METRICS_FILE}", dvc="metric"),
                   "cmc": Output(f"{ARCH_RESULTS}/{CMC_FILE}", dvc="plot", plot_x="rank"),
                   "per_query": Output(f"{ARCH_RESULTS}/{PER_QUERY_FILE}")},
          params=("re_ranking", "evaluate", "report.top_k")),
    # Every arch on each further test set (cross-domain): the extract and evaluate stages.
    Stage("extract_cross",
          command="reidpipe extract --arch {arch} --model " + ARCH_MODEL
                  + " --splits {input.splits} --out {output.embeddings}",
          inputs={"model": f"{ARCH_MODEL}/{MODEL_FILE}",
                  "splits": f"{RESULTS_DIR}/{SOURCES_DIR}/{{test_set}}/{SPLITS_DIR}"},
          outputs={"embeddings": Output(f"{CROSS}/{EMBEDDINGS_DIR}", directory=True)},
          params=("model.input_height", "model.input_width", "model.with_flip_feature",
                  "dataset.pixel_mean", "dataset.pixel_std", "dataset.num_workers", "extract",
                  "archs.{arch}", "pipeline.cpu_isa"), cli="extract"),
    Stage("evaluate_cross",
          command="reidpipe evaluate --embeddings {input.embeddings} --out {output.metrics}"
                  " --cmc {output.cmc} --per-query {output.per_query}",
          inputs={"embeddings": f"{CROSS}/{EMBEDDINGS_DIR}"},
          outputs={"metrics": Output(f"{CROSS}/{METRICS_FILE}", dvc="metric"),
                   "cmc": Output(f"{CROSS}/{CMC_FILE}", dvc="plot", plot_x="rank"),
                   "per_query": Output(f"{CROSS}/{PER_QUERY_FILE}")},
          params=("re_ranking", "evaluate", "report.top_k"), cli="evaluate"),
    # The seed spread (pipeline.seeds): each arch trained, extracted and evaluated once per seed.
    Stage("train_seed",
          command="reidpipe train --arch {arch} --set train.seed={seed} --splits {input.splits}"
                  " --out " + SEED_MODEL,
          inputs={"splits": TRAIN_SET},
          outputs={"model": Output(f"{SEED_MODEL}/{MODEL_FILE}"),
                   "config": Output(f"{SEED_MODEL}/{TRAIN_CONFIG_FILE}"),
                   "train_log": Output(f"{SEED_MODEL}/{TRAIN_LOG_FILE}")},
          params=("model", "dataset", "train", "archs.{arch}", "pipeline.cpu_isa"), cli="train"),
    Stage("extract_seed",
          command="reidpipe extract --arch {arch} --model " + SEED_MODEL
                  + " --splits {input.splits} --out {output.embeddings}",
          inputs={"model": f"{SEED_MODEL}/{MODEL_FILE}", "splits": SPLITS},
          outputs={"embeddings": Output(f"{SEED_RESULTS}/{EMBEDDINGS_DIR}", directory=True)},
          params=("model.input_height", "model.input_width", "model.with_flip_feature",
                  "dataset.pixel_mean", "dataset.pixel_std", "dataset.num_workers", "extract",
                  "archs.{arch}", "pipeline.cpu_isa"), cli="extract"),
    Stage("evaluate_seed",
          command="reidpipe evaluate --embeddings {input.embeddings} --out {output.metrics}"
                  " --cmc {output.cmc} --per-query {output.per_query}",
          inputs={"embeddings": f"{SEED_RESULTS}/{EMBEDDINGS_DIR}"},
          outputs={"metrics": Output(f"{SEED_RESULTS}/{METRICS_FILE}"),
                   "cmc": Output(f"{SEED_RESULTS}/{CMC_FILE}"),
                   "per_query": Output(f"{SEED_RESULTS}/{PER_QUERY_FILE}")},
          params=("re_ranking", "evaluate", "report.top_k"), cli="evaluate"),
    Stage("seed_spread",
          command=f"reidpipe seed-spread --results {RESULTS_DIR} --out {{output.spread}}",
          inputs={"seeds": AllOf(f"{SEED_RESULTS}/{METRICS_FILE}"),
                  "single": AllOf(f"{ARCH_RESULTS}/{METRICS_FILE}")},
          outputs={"spread": Output(SEED_SPREAD, dvc="metric")},
          params=("pipeline.archs", "pipeline.seeds"), wanted=_measures_spread),
    Stage("export_onnx",
          command="reidpipe export-onnx --arch {arch} --model " + ARCH_MODEL
                  + " --splits {input.splits} --out {output.onnx}",
          inputs={"model": f"{ARCH_MODEL}/{MODEL_FILE}", "splits": SPLITS},
          outputs={"onnx": Output(ONNX, directory=True)},
          params=("export", "extract.batch_size", "extract.channel_order", "extract.input_scale",
                  "evaluate", "archs.{arch}", "pipeline.cpu_isa")),
    Stage("build_trt",
          command="reidpipe build-trt --arch {arch} --onnx-dir {input.onnx} --splits {input.splits}"
                  " --out {output.tensorrt}",
          inputs={"onnx": ONNX, "splits": SPLITS},
          outputs={"tensorrt": Output(TENSORRT, directory=True)},
          params=("deploy", "extract.batch_size", "evaluate", "model.with_flip_feature",
                  "archs.{arch}")),
    Stage("package",
          command="reidpipe package --arch {arch} --onnx-dir {input.onnx} --trt-dir"
                  " {input.tensorrt} --out {output.deploy}",
          inputs={"onnx": ONNX, "tensorrt": TENSORRT},
          outputs={"deploy": Output(DEPLOY, directory=True)},
          params=("deploy",)),
    Stage("report",
          command=f"reidpipe report --results {RESULTS_DIR} --models {MODELS_DIR}"
                  f" --out {REPORTS_DIR}",
          inputs={"validation": VALIDATION,
                  "metrics": AllOf(f"{ARCH_RESULTS}/{METRICS_FILE}"),
                  "cmc": AllOf(f"{ARCH_RESULTS}/{CMC_FILE}"),
                  "per_query": AllOf(f"{ARCH_RESULTS}/{PER_QUERY_FILE}"),
                  "embeddings": AllOf(EMBEDDINGS),
                  "onnx": AllOf(ONNX),
                  "tensorrt": AllOf(TENSORRT),
                  "deploy": AllOf(DEPLOY),
                  "config": AllOf(f"{ARCH_MODEL}/{TRAIN_CONFIG_FILE}"),
                  "train_log": AllOf(f"{ARCH_MODEL}/{TRAIN_LOG_FILE}"),
                  "cross": AllOf(f"{CROSS}/{METRICS_FILE}"),
                  "seed_spread": When(SEED_SPREAD, _measures_spread)},
          outputs={"markdown": Output(f"{REPORTS_DIR}/{REPORT_MARKDOWN}"),
                   "html": Output(f"{REPORTS_DIR}/{REPORT_HTML}"),
                   "metrics": Output(f"{REPORTS_DIR}/{METRICS_FILE}", dvc="metric"),
                   "environment": Output(f"{REPORTS_DIR}/{ENVIRONMENT_FILE}", dvc="git"),
                   "figures": Output(f"{REPORTS_DIR}/{FIGURES_DIR}", directory=True)},
          params=("pipeline.archs", "pipeline.eval_sources", "pipeline.seeds", "data.source",
                  "data.train_sources", "report")),
)

STAGE_BY_NAME = {stage.name: stage for stage in STAGES}


def stage(name: str) -> Stage:
    try:
        return STAGE_BY_NAME[name]
    except KeyError:
        raise ReidpipeError(f"unknown stage {name!r}; stages: {', '.join(STAGE_BY_NAME)}") from None


# ------------------------------------------------------------------------------------ params


def lookup(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ReidpipeError(f"params: missing key {dotted!r}")
        node = node[part]
    return node


def stage_param_keys(name: str, **wildcards: str) -> list[str]:
    return [key.format(**wildcards) for key in stage(name).params]


def tracked_params(config: Mapping[str, Any], name: str, **wildcards: str) -> str:
    """The values ``name`` reads as canonical JSON (sorted keys): Snakemake compares params as
    text, and the key order of the merged config depends on the order the files were merged."""
    values = {key: lookup(config, key) for key in stage_param_keys(name, **wildcards)}
    return json.dumps(values, sort_keys=True)


# ------------------------------------------------------------------------------------ Snakemake


_PARAM_REF = re.compile(r"\$\{([\w.]+)\}")


def _resolve(template: str, config: Mapping[str, Any]) -> str:
    return _PARAM_REF.sub(lambda m: str(lookup(config, m.group(1))), template)


def snakemake_inputs(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs of the rule: ``code`` (every source file the stage runs) then the data inputs."""
    inputs: dict[str, Any] = {"code": stage(name).code_files()}
    for key, value in stage(name).inputs.items():
        if isinstance(value, AllOf):
            path = _resolve(value.path, config)
            combos: list[dict[str, str]] = [{}]
            for w in _wildcards(path):
                values = (value.over[w](params_from_dict(config)) if w in value.over
                          else wildcard_values(config, w))
                combos = [dict(c, **{w: v}) for c in combos for v in values]
            inputs[key] = [path.format(**c) for c in combos]
        elif isinstance(value, When):
            inputs[key] = [value.path] if value.needed(params_from_dict(config)) else []
        else:
            inputs[key] = _resolve(value, config)
    return inputs


def snakemake_outputs(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    from snakemake.io import directory

    return {key: directory(_resolve(out.path, config)) if out.directory
            else _resolve(out.path, config) for key, out in stage(name).outputs.items()}


def snakemake_shell(name: str) -> str:
    """The rule's shell command; the log redirect is the rule's own."""
    command = re.sub(r"(?<!\$)\{(\w+)\}", lambda m: "{wildcards.%s}" % m.group(1),
                     stage(name).command)
    return f"{command} --params {{params.files}}"


def wildcard_values(config: Mapping[str, Any], wildcard: str) -> list[str]:
    values = WILDCARDS[wildcard]
    if isinstance(values, str):
        return [str(v) for v in lookup(config, values)]
    return values(params_from_dict(config))


def wildcard_constraints(config: Mapping[str, Any]) -> dict[str, str]:
    """Each wildcard matches exactly its values (none: a pattern nothing matches)."""
    return {w: "|".join(re.escape(v) for v in wildcard_values(config, w)) or "(?!)"
            for w in WILDCARDS}


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


# ------------------------------------------------------------------------------------ DVC


def _dvc_template(template: str, wildcards: Sequence[str]) -> str:
    def item(match: re.Match) -> str:
        return "${item}" if len(wildcards) == 1 else "${item.%s}" % match.group(1)

    return re.sub(r"(?<!\$)\{(\w+)\}", item, template)


def _dvc_values(wildcard: str, params: Params) -> str | list[str]:
    values = WILDCARDS[wildcard]
    return "${%s}" % values if isinstance(values, str) else values(params)


def _dvc_stage(st: Stage, params: Params) -> dict[str, Any] | None:
    """The stage's dvc.yaml entry; ``None`` when a derived wildcard has no values (no job)."""
    wildcards = st.wildcards
    lists = {w: _dvc_values(w, params) for w in wildcards}
    if not st.wanted(params) or any(not values for values in lists.values()):
        return None

    def path(template: str) -> str:
        return _dvc_template(template, wildcards)

    def inside(dep: str, other: str) -> bool:
        return dep != other and dep.startswith(other.rstrip("/") + "/")

    refs = {f"input.{k}": path(v) for k, v in st.inputs.items() if isinstance(v, str)}
    refs.update({f"output.{k}": path(o.path) for k, o in st.outputs.items()})
    command = re.sub(r"\{((?:input|output)\.\w+)\}", lambda m: refs[m.group(1)], st.command)
    data_deps = [path(v) if isinstance(v, str) else v.path.split("/{")[0]
                 for v in st.inputs.values() if not _expands_to_nothing(v, params)]
    data_deps = list(dict.fromkeys(data_deps))
    data_deps = [d for d in data_deps if not any(inside(d, o) for o in data_deps)]
    body: dict[str, Any] = {"cmd": f"{path(command)} --params {DEFAULT_PARAMS_FILE}",
                            "deps": st.code_packages() + data_deps,
                            "params": [path(key) for key in st.params]}
    groups: dict[str, list] = {"outs": [], "metrics": [], "plots": []}
    for out in st.outputs.values():
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


def _expands_to_nothing(value: str | AllOf | When, params: Params) -> bool:
    if isinstance(value, str):
        return False
    if isinstance(value, When):
        return not value.needed(params)
    return any(not (value.over[w](params) if w in value.over else _dvc_values(w, params))
               for w in _wildcards(value.path))


def _describe_input(value: str | AllOf | When) -> str:
    if isinstance(value, AllOf):
        return f"all of {value.path}"
    if isinstance(value, When):
        return f"{value.path} (when the params ask for it)"
    return value


def describe() -> str:
    """The table as text: one block per stage."""
    lines = []
    for st in STAGES:
        each = f" (one job per {', '.join(st.wildcards)})" if st.wildcards else ""
        lines += [f"{st.name}{each}",
                  f"  command: {st.command} --params FILES",
                  f"  code:    {' '.join(st.code_files())}",
                  "  inputs:  " + " ".join(f"{k}={_describe_input(v)}"
                                           for k, v in st.inputs.items()),
                  "  outputs: " + " ".join(f"{k}={o.path}" for k, o in st.outputs.items()),
                  f"  params:  {' '.join(st.params)}", ""]
    return "\n".join(lines)


DVC_HEADER = """\
# Generated from the stage table (reidpipe/stages.py) by
# `reidpipe stages --dvc-yaml --out dvc.yaml`: edit the table, not this file (a test fails when
# it is stale). Each stage declares exactly the
# params it reads, since `dvc exp run -S` silently ignores keys no stage declares; values come from
# params.yaml. The further sources (data.sources, data.train_sources, pipeline.eval_sources) are
# written out as lists: regenerate this file after changing them.
"""


def dvc_yaml(params: Params | None = None) -> str:
    """dvc.yaml for ``params`` (default: params.yaml's)."""
    params = params or params_from_dict(merged_params_dict([DEFAULT_PARAMS_FILE]))
    stages = {st.name: entry for st in STAGES
              if (entry := _dvc_stage(st, params)) is not None}
    return DVC_HEADER + yaml.safe_dump({"stages": stages}, sort_keys=False, width=1000)
