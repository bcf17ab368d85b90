"""Training-noise wrapper (docs/science.md section 8): norm, fixed versus fresh draws, registry option."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from diffeoprobe.data import NoisyDataset, build
from diffeoprobe.data.noisy import add_fixed_noise, image_noise
from diffeoprobe.errors import DiffeoProbeError

IMAGE = (1, 28, 28)  # C * H * W = 784
COUNT = 400


def images(n: int = COUNT, shape: tuple[int, ...] = IMAGE) -> TensorDataset:
    x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(0))
    return TensorDataset(x, torch.arange(n))


def noise_of(data, base: TensorDataset) -> torch.Tensor:
    return torch.stack([data[i][0] for i in range(len(data))]) - base.tensors[0]


@pytest.mark.parametrize("noise_norm", [0.01, 1.0, 30.0])
@pytest.mark.parametrize("mode", ["fixed", "fresh"])
def test_noise_has_total_norm_s_within_sampling(noise_norm, mode):
    base = images()
    norms = noise_of(NoisyDataset(base, noise_norm, mode=mode), base).flatten(1).norm(dim=1)
    relative = norms / noise_norm
    spread = 1 / math.sqrt(2 * math.prod(IMAGE))  # std of ||z|| / sqrt(d) for z ~ N(0, I_d)
    assert abs(relative.mean() - 1) < 4 * spread / math.sqrt(COUNT) + 1 / (4 * math.prod(IMAGE))
    assert 0.8 * spread < relative.std() < 1.2 * spread


def test_noise_is_white_and_independent_between_images():
    base = images(200)
    eta = noise_of(NoisyDataset(base, math.sqrt(784)), base)  # unit variance per pixel
    assert abs(eta.mean()) < 4 / math.sqrt(eta.numel())
    assert abs(eta.var() - 1) < 0.02
    correlation = torch.corrcoef(eta.flatten(1)[:50])
    off_diagonal = correlation[~torch.eye(50, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 5 / math.sqrt(784)


def test_fixed_mode_is_the_same_every_epoch():
    base = images(8)
    data = NoisyDataset(base, 1.0, mode="fixed", seed=3)
    first = noise_of(data, base)
    data.set_epoch(5)
    torch.testing.assert_close(noise_of(data, base), first, rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])


def test_fresh_mode_differs_between_epochs_and_repeats_per_seed_and_epoch():
    base = images(8)
    data = NoisyDataset(base, 1.0, mode="fresh", seed=3)
    epoch0 = noise_of(data, base)
    data.set_epoch(1)
    epoch1 = noise_of(data, base)
    assert not torch.isclose(epoch0, epoch1).any()

    again = NoisyDataset(base, 1.0, mode="fresh", seed=3)
    again.set_epoch(1)
    torch.testing.assert_close(noise_of(again, base), epoch1, rtol=0, atol=0)
    other_seed = NoisyDataset(base, 1.0, mode="fresh", seed=4)
    other_seed.set_epoch(1)
    assert not torch.equal(noise_of(other_seed, base), epoch1)


def test_noise_does_not_depend_on_reading_order():
    base = images(6)
    data = NoisyDataset(base, 1.0, mode="fresh", seed=1)
    forward = [data[i][0] for i in range(6)]
    backward = [data[i][0] for i in reversed(range(6))][::-1]
    torch.testing.assert_close(torch.stack(forward), torch.stack(backward), rtol=0, atol=0)
    torch.testing.assert_close(data[-1][0], data[5][0], rtol=0, atol=0)


def test_labels_pass_through_and_dtype_is_kept():
    base = TensorDataset(torch.zeros(3, 2, 4, 4, dtype=torch.float64), torch.tensor([4, 5, 6]))
    x, y = NoisyDataset(base, 1.0)[1]
    assert y == 5 and x.dtype == torch.float64


def test_precomputed_fixed_noise_equals_the_wrapper():
    base = images(10, (3, 8, 8))
    fixed = add_fixed_noise(base, 2.0, seed=7)
    assert isinstance(fixed, TensorDataset)
    torch.testing.assert_close(
        fixed.tensors[0], torch.stack([x for x, _ in NoisyDataset(base, 2.0, seed=7)])
    )
    assert torch.equal(base.tensors[0], images(10, (3, 8, 8)).tensors[0])  # input untouched


def test_image_noise_is_a_pure_function_of_its_key():
    a = image_noise((3, 4, 4), 1.0, seed=0, index=2, epoch=1)
    assert torch.equal(a, image_noise((3, 4, 4), 1.0, seed=0, index=2, epoch=1))
    assert not torch.equal(a, image_noise((3, 4, 4), 1.0, seed=0, index=1, epoch=2))


def test_registry_option_wraps_every_data_set():
    options = {"split": "train", "d": 16, "xi": 4, "train_size": 20, "seed": 1}
    clean = build("scale-detection", **options)
    fixed = build("scale-detection", noise_norm=1.0, **options)
    assert isinstance(fixed, TensorDataset)
    norms = (fixed.tensors[0] - clean.tensors[0]).flatten(1).norm(dim=1)
    assert ((norms - 1).abs() < 0.6).all()  # d = 16 here: a wide sampling spread

    fresh = build("scale-detection", noise_norm=1.0, noise_mode="fresh", **options)
    assert isinstance(fresh, NoisyDataset) and len(fresh) == len(clean)
    epoch0 = fresh[0][0]
    fresh.set_epoch(1)
    assert not torch.equal(fresh[0][0], epoch0)
    assert torch.equal(fresh[0][1], clean[0][1])
    assert build("scale-detection", noise_norm=0.0, **options).tensors[0].equal(clean.tensors[0])


def test_train_and_test_noise_differ():
    common = {"d": 16, "xi": 4, "train_size": 20, "test_size": 20, "seed": 0, "noise_norm": 1.0}
    noise = {}
    for split in ("train", "test"):
        noisy = build("scale-detection", split=split, **common).tensors[0]
        clean = build("scale-detection", split=split, **common | {"noise_norm": 0.0})
        noise[split] = noisy[0] - clean.tensors[0][0]
    assert not torch.allclose(noise["train"], noise["test"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"noise_norm": -1.0}, "noise_norm must be a finite number >= 0"),
        ({"noise_norm": float("nan")}, "noise_norm"),
        ({"noise_norm": 1.0, "noise_mode": "per-batch"}, "noise_mode must be one of"),
        ({"normalize": True}, "no published mean and std"),
        ({"normalize": "yes"}, "normalize must be true or false"),
    ],
)
def test_registry_refuses_bad_wrapper_options(options, message):
    with pytest.raises(DiffeoProbeError, match=message):
        build("scale-detection", d=16, xi=4, **options)


def test_wrapper_refuses_bad_arguments():
    base = images(2)
    with pytest.raises(DiffeoProbeError, match="noise_mode"):
        NoisyDataset(base, 1.0, mode="sometimes")
    with pytest.raises(DiffeoProbeError, match="epoch"):
        NoisyDataset(base, 1.0).set_epoch(-1)
