"""No weights file runs code: a pickle naming anything beyond tensors, plain values and the
allow-list of what SOLIDER/TAO checkpoints carry is refused in every load path (pretrained weights,
resume checkpoints, a --model folder's model.pt) with one line naming the file and the global,
and its payload never runs. ``reidpipe convert-weights --trust`` is the one way to trust a file."""

from __future__ import annotations

import argparse
import builtins
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from support import ROOT
from support.bad_inputs import PARAMS
from support.market_fixtures import make_tiny_market
from support.solider_reference import SwinConfig, solider_state

from reidpipe.cli import main
from reidpipe.data.split import make_split
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import MODEL_FILE
from reidpipe.params import ModelParams
from reidpipe.training.model import build_model
from reidpipe.training.pretrained import load_backbone_weights, read_state_dict
from reidpipe.training.weights_trust import ALLOWED_GLOBALS

CLI = [sys.executable, "-c", "import sys; from reidpipe.cli import main; sys.exit(main())"]
CFG = SwinConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
# bad_input_support's tiny run, loading in the main process
TINY = {**PARAMS, "dataset": {**PARAMS["dataset"], "num_workers": 0}}
# What the mimics below name beyond torch's own globals (numpy 2.x names; numpy 1.x: numpy.core).
SOLIDER_GLOBALS = {"argparse.Namespace", "numpy.dtype", "numpy._core.multiarray.scalar"}
TAO_GLOBALS = {
    "numpy.dtype",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy._core.multiarray._reconstruct",
}


class Payload:
    """Pickles as a call that creates ``marker``: through ``os.system`` or ``builtins.exec``."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch '{self.marker}'",)
        if self.how == "exec":
            return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)
        return pathlib.Path.touch, (self.marker,)


PAYLOAD_GLOBAL = {
    "system": "posix.system",
    "exec": "builtins.exec",
    "touch": "builtins.getattr",
}  # pickle reaches Path.touch by getattr(Path, ...)


def swin() -> ModelParams:
    return ModelParams(
        backbone="swin_tiny_patch4_window7_224",
        pretrain_choice="",
        input_height=128,
        input_width=64,
        feat_dim=32,
        backbone_kwargs=CFG.timm_kwargs(),
    )


def solider_file(path: Path, state: dict, extra: dict | None = None) -> Path:
    """SOLIDER's checkpoint_tea.pth: DINO's save dict, its teacher (backbone + head), the epoch as
    a numpy integer and the training options as an argparse.Namespace."""
    teacher = {f"backbone.{k}": v for k, v in state.items()}
    teacher["head.last_layer.weight_g"] = torch.ones(1, 4)
    options = argparse.Namespace(
        arch="swin_tiny", lr=0.0005, batch_size_per_gpu=64, out_dim=65536, drop_path_rate=0.1
    )
    torch.save({"teacher": teacher, "epoch": np.int64(100), "args": options, **(extra or {})}, path)
    return path


def tao_file(path: Path, state: dict, extra: dict | None = None) -> Path:
    """A TAO ReIdentificationNet checkpoint: a Lightning checkpoint of model.base, its best score
    a numpy float and its pixel mean/std numpy arrays."""
    spec = {
        "model": {"backbone": "swin_tiny", "feat_dim": 256},
        "dataset": {
            "pixel_mean": np.array([0.5, 0.5, 0.5], dtype=np.float32),
            "pixel_std": np.array([0.5, 0.5, 0.5], dtype=np.float32),
        },
    }
    torch.save(
        {
            "epoch": 119,
            "global_step": 12000,
            "pytorch-lightning_version": "1.8.6",
            "state_dict": {f"model.base.{k}": v for k, v in state.items()},
            "callbacks": {"ModelCheckpoint": {"best_model_score": np.float64(0.933)}},
            "hyper_parameters": {"experiment_spec": spec},
            **(extra or {}),
        },
        path,
    )
    return path


def as_numpy1(path: Path) -> Path:
    """``path`` rewritten as numpy 1.x pickles it (numpy.core.multiarray): the older releases."""
    old = path.with_name(f"numpy1-{path.name}")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
            dst.writestr(info.filename, data)
    return old


def unsafe_globals(path: Path, allowed=()) -> set[str]:
    with torch.serialization.safe_globals(list(allowed)):
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))


def refusal_line(path: Path, how: str) -> str:
    """The start of the refusal of ``path``: it names the payload's global (among others)."""
    return (
        rf"refusing to unpickle {re.escape(str(path))}: it names the globals? "
        rf"(\S+, )*{re.escape(PAYLOAD_GLOBAL[how])},"
    )


