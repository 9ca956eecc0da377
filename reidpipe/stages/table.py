"""The stage table: each stage's command, code, inputs, outputs, the params it reads, and how it
runs (log, threads, GPUs, further resources).

Both workflow tools are wired from it: one Snakemake rule per stage (``workflow/rules/stages.smk``,
through ``reidpipe.stages.snakemake_rules``), and ``dvc.yaml`` is generated from it
(``reidpipe.stages.dvc_file``; a test fails when the committed file is stale). File names inside
outputs are the constants of ``reidpipe.filenames``, shared with the stage code and the report.

Path templates: ``{arch}`` (a wildcard: one job per value of ``pipeline.archs``) and
``${data.dataset_dir}`` (a parameter value). Commands name inputs and outputs as
``{input.NAME}``/``{output.NAME}``; each tool appends ``--params FILES --provenance FILE``.
A stage's code is the import closure of its CLI module (``reidpipe.code_deps``): files for
Snakemake, packages for DVC. The values each job tracks are looked up in
``reidpipe.stages.tracked``, its provenance record computed in ``reidpipe.stages.records``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reidpipe import code_deps
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    CMC_FILE,
    CROSS_DIR,
    DATA_DIR,
    DEPLOY_DIR,
    DOWNLOAD_FILE,
    DVCLIVE_DIR,
    DVCLIVE_METRICS_FILE,
    DVCLIVE_PLOTS_DIR,
    EMBEDDINGS_DIR,
    ENVIRONMENT_FILE,
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
    TRAIN_CONFIG_FILE,
    TRAIN_LOG_FILE,
    TRAIN_SET_DIR,
    VALIDATION_FILE,
    VERIFICATION_FILE,
)
from reidpipe.params import Params

# Each wildcard and the values it takes: a list parameter, or a list the params derive from
# several keys (a ``Params`` method). dvc.yaml lists the values its params files give, so
# changing them means regenerating dvc.yaml.
WILDCARDS: dict[str, str | Callable[[Params], list[str]]] = {
    "arch": "pipeline.archs",
    "source": Params.extra_sources,  # further sources: prepared in data/<name>
    "test_set": Params.cross_sources,  # further test sets: cross-domain evaluation
    "seed": Params.spread_seeds,  # the seed-spread runs
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
LOGS_DIR = "logs"  # the jobs' logs under Snakemake


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
    # How Snakemake runs a job (DVC runs one at a time, in the foreground). Its command's output
    # goes to ``log`` (default: logs/<name>_<each wildcard's value>.log).
    log: str = ""
    threads: int = 1  # Snakemake sets OMP_NUM_THREADS from it; the Slurm profile --cpus-per-task
    # GPUs, as Snakemake's ``gpu`` resource: `--resources gpu=N` bounds the jobs running at
    # once, the Slurm profile asks for them (--gpus). A number, or the job's count from the
    # params and its wildcards (train: the arch's train.num_gpus)
    gpu: int | Callable[[Params, Mapping[str, str]], int] = 0
    # Further Snakemake resources, which a profile may override per rule. ``mpi`` is the launcher
    # the command runs under (Snakemake's convention: the Slurm profile sets srun there)
    resources: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cli_module(self) -> str:
        return f"reidpipe.cli.{self.cli or self.name}"

    @property
    def log_path(self) -> str:
        parts = [self.name, *(f"{{{w}}}" for w in self.wildcards)]
        return self.log or f"{LOGS_DIR}/{'_'.join(parts)}.log"

    @property
    def all_outputs(self) -> dict[str, Output]:
        """The outputs, then the provenance record beside the first one (a cached DVC output,
        so that `dvc pull` brings it with the outputs)."""
        first = next(iter(self.outputs.values())).path
        return {**self.outputs, "provenance": Output(first + PROVENANCE_SUFFIX)}

    @property
    def wildcards(self) -> list[str]:
        """The wildcards of the stage's outputs: one job per combination of their values."""
        found = {w for out in self.outputs.values() for w in template_wildcards(out.path)}
        return [w for w in WILDCARDS if w in found]

    def code_files(self) -> list[str]:
        return code_deps.code_files(["reidpipe.cli", self.cli_module])

    def code_packages(self) -> list[str]:
        return code_deps.code_packages(["reidpipe.cli", self.cli_module])

    def outputs_under(self, params: Params) -> dict[str, Output]:
        """The outputs (provenance last) that ``params`` make outputs (``Output.needed``)."""
        return {
            key: out
            for key, out in self.all_outputs.items()
            if out.needed is None or out.needed(params)
        }


