"""Images a researcher already has: a folder of image files, or a tensor file.

``folder``: PNG, JPEG, WebP, BMP, GIF and TIFF files decoded with Pillow, converted to RGB (or
grey), the shorter side resized to ``size`` and the centre cropped to ``size x size``, pixels in
``[0, 1]``, optionally normalised with a named preset's statistics. Class sub-folders give the
labels (sub-folder names sorted: the first is label 0); a flat folder gives none (label -1).
Unreadable files are listed in one warning and skipped, never fatal half-way. A seeded subset of
``limit`` images keeps memory bounded on a large folder.

``tensors``: a ``.pt`` file read with ``torch.load(weights_only=True)`` holding a tensor
``(N, C, ...)`` or a dict ``{"x": tensor, "y": labels}``, or a ``.npy`` array read with
``allow_pickle=False``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from diffeoprobe.errors import DiffeoProbeError, first_line
from diffeoprobe.validate import check_choice, check_int

__all__ = ["IMAGE_SUFFIXES", "STATISTICS", "image_folder", "tensor_file"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

#: name -> (per-channel mean, per-channel std) of pixels in [0, 1], for ``stats=``.
STATISTICS: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's, most CNNs
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # ViT (Google), Inception: [-1, 1]
}
MODES = ("rgb", "grey")


def image_folder(
    *,
    root: str = "",
    split: str = "test",
    seed: int = 0,
    size: int = 224,
    mode: str = "rgb",
    stats: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    limit: int | None = None,
) -> TensorDataset:
    """The images under ``root`` as ``TensorDataset(x, y)``: ``x`` float32 ``(N, C, size, size)``.

    Args:
        root: the folder: class sub-folders (labels by sorted name) or image files directly.
        split: accepted for a uniform interface; a folder is one split.
        seed: draws the ``limit`` subset.
        size: side of the square the images are resized and centre-cropped to, in pixels.
        mode: ``"rgb"`` (3 channels; grey, palette and RGBA images are converted) or ``"grey"``.
        stats: normalise with a named preset of :data:`STATISTICS` (``None``: pixels in [0, 1]).
        mean: normalise with these per-channel means instead of ``stats`` (a model's own, for
            example from :func:`diffeoprobe.models.pretrained.preprocessing`).
        std: the per-channel standard deviations that go with ``mean``.
        limit: keep a seeded random subset of this many images (``None``: all).

    Raises:
        DiffeoProbeError: ``root`` missing or holding no image; a bad option (named).
    """
    check_int(size, "size", minimum=1, maximum=4096)
    check_choice(mode, "mode", MODES)
    normalisation = _normalisation(stats, mean, std, 3 if mode == "rgb" else 1)
    if limit is not None:
        check_int(limit, "limit", minimum=1)
    files, labels = _listing(root)
    if limit is not None and limit < len(files):
        keep = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:limit]
        files, labels = [files[i] for i in keep.sort().values], labels[keep.sort().values]
    images, kept, skipped = [], [], []
    for index, path in enumerate(files):
        try:
            images.append(_decode(path, size, mode))
            kept.append(index)
        except Exception as exc:  # Pillow raises many types for a corrupt or foreign file
            skipped.append(f"{path.name} ({type(exc).__name__})")
    if skipped:
        warnings.warn(
            f"root {root!r}: skipped {len(skipped)} unreadable file(s): {', '.join(skipped[:10])}"
            + (" ..." if len(skipped) > 10 else ""),
            stacklevel=2,
        )
    if not images:
        raise DiffeoProbeError(f"root {root!r}: none of its {len(files)} image files could be read")
    x = torch.stack(images)
    if normalisation is not None:
        mean, std = normalisation
        x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    return TensorDataset(x, labels[torch.tensor(kept, dtype=torch.long)])


def _normalisation(
    stats: str | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    channels: int,
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) per channel that ``stats`` names or ``mean`` and ``std`` give, checked."""
    if stats is not None:
        check_choice(stats, "stats", tuple(STATISTICS))
        if mean is not None or std is not None:
            raise DiffeoProbeError("stats: give either stats or mean and std, not both")
        mean, std = STATISTICS[stats]
    if (mean is None) != (std is None):
        raise DiffeoProbeError("mean, std: give both (one value per channel) or neither")
    if mean is None or std is None:
        return None
    means, stds = _statistics(mean, "mean", channels), _statistics(std, "std", channels)
    if min(stds) <= 0:
        raise DiffeoProbeError(f"std must be positive per channel, got {list(stds)}")
    return means, stds


