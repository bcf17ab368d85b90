"""Batched augmentation and normalisation: properties (hypothesis) and the published constants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffeoprobe.data import build
from diffeoprobe.data.idx import FASHION_MNIST_DIR
from diffeoprobe.data.transforms import (
    NORMALIZATION,
    augment,
    horizontal_flip,
    normalize,
    random_crop,
)
from diffeoprobe.errors import DiffeoProbeError

FEW = settings(max_examples=30, deadline=None)


@st.composite
def batches(draw) -> torch.Tensor:
    b, c = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**16))
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@FEW
@given(x=batches(), padding=st.integers(0, 5), flip=st.booleans(), seed=st.integers(0, 99))
def test_augment_keeps_shape_dtype_and_is_reproducible(x, padding, flip, seed):
    out = augment(x, crop_padding=padding, flip=flip, generator=gen(seed))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, augment(x, crop_padding=padding, flip=flip, generator=gen(seed)))


@FEW
@given(x=batches(), seed=st.integers(0, 99))
def test_flip_twice_with_the_same_draws_is_the_identity(x, seed):
    assert torch.equal(horizontal_flip(horizontal_flip(x, gen(seed)), gen(seed)), x)


@FEW
@given(x=batches(), seed=st.integers(0, 99))
def test_crop_with_padding_zero_is_the_identity(x, seed):
    assert torch.equal(random_crop(x, 0, gen(seed)), x)
    assert torch.equal(augment(x, crop_padding=0, flip=False, generator=gen(seed)), x)


@FEW
@given(x=batches(), padding=st.integers(1, 4), seed=st.integers(0, 99))
def test_crop_is_a_window_of_the_padded_image(x, padding, seed):
    out = random_crop(x, padding, gen(seed))
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    allowed = torch.cat([x.flatten(), torch.zeros(1)])
    assert torch.isin(out, allowed).all()  # values are a subset of the padded input
    h, w = x.shape[-2:]
    for image, source in zip(out, padded, strict=True):
        windows = [
            torch.equal(image, source[:, dy : dy + h, dx : dx + w])
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
        ]
        assert any(windows)


def test_each_sample_gets_its_own_crop_and_flip():
    x = torch.arange(64.0).view(1, 1, 8, 8).expand(64, 3, 8, 8).contiguous()
    cropped = random_crop(x, 2, gen(0))
    assert len({tuple(img.flatten().tolist()) for img in cropped}) > 10
    flipped = horizontal_flip(x, gen(0))
    was_flipped = (flipped[:, 0, 0, 0] == 7).sum().item()
    assert 16 < was_flipped < 48  # ~ half of 64


def test_flip_probability_extremes():
    x = torch.rand(5, 2, 3, 4)
    assert torch.equal(horizontal_flip(x, p=0.0), x)
    assert torch.equal(horizontal_flip(x, p=1.0), x.flip(-1))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float64])
def test_augment_works_on_any_dtype(dtype):
    x = (torch.rand(4, 3, 6, 6) * 100).to(dtype)
    out = augment(x, crop_padding=2, generator=gen(1))
    assert out.dtype == dtype and out.shape == x.shape


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: augment(torch.rand(3, 8, 8)), r"\(B, C, H, W\)"),
        (lambda: random_crop(torch.rand(2, 1, 4, 4), -1), "padding"),
        (lambda: horizontal_flip(torch.rand(2, 1, 4, 4), p=1.5), "probability"),
        (lambda: normalize(torch.rand(2, 1, 4, 4), *NORMALIZATION["cifar10"]), "C = 3"),
    ],
    ids=["rank-3", "negative-padding", "bad-p", "channel-mismatch"],
)
def test_transforms_refuse_bad_input(call, message):
    with pytest.raises(DiffeoProbeError, match=message):
        call()


@pytest.mark.parametrize(("name", "channels"), [("cifar10", 3), ("svhn", 3), ("mnist", 1)])
def test_normalize_standardises_each_channel(name, channels):
    mean, std = NORMALIZATION[name]
    assert len(mean) == len(std) == channels and all(0 < s < 1 for s in std)
    x = torch.rand(2, channels, 4, 4, dtype=torch.float64)
    out = normalize(x, mean, std)
    back = out * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    torch.testing.assert_close(back, x)
    assert out.dtype == torch.float64


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_constants_match_its_train_split():
    x = build("fashionmnist", split="train").tensors[0]
    (mean,), (std,) = NORMALIZATION["fashionmnist"]
    assert abs(x.mean().item() - mean) < 5e-5 and abs(x.std().item() - std) < 5e-5
    z = normalize(x, (mean,), (std,))
    assert abs(z.mean().item()) < 1e-3 and abs(z.std().item() - 1) < 1e-3