def template_wildcards(template: str) -> list[str]:
    """The ``{wildcard}`` names of a path or command template (``${key}`` aside)."""
    return re.findall(r"(?<!\$)\{(\w+)\}", template)


# What ``params.arch(name)`` reads of an arch's recipe; its export overrides (archs.{arch}.export)
# are the export stage's alone, so they rerun that arch's export only.
ARCH_CONFIG = ("archs.{arch}.model", "archs.{arch}.dataset", "archs.{arch}.train")
TRAIN_PARAMS = ("model", "dataset", "train", *ARCH_CONFIG, "pipeline.cpu_isa")
# What the export and TensorRT parity rankings read of ``evaluate``: not the open-set keys, which
# only verification.json reads, so changing them rebuilds no export or engine.
PARITY_RANKING = ("evaluate.distance", "evaluate.ap_method", "evaluate.max_rank")


def _train(name: str, model_dir: str, seed: str = "", in_git: bool = True, **how: Any) -> Stage:
    """A training job writing ``model_dir`` (``seed``: a ``--set`` of the seed-spread runs;
    ``in_git``: DVCLive's per-epoch values are DVC metrics and plots kept in git, so that
    `dvc exp show` and `dvc plots diff` compare runs; ``how``: further fields of the stage)."""
    live = f"{model_dir}/{DVCLIVE_DIR}"
    return Stage(
        name,
        command=f"reidpipe train --arch {{arch}}{seed} --splits {{input.splits}} --out "
        + model_dir,
        inputs={"splits": TRAIN_SET},
        outputs={
            "model": Output(f"{model_dir}/{MODEL_FILE}"),
            "config": Output(f"{model_dir}/{TRAIN_CONFIG_FILE}"),
            "train_log": Output(f"{model_dir}/{TRAIN_LOG_FILE}"),
            "live_metrics": Output(
                f"{live}/{DVCLIVE_METRICS_FILE}", dvc="metric" if in_git else "out"
            ),
            "live_plots": Output(
                f"{live}/{DVCLIVE_PLOTS_DIR}",
                directory=True,
                **({"dvc": "plot", "plot_x": "step"} if in_git else {}),
            ),
        },
        params=TRAIN_PARAMS,
        cli="train",
        threads=4,
        gpu=_arch_gpus,
        **how,
    )


def _arch_gpus(params: Params, wildcards: Mapping[str, str]) -> int:
    """A training job's GPUs: its arch's train.num_gpus (on one node; a multi-node job asks for
    its GPUs per node through the Slurm profile), 0 for a CPU run."""
    return params.arch(wildcards["arch"]).train.num_gpus


def _extract(name: str, model_dir: str, splits: str, embeddings: str, log: str = "") -> Stage:
    """Embeddings of ``splits``' query and gallery by the model in ``model_dir``."""
    return Stage(
        name,
        command=f"reidpipe extract --arch {{arch}} --model {model_dir} --splits "
        "{input.splits} --out {output.embeddings}",
        inputs={"model": f"{model_dir}/{MODEL_FILE}", "splits": splits},
        outputs={"embeddings": Output(embeddings, directory=True)},
        params=(
            "model.input_height",
            "model.input_width",
            "model.with_flip_feature",
            "dataset.pixel_mean",
            "dataset.pixel_std",
            "dataset.num_workers",
            "extract",
            *ARCH_CONFIG,
            "pipeline.cpu_isa",
        ),
        cli="extract",
        log=log,
        threads=2,
        gpu=1,
    )


