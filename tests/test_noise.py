"""Matched noise: exact per-sample norms, the rectified variant, refused inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.perturb import deform, matched_noise

DTYPES = [torch.float16, torch.float32, torch.float64]
TOLERANCE = {torch.float16: 2e-3, torch.float32: 1e-6, torch.float64: 1e-12}


def _gen(device: torch.device, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _pair(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    xt = x + torch.rand(
        shape[0], *([1] * (len(shape) - 1)), generator=g, dtype=torch.float64
    ) * torch.randn(shape, generator=g, dtype=torch.float64)
    return x.to(dtype), xt.to(dtype)


@pytest.mark.parametrize("shape", [(4, 3, 17), (4, 3, 8, 9)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rectified", [False, True])
def test_matched_noise_keeps_shape_dtype_device(shape, dtype, rectified, device):
    x, xt = (t.to(device) for t in _pair(shape, dtype))
    eta = matched_noise(x, xt, generator=_gen(device), rectified=rectified)
    assert eta.shape == x.shape and eta.dtype == dtype and eta.device == x.device


@settings(max_examples=30, deadline=None)
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 30)),
        st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
    ),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31),
)
def test_matched_noise_has_exactly_the_norm_of_the_change(shape, dtype, seed):
    x, xt = _pair(shape, dtype)
    eta = matched_noise(x, xt, generator=_gen("cpu", seed))
    target = (xt.double() - x.double()).flatten(1).norm(dim=1)
    norm = eta.double().flatten(1).norm(dim=1)
    torch.testing.assert_close(norm, target, rtol=TOLERANCE[dtype], atol=0)


def test_matched_noise_is_zero_where_nothing_changed():
    x, xt = _pair((4, 3, 8, 8))
    xt[1] = x[1]
    eta = matched_noise(x, xt, generator=_gen("cpu"))
    assert torch.equal(eta[1], torch.zeros_like(eta[1]))
    assert (eta[[0, 2, 3]].flatten(1).norm(dim=1) > 0).all()


def test_matched_noise_of_a_deformation():
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    xt = deform(x, 2e-3, generator=_gen("cpu"))
    eta = matched_noise(x, xt, generator=_gen("cpu", 1))
    torch.testing.assert_close(eta.flatten(1).norm(dim=1), (xt - x).flatten(1).norm(dim=1))


def test_matched_noise_is_isotropic_gaussian_in_direction():
    x, xt = _pair((200, 1, 50), torch.float64)
    eta = matched_noise(x, xt, generator=_gen("cpu"))
    direction = eta.flatten(1) / eta.flatten(1).norm(dim=1, keepdim=True)
    # Each coordinate of a uniform direction in 50 dimensions has mean 0 and variance 1/50.
    assert direction.mean().abs() < 5 * (1 / 50 / direction.numel()) ** 0.5
    assert direction.pow(2).mean().item() == pytest.approx(1 / 50, rel=1e-12)


@pytest.mark.parametrize("rectified", [False, True])
def test_matched_noise_same_seed_same_output(rectified, device):
    x, xt = (t.to(device) for t in _pair((4, 3, 8, 8)))
    a = matched_noise(x, xt, generator=_gen(device, 5), rectified=rectified)
    b = matched_noise(x, xt, generator=_gen(device, 5), rectified=rectified)
    c = matched_noise(x, xt, generator=_gen(device, 6), rectified=rectified)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rectified_noise_is_non_negative_with_the_batch_variance():
    x, xt = _pair((64, 2, 32, 32), torch.float64)
    eta = matched_noise(x, xt, generator=_gen("cpu"), rectified=True)
    assert (eta >= 0).all()
    # E[relu(sigma z)^2] = sigma^2 / 2 with sigma^2 the mean of (xt - x)^2.
    sigma2 = (xt - x).pow(2).mean().item()
    assert eta.pow(2).mean().item() == pytest.approx(sigma2 / 2, rel=0.03)
    assert (eta == 0).double().mean().item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    "x,xt,name",
    [
        (torch.zeros(2, 1, 4), torch.zeros(2, 1, 5), "xt"),
        (torch.zeros(2, 4), torch.zeros(2, 4), "x"),
        (torch.zeros(2, 1, 4, dtype=torch.long), torch.zeros(2, 1, 4), "x"),
        (torch.zeros(2, 1, 4), torch.zeros(2, 1, 4, dtype=torch.long), "xt"),
    ],
)
def test_matched_noise_refuses_bad_input(x, xt, name):
    with pytest.raises(DiffeoProbeError, match=name):
        matched_noise(x, xt)
