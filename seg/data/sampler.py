"""The training sampler: a shuffle fixed by (seed, epoch), resumable mid-epoch, with a per-sample augmentation seed.

It yields ``(index, seed)`` pairs; ``SegmentationDataset`` reseeds its transform with ``seed`` before augmenting
sample ``index``. Each sample's augmentation is then a function of (seed, epoch, index) alone, not of a running
generator that depends on how many samples a process or worker drew before: a run resumed from a checkpoint
taken mid-epoch sees exactly the batches an uninterrupted run would have seen, with any number of workers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sized
from typing import Any

import numpy as np
import torch.distributed
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation, independent for every (seed, epoch, index)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


def seed_transform(transform: Callable, seed: int) -> None:
    """Make ``transform``'s next call draw from ``seed`` alone: fresh numpy and Python generators, shared by all
    steps of an albumentations pipeline (about 50 us). A transform without albumentations' random state is left
    alone.
    """
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.Generator(np.random.PCG64(seed)), random.Random(seed))


class SeededSampler(StatefulDistributedSampler):
    """``DistributedSampler`` order (permutation from seed + epoch, split over processes) yielding
    ``(index, sample_seed(seed, epoch, index))``.

    Outside ``torch.distributed`` it is the single-process sampler (one replica). Its state (samples yielded in
    the epoch, and the epoch) goes into the checkpoint through torchdata's ``StatefulDataLoader``.
    """

    def __init__(self, dataset: Sized, seed: int, shuffle: bool = True) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=None if distributed else 1,
            rank=None if distributed else 0,
            shuffle=shuffle,
            seed=seed,
        )

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        for index in super().__iter__():
            yield index, sample_seed(self.seed, epoch, index)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.epoch = int(state_dict.get("epoch", self.epoch))
        if self.next_yielded is not None and self.next_yielded >= self.num_samples:
            # saved at the end of an epoch (after its validation): Lightning resumes with the next epoch, which
            # must start from its first sample, not skip a whole epoch's worth
            self.next_yielded = None
