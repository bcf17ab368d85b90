"""Pretrained Hugging Face image models (``hf:``): loaded from a local directory, measured, their
preprocessing read; skipped where the optional package transformers is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import diffeoprobe as dp
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.models.pretrained import preprocessing

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ViT of ViT-B/16's shape in miniature (16 x 16 images, 4 x 4 patches, 2 layers)."""
    directory = tmp_path_factory.mktemp("tiny-vit")
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=3,
    )
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(directory)
    processor = dict(
        do_resize=True,
        size={"height": 16, "width": 16},
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
    )
    (directory / "preprocessor_config.json").write_text(json.dumps(processor))
    return directory


def test_a_local_hf_model_is_measured_at_every_layer(tiny_vit: Path) -> None:
    model = dp.models.build(f"hf:{tiny_vit}", 3, 3)
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    table = dp.measure(model, x, seed=0)
    layers = list(table["layer"])
    assert layers[0] == "input" and layers[-1] == "output"
    assert any(name.startswith("vit.") and "mlp" in name for name in layers)  # module paths
    assert int(table["features"].iloc[-1]) == 3  # the logits of the ModelOutput
    assert table[["D", "G", "R"]].notna().all().all()


def test_the_models_preprocessing_is_read_and_applied_to_a_folder(
    tiny_vit: Path, tmp_path: Path
) -> None:
    from PIL import Image

    assert preprocessing(f"hf:{tiny_vit}") == dict(
        size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    )
    Image.new("RGB", (30, 20), (128, 64, 255)).save(tmp_path / "a.png")
    x = dp.data.build("folder", root=str(tmp_path), size=16, mean=[0.5] * 3, std=[0.25] * 3)[:][0]
    expected = (torch.tensor([128, 64, 255]) / 255.0 - 0.5) / 0.25
    torch.testing.assert_close(x[0, :, 8, 8], expected)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("./no-such-dir", "is not a model directory"),
        ("some-org/some-model", "could not be loaded .offline: only local directories."),
    ],
)
def test_a_model_that_does_not_resolve_is_one_line(name: str, message: str) -> None:
    with pytest.raises(DiffeoProbeError, match=message) as error:
        dp.models.build(f"hf:{name}", 3, 3)
    assert "\n" not in str(error.value)


def test_a_directory_without_a_model_and_wrong_channels_are_refused(
    tiny_vit: Path, tmp_path: Path
) -> None:
    with pytest.raises(DiffeoProbeError, match="could not be loaded"):
        dp.models.build(f"hf:{tmp_path}", 3, 3)
    with pytest.raises(DiffeoProbeError, match="takes 3-channel images, the data have 1"):
        dp.models.build(f"hf:{tiny_vit}", 1, 3)


def test_the_cli_measures_a_folder_with_the_models_preprocessing(
    tiny_vit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import sys

    from PIL import Image

    from diffeoprobe.cli import main

    for label in ("a", "b", "c"):
        for i in range(2):
            Image.new("RGB", (20 + i, 24), (40 * i, 90, 200)).save(tmp_path / f"{label}{i}.png")
    out = tmp_path / "vit.csv"
    argv = ["diffeoprobe", "measure", "--model", f"hf:{tiny_vit}", "--dataset", "folder"]
    argv += ["-d", f"root={tmp_path}", "--probe-size", "6", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "preprocessing of hf:" in printed and "size=16" in printed and "std=[0.25" in printed
    assert out.is_file() and "vit." in out.read_text()
