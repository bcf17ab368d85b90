"""The scale-detection tasks (docs/science.md section 6): is the distance between two active pixels
smaller than a scale ``xi``?

Each input is a 1D signal of length ``d`` (or a ``d x d`` image) that is zero except at two distinct
positions, both set to ``value``. The data set is every unordered pair of distinct positions, labelled
by a task rule, balanced between the classes, shuffled and split into train and test with one seed.

Label convention: ``1`` is the paper's "+1" class (close / same block), ``0`` is its "-1" class, so
the labels work with cross-entropy as they are and with a hinge loss as ``2 * y - 1``.
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.limits import check_memory
from diffeoprobe.validate import check_choice, check_int, check_positive

__all__ = ["pair_labels", "scale_detection"]

_EXCLUDED = -1  # the label of a task-1 pair inside the gap, dropped from the data set


def pair_labels(
    first: torch.Tensor, second: torch.Tensor, *, dim: int, task: int, d: int, xi: int, gap: int
) -> torch.Tensor:
    """Label pairs of flat positions by the task rule (``1`` close / same block, ``0`` not, ``-1``
    excluded).

    Positions are flat indices in ``[0, d)`` (1D) or ``[0, d * d)`` (2D, row-major: ``row = p // d``,
    ``col = p % d``); ``first`` and ``second`` have the same shape and the result has it too (int64).

    - Task 1: ``1`` if the distance is ``< xi - gap``, ``0`` if it is ``>= xi + gap``, ``-1`` in
      between. 1D uses the periodic distance ``min(|a - b|, d - |a - b|)``; 2D uses the Euclidean
      distance between the pixels (not periodic), compared exactly through squared integers.
    - Task 2: ``1`` if both positions fall in the same block of side ``xi`` (``p // xi`` equal; in 2D
      both the row block and the column block), else ``0``.

    >>> zeros, others = torch.zeros(4, dtype=torch.int64), torch.tensor([2, 3, 5, 127])
    >>> pair_labels(zeros, others, dim=1, task=1, d=128, xi=4, gap=1)  # 127 is 1 away periodically
    tensor([ 1, -1,  0,  1])
    """
    if dim == 1:
        coords_a, coords_b = first[..., None], second[..., None]
    else:
        coords_a = torch.stack((first // d, first % d), dim=-1)
        coords_b = torch.stack((second // d, second % d), dim=-1)

    if task == 2:
        same_block = (coords_a // xi == coords_b // xi).all(dim=-1)
        return same_block.to(torch.int64)

    delta = (coords_a - coords_b).abs()
    if dim == 1:
        delta = torch.minimum(delta, d - delta)
    squared = (delta * delta).sum(dim=-1)
    labels = torch.full_like(squared, _EXCLUDED)
    labels[squared < (xi - gap) ** 2] = 1
    labels[squared >= (xi + gap) ** 2] = 0
    return labels


def scale_detection(
    *,
    dim: int = 1,
    task: int = 1,
    d: int = 128,
    xi: int = 32,
    gap: int = 0,
    split: str = "train",
    train_size: int | None = 1024,
    test_size: int | None = None,
    seed: int = 0,
    value: float = 1.0,
) -> TensorDataset:
    """One split of a scale-detection data set (docs/science.md section 6).

    All unordered pairs of distinct positions are labelled by :func:`pair_labels` (task 1: periodic
    distance in 1D, Euclidean in 2D, against ``xi -/+ gap``; task 2: same block of side ``xi``).
    The larger class is subsampled at random to the size of the smaller, the balanced set is
    shuffled, and its first ``train_size`` examples form the train split and the next ``test_size``
    the test split. Both splits come from the same permutation, so one ``seed`` gives disjoint
    train and test sets whichever split is asked for.

    Args:
        dim: 1 (signals of length ``d``) or 2 (``d x d`` images).
        task: 1 (distance below the scale) or 2 (same block).
        d: side length in pixels, ``>= 2``.
        xi: the scale in pixels, ``1 <= xi <= d``.
        gap: task 1 only: pairs with ``xi - gap <= distance < xi + gap`` are left out; ``>= 0`` and
            ``xi - gap >= 1``.
        split: ``"train"`` or ``"test"``.
        train_size: number of training examples; ``None`` for every example not in the test set.
        test_size: number of test examples; ``None`` for every example after the training set.
        seed: seeds the class balancing and the shuffle (a private generator; global RNG untouched).
        value: the value of both active pixels, ``> 0``.

    Returns:
        ``TensorDataset(x, y)``: ``x`` float32 of shape ``(N, 1, d)`` (1D) or ``(N, 1, d, d)`` (2D),
        zero except ``value`` at the two positions; ``y`` int64 of shape ``(N,)``, ``1`` for the
        "+1" class (close / same block) and ``0`` for the "-1" class.

    Raises:
        DiffeoProbeError: a parameter out of range (named), a class with no pair, or sizes asking for
            more examples than the balanced set holds (the message says how many there are).

    >>> x, y = scale_detection(d=16, xi=4, train_size=20, split="train")[:]
    >>> x.shape, y.shape, int(y.sum()), x.sum(dim=(1, 2)).unique().tolist()
    (torch.Size([20, 1, 16]), torch.Size([20]), 9, [2.0])
    """
    dim = check_int(dim, "dim", minimum=1, maximum=2)
    task = check_int(task, "task", minimum=1, maximum=2)
    d = check_int(d, "d", minimum=2)
    xi = check_int(xi, "xi", minimum=1, maximum=d)
    gap = check_int(gap, "gap", minimum=0)
    if task == 1 and xi - gap < 1:
        raise DiffeoProbeError(f"gap must be <= xi - 1 = {xi - 1} for task 1, got gap={gap}")
    split = check_choice(split, "split", ("train", "test"))
    if train_size is not None:
        train_size = check_int(train_size, "train_size", minimum=1)
    if test_size is not None:
        test_size = check_int(test_size, "test_size", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    value = check_positive(value, "value")

    _check_memory(dim, d, split, train_size, test_size)
    first, second = torch.triu_indices(d**dim, d**dim, offset=1)
    labels = pair_labels(first, second, dim=dim, task=task, d=d, xi=xi, gap=gap)
    positive = torch.nonzero(labels == 1).squeeze(1)
    negative = torch.nonzero(labels == 0).squeeze(1)
    per_class = min(len(positive), len(negative))
    if per_class == 0:
        empty = "1 (close / same block)" if len(positive) == 0 else "0 (far / other block)"
        raise DiffeoProbeError(
            f"no pair of positions has label {empty} for dim={dim}, task={task}, d={d}, xi={xi}, "
            f"gap={gap}: change xi or gap"
        )

    generator = torch.Generator().manual_seed(seed)
    larger, smaller = (
        (positive, negative) if len(positive) > len(negative) else (negative, positive)
    )
    larger = larger[torch.randperm(len(larger), generator=generator)[:per_class]]
    kept = torch.cat((smaller, larger))
    kept = kept[torch.randperm(len(kept), generator=generator)]

    start, stop = _split_bounds(split, len(kept), train_size, test_size)
    chosen = kept[start:stop]
    x = torch.zeros(len(chosen), d**dim, dtype=torch.float32)
    rows = torch.arange(len(chosen))
    x[rows, first[chosen]] = value
    x[rows, second[chosen]] = value
    return TensorDataset(x.reshape(len(chosen), 1, *(d,) * dim), labels[chosen])


def _check_memory(
    dim: int, d: int, split: str, train_size: int | None, test_size: int | None
) -> None:
    """Refuse a data set whose pairs or signals would pass the memory limit, before building them.

    Every unordered pair of the ``N = d^dim`` positions is indexed and labelled (int64: the two
    indices, coordinates, distances, labels, class lists, permutations; about 12 numbers a pair),
    and each chosen example is a float32 signal of ``N`` values.
    """
    positions = float(d) ** dim
    pairs = positions * (positions - 1) / 2
    check_memory(
        "d", 96 * pairs, f"labelling the {pairs:.3g} pairs of positions (d={d}, dim={dim})"
    )
    if split == "train":
        examples, name = (pairs if train_size is None else min(pairs, train_size)), "train_size"
    else:
        examples, name = (pairs if test_size is None else min(pairs, test_size)), "test_size"
    check_memory(
        f"{name} and d" if examples < pairs else "d",
        96 * pairs + 4 * examples * positions,
        f"{examples:.3g} {split} signals of {positions:.3g} values (d={d}, dim={dim})",
    )


def _split_bounds(
    split: str, available: int, train_size: int | None, test_size: int | None
) -> tuple[int, int]:
    """``[start, stop)`` of ``split`` in the shuffled balanced set of ``available`` examples."""
    reserved = test_size or 0
    if train_size is None and reserved >= available:
        raise DiffeoProbeError(
            f"test_size={test_size} leaves no training examples: only {available} balanced "
            f"examples exist for these parameters"
        )
    n_train = available - reserved if train_size is None else train_size
    if n_train + reserved > available:
        name = "train_size" if test_size is None else "train_size + test_size"
        raise DiffeoProbeError(
            f"{name} = {n_train + reserved} exceeds the {available} balanced examples that exist "
            f"for these parameters"
        )
    if split == "train":
        return 0, n_train
    n_test = available - n_train if test_size is None else test_size
    if n_test == 0:
        raise DiffeoProbeError(
            f"the test split is empty: train_size={n_train} uses all {available} balanced "
            f"examples; lower train_size"
        )
    return n_train, n_train + n_test
