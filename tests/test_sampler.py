"""SeededSampler (seg/data/sampler.py) on its own: a shuffle fixed by (seed, epoch) and new every epoch, per-sample
augmentation seeds, the state after k samples or a whole epoch, and the split of an epoch between 2 processes."""

from __future__ import annotations

import torch.distributed

from seg.data.sampler import SeededSampler, sample_seed

N = 24


def draw(sampler: SeededSampler, epoch: int) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_the_order_is_fixed_by_seed_and_epoch_and_reshuffled_every_epoch():
    a, b = SeededSampler(range(N), seed=7), SeededSampler(range(N), seed=7)
    epoch0, epoch1 = draw(a, 0), draw(a, 1)
    assert epoch0 == draw(b, 0) and epoch1 == draw(b, 1)  # same (seed, epoch): same order and seeds
    for epoch in (epoch0, epoch1):
        assert sorted(i for i, _ in epoch) == list(range(N))  # every sample once, no padding
    assert [i for i, _ in epoch0] != [i for i, _ in epoch1]  # reshuffled every epoch
    assert [i for i, _ in epoch0] != list(range(N))
    assert [i for i, _ in draw(SeededSampler(range(N), seed=8), 0)] != [i for i, _ in epoch0]
    # each sample's augmentation seed is a function of (seed, epoch, index) alone, new every epoch
    assert all(s == sample_seed(7, 0, i) for i, s in epoch0) and all(s == sample_seed(7, 1, i) for i, s in epoch1)
    assert dict(epoch0)[3] != dict(epoch1)[3]
    assert [i for i, _ in draw(SeededSampler(range(N), seed=7, shuffle=False), 1)] == list(range(N))


def test_the_state_after_k_samples_resumes_the_rest_of_the_epoch():
    full = draw(SeededSampler(range(N), seed=3), 2)
    sampler = SeededSampler(range(N), seed=3)
    sampler.set_epoch(2)
    it = iter(sampler)
    first = [next(it) for _ in range(10)]
    state = sampler.state_dict()
    assert first == full[:10] and state["epoch"] == 2

    fresh = SeededSampler(range(N), seed=3)  # a new process: epoch 0 until the state is loaded
    fresh.load_state_dict(state)
    assert fresh.epoch == 2
    assert list(fresh) == full[10:]  # the rest of epoch 2, seeds included, nothing repeated
    fresh.set_epoch(3)
    assert list(fresh) == draw(SeededSampler(range(N), seed=3), 3)  # the next epoch is whole again


def test_a_state_saved_at_the_end_of_an_epoch_resumes_with_the_whole_next_epoch():
    """last.ckpt written after an epoch's validation holds the sampler with every sample yielded; Lightning resumes
    with the next epoch, which must not be skipped (it was: a run resumed from such a checkpoint lost an epoch)."""
    sampler = SeededSampler(range(N), seed=3)
    draw(sampler, 4)
    state = sampler.state_dict()
    assert state == {"yielded": N, "epoch": 4}
    fresh = SeededSampler(range(N), seed=3)
    fresh.load_state_dict(state)
    assert draw(fresh, 5) == draw(SeededSampler(range(N), seed=3), 5)


def test_two_processes_split_the_epoch_without_padding(monkeypatch):
    """What each of 2 DDP processes draws: the same shuffle split between them, disjoint, covering every sample
    once (24 samples: nothing padded), each with the seeds a single process would give those samples."""
    one_process = draw(SeededSampler(range(N), seed=5), 1)
    single, order = dict(one_process), [i for i, _ in one_process]
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 2)
    parts = []
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, _r=rank, **k: _r)
        sampler = SeededSampler(range(N), seed=5)
        assert (sampler.num_replicas, sampler.rank) == (2, rank)
        parts.append(draw(sampler, 1))
    r0, r1 = ([i for i, _ in p] for p in parts)
    assert len(r0) == len(r1) == N // 2
    assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(N))
    assert all(single[i] == s for p in parts for i, s in p)
    # the split interleaves the single-process order: rank r takes positions r, r + 2, ...
    assert r0 == order[0::2] and r1 == order[1::2]
