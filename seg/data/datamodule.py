"""The LightningDataModule shared by every dataset: splits, transforms, loaders and seeding.

The train loader is torchdata's ``StatefulDataLoader`` with a ``SeededSampler``: Lightning stores its position in
every checkpoint, so a run resumed mid-epoch continues with the very batches it would have seen.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from seg.data.sampler import SeededSampler

log = logging.getLogger(__name__)


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own seed for numpy, random *and* the albumentations pipeline.

    Albumentations 2.x keeps its own generator inside each Compose; forked workers would otherwise all
    replay the same augmentations. torch gives every worker ``base_seed + worker_id``, new each epoch.
    (Training samples are reseeded one by one from ``SeededSampler``; this covers plain integer indices.)
    """
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    np.random.seed(seed)
    random.seed(seed)
    transform = getattr(info.dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


class SegDataModule(pl.LightningDataModule):
    """Builds ``dataset(root=..., split=..., transform=...)`` for the train and val splits.

    ``prepare`` (optional) is called as ``prepare(root)`` once per node before set-up, e.g. to generate
    the embedded synthetic data. ``seed`` fixes the training order and augmentation (default: the seed of
    ``seed_everything``, else torch's initial seed). Set-up checks every listed file's header (``check_headers``).

    Args:
        dataset: ``(root, split, transform) -> SegmentationDataset`` (a ``_partial_`` dataset class).
        root: the dataset's folder.
        train_transform, val_transform: albumentations pipelines (``seg.data.transforms``); the validation one
            never resizes the label.
        num_classes: checked against the dataset's class count at set-up (None: not checked).
        train_split, val_split: split names the dataset understands (e.g. ``train``, ``val``, ``train_aug``).
        extra_val_splits: more splits validated after ``val_split`` at every validation, each logged as
            ``val/<split>/mIoU`` (CamVid's ``train@0006R0``: a video sequence held out of training). ``val_split``
            alone chooses the best checkpoint.
        batch_size: training batch per process (under DDP the total is this times the number of processes).
        val_batch_size: validation batch; 1 for datasets whose images differ in size.
        num_workers: loader worker processes (0: load in the main process).
        pin_memory: page-locked batches for faster GPU copies.
        prepare: ``prepare(root)``, run once per node before set-up (the synthetic data's generator).
        seed: training order and augmentation seed; None: ``seed_everything``'s, else torch's initial seed.
        **dataset_options: passed on to ``dataset``: every dataset's own options sit at the ``data.`` level of
            the config, next to the loader settings (``data.classes``, ``data.label_format``, ``data.sbd_root``);
            the ``data.dataset`` node names the class only.
    """

    def __init__(
        self,
        dataset: Callable,
        root: str | Path,
        train_transform: Callable | None = None,
        val_transform: Callable | None = None,
        num_classes: int | None = None,
        train_split: str = "train",
        val_split: str = "val",
        extra_val_splits: Sequence[str] = (),
        batch_size: int = 16,
        val_batch_size: int = 1,
        num_workers: int = 2,
        pin_memory: bool = False,
        prepare: Callable | None = None,
        seed: int | None = None,
        **dataset_options: Any,
    ) -> None:
        super().__init__()
        nested = getattr(dataset, "keywords", None)
        if nested:  # a config written before the options moved up a level
            key = next(iter(nested))
            raise ValueError(
                f"data.dataset.{key}: dataset options sit at the data. level now, next to data.root: "
                f"data.{key}={nested[key]!r}"
            )
        self.dataset = functools.partial(dataset, **dataset_options) if dataset_options else dataset
        self.root = Path(root)
        self.train_transform = train_transform
        self.val_transform = val_transform
        self.num_classes = num_classes
        self.train_split, self.val_split = train_split, val_split
        self.extra_val_splits = [str(s) for s in extra_val_splits]
        clash = [s for s in self.extra_val_splits if s in (train_split, val_split)]
        if clash:
            raise ValueError(f"data.extra_val_splits: {clash[0]!r} is already the train or val split")
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.prepare = prepare
        self.seed = seed
        self.train_set = self.val_set = None
        self.extra_val_sets: list = []
        self._headers_checked: set[str] = set()
        self._overlap_warned: set[str] = set()  # validation splits the train split overlaps, warned once

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare(self.root)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self.dataset(root=self.root, split=self.train_split, transform=self.train_transform)
        if self.val_set is None:
            self.val_set = self.dataset(root=self.root, split=self.val_split, transform=self.val_transform)
        if stage in (None, "fit") and self.extra_val_splits and not self.extra_val_sets:
            self.extra_val_sets = [
                self.dataset(root=self.root, split=s, transform=self.val_transform) for s in self.extra_val_splits
            ]
        if self.train_set is not None and len(self.train_set) < 2:
            raise ValueError(
                f"split '{self.train_split}' of {self.root} has {len(self.train_set)} image: training needs at "
                "least 2 (BatchNorm)"
            )
        if stage in (None, "fit") and self.train_set is not None:
            train_ids = set(self.train_set.ids)
            for ds in (self.val_set, *self.extra_val_sets):  # e.g. train+val: a score on trained-on frames
                shared = train_ids & set(ds.ids)
                if shared and ds.split not in self._overlap_warned:  # once, though Lightning calls setup again
                    self._overlap_warned.add(ds.split)
                    message = "the train split '%s' holds %d of the %d frames of validation split '%s': not held out"
                    log.warning(message, self.train_split, len(shared), len(ds), ds.split)
        if self.num_classes is not None and self.val_set.num_classes != self.num_classes:
            raise ValueError(
                f"data.num_classes={self.num_classes} but {type(self.val_set).__name__} has "
                f"{self.val_set.num_classes} classes"
            )
        for ds in (self.train_set, self.val_set, *self.extra_val_sets):
            # file headers (readable, index masks, matching sizes, not truncated) before any model is built
            if ds is not None and ds.split not in self._headers_checked:
                ds.check_headers()
                self._headers_checked.add(ds.split)
            # seeds the main-process pipeline too (num_workers=0); workers reseed in seed_worker
            if ds is not None and hasattr(ds.transform, "set_random_seed"):
                ds.transform.set_random_seed(torch.initial_seed() % 2**32)

    @property
    def class_names(self) -> list[str]:
        """Class names of the configured dataset (available after ``setup``)."""
        return list(self.val_set.classes)

    def dataset_meta(self) -> tuple[type, tuple[str, ...], np.ndarray]:
        """(dataset class, class names, palette) without reading the dataset (:meth:`SegmentationDataset.meta`)."""
        factory, options = self.dataset, {}
        # the data-level options around Hydra's _partial_, which Hydra wraps in a partial subclass of its own
        # (not flattened by functools.partial)
        while isinstance(factory, functools.partial):
            options = {**factory.keywords, **options}
            factory = factory.func
        classes, palette = factory.meta(**options)
        return factory, classes, palette

    def write_split_lists(self, folder: str | Path) -> None:
        """``<folder>/<split>.txt``: the sample ids of each set-up split, one per line (what a run trained and
        validated on; ``data=folder`` reads such lists back with ``data.split_dir``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for ds in (self.train_set, self.val_set):
            if ds is not None:
                (folder / f"{ds.split}.txt").write_text("".join(f"{i}\n" for i in ds.ids))

    def _loader(self, ds, batch_size: int, train: bool, sampler, seed: int, loader_cls: type = DataLoader):
        return loader_cls(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=train,  # a last batch of 1 would break BatchNorm in ASPP's pooling branch
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            worker_init_fn=seed_worker,
            persistent_workers=self.num_workers > 0,
            # its own generator: creating an iterator then draws nothing from torch's global one (which dropout
            # uses), so the global random stream does not depend on when loaders were created (resume)
            generator=torch.Generator().manual_seed(seed),
        )

    def train_seed(self) -> int:
        """The seed of the training order and augmentation: ``seed``, else the global seed (rank 0's under DDP)."""
        if self.seed is not None:
            return int(self.seed)
        seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**63))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            shared = [seed]  # every process must shuffle alike to split the epoch between them
            torch.distributed.broadcast_object_list(shared, src=0)
            seed = shared[0]
        return seed

    def train_dataloader(self) -> StatefulDataLoader:
        batch_size = self.batch_size
        if len(self.train_set) < batch_size:  # e.g. a handful of sample images: one batch of all of them
            log.warning(
                "data.batch_size=%d but split '%s' has %d images: training on batches of %d",
                batch_size,
                self.train_split,
                len(self.train_set),
                len(self.train_set),
            )
            batch_size = len(self.train_set)
        seed = self.train_seed()
        sampler = SeededSampler(self.train_set, seed=seed)
        fit_loop = getattr(self.trainer, "fit_loop", None)
        if fit_loop is not None:
            # Lightning sets the epoch only after it has created (and with workers, primed) the first iterator
            sampler.set_epoch(fit_loop.epoch_progress.current.processed)
        with warnings.catch_warnings():  # torchdata 0.11 calls a deprecated torch function on construction
            warnings.filterwarnings("ignore", message=".*set_vital.*")
            return self._loader(self.train_set, batch_size, True, sampler, seed, loader_cls=StatefulDataLoader)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The val split's loader; a list, the val split's first, when ``extra_val_splits`` are set up."""
        loaders = [self._val_loader(ds) for ds in (self.val_set, *self.extra_val_sets)]
        return loaders if len(loaders) > 1 else loaders[0]

    def _val_loader(self, ds) -> DataLoader:
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Lightning's default DistributedSampler pads the split to a multiple of the world size, so some
            # images would be scored twice; this one splits it without padding (exact dataset-level metrics).
            # Ranks may then run one batch fewer: safe, as DDP syncs buffers only on the first no-grad forward
            sampler = UnrepeatedDistributedSampler(ds, shuffle=False)
        return self._loader(ds, self.val_batch_size, False, sampler, seed=0)
