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
    resources:
        gpu=1,
    shell:
        command("evaluate")


rule extract_cross:
    input:
        **inputs("extract_cross"),
    output:
        **outputs("extract_cross"),
    params:
        files=PARAM_FILES,
        tracked=tracked("extract_cross"),
    log:
        "logs/extract_{arch}_{test_set}.log",
    threads: 2
    resources:
        gpu=1,
    shell:
        command("extract_cross")


rule evaluate_cross:
    input:
        **inputs("evaluate_cross"),
    output:
        **outputs("evaluate_cross"),
    params:
        files=PARAM_FILES,
        tracked=tracked("evaluate_cross"),
    log:
        "logs/evaluate_{arch}_{test_set}.log",
    threads: 2
    resources:
        gpu=1,
    shell:
        command("evaluate_cross")
