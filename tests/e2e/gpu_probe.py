"""Stands in for ``reidpipe`` in a training job's command (tests put it first on PATH as
``reidpipe``), to see what the job is given where the GPUs are fake and CUDA is absent.

Each process the job starts writes ``$GPU_PROBE_DIR/<arch>-<pid>.json``: its host, Slurm's
variables, the job's allocation (``scontrol -d show job``), the GPUs reidpipe's allocator takes (``allocate_gpus``, as ``reidpipe train`` does)
and the ranks Lightning would give it (``cluster_plugins``, then Lightning's own Slurm detection).
It holds the GPUs for ``$GPU_PROBE_HOLD_S`` seconds, as a training would, and rank 0 then writes
the rule's outputs (empty) so that the job succeeds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SLURM_KEYS = (
    "SLURM_JOB_ID",
    "SLURM_NNODES",
    "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_STEP_ID",
    "SLURM_JOB_GPUS",
    "SLURM_STEP_GPUS",
    "CUDA_VISIBLE_DEVICES",
)


def lightning_ranks(devices: int, num_nodes: int) -> dict[str, object]:
    """World size and ranks as Lightning would take them for ``Trainer(devices, num_nodes)``."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from reidpipe.training.train import cluster_plugins

    if cluster_plugins(devices, num_nodes) or not SLURMEnvironment.detect():
        return {"launcher": "lightning", "world_size": devices * num_nodes}
    slurm = SLURMEnvironment()
    try:
        slurm.validate_settings(devices, num_nodes)
    except ValueError as error:
        return {"launcher": "srun", "error": str(error)}
    return {
        "launcher": "srun",
        "world_size": slurm.world_size(),
        "global_rank": slurm.global_rank(),
        "local_rank": slurm.local_rank(),
        "node_rank": slurm.node_rank(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--arch", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--params", nargs="+", required=True)
    parser.add_argument("--provenance", required=True)
    args, _ = parser.parse_known_args()
    start = time.time()
    from reidpipe.devices import allocate_gpus
    from reidpipe.params import load_params

    cfg = load_params(args.params).arch(args.arch)
    record: dict[str, object] = {
        "host": socket.gethostname(),
        "start": start,
        "env": {key: os.environ[key] for key in SLURM_KEYS if key in os.environ},
    }
    with allocate_gpus(cfg.train.num_gpus, cfg.train.gpu_ids, wait_s=60) as lease:
        record["gpus"] = lease.ids
        record["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        if "SLURM_JOB_ID" in os.environ:
            record.update(lightning_ranks(len(lease.ids), cfg.train.num_nodes))
            # The per-node GPU indices are shown only while the job runs.
            record["allocation"] = subprocess.run(
                ["scontrol", "-d", "show", "job", os.environ["SLURM_JOB_ID"]],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        time.sleep(float(os.environ.get("GPU_PROBE_HOLD_S", "0")))
        record["end"] = time.time()
    probe_dir = Path(os.environ["GPU_PROBE_DIR"])
    probe_dir.mkdir(parents=True, exist_ok=True)
    (probe_dir / f"{args.arch}-{os.getpid()}.json").write_text(json.dumps(record))
    if os.environ.get("SLURM_PROCID", "0") == "0":
        from reidpipe.filenames import (
            DVCLIVE_DIR,
            DVCLIVE_METRICS_FILE,
            DVCLIVE_PLOTS_DIR,
            MODEL_FILE,
            TRAIN_CONFIG_FILE,
            TRAIN_LOG_FILE,
        )

        out = Path(args.out)
        for name in (MODEL_FILE, TRAIN_CONFIG_FILE, TRAIN_LOG_FILE):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text("")
        (out / DVCLIVE_DIR / DVCLIVE_PLOTS_DIR).mkdir(parents=True, exist_ok=True)
        (out / DVCLIVE_DIR / DVCLIVE_METRICS_FILE).write_text("{}")
        Path(args.provenance).write_text("{}")


if __name__ == "__main__":
    sys.exit(main())
