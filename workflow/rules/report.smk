rule report:
    output:
        markdown="reports/index.md",
        html="reports/index.html",
        metrics="reports/metrics.json",
        figures=directory("reports/figures"),
    input:
        "reidpipe/report/build.py",
        "results/validation.json",
        expand("results/{arch}/{file}", arch=ARCHS,
               file=["metrics.json", "cmc.csv", "per_query.csv", "embeddings", "onnx", "tensorrt"]),
        expand("models/{arch}/{file}", arch=ARCHS, file=["train_log.csv", "config.yaml"]),
    params:
        files=PARAM_FILES,
        tracked=stage_param_values(config, "report"),
    log:
        "logs/report.log",
    threads: 1
    shell:
        "reidpipe report --results results --models models --out reports --params {params.files}"
        " > {log} 2>&1"
