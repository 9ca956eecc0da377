"""The Snakemake rule of each stage: its directives, read from the stage table. The workflow
(``workflow/rules/stages.smk``) makes one rule per stage from them; this module is imported by
the Snakefile only.

Each rule takes as inputs the stage's code (every source file its command runs) and its data
inputs; as params its tracked values, as text (a change reruns the job), and the params files
(``--params``); as log, threads and resources the stage's. A job whose outputs record other
params or code than the current ones is rebuilt, whichever tool built them.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from snakemake.exceptions import WorkflowError
from snakemake.io import directory
from snakemake.logging import logger

from reidpipe.errors import ReidpipeError
from reidpipe.params import DEFAULT_PARAMS_FILE, merged_params_dict, params_from_dict
from reidpipe.provenance import canonical_json
from reidpipe.stages.records import job_outputs, stale_provenance
from reidpipe.stages.table import WILDCARDS, AllOf, Stage, When, template_wildcards
from reidpipe.stages.tracked import jobs, resolve, tracked_values, wildcard_values

# The resource holding the launcher a stage's command runs under (Snakemake's convention for
# MPI jobs; the Slurm profile sets srun there for multi-node training)
LAUNCHER = "mpi"


def param_files(cli_configfiles: Sequence[str]) -> list[str]:
    """The files a Snakemake run merged, in merge order: params.yaml, then each --configfile."""
    files = [DEFAULT_PARAMS_FILE]
    for path in map(str, cli_configfiles):
        if all(not os.path.samefile(path, known) for known in files if os.path.exists(known)):
            files.append(os.path.relpath(path) if os.path.isabs(path) else path)
    return files


def check_config(config: Mapping[str, Any], files: Sequence[str]) -> None:
    """Validate Snakemake's config before any job starts (a typo stops the run, naming the key);
    errors become WorkflowErrors.

    The stages get ``files`` as ``--params``, so a value that reached ``config`` any other way
    (``snakemake --config``) would be checked here but never seen by a stage: it is refused.
    """
    try:
        if dict(config) != merged_params_dict(files):
            raise ReidpipeError(
                "values given with `snakemake --config` do not reach the stages (and --config "
                "cannot set nested keys); put them in a YAML file and add it with --configfile"
            )
        params_from_dict(config)
    except ReidpipeError as exc:
        raise WorkflowError(str(exc)) from None


def wildcard_constraints(config: Mapping[str, Any]) -> dict[str, str]:
    """Each wildcard matches exactly its values (none: a pattern nothing matches)."""
    return {
        w: "|".join(re.escape(v) for v in wildcard_values(config, w)) or "(?!)" for w in WILDCARDS
    }


def every_output(config: Mapping[str, Any]) -> list[str]:
    """The outputs of every job the params ask for: what ``snakemake`` builds with no target,
    as ``dvc repro`` runs every stage."""
    return [
        path
        for st, wildcards in jobs(config)
        for path in job_outputs(config, st.name, **wildcards).values()
    ]


def inputs(st: Stage, config: Mapping[str, Any], workflow: Any) -> dict[str, Any]:
    """``code`` (every source file the stage runs; see ``_rebuilt_when_stale``), then the data
    inputs."""
    found: dict[str, Any] = {"code": _rebuilt_when_stale(st, config, workflow)}
    params = params_from_dict(config)
    for key, value in st.inputs.items():
        if isinstance(value, AllOf):
            path = resolve(value.path, config)
            combos: list[dict[str, str]] = [{}]
            for w in template_wildcards(path):
                values = value.over[w](params) if w in value.over else wildcard_values(config, w)
                combos = [dict(c, **{w: v}) for c in combos for v in values]
            found[key] = [path.format(**c) for c in combos]
        elif isinstance(value, When):
            found[key] = [value.path] if value.needed(params) else []
        else:
            found[key] = resolve(value, config)
    return found


def _rebuilt_when_stale(st: Stage, config: Mapping[str, Any], workflow: Any) -> Callable:
    """The stage's code files as an input function, which Snakemake calls when it builds each
    job: a job whose outputs record other params or code than the current ones (README
    "Provenance") is marked forced, whichever tool built them. Snakemake's own triggers compare
    with its record of its last run, not with the outputs on disk; its DAG's forced files are
    the one way to say so."""
    code = st.code_files()

    def code_files(wildcards: Any) -> list[str]:
        stale = stale_provenance(config, st.name, **dict(wildcards.items()))
        if stale is not None and workflow.dag is not None:
            path, differences = stale
            shown = ", ".join(differences[:4]) + (", ..." if len(differences) > 4 else "")
            logger.info(
                f"{path}: the outputs were built from other params or code ({shown}); "
                "rebuilding them"
            )
            workflow.dag.forcefiles.add(path)
        return code

    return code_files


def outputs(st: Stage, config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: directory(resolve(out.path, config)) if out.directory else resolve(out.path, config)
        for key, out in st.outputs_under(params_from_dict(config)).items()
    }


def params(st: Stage, config: Mapping[str, Any], files: Sequence[str]) -> dict[str, Callable]:
    """``files``: the stages' ``--params``. A function of the job's input, so that Snakemake
    leaves it out of the params it compares: which files carry the values is not something a job
    reads (its values are), and a --configfile that changes no value reruns nothing.
    ``tracked``: the values the job reads, as canonical JSON (Snakemake compares params as
    text): a change reruns it."""
    quoted = " ".join(shlex.quote(f) for f in files)

    def files_param(wildcards: Any, input: Any) -> str:  # noqa: A002 (Snakemake's name)
        return quoted

    def tracked(wildcards: Any) -> str:
        return canonical_json(tracked_values(config, st.name, **dict(wildcards.items())))

    return {"files": files_param, "tracked": tracked}


def resources(st: Stage, config: Mapping[str, Any]) -> dict[str, Any]:
    """The stage's resources; a GPU count the params give is computed for each job."""
    gpu: Any = st.gpu
    if callable(st.gpu):
        count = st.gpu

        def gpu(wildcards: Any) -> int:
            return count(params_from_dict(config), dict(wildcards.items()))

    return {**({"gpu": gpu} if gpu else {}), **st.resources}


def shell(st: Stage, config: Mapping[str, Any]) -> str:
    """The stage's command (``${key}`` written out, wildcards as the job's), after the launcher
    when the stage has one; its output goes to the rule's log."""
    command = re.sub(
        r"(?<!\$)\{(\w+)\}", lambda m: f"{{wildcards.{m.group(1)}}}", resolve(st.command, config)
    )
    launcher = f"{{resources.{LAUNCHER}}}" if LAUNCHER in st.resources else ""
    return " ".join(
        filter(
            None,
            [
                launcher,
                f"{command} --params {{params.files}} --provenance {{output.provenance}}",
                "> {log} 2>&1",
            ],
        )
    )
