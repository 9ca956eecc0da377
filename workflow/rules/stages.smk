# Each stage of the table (reidpipe/stages/table.py) becomes a Snakemake rule, made here from
# the stage's facts: command, code, inputs, outputs, tracked params, log, threads and resources.

from reidpipe.stages import snakemake_rules as stage_rule
from reidpipe.stages.table import STAGES


def define_rule(stage):
    """The stage's rule. Made in a function so that the job's shell command, which Snakemake
    evaluates again when the job runs, reads this stage rather than the loop's last one."""

    rule:
        name:
            stage.name
        input:
            **stage_rule.inputs(stage, config, workflow),
        output:
            **stage_rule.outputs(stage, config),
        params:
            **stage_rule.params(stage, config, FILES),
        log:
            stage.log_path,
        threads: stage.threads
        resources:
            **stage_rule.resources(stage, config),
        shell:
            stage_rule.shell(stage, config)


for stage in STAGES:
    define_rule(stage)