def _evaluate(
    name: str, embeddings: str, results: str, in_git: bool = True, log: str = ""
) -> Stage:
    """Metrics, CMC, per-query table and verification figures of ``embeddings`` in ``results``
    (``in_git``: the metrics and CMC are DVC metrics/plots kept in git, the verification figures
    in git too)."""
    return Stage(
        name,
        command="reidpipe evaluate --embeddings {input.embeddings} --out "
        "{output.metrics} --cmc {output.cmc} --per-query {output.per_query} "
        "--verification {output.verification}",
        inputs={"embeddings": embeddings},
        outputs={
            "metrics": Output(f"{results}/{METRICS_FILE}", dvc="metric" if in_git else "out"),
            "cmc": Output(
                f"{results}/{CMC_FILE}", **({"dvc": "plot", "plot_x": "rank"} if in_git else {})
            ),
            "per_query": Output(f"{results}/{PER_QUERY_FILE}"),
            "verification": Output(
                f"{results}/{VERIFICATION_FILE}", dvc="git" if in_git else "out"
            ),
        },
        params=("re_ranking", "evaluate", "report.top_k"),
        cli="evaluate",
        log=log,
        threads=2,
        gpu=1,
    )


STAGES: tuple[Stage, ...] = (
    # The values each job below tracks, as one file: what DVC compares (dvc.yaml's params), so
    # that DVC, like Snakemake, compares validated values rather than the text of params files.
    Stage(
        "tracked_params",
        command="reidpipe stages --tracked --out {output.tracked}",
        outputs={"tracked": Output(TRACKED_PARAMS_FILE)},
        cli="stages_cmd",
        reads_all_params=True,
    ),
    # A dataset folder the user holds is never an output (a rerun, --forcerun or `dvc checkout`
    # would delete it): download then only checks it and writes its record. A folder download
    # makes (fetched, unpacked, generated; its marker says so) is its output as well.
    Stage(
        "download",
        command="reidpipe download --out ${data.dataset_dir} --record {output.record}",
        outputs={
            "record": Output(DOWNLOADED),
            "dataset": Output(DATASET, directory=True, needed=_makes_dataset),
        },
        params=(
            "data.source",
            "data.dataset_dir",
            "data.urls",
            "data.archive_path",
            "data.md5",
            "data.allow_unknown_checksum",
            "data.max_extract_bytes",
            "data.cuhk03_variant",
            "data.split_dirs",
            "data.synthetic_ids",
            "data.synthetic_seed",
            "data.synthetic_layout",
        ),
    ),
    # The source decides how file names are read: validate and split read its layout keys.
    Stage(
        "validate",
        command="reidpipe validate {input.dataset} --report {output.report}",
        inputs={"download": DOWNLOADED, "dataset": DATASET},
        outputs={"report": Output(VALIDATION, dvc="git")},
        params=(
            "data.source",
            "data.cuhk03_variant",
            "data.split_dirs",
            "data.synthetic_layout",
            "data.strict",
        ),
        threads=2,
    ),
    Stage(
        "split",
        command="reidpipe split {input.dataset} --out {output.splits}",
        inputs={"validation": VALIDATION, "dataset": DATASET},
        outputs={"splits": Output(SPLITS, directory=True)},
        params=(
            "data.source",
            "data.cuhk03_variant",
            "data.split_dirs",
            "data.synthetic_layout",
            "split.val_ids",
            "split.seed",
        ),
    ),
    # Further sources (data.sources), each in data/<name>: the same three data stages. The
    # folder is never an output (it may be the user's): the record is.
    Stage(
        "download_source",
        command="reidpipe download --source {source} --out "
        + SOURCE_DATASET
        + " --record {output.record}",
        outputs={"record": Output(SOURCE_DOWNLOADED)},
        params=("data.sources.{source}",),
        cli="download",
        log=f"{LOGS_DIR}/download_{{source}}.log",
    ),
    Stage(
        "validate_source",
        command="reidpipe validate "
        + SOURCE_DATASET
        + " --source {source} --report {output.report}",
        inputs={"download": SOURCE_DOWNLOADED},
        outputs={"report": Output(f"{SOURCE_RESULTS}/{VALIDATION_FILE}", dvc="git")},
        params=("data.sources.{source}",),
        cli="validate",
        log=f"{LOGS_DIR}/validate_{{source}}.log",
        threads=2,
    ),
    Stage(
        "split_source",
        command="reidpipe split " + SOURCE_DATASET + " --source {source} --out {output.splits}",
        inputs={"validation": f"{SOURCE_RESULTS}/{VALIDATION_FILE}"},
        outputs={"splits": Output(SOURCE_SPLITS, directory=True)},
        params=("data.sources.{source}", "split.val_ids", "split.seed"),
        cli="split",
        log=f"{LOGS_DIR}/split_{{source}}.log",
    ),
    Stage(
        "combine",
        command="reidpipe combine --main {input.main} --sources "
        f"{RESULTS_DIR}/{SOURCES_DIR} --out {{output.train_set}}",
        inputs={
            "main": SPLITS,
            "more": AllOf(SOURCE_SPLITS, over={"source": Params.extra_train_sources}),
        },
        outputs={"train_set": Output(TRAIN_SET, directory=True)},
        params=("data.source", "data.train_sources"),
    ),
    # resources.mpi: the launcher of multi-node DDP, which the Slurm profile sets (srun)
    _train("train", ARCH_MODEL, resources={"mpi": ""}),
    _extract("extract", ARCH_MODEL, SPLITS, EMBEDDINGS),
    _evaluate("evaluate", EMBEDDINGS, ARCH_RESULTS),
    # Every arch on each further test set (cross-domain): the extract and evaluate stages.
    _extract(
        "extract_cross",
        ARCH_MODEL,
        f"{RESULTS_DIR}/{SOURCES_DIR}/{{test_set}}/{SPLITS_DIR}",
        f"{CROSS}/{EMBEDDINGS_DIR}",
        log=f"{LOGS_DIR}/extract_{{arch}}_{{test_set}}.log",
    ),
    _evaluate(
        "evaluate_cross",
        f"{CROSS}/{EMBEDDINGS_DIR}",
        CROSS,
        log=f"{LOGS_DIR}/evaluate_{{arch}}_{{test_set}}.log",
    ),
    # The seed spread (pipeline.seeds): each arch trained, extracted and evaluated once per seed.
    _train(
        "train_seed",
        SEED_MODEL,
        seed=" --set train.seed={seed}",
        in_git=False,
        log=f"{LOGS_DIR}/train_{{arch}}_seed{{seed}}.log",
    ),
    _extract(
        "extract_seed",
        SEED_MODEL,
        SPLITS,
        f"{SEED_RESULTS}/{EMBEDDINGS_DIR}",
        log=f"{LOGS_DIR}/extract_{{arch}}_seed{{seed}}.log",
    ),
    _evaluate(
        "evaluate_seed",
        f"{SEED_RESULTS}/{EMBEDDINGS_DIR}",
        SEED_RESULTS,
        in_git=False,
        log=f"{LOGS_DIR}/evaluate_{{arch}}_seed{{seed}}.log",
    ),
    Stage(
        "seed_spread",
        command=f"reidpipe seed-spread --results {RESULTS_DIR} --out {{output.spread}}",
        inputs={
            "seeds": AllOf(f"{SEED_RESULTS}/{METRICS_FILE}"),
            "single": AllOf(f"{ARCH_RESULTS}/{METRICS_FILE}"),
        },
        outputs={"spread": Output(SEED_SPREAD, dvc="metric")},
        params=("pipeline.archs", "pipeline.seeds"),
        wanted=_measures_spread,
    ),
    Stage(
        "export_onnx",
        command="reidpipe export-onnx --arch {arch} --model "
        + ARCH_MODEL
        + " --splits {input.splits} --out {output.onnx}",
        inputs={"model": f"{ARCH_MODEL}/{MODEL_FILE}", "splits": SPLITS},
        outputs={"onnx": Output(ONNX, directory=True)},
        params=(
            "export",
            "extract.batch_size",
            "extract.channel_order",
            "extract.input_scale",
            *PARITY_RANKING,
            *ARCH_CONFIG,
            "archs.{arch}.export",
            "pipeline.cpu_isa",
        ),
        threads=2,
        gpu=1,
    ),
    Stage(
        "build_trt",
        command="reidpipe build-trt --arch {arch} --onnx-dir {input.onnx} --splits {input.splits}"
        " --out {output.tensorrt}",
        inputs={"onnx": ONNX, "splits": SPLITS},
        outputs={"tensorrt": Output(TENSORRT, directory=True)},
        params=(
            "deploy",
            "extract.batch_size",
            *PARITY_RANKING,
            "model.with_flip_feature",
            *ARCH_CONFIG,
        ),
        threads=2,
        gpu=1,
    ),
    # The model card in the package reads the run's records: metrics, verification figures,
    # train config, validation report, the manifests of the test set and of each training
    # source (their images' sizes: the dataset folder) and the arch's recipe.
    Stage(
        "package",
        command="reidpipe package --arch {arch} --onnx-dir {input.onnx} --trt-dir"
        " {input.tensorrt} --metrics {input.metrics} --verification"
        " {input.verification} --train-config {input.config} --splits {input.splits}"
        " --train-set {input.train_set} --validation {input.validation}"
        " --out {output.deploy}",
        inputs={
            "onnx": ONNX,
            "tensorrt": TENSORRT,
            "metrics": f"{ARCH_RESULTS}/{METRICS_FILE}",
            "verification": f"{ARCH_RESULTS}/{VERIFICATION_FILE}",
            "config": f"{ARCH_MODEL}/{TRAIN_CONFIG_FILE}",
            "validation": VALIDATION,
            "splits": SPLITS,
            "dataset": DATASET,
            "train_set": TRAIN_SET,
            "sources": AllOf(SOURCE_SPLITS, over={"source": Params.extra_train_sources}),
        },
        outputs={"deploy": Output(DEPLOY, directory=True)},
        params=("deploy", *ARCH_CONFIG),
    ),
    Stage(
        "report",
        command=f"reidpipe report --results {RESULTS_DIR} --models {MODELS_DIR}"
        f" --out {REPORTS_DIR}",
        inputs={
            "validation": VALIDATION,
            "metrics": AllOf(f"{ARCH_RESULTS}/{METRICS_FILE}"),
            "cmc": AllOf(f"{ARCH_RESULTS}/{CMC_FILE}"),
            "per_query": AllOf(f"{ARCH_RESULTS}/{PER_QUERY_FILE}"),
            "verification": AllOf(f"{ARCH_RESULTS}/{VERIFICATION_FILE}"),
            "embeddings": AllOf(EMBEDDINGS),
            "onnx": AllOf(ONNX),
            "tensorrt": AllOf(TENSORRT),
            "deploy": AllOf(DEPLOY),
            "config": AllOf(f"{ARCH_MODEL}/{TRAIN_CONFIG_FILE}"),
            "train_log": AllOf(f"{ARCH_MODEL}/{TRAIN_LOG_FILE}"),
            "model": AllOf(f"{ARCH_MODEL}/{MODEL_FILE}"),  # the attention maps
            "cross": AllOf(f"{CROSS}/{METRICS_FILE}"),
            "seed_spread": When(SEED_SPREAD, _measures_spread),
        },
        outputs={
            "markdown": Output(f"{REPORTS_DIR}/{REPORT_MARKDOWN}"),
            "html": Output(f"{REPORTS_DIR}/{REPORT_HTML}"),
            "metrics": Output(f"{REPORTS_DIR}/{METRICS_FILE}", dvc="metric"),
            "environment": Output(f"{REPORTS_DIR}/{ENVIRONMENT_FILE}", dvc="git"),
            "figures": Output(f"{REPORTS_DIR}/{FIGURES_DIR}", directory=True),
        },
        params=(
            "pipeline.archs",
            "pipeline.eval_sources",
            "pipeline.seeds",
            "data.source",
            "data.train_sources",
            "report",
            "extract.channel_order",
            "extract.input_scale",
        ),
    ),
)

STAGE_BY_NAME = {stage.name: stage for stage in STAGES}


def stage(name: str) -> Stage:
    try:
        return STAGE_BY_NAME[name]
    except KeyError:
        raise ReidpipeError(f"unknown stage {name!r}; stages: {', '.join(STAGE_BY_NAME)}") from None


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
        gpu = "the arch's train.num_gpus" if callable(st.gpu) else st.gpu
        resources = {"gpu": gpu, **st.resources} if gpu else dict(st.resources)
        lines += [
            f"{st.name}{each}",
            f"  command: {st.command} --params FILES --provenance FILE",
            f"  code:    {' '.join(st.code_files())}",
            "  inputs:  " + " ".join(f"{k}={_describe_input(v)}" for k, v in st.inputs.items()),
            "  outputs: " + " ".join(f"{k}={o.path}" for k, o in st.all_outputs.items()),
            "  params:  "
            + ("every job's tracked values" if st.reads_all_params else " ".join(st.params)),
            f"  runs:    log={st.log_path} threads={st.threads}"
            + "".join(f" {k}={v!r}" for k, v in resources.items()),
            "",
        ]
    return "\n".join(lines)
