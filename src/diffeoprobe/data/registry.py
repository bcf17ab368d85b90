"""Data sets by name: ``build("fashionmnist", split="test")``, ``available()``.

A factory is registered with keyword arguments ``split``, ``seed``, optionally ``data_dir``, and its
own options; :func:`build` checks the options against the factory's signature so that a misspelt
option is a :class:`~diffeoprobe.errors.DiffeoProbeError` listing the accepted ones.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from torch.utils.data import Dataset, TensorDataset

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.registry import Registry
from diffeoprobe.validate import MAX_AMPLITUDE, check_choice, check_positive, check_seed

from .cifar import CIFAR10_ARCHIVE, CIFAR10_DIR, load_cifar10
from .download import DATA_CACHE, fetch
from .folder import image_folder, tensor_file
from .idx import BASE_URLS, FASHION_MNIST_DIR, idx_remote_files, load_idx_dataset
from .noisy import NOISE_MODES, NoisyDataset, add_fixed_noise, mix_seed
from .scale_detection import scale_detection
from .svhn import load_svhn
from .transforms import NORMALIZATION
from .transforms import normalize as normalize_images

__all__ = [
    "DATASETS",
    "SPLITS",
    "WRAPPER_OPTIONS",
    "available",
    "build",
    "default_data_dir",
    "missing_files",
]

DATASETS: Registry[TensorDataset] = Registry("dataset", passed=("split", "seed", "data_dir"))
SPLITS = ("train", "test")
WRAPPER_OPTIONS = ("normalize", "noise_norm", "noise_mode")  # build applies them to every data set


def build(
    name: str,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    seed: int = 0,
    normalize: bool = False,
    noise_norm: float = 0.0,
    noise_mode: str = "fixed",
    **options: object,
) -> Dataset:
    """Build one split of the data set registered as ``name``.

    Args:
        name: a name from :func:`available` (case-insensitive).
        split: ``"train"`` or ``"test"``.
        data_dir: where a file-backed data set lives (its own default when ``None``); refused by
            synthetic data sets, which read nothing.
        seed: seeds whatever the data set draws at random (file-backed sets draw nothing) and the
            added noise (with the split, so that train and test noise differ).
        normalize: subtract the per-channel mean and divide by the std of the training split
            (:data:`~diffeoprobe.data.transforms.NORMALIZATION`; image data sets only).
        noise_norm: add white noise of total norm ``noise_norm`` to every image, after
            ``normalize`` (docs/science.md section 8; :mod:`~diffeoprobe.data.noisy`); ``0`` adds none.
        noise_mode: ``"fixed"`` (one draw per image, every epoch) or ``"fresh"`` (a new draw each
            epoch, chosen with ``set_epoch``).
        **options: the data set's own options: ``download`` for the file-backed sets (fetch missing
            official files); ``d``, ``xi``, ``gap``, ``dim``, ``task``, ``train_size``,
            ``test_size``, ``value`` for ``"scale-detection"``.

    Returns:
        ``TensorDataset(x, y)``: ``x`` float32 ``(N, C, L)`` or ``(N, C, H, W)``, ``y`` int64
        ``(N,)``; with ``noise_mode="fresh"`` and ``noise_norm > 0`` a
        :class:`~diffeoprobe.data.noisy.NoisyDataset` over it instead, whose items ``(x, y)`` are
        the same shapes and whose ``set_epoch(epoch)`` picks the epoch's noise.

    >>> x, y = build("scale-detection", split="train", d=16, xi=4, train_size=8)[:]
    >>> tuple(x.shape), y.dtype
    ((8, 1, 16), torch.int64)
    """
    split = check_choice(split, "split", SPLITS)
    seed = check_seed(seed)
    noise_norm = check_positive(noise_norm, "noise_norm", allow_zero=True, maximum=MAX_AMPLITUDE)
    noise_mode = check_choice(noise_mode, "noise_mode", NOISE_MODES)
    if not isinstance(normalize, bool):
        raise DiffeoProbeError(f"normalize must be true or false, got {normalize!r}")
    factory = DATASETS.get(name)
    key = name.lower()
    if normalize and key not in NORMALIZATION:
        raise DiffeoProbeError(
            f"normalize=True: dataset {name!r} has no published mean and std; it is offered for "
            f"{', '.join(sorted(NORMALIZATION))}"
        )
    reads_files = "data_dir" in inspect.signature(factory).parameters
    if data_dir is not None and not reads_files:
        raise DiffeoProbeError(f"dataset {name!r} reads no files: it takes no data_dir")
    DATASETS.check_options(
        name,
        options,
        extra=WRAPPER_OPTIONS,
        note=" (it reads no files)" if not reads_files and "download" in options else "",
    )
    kwargs: dict[str, object] = {"split": split, "seed": seed, **options}
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    tensors = factory(**kwargs)

    if normalize:
        x, *rest = tensors.tensors
        tensors = TensorDataset(normalize_images(x, *NORMALIZATION[key]), *rest)
    data: Dataset = tensors
    if noise_norm > 0:
        noise_seed = mix_seed(seed, SPLITS.index(split))
        if noise_mode == "fixed":
            data = add_fixed_noise(tensors, noise_norm, seed=noise_seed)
        else:
            data = NoisyDataset(tensors, noise_norm, mode="fresh", seed=noise_seed)
    return data


def available() -> list[str]:
    """The registered data set names, sorted."""
    return DATASETS.available()


def default_data_dir(name: str) -> Path:
    """Where a file-backed data set lives unless ``data_dir`` says otherwise:
    ``~/.cache/diffeoprobe/<name>`` (:data:`~diffeoprobe.data.download.DATA_CACHE`).
    """
    return (DATA_CACHE / name).expanduser()


def missing_files(name: str, data_dir: str | Path | None = None) -> str | None:
    """Without reading them: which files of the file-backed data set ``name`` (both splits) are
    absent from ``data_dir`` (or its default directory), as one line; ``None`` when none is (or
    the data set reads no files). For refusing, once, a sweep none of whose runs could load it.
    """
    key = str(name).lower()
    if key not in ("mnist", "fashionmnist", "cifar10", "svhn"):
        return None
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
    elif key == "fashionmnist" and FASHION_MNIST_DIR.is_dir():
        directory = FASHION_MNIST_DIR
    else:
        directory = default_data_dir(key)
    if key in ("mnist", "fashionmnist"):
        absent = [
            r.name
            for split in SPLITS
            for r in idx_remote_files(key, split)
            if not _idx_present(directory, r.name)
        ]
    elif key == "cifar10":
        present = (directory / CIFAR10_ARCHIVE).is_file() or (directory / CIFAR10_DIR).is_dir()
        absent = [] if present else [CIFAR10_ARCHIVE]
    else:
        absent = [
            f"{split}_32x32.mat"
            for split in SPLITS
            if not (directory / f"{split}_32x32.mat").is_file()
        ]
    if not absent:
        return None
    return (
        f"dataset {name!r}: {', '.join(absent)} missing in {directory}; put them there, or set "
        "download: true in its options (command line: -d download=true)"
    )


def _idx_dataset(
    name: str,
    split: str,
    data_dir: str | Path | None,
    default: Path,
    download: bool,
    note: str = "",
) -> TensorDataset:
    """MNIST-format data: fetch the split's missing ``.gz`` files if asked, then load them."""
    directory = default if data_dir is None else Path(data_dir).expanduser()
    remotes = idx_remote_files(name, split)
    if download:
        fetch(directory, [r for r in remotes if not _idx_present(directory, r.name)])
    wanted = ", ".join(f"{r.name} (md5 {r.md5})" for r in remotes)
    how_to_get = (
        f"put {wanted} from {BASE_URLS[name]} into {directory}, or pass download=True (command "
        f"line: -d download=true) to fetch them{note}"
    )
    if data_dir is None:
        how_to_get = (
            f"dataset {name!r} needs data_dir, the directory holding its idx files, when they are "
            f"not in its default directory {directory}; {how_to_get}"
        )
    return load_idx_dataset(directory, split, how_to_get=how_to_get)


