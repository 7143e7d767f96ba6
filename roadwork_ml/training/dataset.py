"""Streaming images: a Dataset that decodes stored images in DataLoader workers.

No split is held in memory: each item is read from disk, checked against its manifest
sha256 (optional), decoded with the same safe decoder as ingest
(:func:`roadwork_ml.data.decode.safe_open`: bombs, truncation, non-images raise
:class:`~roadwork_ml.data.decode.DecodeError`) and turned into a uint8 tensor.

A stored image was already sanitised at ingest, so a failure here means the store changed
or broke: it is never skipped. The worker raises :class:`StreamDecodeError` naming the file
and the quarantine reason, and the DataLoader re-raises it in the main process. A worker
that dies without raising (segfault, OOM kill) is caught by :func:`iterate_batches`, which
names the image that worker was decoding (each worker publishes its in-flight index in
shared memory).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from roadwork_ml.config import DecodeConfig, LoaderConfig
from roadwork_ml.contracts import Split
from roadwork_ml.data.decode import DecodeError, safe_open

__all__ = [
    "ImageDataset",
    "ImageTransform",
    "ManifestImageDataset",
    "StreamDecodeError",
    "TensorImageDataset",
    "build_loader",
    "iterate_batches",
    "open_rows_dataset",
    "open_split_dataset",
    "resize_uint8",
]

# (uint8 [3, H, W] RGB at stored size, sample seed) -> uint8 [3, S, S]
ImageTransform = Callable[[torch.Tensor, int], torch.Tensor]

# The in-flight slots: one int64 per worker; -1 = idle. Sized for any sane worker count.
_MAX_WORKERS = 256


class StreamDecodeError(RuntimeError):
    """A stored image could not be read back. ``path`` and ``reason`` (a quarantine reason) say which and why."""

    def __init__(self, path: str, reason: str | None = None, index: int = -1) -> None:
        if reason is None:  # re-raised by the DataLoader from a worker's formatted message
            self.path, self.reason, self.index = "", path, index
            super().__init__(path)
            return
        self.path, self.reason, self.index = path, reason, index
        super().__init__(f"image {index} ({path}) cannot be decoded: {reason}")

    def __reduce__(self):  # picklable across the worker -> main process queue
        return (StreamDecodeError, (self.path, self.reason, self.index))


def resize_uint8(img: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[3, H, W]`` → uint8 ``[3, size, size]``, PIL bilinear (the in-memory path's resize, bit-identical)."""
    if tuple(img.shape[-2:]) == (size, size):
        return img
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    pil = pil.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one (epoch, image): augmentation does not depend on workers or batching."""
    return (
        int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(1, np.uint64)[0])
        >> 1
    )


class ImageDataset(Dataset):
    """Shared parts: labels/sources kept as numpy (no decoding), epoch and in-flight slots in shared memory."""

    def __init__(
        self,
        labels: Sequence[int],
        split: Split,
        size: int,
        transform: ImageTransform | None,
        seed: int,
        sources: Sequence[str] | None,
    ):
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.sources = np.asarray(sources if sources is not None else ["unknown"] * len(self.labels)).astype(str)
        if self.sources.shape != self.labels.shape:
            raise ValueError(f"{len(self.sources)} sources for {len(self.labels)} labels")
        self.split = Split(split)
        self.size = int(size)
        self.transform = transform
        self.seed = int(seed)
        # Shared memory: persistent workers see set_epoch, and the main process sees what each worker decodes.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._in_flight = torch.full((_MAX_WORKERS,), -1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def with_size(self, size: int) -> ImageDataset:
        """The same rows (shared decoded data or paths) with items of ``size`` px."""
        out = copy.copy(self)
        out.size = int(size)
        return out

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating a DataLoader over this dataset: seeds per-sample augmentation."""
        self._epoch[0] = int(epoch)

    def in_flight(self) -> list[int]:
        """Indices the workers are decoding right now (for crash reports)."""
        return [int(i) for i in self._in_flight.tolist() if i >= 0]

    def describe(self, index: int) -> str:
        return f"#{index}"

    def _raw(self, index: int) -> torch.Tensor | Image.Image:
        """uint8 ``[3, H, W]`` or an RGB PIL image at its stored size."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        """``(uint8 [3, size, size], label, index)``."""
        info = get_worker_info()
        slot = info.id if info is not None else None
        if slot is not None:
            self._in_flight[slot] = int(index)
        img = self._raw(int(index))
        if isinstance(img, Image.Image):  # resize before leaving PIL: one copy, as load_image_tensor
            if self.transform is None and img.size != (self.size, self.size):
                img = img.resize((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=None)
            img = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        if self.transform is not None:
            img = self.transform(img, sample_seed(self.seed, int(self._epoch[0]), int(index)))
            if img.dtype != torch.uint8 or tuple(img.shape) != (3, self.size, self.size):
                raise ValueError(
                    f"transform returned {img.dtype} {tuple(img.shape)}, expected uint8 (3, {self.size}, {self.size})"
                )
        else:
            img = resize_uint8(img, self.size)
        if slot is not None:  # left set on an exception: the error names the image anyway
            self._in_flight[slot] = -1
        return img, int(self.labels[index]), int(index)


class ManifestImageDataset(ImageDataset):
    """Images of a split manifest, decoded on access.

    Args:
        paths: absolute image paths ``[N]``; labels: 0/1 ``[N]``; split: the split they come from.
        size: output side in pixels (the model's input); decode: the store's DecodeConfig
            (its limits apply again here). sha256: expected digests ``[N]``; when given each
            file is hashed before decoding. transform: optional per-sample augmentation that
            returns ``[3, size, size]`` uint8 (it does the resize); without one the image is
            resized with PIL bilinear, as the in-memory path did. seed: augmentation seed.

    Paths are held in one numpy byte array, not a Python list, so forked workers do not
    copy the whole list on access (refcount writes).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int],
        split: Split,
        size: int,
        decode: DecodeConfig,
        sha256: Sequence[str] | None = None,
        transform: ImageTransform | None = None,
        seed: int = 0,
        sources: Sequence[str] | None = None,
    ):
        super().__init__(labels, split, size, transform, seed, sources)
        if len(paths) != len(self.labels):
            raise ValueError(f"{len(paths)} paths for {len(self.labels)} labels")
        self._paths = np.array([str(p).encode() for p in paths], dtype=np.bytes_)
        self._sha = np.array([s.encode() for s in sha256], dtype=np.bytes_) if sha256 is not None else None
        self.decode = decode

    @classmethod
    def from_rows(
        cls,
        rows,
        resolve: Callable[[str, str], Path],
        split: Split,
        size: int,
        decode: DecodeConfig,
        verify: bool = True,
        **kw,
    ) -> ManifestImageDataset:
        """From split rows (a DataFrame with ``manifest_dir``, ``path``, ``label``, ``sha256``, ``source``);
        ``resolve(manifest_dir, path)`` gives the absolute file path (e.g. ``ArtifactStore.path``)."""
        paths = [resolve(m, p) for m, p in zip(rows["manifest_dir"], rows["path"], strict=False)]
        sha = list(rows["sha256"]) if verify else None
        return cls(
            paths, rows["label"].to_numpy(), split, size, decode, sha256=sha, sources=rows["source"].to_numpy(), **kw
        )

    def subset(self, indices: Sequence[int]) -> ManifestImageDataset:
        """Rows ``indices`` as a new dataset of the same split (e.g. the folds of out-of-fold scoring)."""
        idx = np.asarray(indices, dtype=np.int64)
        out = ManifestImageDataset(
            [p.decode() for p in self._paths[idx]],
            self.labels[idx],
            self.split,
            self.size,
            self.decode,
            sha256=[d.decode() for d in self._sha[idx]] if self._sha is not None else None,
            transform=self.transform,
            seed=self.seed,
            sources=self.sources[idx],
        )
        return out

    def path(self, index: int) -> str:
        return self._paths[index].decode()

    def describe(self, index: int) -> str:
        return self.path(index)

    def _raw(self, index: int) -> Image.Image:
        path = self.path(index)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise StreamDecodeError(path, f"unreadable: {type(exc).__name__}: {exc}", index) from None
        if self._sha is not None:
            digest = hashlib.sha256(data).hexdigest()
            if digest != self._sha[index].decode():
                raise StreamDecodeError(
                    path, f"sha256_mismatch: {digest} != manifest {self._sha[index].decode()}", index
                )
        try:
            return safe_open(data, self.decode)
        except DecodeError as exc:
            raise StreamDecodeError(path, str(exc), index) from None


