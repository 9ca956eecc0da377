import subprocess
import sys
import time

import pytest

from reidpipe import devices
from reidpipe.devices import CUDA_ENV, allocate_gpus
from reidpipe.errors import ReidpipeError

# No GPU here: the device count is passed in (``total``); the locks are real flock()s on real files.


def test_two_allocations_get_distinct_devices(tmp_path):
    env_a, env_b = {}, {}
    with (
        allocate_gpus(1, lock_dir=tmp_path, total=2, env=env_a) as a,
        allocate_gpus(1, lock_dir=tmp_path, total=2, env=env_b) as b,
    ):
        assert {a.ids[0], b.ids[0]} == {"0", "1"}
        assert env_a[CUDA_ENV] == a.ids[0] and env_b[CUDA_ENV] == b.ids[0]
        with pytest.raises(ReidpipeError, match="free"):
            allocate_gpus(1, lock_dir=tmp_path, total=2, env={})
    with allocate_gpus(2, lock_dir=tmp_path, total=2, env={}) as both:  # released on exit
        assert both.ids == ["0", "1"]


def test_lock_held_by_another_process_is_skipped_and_freed_when_it_dies(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time; from pathlib import Path; from reidpipe.devices import allocate_gpus; "
                f"lease = allocate_gpus(1, [0], lock_dir=Path({str(tmp_path)!r}), total=2, env={{}}); "
                "print(lease.ids[0], flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "0"
        with allocate_gpus(1, lock_dir=tmp_path, total=2, env={}) as lease:
            assert lease.ids == ["1"]
    finally:
        holder.kill()
        holder.wait()
    with allocate_gpus(1, [0], lock_dir=tmp_path, total=2, env={}) as lease:
        assert lease.ids == ["0"]


def test_waits_for_a_device_to_free(tmp_path):
    first = allocate_gpus(1, lock_dir=tmp_path, total=1, env={})
    start = time.monotonic()
    with pytest.raises(ReidpipeError):
        allocate_gpus(1, lock_dir=tmp_path, total=1, env={}, wait_s=1.5)
    assert time.monotonic() - start >= 1.5
    first.release()
    assert allocate_gpus(1, lock_dir=tmp_path, total=1, env={}).ids == ["0"]


def test_preset_visible_devices_are_honoured(tmp_path):
    env = {CUDA_ENV: "3,5"}
    lease = allocate_gpus(1, lock_dir=tmp_path, total=8, env=env)
    assert lease.ids == ["3"] and env[CUDA_ENV] == "3,5"
    assert not list(tmp_path.iterdir())
    with pytest.raises(ReidpipeError, match="names 2 device"):
        allocate_gpus(3, lock_dir=tmp_path, total=8, env=env)


def test_cpu_fallbacks_and_bad_ids(tmp_path):
    assert allocate_gpus(0, lock_dir=tmp_path, total=4, env={}).ids == []
    lease = allocate_gpus(1, lock_dir=tmp_path, total=0, env={})
    assert lease.ids == [] and "CPU" in lease.note
    with pytest.raises(ReidpipeError, match="gpu_ids"):
        allocate_gpus(1, [2], lock_dir=tmp_path, total=2, env={})


def test_single_gpu_stages_hold_a_lock_while_running(tmp_path, monkeypatch):
    """extract/export-onnx/build-trt/evaluate take one GPU through the allocator; --device cpu
    takes none. (evaluate's run under the lock: tests/unit/evaluation/test_evaluate.py.)"""
    from reidpipe import cli, devices

    seen = {}

    def fake_stage_gpu(device):
        lease = devices.allocate_gpus(
            0 if device == "cpu" else 1, lock_dir=tmp_path, total=2, env=seen.setdefault("env", {})
        )
        seen["device"] = device
        return lease

    monkeypatch.setattr(devices, "stage_gpu", fake_stage_gpu)
    parser = cli.build_parser()
    args = parser.parse_args(
        ["export-onnx", "--arch", "a", "--model", "m", "--splits", "s", "--out", "o"]
    )
    assert args.single_gpu
    args.run = lambda a: 0 if list(tmp_path.glob("gpu0.lock")) else 1
    assert cli._run_on_one_gpu(args) == 0
    assert seen["device"] == "auto" and seen["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert cli.build_parser().parse_args(["evaluate", "--embeddings", "e", "--out", "o"]).single_gpu
    assert not cli.build_parser().parse_args(["report", "--out", "o"]).__dict__.get("single_gpu")


def test_means_cpu_without_torch(monkeypatch):
    monkeypatch.setattr(devices, "count_gpus", lambda: 0)
    assert devices.means_cpu("cpu") and devices.means_cpu("auto")
    assert not devices.means_cpu("cuda") and not devices.means_cpu("cuda:1")
    monkeypatch.setattr(devices, "count_gpus", lambda: 2)
    assert devices.means_cpu("cpu") and not devices.means_cpu("auto")