@pytest.mark.parametrize("how", ["system", "exec", "touch"])
def test_the_payloads_run_when_unpickled_in_full(tmp_path, how):
    """The payload files of these tests are live: a plain torch.load runs them."""
    marker = tmp_path / "ran"
    torch.save({"weight": torch.zeros(2), "x": Payload(marker, how)}, tmp_path / "w.pth")
    torch.load(tmp_path / "w.pth", weights_only=False)
    assert marker.exists()
    assert PAYLOAD_GLOBAL[how] in unsafe_globals(tmp_path / "w.pth")


def pretrained_payload(tmp_path: Path, layout: str, how: str) -> tuple[Path, Path]:
    """A pretrained weights file of ``layout`` carrying a payload; returns it and the marker."""
    marker = tmp_path / "ran"
    bad = {"x": Payload(marker, how)}
    state = solider_state(CFG)
    if layout == "solider":
        return solider_file(tmp_path / "checkpoint_tea.pth", state, bad), marker
    if layout == "tao":
        return tao_file(tmp_path / "reid_swin.tlt", state, bad), marker
    path = tmp_path / ("last.ckpt" if layout == "lightning" else "weights.pth")
    if layout == "lightning":
        torch.save({"epoch": 3, "state_dict": state, **bad}, path)
    elif layout == "legacy":  # torch's pre-1.6 format: one pickle stream, no zip
        torch.save({**state, **bad}, path, _use_new_zipfile_serialization=False)
    else:
        torch.save({**state, **bad}, path)
    return path, marker


@pytest.mark.parametrize("how", ["system", "exec", "touch"])
@pytest.mark.parametrize("layout", ["state_dict", "solider", "tao", "lightning", "legacy"])
def test_a_pretrained_file_naming_other_globals_is_refused_unrun(tmp_path, layout, how):
    path, marker = pretrained_payload(tmp_path, layout, how)
    with pytest.raises(ReidpipeError) as refused:
        load_backbone_weights(build_model(swin(), 3).backbone, path)
    message = str(refused.value)
    assert "\n" not in message and not marker.exists()
    assert re.match(refusal_line(path, how), message), message
    assert "numpy" not in message and "argparse" not in message  # the allowed are not named
    assert message.endswith(
        f"`reidpipe convert-weights {path} --out OUT.safetensors --trust` "
        "writes its tensors to a file reidpipe reads without unpickling"
    )


def test_a_pickle_the_restricted_loader_cannot_read_is_an_error_unrun(tmp_path):
    """Pickle protocol 4 (STACK_GLOBAL) is beyond torch's weights_only reader: unread, unrun."""
    marker = tmp_path / "ran"
    path = tmp_path / "p4.pth"
    torch.save({"w": torch.zeros(2), "x": Payload(marker, "system")}, path, pickle_protocol=4)
    with pytest.raises(
        ReidpipeError,
        match=rf"^cannot read weights {re.escape(str(path))}: its "
        r"pickle holds what torch's weights-only unpickler "
        r"does not read \(Unsupported operand 149\)$",
    ):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("numpy1", [False, True], ids=["numpy2", "numpy1"])
