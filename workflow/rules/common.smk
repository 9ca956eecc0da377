# Helpers of the rules: each reads one stage's entry in the stage table (reidpipe/stages.py).

import shlex

from snakemake.logging import logger

from reidpipe import stages


def PARAM_FILES(wildcards, input):
    """The stages' --params (FILES, the Snakefile's). A function of the job's input, so that
    Snakemake leaves it out of the params it compares: which files carry the values is not
    something a job reads (its values are: tracked), and a --configfile that changes no value
    reruns nothing."""
    return " ".join(shlex.quote(f) for f in FILES)


def inputs(stage):
    """Every reidpipe source file the stage runs, then its data inputs."""
    found = stages.snakemake_inputs(stage, config)
    found["code"] = rebuilt_when_stale(stage, found["code"])
    return found


def rebuilt_when_stale(stage, code):
    """``code`` as an input function, which Snakemake calls when it builds each job: a job whose
    outputs record other params or code than the current ones (README "Provenance") is marked
    forced, whichever tool built them. Snakemake's own triggers compare with its record of its
    last run, not with the outputs on disk; its DAG's forced files are the one way to say so."""

    def code_files(wildcards):
        stale = stages.stale_provenance(config, stage, **dict(wildcards.items()))
        if stale is not None and workflow.dag is not None:
            path, differences = stale
            shown = ", ".join(differences[:4]) + (", ..." if len(differences) > 4 else "")
            logger.info(f"{path}: the outputs were built from other params or code ({shown}); "
                        "rebuilding them")
            workflow.dag.forcefiles.add(path)
        return code

    return code_files


def outputs(stage):
    return stages.snakemake_outputs(stage, config)


def command(stage, launcher=""):
    """The stage's command (after ``launcher``, e.g. srun); its output goes to the rule's log."""
    shell = stages.snakemake_shell(stage, config)
    return " ".join(filter(None, [launcher, shell, "> {log} 2>&1"]))


def tracked(stage):
    """The param values the job reads, as canonical text: a change reruns it."""
    return lambda wildcards: stages.tracked_params(config, stage, **dict(wildcards.items()))
