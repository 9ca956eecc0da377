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
