rule train:
    output:
        model="models/{arch}/model.pt",
        config="models/{arch}/config.yaml",
        train_log="models/{arch}/train_log.csv",
    input:
        "reidpipe/training/train.py",
        splits=SPLITS,
    params:
        files=PARAM_FILES,
        tracked=lambda wildcards: stage_param_values(config, "train", wildcards.arch),
    log:
        "logs/train_{arch}.log",
    threads: 4
    resources:
        gpu=1,
        mpi="",  # the Slurm profile sets an srun launcher here for multi-node DDP
    shell:
        "{resources.mpi} reidpipe train --arch {wildcards.arch} --splits {input.splits}"
        " --out models/{wildcards.arch} --params {params.files} > {log} 2>&1"
