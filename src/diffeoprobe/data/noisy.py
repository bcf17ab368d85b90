"""Training on noisy images (docs/science.md section 8): white noise of total norm ``s`` added to each image.

The noise of image ``i`` is ``eta = z * s / sqrt(C * H * W)`` with ``z ~ N(0, I)``, so that
``||eta|| ~ s`` (relative spread ``~ 1 / sqrt(2 C H W)``). It is drawn from a generator seeded by
``(seed, i, epoch)``: the same draw whatever the batch order, the number of workers or the device.

- ``mode="fixed"``: one noise per image, the same every epoch (the draw of epoch 0).
- ``mode="fresh"``: a new draw every epoch; call :meth:`NoisyDataset.set_epoch` before each epoch.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset, TensorDataset

from diffeoprobe.validate import check_choice, check_int, check_positive

__all__ = ["NOISE_MODES", "NoisyDataset", "add_fixed_noise", "image_noise", "mix_seed"]

NOISE_MODES = ("fixed", "fresh")
_MASK64 = (1 << 64) - 1
_SEED_BITS = (1 << 63) - 1  # torch.Generator.manual_seed takes a non-negative int64 here


def _splitmix64(value: int) -> int:
    """One step of the splitmix64 mixer (Steele, Lea & Flood 2014): neighbouring keys, unrelated seeds."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def mix_seed(*parts: int) -> int:
    """One seed from several integers (``seed``, ``index``, ``epoch``, ...), via splitmix64.

    >>> mix_seed(0, 1) == mix_seed(0, 1) != mix_seed(1, 0)
    True
    """
    state = 0
    for part in parts:
        state = _splitmix64(state ^ (part & _MASK64))
    return state & _SEED_BITS


def image_noise(
    shape: torch.Size | tuple[int, ...],
    noise_norm: float,
    *,
    seed: int,
    index: int,
    epoch: int = 0,
) -> torch.Tensor:
    """The noise ``z * s / sqrt(numel)`` of one image, float32, drawn on the CPU from the key
    ``(seed, index, epoch)``.

    Args:
        shape: the image shape, e.g. ``(C, H, W)``.
        noise_norm: the target total norm ``s >= 0``.
        seed: the first part of the key of the draw; the same key gives the same noise.
        index: the image's index in its data set, the second part of the key.
        epoch: the epoch, the third part of the key (``0`` for noise fixed over training).

    >>> eta = image_noise((1, 28, 28), 10.0, seed=0, index=3)
    >>> round(eta.norm().item())  # ~ 10 within ~ 10 / sqrt(2 * 784)
    10
    """
    generator = torch.Generator().manual_seed(mix_seed(seed, index, epoch))
    z = torch.randn(shape, generator=generator)
    return z.mul_(noise_norm / math.sqrt(z.numel()))


class NoisyDataset(Dataset):
    """A dataset whose images carry white noise of total norm ``noise_norm`` (docs/science.md section 8).

    Items of ``dataset`` are ``(x, y, ...)`` with ``x`` a float image ``(C, H, W)`` (or ``(C, L)``);
    ``x + eta`` replaces ``x``, the rest passes through.

    Args:
        dataset: the split to wrap (any map-style dataset).
        noise_norm: total norm ``s >= 0`` of the noise added to each image.
        mode: ``"fixed"`` (one draw per image, every epoch) or ``"fresh"`` (a new draw per epoch).
        seed: seeds the draws; with ``index`` and the epoch it fixes each one.

    With ``mode="fresh"``, call :meth:`set_epoch` at the start of each epoch (before a
    ``DataLoader`` iterator is created, so that worker processes get the new epoch).

    >>> base = TensorDataset(torch.zeros(4, 1, 8, 8), torch.arange(4))
    >>> data = NoisyDataset(base, 1.0, mode="fresh", seed=0)
    >>> first = data[2][0]
    >>> data.set_epoch(1)
    >>> bool(torch.equal(first, data[2][0]))
    False
    """

    def __init__(
        self, dataset: Dataset, noise_norm: float, *, mode: str = "fixed", seed: int = 0
    ) -> None:
        self.dataset = dataset
        self.noise_norm = check_positive(noise_norm, "noise_norm", allow_zero=True)
        self.mode = check_choice(mode, "noise_mode", NOISE_MODES)
        self.seed = check_int(seed, "seed", minimum=0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws ``"fresh"`` mode returns (no effect in ``"fixed"`` mode)."""
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        x, *rest = self.dataset[index]
        epoch = self.epoch if self.mode == "fresh" else 0
        index = index if index >= 0 else index + len(self)
        eta = image_noise(x.shape, self.noise_norm, seed=self.seed, index=index, epoch=epoch)
        return (x + eta.to(dtype=x.dtype, device=x.device), *rest)


def add_fixed_noise(dataset: TensorDataset, noise_norm: float, *, seed: int = 0) -> TensorDataset:
    """``"fixed"`` noise precomputed: a new ``TensorDataset`` equal item by item to
    ``NoisyDataset(dataset, noise_norm, mode="fixed", seed=seed)``; the input is left unchanged.

    >>> base = TensorDataset(torch.zeros(3, 1, 4, 4), torch.arange(3))
    >>> noisy = add_fixed_noise(base, 2.0, seed=1)
    >>> bool(torch.equal(noisy[1][0], NoisyDataset(base, 2.0, seed=1)[1][0]))
    True
    """
    noise_norm = check_positive(noise_norm, "noise_norm", allow_zero=True)
    seed = check_int(seed, "seed", minimum=0)
    x, *rest = dataset.tensors
    noisy = x.clone()
    for index in range(len(noisy)):
        eta = image_noise(x.shape[1:], noise_norm, seed=seed, index=index)
        noisy[index] += eta.to(dtype=x.dtype, device=x.device)
    return TensorDataset(noisy, *rest)