def _idx_present(directory: Path, gz_name: str) -> bool:
    return (directory / gz_name).is_file() or (directory / gz_name.removesuffix(".gz")).is_file()


@DATASETS.register("fashionmnist")
def fashion_mnist(
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    seed: int = 0,
    download: bool = False,
) -> TensorDataset:
    """Fashion-MNIST (idx files): images ``(N, 1, 28, 28)`` in ``[0, 1]``, 60000 train / 10000 test.

    ``data_dir`` defaults to the system copy :data:`~diffeoprobe.data.idx.FASHION_MNIST_DIR` when it
    is installed, else to :func:`default_data_dir`. ``download`` fetches missing files (into a
    writable ``data_dir``). ``seed`` is accepted for a uniform interface and unused.
    """
    default = FASHION_MNIST_DIR if FASHION_MNIST_DIR.is_dir() else default_data_dir("fashionmnist")
    note = (
        f"; or install it with `apt-get install dataset-fashion-mnist` (into {FASHION_MNIST_DIR})"
    )
    return _idx_dataset("fashionmnist", split, data_dir, default, download, note)


@DATASETS.register("mnist")
def mnist(
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    seed: int = 0,
    download: bool = False,
) -> TensorDataset:
    """MNIST (idx files): images ``(N, 1, 28, 28)`` in ``[0, 1]``, 60000 train / 10000 test.

    ``data_dir`` defaults to :func:`default_data_dir` (``~/.cache/diffeoprobe/mnist``); ``download``
    fetches missing files there. ``seed`` is unused.
    """
    return _idx_dataset("mnist", split, data_dir, default_data_dir("mnist"), download)


@DATASETS.register("cifar10")
def cifar10(
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    seed: int = 0,
    download: bool = False,
) -> TensorDataset:
    """CIFAR-10 (official python batches): images ``(N, 3, 32, 32)`` in ``[0, 1]``, 50000 train /
    10000 test; see :func:`~diffeoprobe.data.cifar.load_cifar10`.

    ``data_dir`` defaults to :func:`default_data_dir` (``~/.cache/diffeoprobe/cifar10``) and holds
    ``cifar-10-python.tar.gz`` or the extracted ``cifar-10-batches-py/``. ``seed`` is unused.
    """
    directory = default_data_dir("cifar10") if data_dir is None else data_dir
    return load_cifar10(directory, split, download=download)


@DATASETS.register("svhn")
def svhn(
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    seed: int = 0,
    download: bool = False,
) -> TensorDataset:
    """SVHN cropped digits (official ``.mat`` files): images ``(N, 3, 32, 32)`` in ``[0, 1]``, labels
    ``0..9``, 73257 train / 26032 test; see :func:`~diffeoprobe.data.svhn.load_svhn`.

    ``data_dir`` defaults to :func:`default_data_dir` (``~/.cache/diffeoprobe/svhn``). ``seed`` is
    unused.
    """
    directory = default_data_dir("svhn") if data_dir is None else data_dir
    return load_svhn(directory, split, download=download)


DATASETS.register("scale-detection")(scale_detection)
DATASETS.register("folder")(image_folder)
DATASETS.register("tensors")(tensor_file)