def test_solider_and_tao_files_load_through_the_allow_list_with_their_tensors(tmp_path, numpy1):
    state = solider_state(CFG)
    loaded = {}
    for name, write, extras in (
        ("solider", solider_file, SOLIDER_GLOBALS),
        ("tao", tao_file, TAO_GLOBALS),
    ):
        path = write(tmp_path / f"{name}.pth", state)
        if numpy1:
            path = as_numpy1(path)
            extras = {g.replace("numpy._core.", "numpy.core.") for g in extras}
        assert unsafe_globals(path) == extras
        assert unsafe_globals(path, ALLOWED_GLOBALS) == set()
        tensors = read_state_dict(path)
        prefix = "backbone." if name == "solider" else "model.base."
        assert all(torch.equal(tensors[prefix + k], v) for k, v in state.items())
        loaded[name] = build_model(swin(), 3).backbone
        report = load_backbone_weights(loaded[name], path)
        assert report.fraction == 1.0
    bare = tmp_path / "bare.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, bare)
    reference = build_model(swin(), 3).backbone
    load_backbone_weights(reference, bare)
    for net in loaded.values():
        ours, want = net.state_dict(), reference.state_dict()
        assert all(torch.equal(ours[k], want[k]) for k in want)


def test_the_allow_list_holds_only_what_the_release_files_need(tmp_path):
    """Each allowed global is needed by a SOLIDER or TAO file (numpy 1.x or 2.x): without it one
    of them is refused."""
    from reidpipe.training import weights_trust

    state = solider_state(CFG)
    files = [solider_file(tmp_path / "s.pth", state), tao_file(tmp_path / "t.pth", state)]
    files += [as_numpy1(path) for path in files]
    for entry in ALLOWED_GLOBALS:
        fewer = tuple(e for e in ALLOWED_GLOBALS if e is not entry)
        refused = 0
        for path in files:
            try:
                weights_trust.load_restricted(path, allowed=fewer)
            except ReidpipeError:
                refused += 1
        assert refused, f"{entry} is allowed but no release file needs it"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Tiny Market splits and a params file for the CLI runs."""
    root = tmp_path_factory.mktemp("trust")
    make_tiny_market(root / "market", train_ids=6)
    make_split(root / "market", root / "splits", val_ids=2, seed=0)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return root


def train_argv(work: Path, out: Path, *overrides: str) -> list[str]:
    sets = [arg for kv in overrides for arg in ("--set", kv)]
    return [
        "train",
        "--params",
        str(ROOT / "params.yaml"),
        str(work / "tiny.yaml"),
        *sets,
        "--arch",
        "tiny",
        "--splits",
        str(work / "splits"),
        "--out",
        str(out),
    ]


def one_error_line(err: str, stage: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if f"reidpipe {stage}: error: " in line]
    assert len(errors) == 1, err
    return errors[0]


def test_reidpipe_train_refuses_a_pretrained_payload_in_one_line(work, tmp_path):
    """The reported attack: `reidpipe train` with a crafted .pth as model.pretrained_model_path."""
    marker = tmp_path / "ran"
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload(marker, "system")}, path)
    run = subprocess.run(
        CLI
        + train_argv(
            work,
            tmp_path / "model",
            "model.pretrain_choice=self",
            f"model.pretrained_model_path={path}",
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    line = one_error_line(run.stderr, "train")
    assert re.search(refusal_line(path, "system"), line), line
    assert not marker.exists() and not (tmp_path / "model" / MODEL_FILE).exists()


def test_train_refuses_a_payload_as_resume_checkpoint(work, tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "other.ckpt"
    torch.save({"epoch": 1, "state_dict": {}, "x": Payload(marker, "exec")}, path)
    code = main(
        train_argv(work, tmp_path / "model", f"train.resume_training_checkpoint_path={path}")
    )
    line = one_error_line(capsys.readouterr().err, "train")
    assert code == 2 and not marker.exists()
    assert re.search(refusal_line(path, "exec"), line), line
    assert "resume from a checkpoint `reidpipe train` wrote" in line


def test_train_refuses_a_payload_in_its_own_checkpoints(work, tmp_path, capsys):
    """A payload planted in the run's folder: in checkpoints/ it is refused (not skipped as
    unreadable); as model.pt it is not unpickled either (the run is not taken as done)."""
    marker = tmp_path / "ran"
    out = tmp_path / "model"
    planted = out / "checkpoints" / "epoch=0-step=2.ckpt"
    planted.parent.mkdir(parents=True)
    torch.save({"epoch": 0, "state_dict": {}, "x": Payload(marker, "system")}, planted)
    torch.save({"fingerprint": "x", "x": Payload(marker, "exec")}, out / MODEL_FILE)
    for name in ("train_log.csv", "config.yaml"):
        (out / name).write_text("planted\n")
    code = main(train_argv(work, out))
    line = one_error_line(capsys.readouterr().err, "train")
    assert code == 2 and not marker.exists()
    assert re.search(refusal_line(planted, "system"), line), line


@pytest.mark.parametrize("stage", ["extract", "export-onnx"])
def test_a_model_folder_with_a_payload_is_refused(work, tmp_path, capsys, stage):
    marker = tmp_path / "ran"
    model = tmp_path / "model"
    model.mkdir()
    torch.save(
        {"arch": {}, "num_classes": 3, "state_dict": {}, "x": Payload(marker, "touch")},
        model / MODEL_FILE,
    )
    params = ["--params", str(ROOT / "params.yaml"), str(work / "tiny.yaml")]
    argv = [
        stage,
        "--model",
        str(model),
        "--splits",
        str(work / "splits"),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        *params,
    ] + (["--arch", "tiny"] if stage == "export-onnx" else [])
    code = main(argv)
    line = one_error_line(capsys.readouterr().err, stage)
    assert code == 2 and not marker.exists()
    assert re.search(refusal_line(model / MODEL_FILE, "touch"), line), line
    assert "`reidpipe train` writes model.pt with tensors and plain values only" in line


def untrusted_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A benign checkpoint the pipeline still refuses: its options hold a pathlib path."""
    state = solider_state(CFG)
    path = tmp_path / "checkpoint_tea.pth"
    solider_file(path, state, {"output_dir": pathlib.PurePosixPath("/runs/solider")})
    return path, state


