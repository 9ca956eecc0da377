rule extract:
    input:
        **inputs("extract"),
    output:
        **outputs("extract"),
    params:
        files=PARAM_FILES,
        tracked=tracked("extract"),
    log:
        "logs/extract_{arch}.log",
    threads: 2
    resources:
        gpu=1,
    shell:
        command("extract")


rule evaluate:
    input:
        **inputs("evaluate"),
    output:
        **outputs("evaluate"),
    params:
        files=PARAM_FILES,
        tracked=tracked("evaluate"),
    log:
        "logs/evaluate_{arch}.log",
    threads: 2
    shell:
        command("evaluate")
