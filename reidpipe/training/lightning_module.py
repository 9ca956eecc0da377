"""LightningModule: the BoT training step, in-training validation and the per-epoch log.

Manual optimisation, because the center loss has its own SGD whose gradient is rescaled by
1/center_loss_weight before its step (BoT) and must be unscaled with the loss scale it was made
under. The learning rate is set at each epoch start from the epoch number alone
(``schedule.epoch_lr``), so a resumed run, or one resumed on another GPU count, stays on the same
curve. Both optimisers are in Lightning's checkpoints; the checkpoint also carries the Python,
NumPy, torch and CUDA RNG states and the epoch-log rows, so a resumed run continues the same log.
The rows also go to the trainer's loggers (``reidpipe.training.loggers``), one step per epoch.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from reidpipe.evaluation.evaluate import plain_distance_rows, rank_queries, summarise
from reidpipe.params import ArchConfig
from reidpipe.train_log import COLUMNS, LOSS_COLUMNS, SHOWN_COLUMNS
from reidpipe.training.losses import CenterLoss, LossPlan, center_step, loss_scale, reid_loss
from reidpipe.training.model import build_model
from reidpipe.training.schedule import make_optimizer, set_epoch_lr

log = logging.getLogger(__name__)

# Each row key the loggers get, by the name they show it under ("/" groups them); a value that is
# NaN (no validation that epoch, a loss term that is off) is left out.
LOGGER_NAMES = {
    "loss": "train/loss",
    "id_loss": "train/id_loss",
    "triplet_loss": "train/triplet_loss",
    "center_loss": "train/center_loss",
    "lr": "train/lr",
    "images_per_s": "train/images_per_s",
    "val_mAP": "val/mAP",
    "val_rank1": "val/rank1",
}


class ReidModule(L.LightningModule):
    def __init__(self, cfg: ArchConfig, num_classes: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.net = build_model(cfg.model, num_classes)
        self.plan = LossPlan.from_config(cfg.model, cfg.dataset, cfg.train.optim)
        self.center = CenterLoss(num_classes, self.net.feat_dim) if self.plan.use_center else None
        self._sums: dict[str, float] = {}
        self._steps = 0
        self._images = 0  # trained on by this process in the epoch
        self._started = 0.0
        self._lr = math.nan

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        optim = self.cfg.train.optim
        optimizers = [make_optimizer(self.net, optim)]
        if self.center is not None:
            # BoT/TAO/SOLIDER: the centers' SGD keeps center_lr, outside the schedule.
            optimizers.append(torch.optim.SGD(self.center.parameters(), lr=optim.center_lr))
        return optimizers

    def on_train_epoch_start(self) -> None:
        self._sums, self._steps, self._images, self._started = {}, 0, 0, time.monotonic()
        set_epoch_lr(
            self.optimizers_list()[0].optimizer,
            self.current_epoch + 1,
            self.cfg.train.optim,
            self.cfg.train.num_epochs,
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        opts = self.optimizers_list()
        scores, feat = self.net(images)
        terms = reid_loss(self.plan, scores, feat, labels, self.center)
        for opt in opts:
            opt.zero_grad()
        self.manual_backward(terms["loss"])
        self._lr = opts[0].param_groups[0]["lr"]
        # The scale this backward ran under, read before the main step updates the scaler.
        scale = loss_scale(getattr(self.trainer.precision_plugin, "scaler", None))
        opts[0].step()
        if self.center is not None:
            # The raw optimizer: Lightning's wrapper would unscale with the updated scale.
            center_step(self.center, opts[1].optimizer, self.plan.center_weight, scale)
        for name, value in terms.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value.detach())
        self._steps += 1
        self._images += len(labels)
        # The progress bar only: the loggers get EpochLog's rows, one step per epoch.
        self.log(
            "loss",
            terms["loss"].detach(),
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            logger=False,
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip here, not after ``manual_backward``: under 16-mixed the gradients are unscaled
        only inside ``step()``, just before this hook."""
        if self.cfg.train.clip_grad_norm > 0 and optimizer is self.optimizers_list()[0].optimizer:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.cfg.train.clip_grad_norm,
                gradient_clip_algorithm="norm",
            )

    def optimizers_list(self) -> list[Any]:
        opts = self.optimizers()
        return opts if isinstance(opts, list) else [opts]

    # ------------------------------------------------------------------ epoch end
    def epoch_row(
        self, val_loader: torch.utils.data.DataLoader | None, val_frame: pd.DataFrame | None
    ) -> dict[str, float | int]:
        """The log row of the epoch just trained: mean loss terms over all processes, the lr of
        the first parameter group in its last step, training throughput (images/s of all
        processes, validation aside: not a CSV column) and val mAP/R1 when ``val_loader`` is
        given."""
        train_seconds = time.monotonic() - self._started
        means = torch.tensor(
            [self._sums.get(k, math.nan) / max(self._steps, 1) for k in LOSS_COLUMNS],
            device=self.device,
        )
        means = self.trainer.strategy.reduce(means, reduce_op="mean")
        row: dict[str, float | int] = {"epoch": self.current_epoch + 1, "steps": self._steps}
        row.update({k: float(v) for k, v in zip(LOSS_COLUMNS, means.tolist())})
        row["lr"] = self._lr
        row["images_per_s"] = round(
            self._images * self.trainer.world_size / max(train_seconds, 1e-9), 1
        )
        row["val_mAP"] = row["val_rank1"] = math.nan
        if val_loader is not None and val_frame is not None:
            metrics = self.validate(val_loader, val_frame)
            row["val_mAP"], row["val_rank1"] = metrics["mAP"], metrics["rank1"]
            self.log_dict(
                {"val_mAP": metrics["mAP"], "val_R1": metrics["rank1"]}, prog_bar=True, logger=False
            )
        row["seconds"] = round(time.monotonic() - self._started, 2)
        return row

    @torch.no_grad()
    def embed(self, loader: torch.utils.data.DataLoader) -> np.ndarray:
        """Eval-mode test features of every image of ``loader``, in order."""
        was_training = self.net.training
        self.net.eval()
        feats = []
        for images, _ in loader:
            feats.append(self.net(images.to(self.device)).float().cpu())
        self.net.train(was_training)
        return torch.cat(feats).numpy()

    def validate(
        self, loader: torch.utils.data.DataLoader, frame: pd.DataFrame
    ) -> dict[str, float | int]:
        feats = self.embed(loader)
        is_query = frame["is_query"].to_numpy()
        q, g = frame[is_query], frame[~is_query]
        rows = plain_distance_rows(feats[is_query], feats[~is_query], "cosine", torch.device("cpu"))
        ranking = rank_queries(
            rows,
            len(q),
            q["pid"].to_numpy(),
            q["camid"].to_numpy(),
            g["pid"].to_numpy(),
            g["camid"].to_numpy(),
        )
        return summarise(ranking)

    # ------------------------------------------------------------------ checkpoint extras
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        # Plain types only: Lightning loads checkpoints with torch.load(weights_only=True).
        checkpoint["rng"] = {
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
            "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        }
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("rng")
        if state:
            random.setstate(state["python"])
            name, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
            torch.set_rng_state(state["torch"])
            if "cuda" in state and torch.cuda.is_available():
                restore_cuda_rng(state["cuda"], torch.cuda.device_count(), torch.cuda.set_rng_state)


def restore_cuda_rng(
    states: Sequence[torch.Tensor],
    device_count: int,
    set_state: Callable[[torch.Tensor, int], None],
) -> None:
    """Restore the saved per-GPU RNG states onto the GPUs both runs have: a run may resume on
    fewer or more GPUs than it was saved on (the others keep their seeded state)."""
    for device in range(min(len(states), device_count)):
        set_state(states[device], device)


class EpochLog(L.Callback):
    """Runs validation when due and keeps one log row per epoch (row 0: before training), printed
    and given to the trainer's loggers as it comes; ``train.py`` writes them as ``train_log.csv``
    once training finished, so no partial log is ever an output. Lightning runs checkpoint
    callbacks last, so each checkpoint holds the rows up to its epoch."""

    def __init__(self, datamodule: Any, validation_interval: int) -> None:
        self.datamodule = datamodule
        self.interval = validation_interval
        self.rows: list[dict[str, float | int]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The loggers start empty (``train.py`` clears their folders): a resumed run first gives
        them the rows its checkpoint holds (restored by now), so their curves go on from there."""
        for row in self.rows:
            log_row(trainer, row)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Row 0: the untrained model's val mAP/R1, the baseline training must beat."""
        if self.rows or not self.datamodule.has_val:
            return
        assert isinstance(pl_module, ReidModule)
        metrics = pl_module.validate(self.datamodule.val_loader(), self.datamodule.val_frame())
        self._append(
            trainer,
            {"epoch": 0, "steps": 0, "val_mAP": metrics["mAP"], "val_rank1": metrics["rank1"]},
        )

    def _append(self, trainer: L.Trainer, row: dict[str, float | int]) -> None:
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        log_row(trainer, row)
        if trainer.is_global_zero:
            summary = " ".join(
                f"{k}={row[k]:.4g}"
                for k in SHOWN_COLUMNS
                if k in row and not math.isnan(float(row[k]))
            )
            log.info(f"epoch {row['epoch']}/{trainer.max_epochs}: {summary}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, ReidModule)
        epoch = pl_module.current_epoch + 1
        due = self.datamodule.has_val and (
            epoch % self.interval == 0 or epoch == trainer.max_epochs
        )
        loader = self.datamodule.val_loader() if due else None
        frame = self.datamodule.val_frame() if due else None
        self._append(trainer, pl_module.epoch_row(loader, frame))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])


def log_row(trainer: L.Trainer, row: Mapping[str, float | int]) -> None:
    """One epoch's row to each of the trainer's loggers, at step = epoch."""
    metrics = {
        name: float(row[key])
        for key, name in LOGGER_NAMES.items()
        if key in row and math.isfinite(float(row[key]))
    }
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=int(row["epoch"]))
