"""The stage table: each stage's command, code, inputs, outputs and the params it reads.

Both workflow tools are wired from it: the Snakemake rules (``workflow/rules/*.smk``) take their
inputs, outputs, command and tracked params from here, and ``dvc.yaml`` is generated from it
(``reidpipe stages --dvc-yaml --out dvc.yaml``; a test fails when the committed file is stale).
File names inside outputs are the constants of ``reidpipe.filenames``, shared with the stage code
and the report.

Path templates: ``{arch}`` (a wildcard: one job per value of ``pipeline.archs``) and
``${data.dataset_dir}`` (a parameter value). Commands name inputs and outputs as
``{input.NAME}``/``{output.NAME}``; each tool appends ``--params FILES --provenance FILE``.
A stage's code is the import closure of its CLI module (``reidpipe.code_deps``): files for
Snakemake, packages for DVC.

Tracked params: each job's values are looked up in the validated, defaults-filled params
(``params_from_dict``, then ``dataclasses.asdict``), with the ``--set`` of the stage's own command
applied, so an empty section, another key order or a default written out changes nothing. Every
stage also writes its provenance (``reidpipe.provenance``) beside its first output; the record
(``job_provenance``) is computed here for Snakemake, DVC and the stage itself.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import yaml

from reidpipe import code_deps
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    CMC_FILE,
    DEPLOY_DIR,
    CROSS_DIR,
    DOWNLOAD_FILE,
    ENVIRONMENT_FILE,
    DATA_DIR,
    EMBEDDINGS_DIR,
    FIGURES_DIR,
    METRICS_FILE,
    MODEL_FILE,
    MODELS_DIR,
    ONNX_DIR,
    PER_QUERY_FILE,
    PROVENANCE_SUFFIX,
    REPORT_HTML,
    REPORT_MARKDOWN,
    REPORTS_DIR,
    RESULTS_DIR,
    SEED_SPREAD_FILE,
    SEEDS_DIR,
    SOURCES_DIR,
    SPLITS_DIR,
    TENSORRT_DIR,
    TRACKED_PARAMS_FILE,
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
from reidpipe.params.merge import apply_override, parse_override
from reidpipe.provenance import Provenance, canonical_json, code_digests, differences
from reidpipe.provenance import read as read_provenance

# Each wildcard and the values it takes: a list parameter, or a list the params derive from
# several keys (a ``Params`` method). dvc.yaml lists the values its params files give, so
# changing them means regenerating dvc.yaml.
WILDCARDS: dict[str, str | Callable[[Params], list[str]]] = {
    "arch": "pipeline.archs",
    "source": Params.extra_sources,     # further sources: prepared in data/<name>
    "test_set": Params.cross_sources,   # further test sets: cross-domain evaluation
    "seed": Params.spread_seeds,        # the seed-spread runs
}

DATASET = "${data.dataset_dir}"
DOWNLOADED = f"{RESULTS_DIR}/{DOWNLOAD_FILE}"
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
SOURCE_DOWNLOADED = f"{SOURCE_RESULTS}/{DOWNLOAD_FILE}"
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
    # Whether the params make it an output at all (the main dataset folder: only when download
    # made it; a folder the user holds is never an output)
    needed: Callable[[Params], bool] | None = None


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


def _holds_dataset(params: Params) -> bool:
    """Whether the main dataset is the user's (custom, or a folder download did not make): then
    it is only an input of the stages that read it, never an output anything could delete."""
    from reidpipe.data.download import is_held

    return is_held(params.data)


def _makes_dataset(params: Params) -> bool:
    return not _holds_dataset(params)


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
    # The stage reads every job's values (tracked_params): DVC tracks its params files whole
    reads_all_params: bool = False

    @property
    def cli_module(self) -> str:
        return f"reidpipe.cli.{self.cli or self.name}"

    @property
    def all_outputs(self) -> dict[str, Output]:
        """The outputs, then the provenance record beside the first one (a cached DVC output,
        so that `dvc pull` brings it with the outputs)."""
        first = next(iter(self.outputs.values())).path
        return {**self.outputs, "provenance": Output(first + PROVENANCE_SUFFIX)}

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


TRAIN_PARAMS = ("model", "dataset", "train", "archs.{arch}", "pipeline.cpu_isa")


def _train(name: str, model_dir: str, seed: str = "") -> Stage:
    """A training job writing ``model_dir`` (``seed``: a ``--set`` of the seed-spread runs)."""
    return Stage(name,
                 command=f"reidpipe train --arch {{arch}}{seed} --splits {{input.splits}} --out "
                         + model_dir,
                 inputs={"splits": TRAIN_SET},
                 outputs={"model": Output(f"{model_dir}/{MODEL_FILE}"),
                          "config": Output(f"{model_dir}/{TRAIN_CONFIG_FILE}"),
                          "train_log": Output(f"{model_dir}/{TRAIN_LOG_FILE}")},
                 params=TRAIN_PARAMS, cli="train")


def _extract(name: str, model_dir: str, splits: str, embeddings: str) -> Stage:
    """Embeddings of ``splits``' query and gallery by the model in ``model_dir``."""
    return Stage(name,
                 command=f"reidpipe extract --arch {{arch}} --model {model_dir} --splits "
                         "{input.splits} --out {output.embeddings}",
                 inputs={"model": f"{model_dir}/{MODEL_FILE}", "splits": splits},
                 outputs={"embeddings": Output(embeddings, directory=True)},
                 params=("model.input_height", "model.input_width", "model.with_flip_feature",
                         "dataset.pixel_mean", "dataset.pixel_std", "dataset.num_workers",
                         "extract", "archs.{arch}", "pipeline.cpu_isa"), cli="extract")


