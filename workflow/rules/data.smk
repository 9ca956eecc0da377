rule download:
    input:
        **inputs("download"),
    output:
        **outputs("download"),
    params:
        files=PARAM_FILES,
        tracked=tracked("download"),
    log:
        "logs/download.log",
    threads: 1
    shell:
        command("download")


rule validate:
    input:
        **inputs("validate"),
    output:
        **outputs("validate"),
    params:
        files=PARAM_FILES,
        tracked=tracked("validate"),
    log:
        "logs/validate.log",
    threads: 2
    shell:
        command("validate")


rule split:
    input:
        **inputs("split"),
    output:
        **outputs("split"),
    params:
        files=PARAM_FILES,
        tracked=tracked("split"),
    log:
        "logs/split.log",
    threads: 1
    shell:
        command("split")


rule download_source:
    input:
        **inputs("download_source"),
    output:
        **outputs("download_source"),
    params:
        files=PARAM_FILES,
        tracked=tracked("download_source"),
    log:
        "logs/download_{source}.log",
    threads: 1
    shell:
        command("download_source")


rule validate_source:
    input:
        **inputs("validate_source"),
    output:
        **outputs("validate_source"),
    params:
        files=PARAM_FILES,
        tracked=tracked("validate_source"),
    log:
        "logs/validate_{source}.log",
    threads: 2
    shell:
        command("validate_source")


rule split_source:
    input:
        **inputs("split_source"),
    output:
        **outputs("split_source"),
    params:
        files=PARAM_FILES,
        tracked=tracked("split_source"),
    log:
        "logs/split_{source}.log",
    threads: 1
    shell:
        command("split_source")
