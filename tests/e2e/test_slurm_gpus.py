"""GPU requests as the Slurm profile makes them, read back from the jobs' real allocations, and
the GPUs two local training jobs get under ``snakemake --resources gpu=2``.

On Slurm (``.ci/start_slurm.sh``: two nodes, two fake GPUs each) each case runs the ``train``
rule through the profile with its README settings; ``gpu_probe.py`` stands in for ``reidpipe`` in
the job (no CUDA behind fake GPUs) and records, for each process the job starts, Slurm's variables,
the GPUs reidpipe's allocator takes and the ranks Lightning would give it.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.repo_copy import copy_working_tree, pipeline_env, snakemake
from support.slurm_cluster import SUBMITTED, job_record, profile_with, slurm_unavailable

HERE = Path(__file__).resolve().parent
PARAMS = ["params.yaml", "config/demo.yaml", "gpus.yaml"]
# The profile's `set-resources: train:` for each case (README "Running on a Slurm cluster").
ONE_GPU: dict[str, object] = {}  # the rule's gpu=1: sbatch --gpus=1
TWO_GPUS = {}  # train's gpu is the arch's num_gpus: one task with both GPUs, Lightning starts rank 1
TWO_BY_TWO = {
    "gpu": 0,
    "gres": "gpu:2",
    "nodes": 2,
    "tasks_per_node": 2,
    "mpi": "srun --nodes=2 --ntasks-per-node=2 --label",
}
# One arch per case (and two for the local run), each with its own GPU and node counts.
ARCHS = {"g1": (1, 1), "g2": (2, 1), "g2x2": (2, 2), "a": (1, 1), "b": (1, 1)}
GPUS_YAML = {
    "pipeline": {"archs": list(ARCHS)},
    "data": {"synthetic_ids": 8, "dataset_dir": "data/tiny-synthetic"},
    "split": {"val_ids": 2},
    "archs": {
        arch: {"train": {"num_gpus": gpus, "num_nodes": nodes}}
        for arch, (gpus, nodes) in ARCHS.items()
    },
}
FAKE_NVIDIA_SMI = "#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-fake-0)'\necho 'GPU 1: Fake GPU (UUID: GPU-fake-1)'\n"


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project with the data stages done, and the probe first on PATH as ``reidpipe``."""
    root = tmp_path_factory.mktemp("gpus")
    repo = copy_working_tree(root / "repo")
    (repo / "gpus.yaml").write_text(yaml.safe_dump(GPUS_YAML))
    data = subprocess.run(
        snakemake("--omit-from", "train", "--configfile", *PARAMS),
        cwd=repo,
        env=pipeline_env(repo),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert data.returncode == 0, data.stderr[-3000:]
    (root / "bin").mkdir()
    _executable(
        root / "bin" / "reidpipe", f"#!{sys.executable}\n" + (HERE / "gpu_probe.py").read_text()
    )
    _executable(root / "bin" / "nvidia-smi", FAKE_NVIDIA_SMI)
    return repo


def _probe_env(repo: Path, probes: Path, **extra: str) -> dict[str, str]:
    env = pipeline_env(repo, GPU_PROBE_DIR=str(probes), **extra)
    env["PATH"] = f"{repo.parent / 'bin'}:{env['PATH']}"
    return env


def _probes(probes: Path, arch: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(probes.glob(f"{arch}-*.json"))]


def _gpu_indices(allocation: str) -> dict[str, list[str]]:
    """Node -> the GPU indices Slurm gave the job there (from ``scontrol -d show job``, where
    nodes given the same indices share a line: ``Nodes=rp-node[1-2] ... GRES=gpu:2(IDX:0-1)``)."""
    indices = {}
    for node, spans in re.findall(r"Nodes=(\S+) .*?GRES=gpu:\d+\(IDX:([\d,-]+)\)", allocation):
        bounds = [span.split("-") for span in spans.split(",")]
        gpus = [str(i) for b in bounds for i in range(int(b[0]), int(b[-1]) + 1)]
        hosts = subprocess.run(
            ["scontrol", "show", "hostnames", node],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split()
        indices.update(dict.fromkeys(hosts, gpus))
    return indices


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "train"),
    [("g1", ONE_GPU), ("g2", TWO_GPUS), ("g2x2", TWO_BY_TWO)],
    ids=["1gpu", "2gpu", "2x2"],
)
def test_gpu_train_jobs_get_what_lightning_expects(
    project: Path, tmp_path: Path, arch: str, train: dict
) -> None:
    gpus, nodes = ARCHS[arch]
    reason = slurm_unavailable(nodes=nodes, gpus_per_node=gpus)
    if reason is not None:
        pytest.skip(reason)
    probes = tmp_path / "probes"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            f"models/{arch}/model.pt",
            "--workflow-profile",
            str(profile_with(tmp_path / "profile", train)),
            "--slurm-init-seconds-before-status-checks",
            "2",
            "--configfile",
            *PARAMS,
        ],
        cwd=project,
        env=_probe_env(project, probes),
        capture_output=True,
        text=True,
        timeout=200,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    (job_id,) = SUBMITTED.findall(output)
    job = job_record(job_id)
    records = _probes(probes, arch)

    # The allocation: `nodes` nodes with `gpus` GPUs each; one task unless srun starts one a GPU.
    assert job["JobState"] == "COMPLETED"
    assert job["NumNodes"] == str(nodes)
    tasks = gpus * nodes if nodes > 1 else 1
    assert job["NumTasks"] == str(tasks), job  # no --ntasks-per-gpu: the command starts once
    assert len(records) == tasks
    # Each process sees the GPUs Slurm gave the job on its node, `gpus` of them, and the
    # allocator takes them all.
    indices = _gpu_indices(records[0]["allocation"])
    assert sorted(indices) == sorted({r["host"] for r in records})
    for r in records:
        assert r["cuda_visible_devices"].split(",") == r["gpus"] == indices[r["host"]]
        assert len(r["gpus"]) == gpus
    if nodes == 1:
        (r,) = records
        assert r["world_size"] == gpus
        if gpus > 1:  # one task: Lightning launches the other rank itself
            assert r["launcher"] == "lightning"
    else:
        # srun started one task a GPU; Lightning takes its ranks from srun's variables.
        assert {r["launcher"] for r in records} == {"srun"}, records
        assert {r["world_size"] for r in records} == {gpus * nodes}
        assert sorted(r["global_rank"] for r in records) == list(range(gpus * nodes))
        hosts = {r["host"] for r in records}
        assert len(hosts) == nodes
        for host in hosts:
            on_host = [r for r in records if r["host"] == host]
            assert sorted(r["local_rank"] for r in on_host) == list(range(gpus))
            assert len({r["node_rank"] for r in on_host}) == 1


def test_two_local_training_jobs_take_distinct_gpus(project: Path, tmp_path: Path) -> None:
    """`snakemake --resources gpu=2` runs both archs' training at once; reidpipe's GPU locks give
    each its own GPU (the fake nvidia-smi says there are two)."""
    probes = tmp_path / "probes"
    env = _probe_env(
        project, probes, GPU_PROBE_HOLD_S="4", REIDPIPE_GPU_LOCK_DIR=str(tmp_path / "locks")
    )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    # Cores for both training jobs at once (4 threads each) whatever this machine has.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "models/a/model.pt",
            "models/b/model.pt",
            "--cores",
            "8",
            "--resources",
            "gpu=2",
            "--workflow-profile",
            "none",
            "--configfile",
            *PARAMS,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (a,), (b,) = _probes(probes, "a"), _probes(probes, "b")
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two jobs did not overlap"
    assert sorted([a["cuda_visible_devices"], b["cuda_visible_devices"]]) == ["0", "1"]
