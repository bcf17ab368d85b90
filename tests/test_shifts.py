"""The scale-detection diffeo: one-pixel moves, clipped at the border, never across a block."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.perturb import pixel_shift

SIZES = [(16,), (9, 12)]


def _gen(device: torch.device, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _one_pixel(
    size: tuple[int, ...], batch: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` signals with one active pixel each, at random positions ``(B, ndim)``."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.stack([torch.randint(0, n, (batch,), generator=g) for n in size], 1)
    x = torch.zeros(batch, 2, *size)
    x[(torch.arange(batch), slice(None), *pos.T)] = torch.tensor([1.0, 3.0])
    return x, pos


def _positions(y: torch.Tensor) -> torch.Tensor:
    """The single active position of each sample, ``(B, ndim)``."""
    active = y.abs().sum(1).flatten(1) > 0
    assert (active.sum(1) == 1).all()
    flat = active.float().argmax(1)
    return torch.stack(torch.unravel_index(flat, y.shape[2:]), 1)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_pixel_shift_keeps_shape_dtype_device(size, dtype, device):
    x = _one_pixel(size, 4)[0].to(device=device, dtype=dtype)
    y = pixel_shift(x, generator=_gen(device))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device


@settings(max_examples=30, deadline=None)
@given(
    size=st.one_of(
        st.tuples(st.integers(1, 40)), st.tuples(st.integers(1, 12), st.integers(1, 12))
    ),
    actives=st.integers(1, 4),
    block=st.one_of(st.none(), st.integers(1, 8)),
    seed=st.integers(0, 2**31),
)
def test_pixel_shift_preserves_the_sum(size, actives, block, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(3, 2, *size, dtype=torch.float64)
    for _ in range(actives):
        idx = tuple(torch.randint(0, n, (3,), generator=g) for n in size)
        x[(torch.arange(3), slice(None), *idx)] += torch.rand(
            3, 2, generator=g, dtype=torch.float64
        )
    y = pixel_shift(x, block=block, generator=_gen("cpu", seed))
    torch.testing.assert_close(y.sum((2, *range(3, y.dim()))), x.sum((2, *range(3, x.dim()))))


@pytest.mark.parametrize("size", SIZES)
def test_each_active_pixel_moves_by_exactly_one_or_is_clipped(size):
    x, pos = _one_pixel(size, 2000)
    y = pixel_shift(x, generator=_gen("cpu"))
    new = _positions(y)
    step = (new - pos).abs().amax(1)
    on_border = ((pos == 0) | (pos == torch.tensor(size) - 1)).any(1)
    assert (step[~on_border] == 1).all()
    assert (step[on_border] <= 1).all()
    # Channels move together.
    assert torch.equal(
        y[(torch.arange(len(y)), slice(None), *new.T)],
        x[(torch.arange(len(x)), slice(None), *pos.T)],
    )


@pytest.mark.parametrize("size", SIZES)
def test_direction_frequencies(size):
    # Interior pixels only: 1D +-1 each 1/2; 2D a rounded uniform angle gives axis steps 4 x 1/6 and
    # diagonals 4 x 1/12.
    x = torch.zeros(4000, 1, *size)
    centre = tuple(n // 2 for n in size)
    x[(slice(None), 0, *centre)] = 1
    step = _positions(pixel_shift(x, generator=_gen("cpu"))) - torch.tensor(centre)
    if len(size) == 1:
        assert (step == 1).float().mean().item() == pytest.approx(1 / 2, abs=0.03)
    else:
        diagonal = (step != 0).all(1).float().mean().item()
        assert diagonal == pytest.approx(1 / 3, abs=0.03)
        assert (step[:, 0] == 1).float().mean().item() == pytest.approx(1 / 3, abs=0.03)


@pytest.mark.parametrize("size,block", [((16,), 4), ((16,), 1), ((9, 12), 3), ((9, 12), 5)])
def test_pixel_shift_never_crosses_a_block(size, block):
    x, pos = _one_pixel(size, 2000, seed=1)
    new = _positions(pixel_shift(x, block=block, generator=_gen("cpu")))
    assert torch.equal(new // block, pos // block)
    assert ((new - pos).abs().amax(1) <= 1).all()
    if block > 1:
        assert ((new - pos).abs().amax(1) == 1).any()
    else:
        assert torch.equal(new, pos)


def test_pixel_shift_two_actives_each_move_once():
    x = torch.zeros(500, 1, 32)
    x[:, 0, 5] = 1
    x[:, 0, 20] = 1
    y = pixel_shift(x, generator=_gen("cpu"))
    assert torch.equal((y[:, 0, 4] + y[:, 0, 6]), torch.ones(500))
    assert torch.equal((y[:, 0, 19] + y[:, 0, 21]), torch.ones(500))


def test_pixel_shift_collisions_add_up():
    x = torch.zeros(200, 1, 8)
    x[:, 0, 3] = 1
    x[:, 0, 5] = 2
    y = pixel_shift(x, generator=_gen("cpu"))
    collided = y[:, 0, 4] == 3
    assert collided.any() and torch.equal(y.sum((1, 2)), torch.full((200,), 3.0))


@pytest.mark.parametrize("size", SIZES)
def test_pixel_shift_same_seed_same_output(size, device):
    x = _one_pixel(size, 16)[0].to(device)
    a = pixel_shift(x, generator=_gen(device, 3))
    b = pixel_shift(x, generator=_gen(device, 3))
    assert torch.equal(a, b) and not torch.equal(a, x)


@pytest.mark.parametrize(
    "x,block,name",
    [
        (torch.zeros(2, 1, 8), 0, "block"),
        (torch.zeros(2, 1, 8), 2.5, "block"),
        (torch.zeros(2, 8), None, "x"),
        (torch.zeros(2, 1, 8, dtype=torch.long), None, "x"),
    ],
)
def test_pixel_shift_refuses_bad_input(x, block, name):
    with pytest.raises(DiffeoProbeError, match=name):
        pixel_shift(x, block=block)
