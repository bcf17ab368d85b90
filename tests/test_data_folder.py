"""Images a researcher already has: folders of image files and tensor files, through the API and CLI."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffeoprobe as dp
from diffeoprobe.errors import DiffeoProbeError


def _write(path: Path, mode: str, size: tuple[int, int], value: int, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[1], size[0], 3) if mode in ("RGB",) else (size[1], size[0])
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    image = Image.fromarray(array, "RGB" if mode == "RGB" else "L").convert(mode)
    image.save(path, fmt)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two classes, odd sizes, mixed modes (RGB, grey, RGBA, palette), PNG and JPEG, one corrupt."""
    root = tmp_path / "images"
    _write(root / "cat" / "a.png", "RGB", (37, 23), 1)
    _write(root / "cat" / "b.jpg", "L", (20, 31), 2, "JPEG")
    _write(root / "dog" / "c.png", "RGBA", (16, 16), 3)
    _write(root / "dog" / "d.png", "P", (45, 19), 4)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (root / "dog" / "notes.txt").write_text("not an image, not listed")
    return root


def test_a_folder_gives_resized_cropped_images_with_class_labels(folder: Path) -> None:
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable file\(s\): broken.png"):
        data = dp.data.build("folder", root=str(folder), size=12)
    x, y = data.tensors
    assert x.shape == (4, 3, 12, 12) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.tolist() == [0, 0, 1, 1]  # cat, dog: sorted sub-folder names


def test_grey_mode_statistics_and_a_seeded_subset(folder: Path) -> None:
    with pytest.warns(UserWarning):
        grey = dp.data.build("folder", root=str(folder), size=8, mode="grey").tensors[0]
    assert grey.shape == (4, 1, 8, 8)
    with pytest.warns(UserWarning):
        plain = dp.data.build("folder", root=str(folder), size=8).tensors[0]
    with pytest.warns(UserWarning):
        normed = dp.data.build("folder", root=str(folder), size=8, stats="imagenet").tensors[0]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(normed, (plain - mean) / std)
    picks = [
        dp.data.build("folder", root=str(folder / "cat"), size=8, limit=1, seed=s).tensors[0]
        for s in (0, 0)
    ]
    torch.testing.assert_close(picks[0], picks[1])  # the same seed, the same subset


def test_a_flat_folder_has_no_labels(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / f"{i}.png", "RGB", (10 + i, 9), i)
    x, y = dp.data.build("folder", root=str(tmp_path), size=8).tensors
    assert x.shape == (3, 3, 8, 8) and y.tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "f.png").write_bytes(b"x") and p / "f.png", "is a file, not a folder"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no image file"),
    ],
)
def test_a_folder_without_images_is_one_clear_error(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DiffeoProbeError, match=f"root .*{message}"):
        dp.data.build("folder", root=str(make(tmp_path)))


def test_bad_folder_options_name_the_option(folder: Path) -> None:
    for options, name in [
        ({"size": 0}, "size"),
        ({"mode": "cmyk"}, "mode"),
        ({"stats": "x"}, "stats"),
    ]:
        with pytest.raises(DiffeoProbeError, match=name):
            dp.data.build("folder", root=str(folder), **options)
    with pytest.raises(DiffeoProbeError, match="root: the folder of images is required"):
        dp.data.build("folder")


def test_tensor_files_pt_and_npy(tmp_path: Path) -> None:
    x = torch.rand(5, 3, 6, 6)
    torch.save({"x": x, "y": torch.arange(5)}, tmp_path / "d.pt")
    np.save(tmp_path / "d.npy", (x.numpy() * 255).astype(np.uint8))
    got, labels = dp.data.build("tensors", path=str(tmp_path / "d.pt")).tensors
    torch.testing.assert_close(got, x)
    assert labels.tolist() == [0, 1, 2, 3, 4]
    as_bytes, none = dp.data.build("tensors", path=str(tmp_path / "d.npy")).tensors
    assert (
        as_bytes.shape == (5, 3, 6, 6) and float(as_bytes.max()) <= 1 and none.tolist() == [-1] * 5
    )


def test_a_malicious_tensor_file_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(
        type("M", (), {"__reduce__": lambda self: (os.makedirs, (str(marker),))})()
    )
    (tmp_path / "evil.pt").write_bytes(payload)
    with pytest.raises(DiffeoProbeError, match="could not be read as tensors"):
        dp.data.build("tensors", path=str(tmp_path / "evil.pt"))
    assert not marker.exists()
    for bad, message in [("nothing.pt", "no such file"), ("d.txt", "expected a .pt")]:
        (tmp_path / "d.txt").write_text("x")
        with pytest.raises(DiffeoProbeError, match=message):
            dp.data.build("tensors", path=str(tmp_path / bad))


def test_an_identity_model_gives_r_one_on_folder_images(folder: Path) -> None:
    """A norm-preserving map: every representation changes exactly as the input does."""
    with pytest.warns(UserWarning):
        data = dp.data.build("folder", root=str(folder), size=16)
    net = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Flatten())
    table = dp.measure(net, data, probe_size=4, seed=0)
    torch.testing.assert_close(
        torch.tensor(table["R"].to_numpy()), torch.ones(len(table), dtype=torch.float64)
    )


def test_the_cli_measures_a_folder(folder: Path, monkeypatch, capsys, tmp_path: Path) -> None:
    from diffeoprobe.cli import main

    out = tmp_path / "t.csv"
    argv = [
        "diffeoprobe",
        "measure",
        "--dataset",
        "folder",
        "-d",
        f"root={folder}",
        "-d",
        "size=16",
    ]
    argv += ["--model", "simplecnn", "-m", "depth=2", "--probe-size", "4", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    code = 0
    with pytest.warns(UserWarning, match="broken.png"):
        try:
            main()
        except SystemExit as exc:
            code = exc.code or 0
    assert code == 0, capsys.readouterr().err
    assert out.is_file() and "output" in out.read_text()
