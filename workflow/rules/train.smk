rule combine:
    input:
        **inputs("combine"),
    output:
        **outputs("combine"),
    params:
        files=PARAM_FILES,
        tracked=tracked("combine"),
    log:
        "logs/combine.log",
    threads: 1
    shell:
        command("combine")


rule train:
    input:
        **inputs("train"),
    output:
        **outputs("train"),
    params:
        files=PARAM_FILES,
        tracked=tracked("train"),
    log:
        "logs/train_{arch}.log",
    threads: 4
    resources:
        gpu=1,
        mpi="",  # the Slurm profile sets an srun launcher here for multi-node DDP
    shell:
        command("train", launcher="{resources.mpi}")
