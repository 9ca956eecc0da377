from collections import Counter

import pytest

from reidpipe.errors import ReidpipeError
from reidpipe.training.sampler import IdentityBatchSampler, ShuffleBatchSampler

# 13 identities with 1 to 9 images each (identity 3 has fewer than K images).
LABELS = [pid for pid in range(13) for _ in range(1 + (pid * 5) % 9)]
P, K = 4, 3


def label_batches(sampler):
    return [[LABELS[i] for i in batch] for batch in sampler]


def test_pk_batches_cover_every_identity():
    sampler = IdentityBatchSampler(LABELS, P * K, K, seed=1)
    batches = label_batches(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        counts = Counter(batch)
        assert len(counts) == P and set(counts.values()) == {K}
    assert set().union(*map(set, batches)) == set(LABELS)
    # An epoch holds about one K-chunk per K images of each identity (BoT's epoch length).
    chunks = sum(max(1, LABELS.count(pid) // K) for pid in set(LABELS))
    assert len(batches) == -(-chunks // P)


def test_epochs_reshuffle_deterministically():
    sampler = IdentityBatchSampler(LABELS, P * K, K, seed=1)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert sampler.sampler is sampler  # where Lightning calls set_epoch
    assert list(sampler) != first


def test_two_ranks_draw_disjoint_identities():
    ranks = [
        IdentityBatchSampler(LABELS, 2 * K, K, seed=3, num_replicas=2, rank=r) for r in range(2)
    ]
    for epoch in (0, 1):
        ids = []
        for sampler in ranks:
            sampler.set_epoch(epoch)
            ids.append({pid for batch in label_batches(sampler) for pid in batch})
        assert not ids[0] & ids[1]
        assert ids[0] | ids[1] == set(LABELS)
        assert len(ranks[0]) == len(ranks[1]) == len(list(ranks[0])) == len(list(ranks[1]))


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(ReidpipeError, match="batch_size"):
        IdentityBatchSampler(LABELS, 8 * K, K, num_replicas=2, rank=0)


def test_shuffle_sampler_shards_are_disjoint():
    shards = [list(ShuffleBatchSampler(50, 8, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    flat = [[i for b in shard for i in b] for shard in shards]
    assert all(len(b) == 8 for shard in shards for b in shard) and len(shards[0]) == 3
    assert not set(flat[0]) & set(flat[1])
