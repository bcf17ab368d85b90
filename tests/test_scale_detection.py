"""The scale-detection tasks (docs/science.md section 6): labels, balance, inputs, splits, errors."""

from __future__ import annotations

import math

import pytest
import torch

from diffeoprobe.data import build, scale_detection
from diffeoprobe.errors import DiffeoProbeError

# Small but non-trivial settings: (dim, task, d, xi, gap); each has pairs in both classes.
SETTINGS = [
    (1, 1, 32, 8, 0),
    (1, 1, 32, 8, 2),
    (1, 2, 32, 8, 0),
    (1, 2, 30, 7, 0),  # d not a multiple of xi: the last block is smaller
    (2, 1, 10, 4, 0),
    (2, 1, 10, 5, 1),
    (2, 2, 10, 4, 0),
]
IDS = [f"dim{s[0]}-task{s[1]}-d{s[2]}-xi{s[3]}-gap{s[4]}" for s in SETTINGS]


def make(dim, task, d, xi, gap, **kwargs):
    kwargs.setdefault("train_size", 64)
    return scale_detection(dim=dim, task=task, d=d, xi=xi, gap=gap, **kwargs)


def pair_set(dataset) -> set:
    """The pairs of active positions of a data set, as a set of hashable tuples."""
    return {tuple(map(tuple, p)) for p in active_positions(dataset.tensors[0])}


def active_positions(x: torch.Tensor) -> list[list[tuple[int, ...]]]:
    """Per example, the coordinates of its non-zero pixels (channel dimension dropped)."""
    return [[tuple(p) for p in torch.nonzero(example[0]).tolist()] for example in x]


