"""Batch samplers for re-identification training, distributed-aware.

``IdentityBatchSampler`` builds P x K batches (P identities, K = num_instances images each) as in
BoT: each identity's images are shuffled and cut into chunks of K (an identity with fewer than K
images gives one chunk drawn with replacement), and every batch takes one chunk from P distinct
identities. Every identity appears at least once an epoch. Under DDP the identities are first
dealt to the ranks (reshuffled each epoch via ``set_epoch``), so ranks never share an identity and
a batch-hard triplet loss on one rank's batch sees complete positive sets. All ranks yield the same
number of batches (short ranks repeat random chunks of their own identities), so no rank waits.

``ShuffleBatchSampler`` is the plain random batching of the softmax-only recipe, sharded likewise.
Both are deterministic given (seed, epoch, rank, world size), which makes resume reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from reidpipe.errors import ReidpipeError


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
    return num_replicas, rank


class IdentityBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size % num_instances:
            raise ReidpipeError(
                f"dataset.batch_size ({batch_size}) must be a multiple of "
                f"dataset.num_instances ({num_instances})"
            )
        self.labels = np.asarray(labels)
        self.k = num_instances
        self.p = batch_size // num_instances
        self.seed = seed
        self.epoch = 0
        self.world, self.rank = _world(num_replicas, rank)
        self.ids = np.unique(self.labels)
        self.index_of = {int(pid): np.flatnonzero(self.labels == pid) for pid in self.ids}
        if len(self.ids) < self.p * self.world:
            raise ReidpipeError(
                f"P x K sampling needs at least P = batch_size / num_instances = {self.p} identities "
                f"per process ({self.world} process(es)), but the train split has {len(self.ids)}; "
                "lower dataset.batch_size or raise dataset.num_instances"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> Sampler[list[int]]:
        """Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` before each epoch."""
        return self

    def _rank_ids(self, rank: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.ids)
        return order[rank :: self.world]

    def _num_batches(self, ids: np.ndarray) -> int:
        chunks = sum(max(1, len(self.index_of[int(pid)]) // self.k) for pid in ids)
        return math.ceil(chunks / self.p)

    def __len__(self) -> int:
        return max(self._num_batches(self._rank_ids(r)) for r in range(self.world))

    def __iter__(self) -> Iterator[list[int]]:
        ids = self._rank_ids(self.rank)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        chunks: dict[int, list[np.ndarray]] = {}
        for pid in ids:
            idx = self.index_of[int(pid)]
            if len(idx) < self.k:
                chunks[int(pid)] = [rng.choice(idx, self.k, replace=True)]
            else:
                idx = rng.permutation(idx)
                chunks[int(pid)] = [
                    idx[i * self.k : (i + 1) * self.k] for i in range(len(idx) // self.k)
                ]
        batches = 0
        total = len(self)
        while batches < total:
            pending = [pid for pid, c in chunks.items() if c]
            if len(pending) >= self.p:
                chosen = rng.choice(pending, self.p, replace=False)
            else:
                # Top up with other identities of this rank: a fresh random chunk each.
                others = [pid for pid in chunks if pid not in set(pending)]
                extra = rng.choice(others, self.p - len(pending), replace=False)
                chosen = np.concatenate([np.asarray(pending, dtype=int), extra])
            batch: list[int] = []
            for pid in chosen:
                pid = int(pid)
                if chunks[pid]:
                    batch.extend(int(i) for i in chunks[pid].pop())
                else:
                    idx = self.index_of[pid]
                    batch.extend(int(i) for i in rng.choice(idx, self.k, replace=len(idx) < self.k))
            yield batch
            batches += 1


class ShuffleBatchSampler(Sampler[list[int]]):
    """Random batches of ``batch_size`` images, each rank a disjoint shard; the last partial
    batch is dropped."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.world, self.rank = _world(num_replicas, rank)
        if len(self) == 0:
            raise ReidpipeError(
                f"the train split has {size} images, too few for one batch of "
                f"{batch_size} on each of {self.world} process(es)"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> Sampler[list[int]]:
        """Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` before each epoch."""
        return self

    def __len__(self) -> int:
        return (self.size // self.world) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        shard = order[self.rank :: self.world][: len(self) * self.batch_size]
        for start in range(0, len(shard), self.batch_size):
            yield [int(i) for i in shard[start : start + self.batch_size]]
