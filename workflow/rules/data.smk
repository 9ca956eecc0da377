rule download:
    output:
        directory(DATASET),
    input:
        "reidpipe/data/download.py",
        "reidpipe/data/synth.py",
    params:
        files=PARAM_FILES,
        tracked=stage_param_values(config, "download"),
    log:
        "logs/download.log",
    threads: 1
    shell:
        "reidpipe download --out {output} --params {params.files} > {log} 2>&1"


rule validate:
    output:
        "results/validation.json",
    input:
        "reidpipe/data/validate.py",
        dataset=DATASET,
    params:
        files=PARAM_FILES,
        tracked=stage_param_values(config, "validate"),
    log:
        "logs/validate.log",
    threads: 2
    shell:
        "reidpipe validate {input.dataset} --report {output} --params {params.files} > {log} 2>&1"


rule split:
    output:
        directory(SPLITS),
    input:
        "reidpipe/data/split.py",
        "results/validation.json",
        dataset=DATASET,
    params:
        files=PARAM_FILES,
        tracked=stage_param_values(config, "split"),
    log:
        "logs/split.log",
    threads: 1
    shell:
        "reidpipe split {input.dataset} --out {output} --params {params.files} > {log} 2>&1"
