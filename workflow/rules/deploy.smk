rule export_onnx:
    output:
        directory("results/{arch}/onnx"),
    input:
        "reidpipe/deploy/export_onnx.py",
        "models/{arch}/model.pt",
        splits=SPLITS,
    params:
        files=PARAM_FILES,
        tracked=lambda wildcards: stage_param_values(config, "export_onnx", wildcards.arch),
    log:
        "logs/export_onnx_{arch}.log",
    threads: 2
    resources:
        gpu=1,
    shell:
        "reidpipe export-onnx --arch {wildcards.arch} --model models/{wildcards.arch}"
        " --splits {input.splits} --out {output} --params {params.files} > {log} 2>&1"


rule build_trt:
    output:
        directory("results/{arch}/tensorrt"),
    input:
        "reidpipe/deploy/tensorrt_build.py",
        onnx="results/{arch}/onnx",
        splits=SPLITS,
    params:
        files=PARAM_FILES,
        tracked=lambda wildcards: stage_param_values(config, "build_trt", wildcards.arch),
    log:
        "logs/build_trt_{arch}.log",
    threads: 2
    resources:
        gpu=1,
    shell:
        "reidpipe build-trt --arch {wildcards.arch} --onnx-dir {input.onnx} --splits {input.splits}"
        " --out {output} --params {params.files} > {log} 2>&1"
