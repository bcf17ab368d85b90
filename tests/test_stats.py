"""The streaming sums against a direct, non-streamed computation on random tensors (no model)."""

import math

import pytest
import torch

from diffeoprobe.measurement.stats import SensitivitySums


def direct(a: torch.Tensor, d: torch.Tensor, g: torch.Tensor) -> dict[str, float]:
    """The definitions of docs/science.md section 4 with an explicit P x P distance matrix."""
    p = a.shape[0]
    dist2 = torch.cdist(a, a).square()
    z = (dist2.sum() / (p * (p - 1))).item()  # pairs i != j (the diagonal is zero)
    return dict(
        Z=z,
        D=d.mean().item() / z,
        G=g.mean().item() / z,
        R=(d.mean() / g.mean()).item(),
    )


@pytest.mark.parametrize("batches", [[40], [1, 39], [7, 13, 20], [39, 1]])
def test_streamed_statistics_equal_direct_computation(batches: list[int]) -> None:
    gen = torch.Generator().manual_seed(1)
    # a large common offset makes the naive mean||a||^2 - ||mean a||^2 ill-conditioned
    a = 1e3 + torch.randn(40, 17, generator=gen, dtype=torch.float64)
    d = torch.rand(40, generator=gen, dtype=torch.float64)
    g = torch.rand(40, generator=gen, dtype=torch.float64) + 0.5
    sums = SensitivitySums()
    start = 0
    for size in batches:
        sums.update(a[start : start + size], d[start : start + size], g[start : start + size])
        start += size
    got = sums.result()
    want = direct(a, d, g)
    for key, value in want.items():
        assert getattr(got, key) == pytest.approx(value, rel=1e-9), key
    assert got.n == 40


def test_error_bars_match_a_bootstrap_over_images() -> None:
    gen = torch.Generator().manual_seed(2)
    p = 400
    a = torch.randn(p, 5, generator=gen, dtype=torch.float64) * (
        1 + torch.rand(p, 1, generator=gen)
    )
    scale = a.square().sum(1)  # numerators correlated with the size of the representation
    d = torch.rand(p, generator=gen, dtype=torch.float64) * 2 * scale
    g = 0.5 * d + torch.rand(p, generator=gen, dtype=torch.float64)
    sums = SensitivitySums()
    sums.update(a, d, g)
    got = sums.result()
    boots = {"D": [], "G": [], "R": [], "Z": []}
    for _ in range(1000):
        idx = torch.randint(0, p, (p,), generator=gen)
        b = SensitivitySums()
        b.update(a[idx], d[idx], g[idx])
        r = b.result()
        for key in boots:
            boots[key].append(getattr(r, key))
    for key, values in boots.items():
        assert getattr(got, f"{key}_se") == pytest.approx(
            torch.tensor(values).std().item(), rel=0.12
        ), key


def test_zero_noise_response_gives_nan_ratio_error_and_inf_ratio() -> None:
    sums = SensitivitySums()
    sums.update(torch.eye(3), torch.ones(3), torch.zeros(3))
    got = sums.result()
    assert math.isinf(got.R) and math.isnan(got.R_se)


def test_fewer_than_two_images_is_refused() -> None:
    sums = SensitivitySums()
    sums.update(torch.ones(1, 3), torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="at least 2"):
        sums.result()