def reference_label(a: tuple[int, ...], b: tuple[int, ...], task: int, d: int, xi: int, gap: int):
    """The rule of docs/science.md section 6, written independently with plain Python."""
    if task == 2:
        return int(all(p // xi == q // xi for p, q in zip(a, b, strict=True)))
    if len(a) == 1:
        distance = min(abs(a[0] - b[0]), d - abs(a[0] - b[0]))
    else:
        distance = math.dist(a, b)
    if distance < xi - gap:
        return 1
    if distance >= xi + gap:
        return 0
    return None  # excluded: must never appear


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize(("dim", "task", "d", "xi", "gap"), SETTINGS, ids=IDS)
def test_labels_follow_the_task_rule_for_every_example(dim, task, d, xi, gap, split):
    x, y = make(dim, task, d, xi, gap, split=split)[:]
    for positions, label in zip(active_positions(x), y.tolist(), strict=True):
        assert reference_label(*positions, task, d, xi, gap) == label


@pytest.mark.parametrize(("dim", "task", "d", "xi", "gap"), SETTINGS, ids=IDS)
def test_every_input_has_exactly_two_active_pixels_of_the_given_value(dim, task, d, xi, gap):
    x, y = make(dim, task, d, xi, gap, value=0.5)[:]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (64, 1, *(d,) * dim)
    assert (x != 0).flatten(1).sum(dim=1).tolist() == [2] * len(x)
    assert set(x[x != 0].tolist()) == {0.5}


@pytest.mark.parametrize(("dim", "task", "d", "xi", "gap"), SETTINGS, ids=IDS)
def test_classes_are_balanced_over_the_whole_set(dim, task, d, xi, gap):
    splits = [make(dim, task, d, xi, gap, split=s, train_size=10) for s in ("train", "test")]
    y = torch.cat([split.tensors[1] for split in splits])
    assert set(y.tolist()) == {0, 1}
    assert 2 * int(y.sum()) == len(y)


def test_whole_set_holds_every_pair_of_the_smaller_class_once():
    # 1D task 2, d=12, xi=4: 3 blocks of 4 -> 3 * C(4, 2) = 18 same-block pairs, the smaller class.
    splits = [scale_detection(task=2, d=12, xi=4, train_size=6, split=s) for s in ("train", "test")]
    pairs = {(a[0], b[0]) for split in splits for a, b in pair_set(split)}
    assert sum(len(split) for split in splits) == 36 and len(pairs) == 36
    same_block = {pair for pair in pairs if pair[0] // 4 == pair[1] // 4}
    assert same_block == {(a, b) for a in range(12) for b in range(a + 1, 12) if a // 4 == b // 4}


@pytest.mark.parametrize("dim", [1, 2])
def test_train_and_test_are_disjoint_and_sized(dim):
    kwargs = dict(dim=dim, d=16 if dim == 1 else 8, xi=4, train_size=20, test_size=15, seed=3)
    train = pair_set(scale_detection(split="train", **kwargs))
    test = pair_set(scale_detection(split="test", **kwargs))
    assert len(train) == 20 and len(test) == 15
    assert not train & test


@pytest.mark.parametrize("split", ["train", "test"])
def test_same_seed_gives_the_same_data_and_other_seeds_differ(split):
    kwargs = dict(d=32, xi=8, train_size=50, test_size=50, split=split)
    first, again, other = (scale_detection(seed=s, **kwargs)[:] for s in (7, 7, 8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_generation_leaves_the_global_random_state_alone():
    state = torch.get_rng_state()
    scale_detection(d=16, xi=4, train_size=10, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_test_size_none_takes_every_remaining_example():
    test = scale_detection(task=2, d=12, xi=4, train_size=6, split="test")
    assert len(test) == 36 - 6


def test_train_size_none_takes_everything_but_the_test_set():
    assert len(scale_detection(task=2, d=12, xi=4, train_size=None, test_size=10)) == 26


def test_default_2d_paper_setting_builds_quickly():
    x, y = scale_detection(dim=2, d=28, xi=14, gap=2, train_size=1024)[:]
    assert x.shape == (1024, 1, 28, 28)
    assert abs(int(y.sum()) - 512) < 64  # a random half of a balanced set


def test_registry_builds_scale_detection_with_its_options():
    data = build("scale-detection", split="train", dim=2, d=8, xi=3, train_size=12, seed=1)
    assert data.tensors[0].shape == (12, 1, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        (dict(dim=3), "dim"),
        (dict(task=0), "task"),
        (dict(d=1), "d"),
        (dict(d=16, xi=0), "xi"),
        (dict(d=16, xi=17), "xi"),
        (dict(d=16, xi=4, gap=-1), "gap"),
        (dict(d=16, xi=4, gap=4), "gap"),
        (dict(d=16, xi=4, split="valid"), "split"),
        (dict(d=16, xi=4, train_size=0), "train_size"),
        (dict(d=16, xi=4, train_size=2.5), "train_size"),
        (dict(d=16, xi=4, test_size=0), "test_size"),
        (dict(d=16, xi=4, seed=-1), "seed"),
        (dict(d=16, xi=4, value=0.0), "value"),
        (dict(d=16, xi=4, train_size=10_000), "train_size"),
        (dict(d=16, xi=4, train_size=10, test_size=10_000), "train_size \\+ test_size"),
        (dict(d=16, xi=4, train_size=None, test_size=10_000), "test_size"),
        (dict(task=2, d=16, xi=1), "no pair"),
        (dict(task=2, d=16, xi=16), "no pair"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(kwargs, parameter):
    with pytest.raises(DiffeoProbeError, match=parameter):
        scale_detection(**kwargs)


def test_size_error_says_how_many_examples_exist():
    # 1D task 2, d=12, xi=4: 18 pairs per class -> 36 balanced examples.
    with pytest.raises(DiffeoProbeError, match="36 balanced examples"):
        scale_detection(task=2, d=12, xi=4, train_size=40)


def test_empty_test_split_is_refused():
    with pytest.raises(DiffeoProbeError, match="test split is empty"):
        scale_detection(task=2, d=12, xi=4, train_size=36, split="test")


def test_registry_refuses_unknown_options_and_data_dir(tmp_path):
    with pytest.raises(DiffeoProbeError, match="does not take 'width'; it takes: dim, task"):
        build("scale-detection", width=3)
    with pytest.raises(DiffeoProbeError, match="reads no files"):
        build("scale-detection", data_dir=tmp_path)


def test_unknown_dataset_lists_the_available_ones():
    with pytest.raises(DiffeoProbeError, match="fashionmnist, folder, mnist, scale-detection"):
        build("cifar")
