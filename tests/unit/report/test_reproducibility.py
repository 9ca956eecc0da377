"""Same machine, same settings: bit-identical training. Elsewhere: the recorded environment says
what differs, and the CI gate judges metrics within bands measured over training seeds."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support import ROOT
from support.market_fixtures import make_tiny_market
from support.tiny_run import EVERY_EPOCH, tiny_params

from reidpipe.data.split import make_split
from reidpipe.environment import CPU_ISA_PINS, DECIDING_KEYS, differences
from reidpipe.report.gate import gate_rows, prediction_band, same_environment
from reidpipe.training.train import deterministic_mode

FIXTURES = ROOT / "tests" / "fixtures" / "gate"
CLI = [sys.executable, "-m", "reidpipe"]
TINY = tiny_params(
    model={"backbone": "resnet18"},
    # one loader worker: its augmentation RNG must be seeded too, whatever its timing
    dataset={"num_workers": 1},
    train={
        "num_epochs": 2,
        **EVERY_EPOCH,
        "max_steps_per_epoch": 3,
        "num_threads": 2,
        "optim": {"lr_steps": [1], "warmup_epochs": 1},
    },
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    make_tiny_market(root / "market", train_ids=10)
    make_split(root / "market", root / "splits", val_ids=2, seed=0)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))

    def train(name: str, *extra: str) -> Path:
        out = root / name
        subprocess.run(
            [
                *CLI,
                "train",
                "--arch",
                "tiny",
                "--splits",
                str(root / "splits"),
                "--out",
                str(out),
                "--params",
                str(ROOT / "params.yaml"),
                str(root / "tiny.yaml"),
                *extra,
            ],
            check=True,
            cwd=root,
            capture_output=True,
        )
        return out

    return train("first"), train("second"), train("avx2", "--set", "pipeline.cpu_isa=avx2")


def test_training_twice_gives_bit_identical_weights_and_metrics(tiny_run):
    first, second, _ = tiny_run
    a = torch.load(first / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(second / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    logs = [pd.read_csv(run / "train_log.csv").drop(columns="seconds") for run in (first, second)]
    pd.testing.assert_frame_equal(*logs, check_exact=True)  # losses, lr, val mAP / R1 per epoch
    assert logs[0]["val_mAP"].notna().all()


def test_the_training_environment_is_recorded(tiny_run):
    config = yaml.safe_load((tiny_run[0] / "config.yaml").read_text())
    record = config["environment"]
    assert set(DECIDING_KEYS) <= set(record)
    assert record["intra_op_threads"] == 2  # train.num_threads
    assert record["deterministic"] is True and record["world_size"] == 1
    assert record["cpu_isa"] == torch.backends.cpu.get_cpu_capability()
    assert record["torch"] == str(torch.__version__) and record["gpu_count"] == 0
    other = dict(record, cpu_isa="AVX2" if record["cpu_isa"] != "AVX2" else "AVX512")
    assert differences(record, other) == [f"cpu_isa: {record['cpu_isa']} vs {other['cpu_isa']}"]
    assert differences(record, dict(record)) == []


X86 = platform.machine().lower() in ("x86_64", "amd64")
AVX2 = X86 and "avx2" in Path("/proc/cpuinfo").read_text()


@pytest.mark.skipif(not AVX2, reason="pipeline.cpu_isa avx2 needs an x86-64 CPU with AVX2")
def test_cpu_isa_avx2_caps_the_kernels_of_training(tiny_run):
    record = yaml.safe_load((tiny_run[2] / "config.yaml").read_text())["environment"]
    assert record["cpu_isa"] == "AVX2"
    assert record["kernel_env"] == {
        **CPU_ISA_PINS["avx2"],
        **{k: v for k, v in record["kernel_env"].items() if k not in CPU_ISA_PINS["avx2"]},
    }


def python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in CPU_ISA_PINS["avx2"]}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


@pytest.mark.skipif(not AVX2, reason="pipeline.cpu_isa avx2 needs an x86-64 CPU with AVX2")
def test_a_pin_after_torch_computed_is_said_and_undone():
    pinned = python(
        "from reidpipe.environment import pin_cpu_isa; pin_cpu_isa('avx2'); "
        "import torch; torch.ones(8).sum(); "
        "print(torch.backends.cpu.get_cpu_capability())"
    )
    assert pinned.stdout.strip() == "AVX2", pinned.stderr
    late = python(
        "import os, torch; torch.ones(8).sum(); "
        "from reidpipe.environment import pin_cpu_isa; print(pin_cpu_isa('avx2')); "
        "print(os.environ.get('ONEDNN_MAX_CPU_ISA'))"
    )
    if torch.backends.cpu.get_cpu_capability() == "AVX2":  # native is AVX2: nothing to refuse
        assert late.stdout.startswith("CPU kernels capped at AVX2"), late.stderr
    else:  # said, not ignored; and the variables are put back for the processes it starts
        assert late.stdout.splitlines() == [
            "warning: pipeline.cpu_isa = avx2 not applied: this process already computed with "
            f"{torch.backends.cpu.get_cpu_capability()} kernels (or the CPU lacks avx2), and "
            "keeps them",
            "None",
        ], late.stderr


def test_deterministic_mode_per_accelerator():
    assert deterministic_mode(True, "cpu") is True
    assert deterministic_mode(True, "gpu") == "warn"  # some CUDA backward ops have no such kernel
    assert deterministic_mode(False, "cpu") is False and deterministic_mode(False, "gpu") is False


def test_band_is_the_t_prediction_interval_of_one_more_run():
    runs = [0.40, 0.42, 0.44, 0.46, 0.48, 0.50]  # mean 0.45, sample std 0.0374
    centre, half = prediction_band(runs)
    # t(0.995, 5) = 4.0321 (Student's t table); sqrt(1 + 1/6) for one more run vs the mean
    assert centre == pytest.approx(0.45)
    assert half == pytest.approx(4.0321 * 0.0374166 * (1 + 1 / 6) ** 0.5, rel=1e-4)


def gate(*files: Path, summary: Path | None = None) -> subprocess.CompletedProcess:
    baseline, metrics = files
    extra = ["--summary", str(summary)] if summary else []
    return subprocess.run(
        [
            *CLI,
            "gate",
            "--baseline",
            str(baseline),
            "--metrics",
            str(metrics),
            "--spread",
            str(FIXTURES / "seed_spread.json"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gate_passes_a_rerun_on_another_cpu_and_fails_a_real_regression(tmp_path):
    """Real demo results of resnet_demo (tests/fixtures/gate/README.md says where each was
    measured): the baseline from an AVX2 CPU, a rerun of the same recipe with AVX-512 kernels,
    and the recipe trained for half its epochs."""
    baseline = FIXTURES / "baseline_metrics.json"
    rerun = gate(baseline, FIXTURES / "avx512_metrics.json", summary=tmp_path / "summary.md")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "all 10 metrics as allowed" in rerun.stdout
    assert "| resnet_demo | plain | mAP |" in (tmp_path / "summary.md").read_text()
    regression = gate(baseline, FIXTURES / "half_epochs_metrics.json")
    assert regression.returncode == 1, regression.stdout
    assert "**FAIL**" in regression.stdout and "8 of 10 metrics outside" in regression.stdout


def test_gate_fails_rows_it_cannot_judge():
    spread = json.loads((FIXTURES / "seed_spread.json").read_text())
    baseline = json.loads((FIXTURES / "baseline_metrics.json").read_text())
    rows = gate_rows(baseline, {}, spread)
    assert {row.problem for row in rows} == {"not in this run's metrics"}
    assert not any(row.passed for row in rows)
    del spread["archs"]["resnet_demo"]
    rows = gate_rows(baseline, baseline, spread)
    assert {row.problem for row in rows} == {"no seed spread measured for it"}
    assert not any(row.passed for row in rows)


def test_gate_wants_equal_metrics_where_the_environment_is_the_baselines():
    spread = json.loads((FIXTURES / "seed_spread.json").read_text())
    baseline = json.loads((FIXTURES / "baseline_metrics.json").read_text())
    rerun = json.loads((FIXTURES / "avx512_metrics.json").read_text())
    record = {"cpu_isa": "AVX2", "torch": "2.14.1", "intra_op_threads": 2}
    same = same_environment({"resnet_demo": record}, {"resnet_demo": dict(record)})
    assert same == {"resnet_demo"}
    assert all(row.passed for row in gate_rows(baseline, baseline, spread, same))
    # within every band, but not the bits a same-environment run reproduces
    assert not any(
        row.passed for row in gate_rows(baseline, rerun, spread, same) if row.value != row.baseline
    )
    other = same_environment(
        {"resnet_demo": record}, {"resnet_demo": dict(record, cpu_isa="AVX512")}
    )
    assert other == frozenset() and all(
        row.passed for row in gate_rows(baseline, rerun, spread, other)
    )


def test_a_spread_measured_beside_another_baseline_is_stale():
    spread = json.loads((FIXTURES / "seed_spread.json").read_text())
    baseline = json.loads((FIXTURES / "baseline_metrics.json").read_text())
    moved = json.loads(json.dumps(baseline))
    moved["resnet_demo"]["plain"]["mAP"] = 0.5  # a new baseline committed without a new spread
    rows = gate_rows(moved, moved, spread)
    stale = [row for row in rows if row.problem]
    assert [(row.ranking, row.metric) for row in stale] == [("plain", "mAP")]
    assert "measure it again" in stale[0].problem and not stale[0].passed


def test_report_section_says_which_runs_differ_and_shows_the_spread():
    from reidpipe.report.document import Bullets, Paragraph, Table
    from reidpipe.report.readers import Baseline
    from reidpipe.report.reproducibility import environment_blocks, spread_blocks

    record = {"cpu_isa": "AVX2", "torch": "2.14.1", "intra_op_threads": 2}
    baseline = Baseline(None, "", {"a": dict(record, cpu_isa="AVX512")})
    blocks = environment_blocks({"a": record, "b": dict(record, intra_op_threads=4)}, baseline)
    assert isinstance(blocks[0], Table) and blocks[0].headers == ["", "a", "b"]
    notes = next(block for block in blocks if isinstance(block, Bullets)).items
    assert notes == [
        "a vs b: intra_op_threads: 2 vs 4",
        "a, baseline vs this run: cpu_isa: AVX512 vs AVX2",
    ]
    same = environment_blocks({"a": record}, Baseline(None, "", {"a": dict(record)}))
    assert isinstance(same[-1], Paragraph) and "same environment" in same[-1].text
    table = spread_blocks(json.loads((FIXTURES / "seed_spread.json").read_text()))[1]
    assert table.rows[0] == ["resnet_demo", "plain", "mAP", "47.7", "50.0 ± 2.4", "47.3–53.5"]
