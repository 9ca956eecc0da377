"""The pipeline's stages, read by both workflow tools: ``table`` (each stage's command, inputs,
outputs, params and how it runs), ``tracked`` (the values a job reads, looked up in the validated
params), ``records`` (each job's provenance record), ``snakemake_rules`` (the rules' directives)
and ``dvc_file`` (dvc.yaml)."""
