"""``reidpipe train``: split manifests -> a trained re-identification model.

Outputs in ``out_dir`` (all written atomically): ``model.pt`` (the network's state dict, the
effective arch config, the class count and a fingerprint of config + manifests), ``config.yaml``
(the effective arch config), ``train_log.csv`` (one row per epoch, row 0 = the untrained
model's val mAP), the loggers' folders (``dvclive/``, and ``tensorboard/`` when
``train.loggers`` asks for it: the same rows as curves, see ``loggers``) and ``checkpoints/``
(the Lightning checkpoint of the newest ``checkpoint_interval`` epoch).

A rerun resumes from the newest readable checkpoint in ``checkpoints/`` (see ``checkpoints``);
without one it starts from ``train.resume_training_checkpoint_path`` when set. Checkpoints made
under another config or other manifests are discarded, not resumed. A rerun of a finished run
(all outputs there, same fingerprint) does nothing. The outputs appear together at the end, the
loggers' folders last: a killed or failed run leaves none of them, so no log of a half-done run.
The loggers write live into ``checkpoints/logs/`` meanwhile (``tensorboard --logdir`` on the model
folder follows a run); a resumed run rebuilds them there from the rows its checkpoint holds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies import DDPStrategy

from reidpipe import atomic, environment
from reidpipe.data.manifest import manifest_path
from reidpipe.devices import GPU_WAIT_S, GpuLease, allocate_gpus
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    DVCLIVE_DIR,
    MODEL_FILE,
    TENSORBOARD_DIR,
    TRAIN_CONFIG_FILE,
    TRAIN_LOG_FILE,
)
from reidpipe.params import ArchConfig, ModelParams, Params
from reidpipe.provenance import canonical_json
from reidpipe.training.checkpoints import AtomicCheckpointIO, choose_resume
from reidpipe.training.datamodule import ReidDataModule, per_rank_batch
from reidpipe.training.lightning_module import EpochLog, ReidModule
from reidpipe.training.loggers import logger_dirs, make_loggers
from reidpipe.training.model import arch_to_dict
from reidpipe.training.schedule import unused_settings_note

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LIVE_LOGS_DIR = "logs"  # in CHECKPOINT_DIR: the loggers' folders while training runs
FINGERPRINT_FILE = "fingerprint.txt"
PRETRAINED_KEY = "pretrained_weights"  # config.yaml: the weights training started from
# Keys that change where or how fast training runs, not what it computes.
_RUNTIME_KEYS = {
    ("train", "num_gpus"),
    ("train", "gpu_ids"),
    ("train", "num_nodes"),
    ("train", "resume_training_checkpoint_path"),
    ("dataset", "num_workers"),
    ("dataset", "val_batch_size"),
    ("train", "loggers"),
}


def fingerprint(cfg: ArchConfig, splits_dir: Path) -> str:
    """Hash of the config (runtime keys aside) and of the train/val manifests."""
    config = arch_to_dict(cfg)
    for section, key in _RUNTIME_KEYS:
        config[section].pop(key)
    digest = hashlib.sha256(canonical_json(config).encode())
    for split in ("train", "val_query", "val_gallery"):
        digest.update(manifest_path(splits_dir, split).read_bytes())
    return digest.hexdigest()


@dataclass
class Runtime:
    accelerator: str
    devices: int
    precision: str
    note: str
    lease: GpuLease | None = None  # holds the GPU locks: keep it alive while training


def auto_precision(capability: tuple[int, int] | None) -> str:
    """``precision: auto`` for the (lowest) CUDA compute capability of the GPUs, None on CPU.
    Native bf16 starts at 8.0 (Ampere); ``torch.cuda.is_bf16_supported()`` also answers yes on
    V100/T4, where bf16 is emulated and slow, so older GPUs get 16-mixed."""
    if capability is None:
        return "32"
    return "bf16-mixed" if capability >= (8, 0) else "16-mixed"


def deterministic_mode(enabled: bool, accelerator: str) -> bool | Literal["warn"]:
    """Lightning's ``Trainer(deterministic=...)``: deterministic algorithms (and, on CUDA, the
    cuBLAS workspace setting they need). Every CPU op has a deterministic kernel; on a GPU some
    (e.g. adaptive average pooling's backward) have none, so there they warn instead of failing."""
    if not enabled:
        return False
    return True if accelerator == "cpu" else "warn"


def resolve_runtime(cfg: ArchConfig, env: dict[str, str] | None = None) -> Runtime:
    """Lock GPUs (sets CUDA_VISIBLE_DEVICES before CUDA starts) and choose the precision."""
    lease = allocate_gpus(cfg.train.num_gpus, cfg.train.gpu_ids, env=env, wait_s=GPU_WAIT_S)
    note = lease.note
    if lease.ids and not torch.cuda.is_available():
        note += "; but this torch build sees no CUDA device: running on CPU"
        lease.release()
        lease.ids = []
    precision = cfg.train.precision
    if lease.ids:
        if precision == "auto":
            # CUDA_VISIBLE_DEVICES now holds the leased GPUs only: they are devices 0..n-1.
            precision = auto_precision(
                min(torch.cuda.get_device_capability(i) for i in range(len(lease.ids)))
            )
        return Runtime("gpu", len(lease.ids), precision, note, lease)
    if precision == "auto":
        precision = auto_precision(None)
    if precision == "16-mixed":
        raise ReidpipeError(
            "train.precision = '16-mixed' needs a GPU; on CPU use 32, bf16-mixed or auto"
        )
    return Runtime("cpu", 1, precision, note)


def pretrained_weights(model: ModelParams, backbone: torch.nn.Module) -> str:
    """What the backbone started from: ``timm:<architecture>.<tag>`` (the exact weights timm
    resolved the name to), the local file, or ``none``."""
    if model.pretrain_choice == "imagenet":
        cfg = getattr(backbone, "pretrained_cfg", {})
        return f"timm:{cfg.get('architecture', model.backbone)}.{cfg.get('tag', '')}".rstrip(".")
    if model.pretrain_choice == "self":
        return model.pretrained_model_path
    return "none"


def _prepare_checkpoints(ckpt_dir: Path, stamp: str) -> None:
    stamp_file = ckpt_dir / FINGERPRINT_FILE
    if stamp_file.is_file() and stamp_file.read_text().strip() != stamp:
        log.info(f"config or manifests changed since {ckpt_dir} was written: starting afresh")
        shutil.rmtree(ckpt_dir)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and not stamp_file.is_file():
        atomic.write_text(stamp_file, stamp + "\n")


OUTPUTS = (TRAIN_LOG_FILE, TRAIN_CONFIG_FILE, MODEL_FILE)


def _is_done(out_dir: Path, stamp: str, folders: list[str]) -> bool:
    if not all((out_dir / name).is_file() for name in OUTPUTS):
        return False
    if not all((out_dir / name).is_dir() for name in folders):
        return False
    try:
        saved = torch.load(out_dir / MODEL_FILE, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable for whatever reason: not done, train again
        return False
    return isinstance(saved, dict) and saved.get("fingerprint") == stamp


def _clear_outputs(out_dir: Path) -> None:
    """Outputs of an older or unfinished run, and temporaries a kill left, go before training:
    the folder then holds either a finished run's outputs or none."""
    for name in OUTPUTS:
        (out_dir / name).unlink(missing_ok=True)
    for name in (DVCLIVE_DIR, TENSORBOARD_DIR):  # a folder no stage wrote is refused, not deleted
        atomic.remove_output_dir(out_dir / name)
    shutil.rmtree(out_dir / CHECKPOINT_DIR / LIVE_LOGS_DIR, ignore_errors=True)
    for folder in (out_dir, out_dir / CHECKPOINT_DIR):
        atomic.remove_temporaries(folder)


def _write_outputs(
    out_dir: Path, saved: dict[str, Any], log_frame: Any, config: dict[str, Any]
) -> None:
    """All three outputs as one unit: written to temporaries first, then renamed into place,
    model.pt last (it marks the run done)."""
    atomic.write_files(
        {
            out_dir / TRAIN_LOG_FILE: lambda tmp: log_frame.to_csv(tmp, index=False),
            out_dir / TRAIN_CONFIG_FILE: lambda tmp: tmp.write_text(
                yaml.safe_dump(config, sort_keys=False), encoding="utf-8"
            ),
            out_dir / MODEL_FILE: lambda tmp: torch.save(saved, tmp),
        }
    )


def _publish_logs(live_dir: Path, out_dir: Path, folders: list[str]) -> None:
    """Each logger's folder, complete, renamed from ``live_dir`` into ``out_dir``."""
    for name in folders:
        (live_dir / name).mkdir(parents=True, exist_ok=True)  # a logger that got no row
        atomic.replace_dir(live_dir / name, out_dir / name)
    shutil.rmtree(live_dir, ignore_errors=True)


def train_arch(
    cfg: ArchConfig, splits_dir: str | Path, out_dir: str | Path, runtime: Runtime
) -> dict[str, Any]:
    """Train (or resume, or skip when done) one architecture; returns the last log row."""
    splits_dir, out_dir = Path(splits_dir), Path(out_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    stamp = fingerprint(cfg, splits_dir)
    log_folders = logger_dirs(cfg.train.loggers)
    if _is_done(out_dir, stamp, log_folders):
        log.info(f"{out_dir / MODEL_FILE} is up to date: nothing to train")
        return {}
    per_rank_batch(cfg.dataset, runtime.devices * cfg.train.num_nodes)  # fail before spawning
    note = unused_settings_note(cfg.train.optim)
    if note:
        log.info("note: %s", note)

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    datamodule = ReidDataModule(splits_dir, cfg)
    module = ReidModule(cfg, datamodule.num_classes)
    # Only now that the manifests and weights were read: bad input leaves out_dir untouched.
    resume = _clear_and_choose_resume(cfg, out_dir, stamp, module)
    log.info(
        f"train {cfg.name}: {runtime.note}; {runtime.accelerator} x{runtime.devices}, "
        f"precision {runtime.precision}" + (f"; resuming from {resume}" if resume else "")
    )
    epoch_log = EpochLog(datamodule, cfg.train.validation_interval)
    checkpoints = _newest_checkpoint(ckpt_dir, cfg.train.checkpoint_interval)
    trainer = _make_trainer(cfg, runtime, module, [epoch_log, checkpoints], out_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    if trainer.is_global_zero:
        saved = {
            "state_dict": module.net.state_dict(),
            "arch": arch_to_dict(cfg),
            "num_classes": datamodule.num_classes,
            "fingerprint": stamp,
            "epochs": trainer.current_epoch,
        }
        config = {
            **arch_to_dict(cfg),
            PRETRAINED_KEY: pretrained_weights(cfg.model, module.net.backbone),
            environment.CONFIG_KEY: environment.record(runtime.accelerator, trainer.world_size),
        }
        _write_outputs(out_dir, saved, epoch_log.frame(), config)
        _publish_logs(ckpt_dir / LIVE_LOGS_DIR, out_dir, log_folders)
    return epoch_log.rows[-1] if epoch_log.rows else {}


def _clear_and_choose_resume(
    cfg: ArchConfig, out_dir: Path, stamp: str, module: ReidModule
) -> Path | None:
    """Clear an older run's outputs (rank 0) and checkpoints made under another fingerprint;
    returns the checkpoint to resume from."""
    ckpt_dir = out_dir / CHECKPOINT_DIR
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        _clear_outputs(out_dir)
    _prepare_checkpoints(ckpt_dir, stamp)
    # The run's own newest checkpoint wins: the configured path is where a run starts, and a
    # rerun after a kill must not go back to it.
    return choose_resume(ckpt_dir, cfg.train.resume_training_checkpoint_path, module.state_dict())


def _newest_checkpoint(ckpt_dir: Path, every_n_epochs: int) -> ModelCheckpoint:
    """The checkpoint callback. Only the newest checkpoint is kept (it replaces the previous one
    after it is written): resume needs no more, and a ResNet-50 checkpoint with Adam state is
    ~300 MB."""
    return ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        monitor="step",
        mode="max",
        save_top_k=1,
        every_n_epochs=every_n_epochs,
    )


def _make_trainer(
    cfg: ArchConfig,
    runtime: Runtime,
    module: ReidModule,
    callbacks: list[L.Callback],
    out_dir: Path,
) -> L.Trainer:
    """The Lightning trainer of ``runtime``'s devices, its loggers writing live into the
    checkpoints' ``LIVE_LOGS_DIR``."""
    multi = runtime.devices > 1 or cfg.train.num_nodes > 1
    return L.Trainer(
        accelerator=runtime.accelerator,
        devices=runtime.devices,
        num_nodes=cfg.train.num_nodes,
        strategy=(DDPStrategy(find_unused_parameters=not module.plan.use_id) if multi else "auto"),
        precision=runtime.precision,  # type: ignore[arg-type]
        deterministic=deterministic_mode(cfg.train.deterministic, runtime.accelerator),
        max_epochs=cfg.train.num_epochs,
        limit_train_batches=cfg.train.max_steps_per_epoch or 1.0,
        callbacks=callbacks,
        logger=make_loggers(cfg.train.loggers, out_dir / CHECKPOINT_DIR / LIVE_LOGS_DIR),
        enable_autolog_hparams=False,
        log_every_n_steps=1,  # the loggers get EpochLog's rows only
        plugins=[AtomicCheckpointIO(), *cluster_plugins(runtime.devices, cfg.train.num_nodes)],
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=str(out_dir),
    )


def cluster_plugins(
    devices: int, num_nodes: int, env: Mapping[str, str] | None = None
) -> list[LightningEnvironment]:
    """Lightning takes any process with ``SLURM_NTASKS`` set as launched by Slurm with one task
    per device. A Snakemake job under Slurm is a single task, so with ``devices > 1`` Lightning
    would start one process instead of ``devices``: then it must launch the ranks itself."""
    ntasks = (os.environ if env is None else env).get("SLURM_NTASKS")
    if ntasks is not None and ntasks.isdigit() and int(ntasks) != devices * num_nodes:
        return [LightningEnvironment()]
    return []


def train_stage(
    params: Params, arch: str, splits_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    cfg = params.arch(arch)
    for split in ("train", "val_query", "val_gallery"):
        if not manifest_path(splits_dir, split).is_file():
            raise ReidpipeError(
                f"{manifest_path(splits_dir, split)} does not exist (run `reidpipe split` first)"
            )
    runtime = resolve_runtime(cfg)
    try:
        return train_arch(cfg, splits_dir, out_dir, runtime)
    finally:
        if runtime.lease is not None:
            runtime.lease.release()