class TensorImageDataset(ImageDataset):
    """The in-memory path behind the same interface: uint8 ``[N, 3, H, W]`` already decoded."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: Sequence[int] | torch.Tensor,
        split: Split,
        size: int | None = None,
        transform: ImageTransform | None = None,
        seed: int = 0,
        sources: Sequence[str] | None = None,
    ):
        labels = labels.numpy() if isinstance(labels, torch.Tensor) else labels
        super().__init__(labels, split, int(size or images.shape[-1]), transform, seed, sources)
        if images.shape[0] != len(self.labels):
            raise ValueError(f"{split}: {images.shape[0]} images but {len(self.labels)} labels")
        self.images = images

    def subset(self, indices: Sequence[int]) -> TensorImageDataset:
        """Rows ``indices`` as a new dataset of the same split."""
        idx = np.asarray(indices, dtype=np.int64)
        return TensorImageDataset(
            self.images[torch.from_numpy(idx)],
            self.labels[idx],
            self.split,
            self.size,
            transform=self.transform,
            seed=self.seed,
            sources=self.sources[idx],
        )

    def _raw(self, index: int) -> torch.Tensor:
        img = self.images[index]
        return img if self.transform is not None else resize_uint8(img, self.size)


def build_loader(
    dataset: Dataset,
    cfg: LoaderConfig,
    batch_size: int,
    shuffle: bool = False,
    sampler: Sampler | None = None,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with the profile's worker settings; ``shuffle`` uses a generator seeded with ``seed``.

    ``prefetch_factor`` and ``persistent_workers`` apply only with workers (torch rejects them otherwise).
    """
    if cfg.num_workers > _MAX_WORKERS:
        raise ValueError(f"num_workers {cfg.num_workers} > {_MAX_WORKERS}")
    kwargs: dict = {}
    if cfg.num_workers > 0:
        kwargs.update(prefetch_factor=cfg.prefetch_factor, persistent_workers=cfg.persistent_workers)
    gen = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(),
        drop_last=drop_last,
        generator=gen,
        **kwargs,
    )


