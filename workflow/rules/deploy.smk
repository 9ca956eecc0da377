rule export_onnx:
    input:
        **inputs("export_onnx"),
    output:
        **outputs("export_onnx"),
    params:
        files=PARAM_FILES,
        tracked=tracked("export_onnx"),
    log:
        "logs/export_onnx_{arch}.log",
    threads: 2
    resources:
        gpu=1,
    shell:
        command("export_onnx")


rule build_trt:
    input:
        **inputs("build_trt"),
    output:
        **outputs("build_trt"),
    params:
        files=PARAM_FILES,
        tracked=tracked("build_trt"),
    log:
        "logs/build_trt_{arch}.log",
    threads: 2
    resources:
        gpu=1,
    shell:
        command("build_trt")


rule package:
    input:
        **inputs("package"),
    output:
        **outputs("package"),
    params:
        files=PARAM_FILES,
        tracked=tracked("package"),
    log:
        "logs/package_{arch}.log",
    threads: 1
    shell:
        command("package")
