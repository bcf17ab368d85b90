"""A data set as tensors: the one way every part of the package reads images and labels.

A :class:`~torch.utils.data.TensorDataset` is indexed directly (no copy of its items); any other
data set of ``(x, label)`` items (a :class:`~diffeoprobe.data.noisy.NoisyDataset`, a ``Subset``, a
user's own) is read item by item and stacked.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset

__all__ = ["head", "labels", "size", "take"]


def take(dataset: Dataset, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(n, C, ...)`` and int64 labels ``(n,)`` of the items at ``index`` (``(n,)`` ints).

    >>> data = TensorDataset(torch.arange(6.0).view(3, 1, 2), torch.tensor([0, 1, 0]))
    >>> x, y = take(data, torch.tensor([2, 0]))
    >>> x[:, 0].tolist(), y.tolist()
    ([[4.0, 5.0], [0.0, 1.0]], [0, 0])
    """
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[:2]
        return x[index], y[index]
    items = [dataset[int(i)] for i in index]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def size(dataset: Dataset) -> int:
    """The number of items (torch's ``Dataset`` type declares no ``__len__``; ours all have one)."""
    return len(dataset)  # type: ignore[arg-type]


def head(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` items (all when ``None`` or larger than the data set), as :func:`take`."""
    n = size(dataset)
    return take(dataset, torch.arange(n if limit is None else min(limit, n)))


def labels(dataset: Dataset) -> torch.Tensor:
    """Every label, int64 ``(N,)`` (without reading the images of a TensorDataset)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    return torch.as_tensor([int(dataset[i][1]) for i in range(size(dataset))])