def test_convert_weights_refuses_without_trust(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the command needs none
    marker = tmp_path / "ran"
    path = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(2), "x": Payload(marker, "system")}, path)
    code = main(["convert-weights", str(path), "--out", str(tmp_path / "w.safetensors")])
    line = one_error_line(capsys.readouterr().err, "convert-weights")
    assert code == 2 and not marker.exists() and not (tmp_path / "w.safetensors").exists()
    assert f"refusing to unpickle {path} in full without --trust: that runs any code" in line


def test_convert_weights_with_trust_gives_the_same_tensors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path, state = untrusted_weights(tmp_path)
    with pytest.raises(ReidpipeError, match="names the global pathlib.PurePosixPath"):
        read_state_dict(path)
    out = tmp_path / "solider.safetensors"
    code = main(["convert-weights", str(path), "--out", str(out), "--trust"])
    err = capsys.readouterr().err
    assert code == 0, err
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"reidpipe convert-weights: warning: trusting {path} (sha256 {digest})" in err
    tensors = read_state_dict(out)
    assert tensors.keys() == {f"backbone.{k}" for k in state} | {"head.last_layer.weight_g"}
    assert all(torch.equal(tensors[f"backbone.{k}"], v) for k, v in state.items())
    from_file, converted = build_model(swin(), 3).backbone, build_model(swin(), 3).backbone
    load_backbone_weights(converted, out)
    load_backbone_weights(from_file, solider_file(tmp_path / "allowed.pth", state))
    ours, want = converted.state_dict(), from_file.state_dict()
    assert all(torch.equal(ours[k], want[k]) for k in want)


def test_convert_weights_wants_a_safetensors_name(tmp_path, capsys):
    path, _ = untrusted_weights(tmp_path)
    code = main(["convert-weights", str(path), "--out", str(tmp_path / "w.pth"), "--trust"])
    line = one_error_line(capsys.readouterr().err, "convert-weights")
    assert code == 2 and "must end in .safetensors" in line
    assert not (tmp_path / "w.pth").exists()
