"""LightningDataModule over the split manifests: P x K (or shuffled) train batches and the
held-out validation query/gallery images."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reidpipe.data.manifest import read_split
from reidpipe.errors import ReidpipeError
from reidpipe.params import ArchConfig, DatasetParams
from reidpipe.training.sampler import IdentityBatchSampler, ShuffleBatchSampler
from reidpipe.training.transforms import read_image, test_transform, train_transform


def per_rank_batch(dataset: DatasetParams, world_size: int) -> int:
    """Each process's share of the global ``dataset.batch_size`` (BoT's IMS_PER_BATCH; SOLIDER
    divides it by the world size), so the recipe's batch holds on any number of GPUs."""
    unit = dataset.num_instances if dataset.sampler != "softmax" else 1
    if dataset.batch_size % (unit * world_size):
        need = (
            f"a multiple of dataset.num_instances ({unit}) x {world_size} processes = "
            f"{unit * world_size}"
            if unit > 1
            else f"a multiple of {world_size} processes"
        )
        raise ReidpipeError(
            f"dataset.batch_size ({dataset.batch_size}) is the global batch: it "
            f"must be {need}, so that every process gets whole identities"
        )
    return dataset.batch_size // world_size


class ImageDataset(Dataset):
    """(image tensor, integer target) for each row of a manifest."""

    def __init__(
        self, paths: list[str], targets: list[int], transform: torch.nn.Module, channels: int
    ) -> None:
        self.paths = paths
        self.targets = targets
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(read_image(self.paths[index], self.channels)), self.targets[index]


class ReidDataModule(L.LightningDataModule):
    def __init__(self, splits_dir: str | Path, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._first_epoch = 0
        self.splits_dir = Path(splits_dir)
        self.train_frame = read_split(self.splits_dir, "train")
        if "label" not in self.train_frame.columns or self.train_frame.empty:
            raise ReidpipeError(f"{self.splits_dir / 'train.csv'} needs rows and a 'label' column")
        labels = self.train_frame["label"]
        if labels.min() < 0 or set(labels) != set(range(labels.max() + 1)):
            raise ReidpipeError(
                f"{self.splits_dir / 'train.csv'}: labels must be contiguous "
                f"0..C-1, got {labels.nunique()} values from {labels.min()} to "
                f"{labels.max()}"
            )
        self.val_query = read_split(self.splits_dir, "val_query")
        self.val_gallery = read_split(self.splits_dir, "val_gallery")

    @property
    def num_classes(self) -> int:
        found = int(self.train_frame["label"].max()) + 1
        wanted = self.cfg.dataset.num_classes
        if wanted and wanted != found:
            raise ReidpipeError(
                f"dataset.num_classes = {wanted} but {self.splits_dir}/train.csv "
                f"has {found} identities; set it to 0 (from the manifest)"
            )
        return found

    @property
    def has_val(self) -> bool:
        return not self.val_query.empty and not self.val_gallery.empty

    def train_batch_sampler(self) -> Sampler[list[int]]:
        d, seed = self.cfg.dataset, self.cfg.train.seed
        world = self.trainer.world_size if self.trainer is not None else 1
        batch = per_rank_batch(d, world)
        sampler: IdentityBatchSampler | ShuffleBatchSampler
        if d.sampler == "softmax":
            sampler = ShuffleBatchSampler(len(self.train_frame), batch, seed)
        else:
            sampler = IdentityBatchSampler(
                self.train_frame["label"].tolist(), batch, d.num_instances, seed
            )
        # Lightning creates a run's first train iterator before it sets the sampler's epoch, and
        # with worker processes that iterator draws batches at once: a resumed run would replay
        # epoch 0's order. So the sampler starts at the epoch being resumed.
        sampler.set_epoch(self._first_epoch)
        return sampler

    def state_dict(self) -> dict[str, int]:
        """Saved in each checkpoint (at an epoch's end): the epoch a resumed run starts with."""
        return {"next_epoch": self.trainer.current_epoch + 1} if self.trainer is not None else {}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._first_epoch = int(state_dict.get("next_epoch", 0))

    def _loader(self, dataset: Dataset, **kwargs: object) -> DataLoader:
        workers = self.cfg.dataset.num_workers
        return DataLoader(
            dataset,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )  # type: ignore[arg-type]

    def train_dataloader(self) -> DataLoader:
        frame = self.train_frame
        dataset = ImageDataset(
            frame["path"].tolist(),
            frame["label"].tolist(),
            train_transform(self.cfg.model, self.cfg.dataset),
            self.cfg.model.input_channels,
        )
        return self._loader(dataset, batch_sampler=self.train_batch_sampler())

    def val_frame(self) -> pd.DataFrame:
        """Val query rows then val gallery rows (``is_query`` tells them apart)."""
        return pd.concat(
            [self.val_query.assign(is_query=True), self.val_gallery.assign(is_query=False)],
            ignore_index=True,
        )

    def val_loader(self) -> DataLoader:
        """Every process evaluates the whole (small) validation set, so no gathering is needed.
        Not named ``val_dataloader``: validation runs inside the epoch-end hook, see
        ``lightning_module``."""
        frame = self.val_frame()
        dataset = ImageDataset(
            frame["path"].tolist(),
            list(range(len(frame))),
            test_transform(self.cfg.model, self.cfg.dataset),
            self.cfg.model.input_channels,
        )
        return DataLoader(
            dataset,
            batch_size=self.cfg.dataset.val_batch_size,
            shuffle=False,
            num_workers=self.cfg.dataset.num_workers,
        )