def _evaluate(name: str, embeddings: str, results: str, in_git: bool = True) -> Stage:
    """Metrics, CMC and per-query table of ``embeddings`` in ``results`` (``in_git``: the
    metrics and CMC are DVC metrics/plots kept in git)."""
    return Stage(name,
                 command="reidpipe evaluate --embeddings {input.embeddings} --out "
                         "{output.metrics} --cmc {output.cmc} --per-query {output.per_query}",
                 inputs={"embeddings": embeddings},
                 outputs={"metrics": Output(f"{results}/{METRICS_FILE}",
                                            dvc="metric" if in_git else "out"),
                          "cmc": Output(f"{results}/{CMC_FILE}",
                                        **({"dvc": "plot", "plot_x": "rank"} if in_git else {})),
                          "per_query": Output(f"{results}/{PER_QUERY_FILE}")},
                 params=("re_ranking", "evaluate", "report.top_k"), cli="evaluate")


STAGES: tuple[Stage, ...] = (
    # The values each job below tracks, as one file: what DVC compares (dvc.yaml's params), so
    # that DVC, like Snakemake, compares validated values rather than the text of params files.
    Stage("tracked_params",
          command="reidpipe stages --tracked --out {output.tracked}",
          outputs={"tracked": Output(TRACKED_PARAMS_FILE)},
          cli="stages_cmd", reads_all_params=True),
    # A dataset folder the user holds is never an output (a rerun, --forcerun or `dvc checkout`
    # would delete it): download then only checks it and writes its record. A folder download
    # makes (fetched, unpacked, generated; its marker says so) is its output as well.
    Stage("download",
          command="reidpipe download --out ${data.dataset_dir} --record {output.record}",
          outputs={"record": Output(DOWNLOADED),
                   "dataset": Output(DATASET, directory=True, needed=_makes_dataset)},
          params=("data.source", "data.dataset_dir", "data.urls", "data.archive_path", "data.md5",
                  "data.allow_unknown_checksum", "data.max_extract_bytes", "data.cuhk03_variant",
                  "data.split_dirs", "data.synthetic_ids", "data.synthetic_seed",
                  "data.synthetic_layout")),
    # The source decides how file names are read: validate and split read its layout keys.
    Stage("validate",
          command="reidpipe validate {input.dataset} --report {output.report}",
          inputs={"download": DOWNLOADED, "dataset": DATASET},
          outputs={"report": Output(VALIDATION, dvc="git")},
          params=("data.source", "data.cuhk03_variant", "data.split_dirs",
                  "data.synthetic_layout", "data.strict")),
    Stage("split",
          command="reidpipe split {input.dataset} --out {output.splits}",
          inputs={"validation": VALIDATION, "dataset": DATASET},
          outputs={"splits": Output(SPLITS, directory=True)},
          params=("data.source", "data.cuhk03_variant", "data.split_dirs",
                  "data.synthetic_layout", "split.val_ids", "split.seed")),
    # Further sources (data.sources), each in data/<name>: the same three data stages. The
    # folder is never an output (it may be the user's): the record is.
    Stage("download_source",
          command="reidpipe download --source {source} --out " + SOURCE_DATASET
                  + " --record {output.record}",
          outputs={"record": Output(SOURCE_DOWNLOADED)},
          params=("data.sources.{source}",), cli="download"),
    Stage("validate_source",
          command="reidpipe validate " + SOURCE_DATASET
                  + " --source {source} --report {output.report}",
          inputs={"download": SOURCE_DOWNLOADED},
          outputs={"report": Output(f"{SOURCE_RESULTS}/{VALIDATION_FILE}", dvc="git")},
          params=("data.sources.{source}",), cli="validate"),
    Stage("split_source",
          command="reidpipe split " + SOURCE_DATASET + " --source {source} --out {output.splits}",
          inputs={"validation": f"{SOURCE_RESULTS}/{VALIDATION_FILE}"},
          outputs={"splits": Output(SOURCE_SPLITS, directory=True)},
          params=("data.sources.{source}", "split.val_ids", "split.seed"), cli="split"),
    Stage("combine",
          command="reidpipe combine --main {input.main} --sources "
                  f"{RESULTS_DIR}/{SOURCES_DIR} --out {{output.train_set}}",
          inputs={"main": SPLITS,
                  "more": AllOf(SOURCE_SPLITS, over={"source": Params.extra_train_sources})},
          outputs={"train_set": Output(TRAIN_SET, directory=True)},
          params=("data.source", "data.train_sources")),
    _train("train", ARCH_MODEL),
    _extract("extract", ARCH_MODEL, SPLITS, EMBEDDINGS),
    _evaluate("evaluate", EMBEDDINGS, ARCH_RESULTS),
    # Every arch on each further test set (cross-domain): the extract and evaluate stages.
    _extract("extract_cross", ARCH_MODEL, f"{RESULTS_DIR}/{SOURCES_DIR}/{{test_set}}/{SPLITS_DIR}",
             f"{CROSS}/{EMBEDDINGS_DIR}"),
    _evaluate("evaluate_cross", f"{CROSS}/{EMBEDDINGS_DIR}", CROSS),
    # The seed spread (pipeline.seeds): each arch trained, extracted and evaluated once per seed.
    _train("train_seed", SEED_MODEL, seed=" --set train.seed={seed}"),
    _extract("extract_seed", SEED_MODEL, SPLITS, f"{SEED_RESULTS}/{EMBEDDINGS_DIR}"),
    _evaluate("evaluate_seed", f"{SEED_RESULTS}/{EMBEDDINGS_DIR}", SEED_RESULTS, in_git=False),
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


_VALIDATED: dict[str, dict[str, Any]] = {}


def canonical_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The validated params of ``config`` as plain data, every default filled in: where tracked
    values, wildcard values and ``${...}`` path parts are looked up."""
    key = json.dumps(config, sort_keys=True, default=repr)
    if key not in _VALIDATED:
        _VALIDATED[key] = dataclasses.asdict(params_from_dict(config))
    return _VALIDATED[key]


def _job_config(config: Mapping[str, Any], st: Stage, wildcards: Mapping[str, str]
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


def tracked_params(config: Mapping[str, Any], name: str, **wildcards: str) -> str:
    """The job's tracked values as canonical JSON (sorted keys): Snakemake compares params as
    text."""
    return canonical_json(tracked_values(config, name, **wildcards))


def jobs(config: Mapping[str, Any]) -> list[tuple[Stage, dict[str, str]]]:
    """Every job the params ask for: its stage and wildcard values."""
    params = params_from_dict(config)
    found = []
    for st in STAGES:
        if st.wanted(params):
            names = st.wildcards
            found += [(st, dict(zip(names, combo))) for combo in
                      itertools.product(*(wildcard_values(config, w) for w in names))]
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


# ------------------------------------------------------------------------------------ provenance


def job_provenance(config: Mapping[str, Any], name: str, **wildcards: str) -> Provenance:
    """What the outputs of job ``name`` (with ``wildcards``) record when built under ``config``
    from the code as it is now: the one computation Snakemake, DVC and the stage share."""
    return Provenance(stage=name, wildcards=dict(sorted(wildcards.items())),
                      params=tracked_values(config, name, **wildcards),
                      code=code_digests(stage(name).code_files(), code_deps.ROOT))


def outputs_under(config: Mapping[str, Any], name: str) -> dict[str, Output]:
    """The stage's outputs that ``config`` makes outputs (``Output.needed``)."""
    params = params_from_dict(config)
    return {key: out for key, out in stage(name).all_outputs.items()
            if out.needed is None or out.needed(params)}


def job_outputs(config: Mapping[str, Any], name: str, **wildcards: str) -> dict[str, str]:
    """The job's output paths, its provenance record last."""
    return {key: _resolve(out.path, config).format(**wildcards)
            for key, out in outputs_under(config, name).items()}


def stale_provenance(config: Mapping[str, Any], name: str, **wildcards: str
                     ) -> tuple[str, list[str]] | None:
    """Why the job's existing outputs must be rebuilt: its provenance file and what differs from
    the record ``config`` and the code give now. None when they match, or when no output is
    there (the job runs anyway)."""
    outputs = job_outputs(config, name, **wildcards)
    if not any(os.path.lexists(path) for path in outputs.values()):
        return None
    expected = job_provenance(config, name, **wildcards)
    recorded = read_provenance(outputs["provenance"])
    if recorded is not None and recorded["fingerprint"] == expected.fingerprint:
        return None
    return outputs["provenance"], differences(recorded, expected)


def _template_regex(template: str, config: Mapping[str, Any]) -> re.Pattern:
    """``template`` with each ``{wildcard}`` matching exactly that wildcard's values."""
    pieces = re.split(r"(?<!\$)\{(\w+)\}", os.path.normpath(template))
    seen: set[str] = set()
    regex = ""
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            regex += re.escape(piece)
        elif piece in seen:
            regex += f"(?P={piece})"
        else:
            seen.add(piece)
            choices = "|".join(map(re.escape, wildcard_values(config, piece))) or "(?!)"
            regex += f"(?P<{piece}>{choices})"
    return re.compile(regex)


def provenance_recorder(path: str, config: Mapping[str, Any]) -> Callable[[], None]:
    """For a stage run given ``--provenance PATH`` and the params ``config``: removes any record
    at ``path`` (a failed run leaves none) and returns what writes the run's record once it has
    succeeded. The job is the one whose provenance file ``path`` is; its record is computed
    before the run, from the params and code the run starts with."""
    wanted = os.path.normpath(os.path.relpath(path) if os.path.isabs(path) else path)
    for st in STAGES:
        template = _resolve(st.all_outputs["provenance"].path, config)
        match = _template_regex(template, config).fullmatch(wanted)
        if match:
            record = job_provenance(config, st.name, **match.groupdict())
            Path(path).unlink(missing_ok=True)
            return lambda: record.write(path)
    raise ReidpipeError(
        f"--provenance {path}: no job of the pipeline writes it under these params (a job's "
        f"provenance file is its first output + {PROVENANCE_SUFFIX}, e.g. "
        f"{_resolve(STAGE_BY_NAME['validate'].all_outputs['provenance'].path, config)})")


# ------------------------------------------------------------------------------------ Snakemake


_PARAM_REF = re.compile(r"\$\{([\w.]+)\}")


def _resolve(template: str, config: Mapping[str, Any]) -> str:
    """``template`` with each ``${key}`` replaced by the key's value."""
    return _PARAM_REF.sub(lambda m: str(lookup(canonical_params(config), m.group(1))), template)


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
            else _resolve(out.path, config) for key, out in outputs_under(config, name).items()}


