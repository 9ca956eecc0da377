# Helpers of the rules: each reads one stage's entry in the stage table (reidpipe/stages.py).

from reidpipe import stages


def inputs(stage):
    """Every reidpipe source file the stage runs, then its data inputs."""
    return stages.snakemake_inputs(stage, config)


def outputs(stage):
    return stages.snakemake_outputs(stage, config)


def command(stage, launcher=""):
    """The stage's command (after ``launcher``, e.g. srun); its output goes to the rule's log."""
    return " ".join(filter(None, [launcher, stages.snakemake_shell(stage), "> {log} 2>&1"]))


def tracked(stage):
    """The param values the stage reads, as canonical text: a change reruns it."""
    return lambda wildcards: stages.tracked_params(config, stage, **dict(wildcards.items()))
