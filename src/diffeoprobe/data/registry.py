"""Data sets by name: ``build_dataset("fashionmnist", split="test")``.

A factory is registered with keyword arguments ``split``, ``seed``, optionally ``data_dir``, and its
own options; :func:`build_dataset` checks the options against the factory's signature so that a
misspelt option is a :class:`~diffeoprobe.errors.DiffeoProbeError` listing the accepted ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import TensorDataset

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.registry import Registry
from diffeoprobe.validate import check_choice, check_int

from .idx import BASE_URLS, FASHION_MNIST_DIR, load_idx_dataset
from .scale_detection import scale_detection

__all__ = ["DATASETS", "SPLITS", "available_datasets", "build_dataset"]

DATASETS: Registry[TensorDataset] = Registry("dataset")
SPLITS = ("train", "test")
_COMMON = ("split", "seed", "data_dir")  # passed by build_dataset, not user options


def build_dataset(
    name: str,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    seed: int = 0,
    **options: object,
) -> TensorDataset:
    """Build one split of the data set registered as ``name``.

    Args:
        name: a name from :func:`available_datasets` (case-insensitive).
        split: ``"train"`` or ``"test"``.
        data_dir: where a file-backed data set lives (its own default when ``None``); refused by
            synthetic data sets, which read nothing.
        seed: seeds whatever the data set draws at random (file-backed sets draw nothing).
        **options: the data set's own options, e.g. ``d``, ``xi``, ``gap``, ``dim``, ``task``,
            ``train_size``, ``test_size``, ``value`` for ``"scale-detection"``.

    Returns:
        ``TensorDataset(x, y)``: ``x`` float32 ``(N, C, L)`` or ``(N, C, H, W)``, ``y`` int64 ``(N,)``.

    >>> x, y = build_dataset("scale-detection", split="train", d=16, xi=4, train_size=8)[:]
    >>> tuple(x.shape), y.dtype
    ((8, 1, 16), torch.int64)
    """
    split = check_choice(split, "split", SPLITS)
    seed = check_int(seed, "seed", minimum=0)
    factory = DATASETS.get(name)
    kwargs: dict[str, object] = {"split": split, "seed": seed, **options}
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    _check_options(name, factory, kwargs)
    return factory(**kwargs)


def available_datasets() -> list[str]:
    """The registered data set names, sorted."""
    return DATASETS.available()


def _check_options(name: str, factory: Callable[..., object], kwargs: dict[str, object]) -> None:
    """Refuse keyword arguments that ``factory`` does not take, listing those it does."""
    parameters = inspect.signature(factory).parameters
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        accepted = [p for p in parameters if p not in _COMMON]
        takes = ", ".join(accepted) if accepted else "no options"
        extra = " (it reads no files)" if "data_dir" in unknown else ""
        raise DiffeoProbeError(
            f"dataset {name!r} does not accept {', '.join(unknown)}{extra}; it takes: {takes}"
        )


_HOW_TO_GET = {
    "fashionmnist": (
        "install it with `apt-get install dataset-fashion-mnist` (puts the files in "
        f"{FASHION_MNIST_DIR}) or download the four .gz files from {BASE_URLS['fashionmnist']} "
        "into data_dir"
    ),
    "mnist": f"download the four .gz files from {BASE_URLS['mnist']} into data_dir",
}


@DATASETS.register("fashionmnist")
def fashion_mnist(
    *, split: str = "test", data_dir: str | Path = FASHION_MNIST_DIR, seed: int = 0
) -> TensorDataset:
    """Fashion-MNIST (idx files): images ``(N, 1, 28, 28)`` in ``[0, 1]``, 60000 train / 10000 test.

    ``seed`` is accepted for a uniform interface and unused: the files fix the data.
    """
    return load_idx_dataset(data_dir, split, how_to_get=_HOW_TO_GET["fashionmnist"])


@DATASETS.register("mnist")
def mnist(
    *, split: str = "test", data_dir: str | Path | None = None, seed: int = 0
) -> TensorDataset:
    """MNIST (idx files): images ``(N, 1, 28, 28)`` in ``[0, 1]``, 60000 train / 10000 test.

    There is no system-wide copy to default to, so ``data_dir`` must be given. ``seed`` is unused.
    """
    if data_dir is None:
        raise DiffeoProbeError(
            "dataset 'mnist' needs data_dir, the directory holding its idx files; "
            + _HOW_TO_GET["mnist"]
        )
    return load_idx_dataset(data_dir, split, how_to_get=_HOW_TO_GET["mnist"])


DATASETS.register("scale-detection")(scale_detection)