def _statistics(values: Sequence[float], name: str, channels: int) -> tuple[float, ...]:
    """Per-channel values: one per channel, or 3 (RGB) averaged for grey images."""
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise DiffeoProbeError(f"{name} must be a list of numbers, got {values!r}") from None
    if channels == 1 and len(out) == 3:
        out = (sum(out) / 3,)
    if len(out) != channels or not all(v == v and abs(v) != float("inf") for v in out):
        raise DiffeoProbeError(f"{name} takes {channels} finite value(s), got {list(values)}")
    return out


def _listing(root: str) -> tuple[list[Path], torch.Tensor]:
    """The image files under ``root`` and their labels (sub-folder index, or -1 when flat)."""
    if not root:
        raise DiffeoProbeError("root: the folder of images is required (-d root=PATH)")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DiffeoProbeError(f"root {root!r} {what}")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        files, labels = [], []
        for label, sub in enumerate(classes):
            found = _images(sub)
            files += found
            labels += [label] * len(found)
    else:
        files = _images(folder)
        labels = [-1] * len(files)
    if not files:
        raise DiffeoProbeError(
            f"root {root!r} holds no image file ({', '.join(IMAGE_SUFFIXES)}), in it or in its "
            "class sub-folders"
        )
    return files, torch.tensor(labels, dtype=torch.long)


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _decode(path: Path, size: int, mode: str) -> torch.Tensor:
    """One image as float32 ``(C, size, size)`` in [0, 1]: shorter side to ``size``, centre crop."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        converted = image.convert("RGB" if mode == "rgb" else "L")
    width, height = converted.size
    scale = size / min(width, height)
    resized = converted.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))),
        Image.Resampling.BILINEAR,
    )
    left = (resized.size[0] - size) // 2
    top = (resized.size[1] - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    array = np.asarray(cropped, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def tensor_file(
    *, path: str = "", split: str = "test", seed: int = 0, labels: Sequence[int] | None = None
) -> TensorDataset:
    """Images from a tensor file: ``.pt`` (``weights_only``) or ``.npy`` (no pickle).

    A ``.pt`` file holds a tensor ``(N, C, ...)`` or a dict with ``"x"`` (and optionally ``"y"``);
    a ``.npy`` file an array ``(N, C, ...)``. Without labels every image gets label -1.

    Raises:
        DiffeoProbeError: a missing file, another suffix, unreadable content, or a shape that is not
            ``(N, C, L)`` or ``(N, C, H, W)``.
    """
    file = Path(path).expanduser()
    if not path or not file.is_file():
        raise DiffeoProbeError(f"path {path!r}: no such file (a .pt or .npy tensor file)")
    suffix = file.suffix.lower()
    if suffix not in (".pt", ".pth", ".npy"):
        raise DiffeoProbeError(f"path {path!r}: expected a .pt, .pth or .npy file")
    try:
        if suffix == ".npy":
            content: object = torch.from_numpy(np.load(file, allow_pickle=False))
        else:
            content = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = first_line(exc)
        raise DiffeoProbeError(f"path {path!r} could not be read as tensors: {first}") from None
    x, y = _x_and_y(content, path)
    if labels is not None:
        y = torch.as_tensor(list(labels), dtype=torch.long)
    if x.dim() not in (3, 4) or (not x.is_floating_point() and x.dtype != torch.uint8):
        raise DiffeoProbeError(
            f"path {path!r}: expected images (N, C, L) or (N, C, H, W), got shape "
            f"{tuple(x.shape)} of {x.dtype}"
        )
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if y.shape != (x.shape[0],):
        raise DiffeoProbeError(
            f"path {path!r}: {x.shape[0]} images but labels of shape {tuple(y.shape)}"
        )
    return TensorDataset(x, y.long())


def _x_and_y(content: object, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(content, torch.Tensor):
        return content, torch.full((content.shape[0],), -1, dtype=torch.long)
    if isinstance(content, dict) and isinstance(content.get("x"), torch.Tensor):
        x = content["x"]
        y = content.get("y")
        if y is None:
            return x, torch.full((x.shape[0],), -1, dtype=torch.long)
        return x, torch.as_tensor(y)
    raise DiffeoProbeError(
        f"path {path!r}: expected a tensor or a dict with 'x' (and 'y'), got {type(content).__name__}"
    )
