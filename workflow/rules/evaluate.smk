rule extract:
    output:
        directory("results/{arch}/embeddings"),
    input:
        "reidpipe/evaluation/extract.py",
        "models/{arch}/model.pt",
        splits=SPLITS,
    params:
        files=PARAM_FILES,
        tracked=lambda wildcards: stage_param_values(config, "extract", wildcards.arch),
    log:
        "logs/extract_{arch}.log",
    threads: 2
    resources:
        gpu=1,
    shell:
        "reidpipe extract --arch {wildcards.arch} --model models/{wildcards.arch} --splits {input.splits}"
        " --out {output} --params {params.files} > {log} 2>&1"


rule evaluate:
    output:
        metrics="results/{arch}/metrics.json",
        cmc="results/{arch}/cmc.csv",
        per_query="results/{arch}/per_query.csv",
    input:
        "reidpipe/evaluation/evaluate.py",
        embeddings="results/{arch}/embeddings",
    params:
        files=PARAM_FILES,
        tracked=lambda wildcards: stage_param_values(config, "evaluate", wildcards.arch),
    log:
        "logs/evaluate_{arch}.log",
    threads: 2
    shell:
        "reidpipe evaluate --embeddings {input.embeddings} --out {output.metrics} --cmc {output.cmc}"
        " --per-query {output.per_query} --params {params.files} > {log} 2>&1"
