# The seed spread (pipeline.seeds; README "Reproducibility"): each arch trained, extracted and
# evaluated once per seed, as the single run is, then each metric's spread over the seeds.


rule train_seed:
    input:
        **inputs("train_seed"),
    output:
        **outputs("train_seed"),
    params:
        files=PARAM_FILES,
        tracked=tracked("train_seed"),
    log:
        "logs/train_{arch}_seed{seed}.log",
    threads: 4
    resources:
        gpu=1,
    shell:
        command("train_seed")


rule extract_seed:
    input:
        **inputs("extract_seed"),
    output:
        **outputs("extract_seed"),
    params:
        files=PARAM_FILES,
        tracked=tracked("extract_seed"),
    log:
        "logs/extract_{arch}_seed{seed}.log",
    threads: 2
    resources:
        gpu=1,
    shell:
        command("extract_seed")


rule evaluate_seed:
    input:
        **inputs("evaluate_seed"),
    output:
        **outputs("evaluate_seed"),
    params:
        files=PARAM_FILES,
        tracked=tracked("evaluate_seed"),
    log:
        "logs/evaluate_{arch}_seed{seed}.log",
    threads: 2
    resources:
        gpu=1,
    shell:
        command("evaluate_seed")


rule seed_spread:
    input:
        **inputs("seed_spread"),
    output:
        **outputs("seed_spread"),
    params:
        files=PARAM_FILES,
        tracked=tracked("seed_spread"),
    log:
        "logs/seed_spread.log",
    threads: 1
    shell:
        command("seed_spread")
