# The values each job tracks, as one file: what dvc.yaml's params read (README "Provenance").


rule tracked_params:
    input:
        **inputs("tracked_params"),
    output:
        **outputs("tracked_params"),
    params:
        files=PARAM_FILES,
        tracked=tracked("tracked_params"),
    log:
        "logs/tracked_params.log",
    threads: 1
    shell:
        command("tracked_params")