def open_split_dataset(
    paths: Sequence[str | Path],
    labels: Sequence[int],
    split: Split,
    size: int,
    decode: DecodeConfig,
    loader: LoaderConfig,
    sha256: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    cache_side: int | None = None,
) -> ImageDataset:
    """The dataset an asset should use for a split: streamed from disk, or, when its decoded
    tensor (N x 3 x side x side bytes) fits ``loader.in_memory_max_gb``, decoded once through the
    same workers and safe decoder and kept as a :class:`TensorImageDataset`.

    ``cache_side``: side the cached images are kept at (default ``size``; the validator policy
    wants more pixels than the model input). Items are always ``size`` px.
    """
    stream = ManifestImageDataset(paths, labels, split, size, decode, sha256=sha256, sources=sources)
    side = int(cache_side or size)
    if len(paths) * 3 * side * side > loader.in_memory_max_gb * 1e9:
        return stream
    source = (
        stream
        if side == size
        else ManifestImageDataset(paths, labels, split, side, decode, sha256=sha256, sources=sources)
    )
    images = torch.empty((len(paths), 3, side, side), dtype=torch.uint8)
    once = loader.model_copy(update={"persistent_workers": False})
    for batch in iterate_batches(build_loader(source, once, batch_size=64)):
        images[batch.indices] = batch.images
    return TensorImageDataset(images, stream.labels, split, size, sources=stream.sources)


@dataclass
class Batch:
    images: torch.Tensor  # uint8 [B, 3, S, S]
    labels: torch.Tensor  # int64 [B]
    indices: torch.Tensor  # int64 [B], rows of the dataset


def open_rows_dataset(
    paths: Sequence[str | Path],
    rows: Any,
    split: Split,
    size: int,
    decode: DecodeConfig,
    loader: LoaderConfig,
    cache_side: int | None = None,
) -> ImageDataset:
    """:func:`open_split_dataset` over rows of the splits table (a DataFrame with ``label``,
    ``sha256`` and ``source`` columns) whose stored files are ``paths``."""
    return open_split_dataset(
        paths,
        rows["label"].to_numpy(),
        split,
        size,
        decode,
        loader,
        sha256=list(rows["sha256"]),
        sources=rows["source"].to_numpy(),
        cache_side=cache_side,
    )


def iterate_batches(loader: DataLoader) -> Iterator[Batch]:
    """Iterate ``loader``; a worker that dies (no Python exception) becomes a :class:`StreamDecodeError`
    naming the image(s) it was decoding. Decode errors raised in a worker propagate unchanged."""
    dataset = loader.dataset
    batches = None
    try:
        try:
            batches = iter(loader)
            for images, labels, indices in batches:
                yield Batch(images, labels, indices)
        except (EOFError, ConnectionError) as exc:  # the worker died while handing over a batch
            raise RuntimeError(f"DataLoader worker died while sending a batch ({type(exc).__name__})") from exc
    except StreamDecodeError:
        _stop_workers(batches)
        raise
    except RuntimeError as exc:
        _stop_workers(batches)
        text = str(exc)
        if "DataLoader worker" not in text or not isinstance(dataset, ImageDataset):
            raise
        busy = dataset.in_flight()
        names = ", ".join(dataset.describe(i) for i in busy) or "unknown image"
        index = busy[0] if busy else -1
        raise StreamDecodeError(names, f"worker_crashed: {text}", index) from exc


def _stop_workers(batches: Iterator | None) -> None:
    """Shut a failed loader iterator's workers down now. Until then torch's SIGCHLD handler still
    watches the dead worker's pid and raises its own RuntimeError wherever the main thread happens
    to be (seen in CI while pytest formatted the named error), which would replace the error that
    names the image."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # multi-process iterators only
    if shutdown is None:
        return
    with contextlib.suppress(RuntimeError):  # that handler firing during the teardown: its finally drops the pids
        shutdown()


def content_checksum(images: torch.Tensor) -> int:
    """A cheap adler32 of a uint8 batch (used by the bench to show both paths deliver the same bytes)."""
    return zlib.adler32(images.contiguous().numpy().tobytes())
