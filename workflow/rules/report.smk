rule report:
    input:
        **inputs("report"),
    output:
        **outputs("report"),
    params:
        files=PARAM_FILES,
        tracked=tracked("report"),
    log:
        "logs/report.log",
    threads: 1
    shell:
        command("report")