def snakemake_shell(name: str, config: Mapping[str, Any]) -> str:
    """The rule's shell command (``${key}`` written out); the log redirect is the rule's own."""
    command = re.sub(r"(?<!\$)\{(\w+)\}", lambda m: "{wildcards.%s}" % m.group(1),
                     _resolve(stage(name).command, config))
    return f"{command} --params {{params.files}} --provenance {{output.provenance}}"


def wildcard_values(config: Mapping[str, Any], wildcard: str) -> list[str]:
    values = WILDCARDS[wildcard]
    if isinstance(values, str):
        return [str(v) for v in lookup(canonical_params(config), values)]
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


def _dvc_stage(st: Stage, config: Mapping[str, Any], files: Sequence[str]
               ) -> dict[str, Any] | None:
    """The stage's dvc.yaml entry under ``config`` (read from ``files``); ``None`` when the
    params ask for no job of it."""
    params = params_from_dict(config)
    wildcards = st.wildcards
    lists = {w: wildcard_values(config, w) for w in wildcards}
    if not st.wanted(params) or any(not values for values in lists.values()):
        return None

    def path(template: str) -> str:
        return _dvc_template(_resolve(template, config), wildcards)

    def inside(dep: str, other: str) -> bool:
        return dep != other and dep.startswith(other.rstrip("/") + "/")

    outputs = outputs_under(config, st.name)
    refs = {f"input.{k}": _resolve(v, config) for k, v in st.inputs.items() if isinstance(v, str)}
    refs.update({f"output.{k}": _resolve(o.path, config) for k, o in outputs.items()})
    command = re.sub(r"\{((?:input|output)\.\w+)\}", lambda m: refs[m.group(1)], st.command)
    command += f" --params {' '.join(files)} --provenance {refs['output.provenance']}"
    data_deps = [path(v) if isinstance(v, str) else _resolve(v.path, config).split("/{")[0]
                 for v in st.inputs.values() if not _expands_to_nothing(v, config)]
    data_deps = list(dict.fromkeys(data_deps))
    data_deps = [d for d in data_deps if not any(inside(d, o) for o in data_deps)]
    if st.reads_all_params:  # the files whole: `dvc exp run -S` reaches every key of them
        tracked: list[Any] = [{file: None} for file in files]
    else:  # the job's entry in what tracked_params writes
        key = ".".join([st.name, *("{%s}" % w for w in wildcards)])
        tracked = [{TRACKED_PARAMS_FILE: [path(key)]}]
    body: dict[str, Any] = {"cmd": path(command), "deps": st.code_packages() + data_deps,
                            "params": tracked}
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
    return any(not (value.over[w](params) if w in value.over else wildcard_values(config, w))
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
                  f"  command: {st.command} --params FILES --provenance FILE",
                  f"  code:    {' '.join(st.code_files())}",
                  "  inputs:  " + " ".join(f"{k}={_describe_input(v)}"
                                           for k, v in st.inputs.items()),
                  "  outputs: " + " ".join(f"{k}={o.path}" for k, o in st.all_outputs.items()),
                  "  params:  " + ("every job's tracked values" if st.reads_all_params
                                   else " ".join(st.params)), ""]
    return "\n".join(lines)


DVC_HEADER = """\
# Generated from the stage table (reidpipe/stages.py) for the params files: {files}
# by `reidpipe stages --dvc-yaml --params {files} --out dvc.yaml`. Edit the table, not
# this file (a test fails when the committed one is stale). Paths, archs and sources are written
# out: regenerate it after changing data.dataset_dir, pipeline.archs, pipeline.seeds or the
# sources. A stage's params are its entry in {tracked}: the validated values it reads,
# written from the params files by the first stage.
"""


def dvc_yaml(files: Sequence[str] = (DEFAULT_PARAMS_FILE,)) -> str:
    """dvc.yaml for the params ``files`` (merged in order, as ``--params`` merges them)."""
    config = merged_params_dict(files)
    stages = {st.name: entry for st in STAGES
              if (entry := _dvc_stage(st, config, files)) is not None}
    header = DVC_HEADER.format(files=" ".join(files), tracked=TRACKED_PARAMS_FILE)
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=1000)
