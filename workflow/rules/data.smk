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
