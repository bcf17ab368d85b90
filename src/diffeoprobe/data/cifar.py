"""Reader for CIFAR-10's official "python version" (https://www.cs.toronto.edu/~kriz/cifar.html).

The archive ``cifar-10-python.tar.gz`` holds a directory ``cifar-10-batches-py/`` with the pickled
batches ``data_batch_1`` .. ``data_batch_5`` (10000 training images each), ``test_batch`` (10000) and
``batches.meta`` (label names, not needed here). Each batch is a dict with ``b"data"``, a uint8 array
``(N, 3072)`` whose rows are the red, green then blue ``32 x 32`` planes in row-major order, and
``b"labels"``, a list of ``N`` ints in ``0..9``.

The batches are pickles, and unpickling can run any code a file names; so they are read by
:class:`RestrictedUnpickler`, which resolves only the few globals a numpy array needs and refuses
every other one. Batches are read from the extracted directory or straight from the archive (nothing
is extracted to disk).
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import TensorDataset

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.validate import check_choice

from .download import RemoteFile, fetch, missing_files_error

try:  # numpy >= 2 moved the module; old pickles still name numpy.core.multiarray
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]  # numpy 1.x's name

__all__ = [
    "CIFAR10_ARCHIVE",
    "CIFAR10_BATCHES",
    "CIFAR10_DIR",
    "CIFAR10_REMOTE",
    "ForbiddenGlobal",
    "RestrictedUnpickler",
    "load_cifar10",
    "read_cifar_batch",
]

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
#: The official archive and its md5 as published on the CIFAR page (also torchvision's ``tgz_md5``).
CIFAR10_REMOTE = RemoteFile(
    CIFAR10_ARCHIVE,
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "c58f30108f718f92721af3b95e74349a",
)
#: split -> the batch files that make it up, in order.
CIFAR10_BATCHES: Mapping[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_SIDE, _CHANNELS, _NUM_CLASSES = 32, 3, 10
_PIXELS = _CHANNELS * _SIDE * _SIDE  # 3072 bytes per image row
_PIXEL_MAX = 255.0


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``: how Python 3 writes ``bytes`` under pickle protocol 2.

    Only the latin-1 round trip that :mod:`pickle` itself emits is allowed, so that the codec
    machinery (which can import modules by name) stays out of reach.
    """
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"_codecs.encode is only allowed as encode(str, 'latin1'), got encoding {encoding!r}"
        )
    return text.encode("latin-1")


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle names a global outside :attr:`RestrictedUnpickler.ALLOWED`."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, bytes, strings, numbers and numpy arrays, nothing else.

    The official CIFAR batches (written by Python 2) name exactly three globals, the pieces of a numpy
    array's pickle: ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``
    (``numpy._core.multiarray`` when the file was written with numpy 2). Files re-pickled by Python 3
    with protocol 2 also name ``_codecs.encode`` for every ``bytes`` object, which is served by a
    latin-1-only stand-in. Any other global (``os.system``, ``builtins.eval``, ...) raises
    :class:`ForbiddenGlobal` (a :class:`pickle.UnpicklingError`) before anything is called.
    """

    ALLOWED: Mapping[tuple[str, str], Callable[..., object]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Callable[..., object]:
        """The allowed global ``module.name``; any other raises :class:`ForbiddenGlobal`."""
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise ForbiddenGlobal(f"forbidden global {module}.{name}") from None


def read_cifar_batch(raw: bytes, source: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle one CIFAR batch safely and check it.

    Args:
        raw: the pickled bytes of the batch file.
        source: where they came from (a path, or ``archive:member``), for error messages.

    Returns:
        ``(data, labels)``: uint8 ``(N, 3072)`` and int64 ``(N,)`` with labels in ``0..9``.

    Raises:
        DiffeoProbeError: the pickle names a forbidden global (the message names it), is corrupt or
            truncated, is not a dict with ``data`` and ``labels``, or has the wrong shapes or labels.
    """
    try:
        batch = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except ForbiddenGlobal as err:
        raise DiffeoProbeError(f"refusing CIFAR batch {source}: {err}") from None
    except Exception as err:  # a corrupt pickle can fail in many ways (EOFError, TypeError, ...)
        raise DiffeoProbeError(
            f"corrupt CIFAR batch {source}: cannot unpickle it ({type(err).__name__}: {err})"
        ) from None

    if not isinstance(batch, dict) or not {b"data", b"labels"} <= set(batch):
        found = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise DiffeoProbeError(
            f"{source} is not a CIFAR batch: expected a dict with keys b'data' and b'labels', "
            f"got {found}"
        )
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (_PIXELS,):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DiffeoProbeError(
            f"{source}: b'data' must be a uint8 array of shape (N, {_PIXELS}), got {got}"
        )
    integers = labels.dtype.kind in "iu" or labels.size == 0  # np.asarray([]) is float64
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not integers:
        raise DiffeoProbeError(
            f"{source}: b'labels' must be {data.shape[0]} integers (one per image), got "
            f"{labels.dtype} of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise DiffeoProbeError(
            f"{source}: labels must lie in 0..{_NUM_CLASSES - 1}, got values from {labels.min()} "
            f"to {labels.max()}"
        )
    return data, labels.astype(np.int64)


