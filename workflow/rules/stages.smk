# One rule per stage of the table (reidpipe/stages/table.py), which holds each stage's facts:
# command, code, inputs, outputs, tracked params, log, threads and resources.

from reidpipe.stages import snakemake_rules as stage_rule
from reidpipe.stages.table import STAGES


for stage in STAGES:

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
            **stage_rule.resources(stage),
        shell:
            stage_rule.shell(stage, config)