def _read_directory(directory: Path, names: tuple[str, ...]) -> list[tuple[bytes, str]]:
    out = []
    for name in names:
        path = directory / name
        try:
            out.append((path.read_bytes(), str(path)))
        except OSError as err:
            raise DiffeoProbeError(
                f"cannot read CIFAR batch {path}: {err.strerror or err}"
            ) from None
    return out


def _read_archive(archive: Path, names: tuple[str, ...]) -> list[tuple[bytes, str]]:
    """The batches ``names`` from inside the archive, in one pass, refusing unsafe members."""
    wanted = {f"{CIFAR10_DIR}/{name}": name for name in names}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts:
                    raise DiffeoProbeError(
                        f"refusing archive {archive}: member {member.name!r} escapes the archive"
                    )
                if member.name not in wanted:
                    continue
                if not member.isfile():  # a link could point at anything
                    raise DiffeoProbeError(
                        f"refusing archive {archive}: {member.name} is not a regular file"
                    )
                handle = tar.extractfile(member)
                assert handle is not None  # regular members always have a file object
                found[wanted[member.name]] = handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DiffeoProbeError(
            f"corrupt or truncated archive {archive}: {err}; delete it and download it again"
        ) from None
    missing = [name for name in names if name not in found]
    if missing:
        raise DiffeoProbeError(
            f"archive {archive} lacks {', '.join(f'{CIFAR10_DIR}/{m}' for m in missing)}; it is not "
            f"the official {CIFAR10_ARCHIVE}"
        )
    return [(found[name], f"{archive}:{CIFAR10_DIR}/{name}") for name in names]


def load_cifar10(data_dir: str | Path, split: str, *, download: bool = False) -> TensorDataset:
    """Load one split of CIFAR-10 from ``data_dir``.

    The batches are looked for, in order, in ``data_dir/cifar-10-batches-py/``, in ``data_dir``
    itself (when it is the extracted directory), and in the archive ``data_dir/cifar-10-python.tar.gz``.

    Args:
        data_dir: the directory holding the extracted batches or the archive.
        split: ``"train"`` (50000 images) or ``"test"`` (10000).
        download: fetch the official archive into ``data_dir`` when no copy is found.

    Returns:
        ``TensorDataset(images, labels)``: images float32 ``(N, 3, 32, 32)`` (RGB) in ``[0, 1]``
        (the byte value / 255), labels int64 ``(N,)`` in ``0..9``.

    Raises:
        DiffeoProbeError: no copy found (the message says what to put where, or to pass
            ``download=True``), a truncated or corrupt archive or batch, a forbidden global in a
            pickle, or batches of the wrong shape.
    """
    split = check_choice(split, "split", tuple(CIFAR10_BATCHES))
    data_dir = Path(data_dir).expanduser()
    names = CIFAR10_BATCHES[split]
    for directory in (data_dir / CIFAR10_DIR, data_dir):
        if all((directory / name).is_file() for name in names):
            batches = _read_directory(directory, names)
            break
    else:
        archive = data_dir / CIFAR10_ARCHIVE
        if not archive.is_file():
            if not download:
                raise missing_files_error(
                    "cifar10",
                    data_dir,
                    [CIFAR10_REMOTE],
                    note=f"or put the extracted directory {CIFAR10_DIR}/ there",
                )
            fetch(data_dir, [CIFAR10_REMOTE])
        batches = _read_archive(archive, names)

    parts = [read_cifar_batch(raw, source) for raw, source in batches]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    x = torch.from_numpy(data).view(-1, _CHANNELS, _SIDE, _SIDE).to(torch.float32).div_(_PIXEL_MAX)
    return TensorDataset(x, torch.from_numpy(labels))
