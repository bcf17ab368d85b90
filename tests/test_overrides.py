"""``reproduce --set KEY=VALUE`` (presets as data) and figures whose data set cannot be had.

No test here touches the network: the connection check is replaced (``no_network``) or the socket
is.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from pathlib import Path

import pytest
from test_experiments import run_cli

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.experiments import common, figure_specs, get_preset, reproduce
from diffeoprobe.experiments.overrides import (
    apply_overrides,
    describe_overrides,
    parse_overrides,
)
from diffeoprobe.experiments.presets import ZooNet

TINY = get_preset("tiny")
REAL_HOST_REACHABLE = common.host_reachable  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every download host is unreachable; the hosts asked about are recorded."""
    asked: list[tuple[str, int]] = []

    def unreachable(host: str, port: int, timeout: float = 3.0) -> bool:
        asked.append((host, port))
        return False

    monkeypatch.setattr(common, "host_reachable", unreachable)
    return asked


# ---- parsing -----------------------------------------------------------------------------------


def test_parse_overrides_reads_key_value_pairs() -> None:
    assert parse_overrides(["sd_width=256", " seeds = 0,1,2 ", "sd-depth=4"]) == {
        "sd_width": "256",
        "seeds": "0,1,2",
        "sd_depth": "4",
    }
    assert parse_overrides(["sd_width=1", "sd_width=2"]) == {"sd_width": "2"}  # the last wins
    assert parse_overrides(["description=a=b"]) == {"description": "a=b"}  # first = splits
    assert parse_overrides([]) == {} and parse_overrides(None) == {}


@pytest.mark.parametrize("item", ["sd_width", "=3", " =x"])
def test_parse_overrides_refuses_an_item_without_key_value(item: str) -> None:
    with pytest.raises(DiffeoProbeError, match="--set takes KEY=VALUE") as caught:
        parse_overrides(["seeds=0", item])
    assert repr(item) in str(caught.value)


def test_describe_overrides() -> None:
    assert describe_overrides({"sd_width": "256", "seeds": "0,1,2"}) == "sd_width=256, seeds=0,1,2"
    assert describe_overrides({}) == "" and describe_overrides(None) == ""


# ---- coercion of every field type ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("sd_width", "256", 256),  # int
        ("sd_width", " 1_000 ", 1000),
        ("r_drop", "2.5", 2.5),  # float
        ("sd_lr_per_width", "1e-3", 0.001),
        ("sd_weight_decay", "0", 0.0),
        ("zoo_augment", "true", True),  # bool
        ("zoo_augment", "YES", True),
        ("zoo_augment", "1", True),
        ("zoo_augment", "false", False),
        ("zoo_augment", "no", False),
        ("zoo_augment", "0", False),
        ("executor", "dask", "dask"),  # str
        ("description", "my run, wider", "my run, wider"),
        ("threads", "none", None),  # int | None
        ("threads", "None", None),
        ("threads", "2", 2),
        ("time_budget_s", "600", 600.0),  # float | None
        ("time_budget_s", "none", None),
        ("seeds", "0,1,2", (0, 1, 2)),  # tuple[int, ...]
        ("seeds", "[3, 4]", (3, 4)),
        ("seeds", "5", (5,)),
        ("noise_norms", "0,0.5,1e1", (0.0, 0.5, 10.0)),  # tuple[float, ...]
        ("pooling_models", "simplecnn, lenet", ("simplecnn", "lenet")),  # tuple[str, ...]
        ("noisy_models", "", ()),
        ("sd_stride1", "5,8", (5, 8)),  # tuple[int, int] | None
        ("sd_stride1", "(3, 4)", (3, 4)),
        ("sd_stride1", "none", None),
        ("zoo_dataset_options", '{"normalize": true, "d": 12}', {"normalize": True, "d": 12}),
        (
            "zoo_dataset_options",  # dict from k=v pairs, values read as JSON scalars
            "normalize=true,d=12,xi=0.5,data_dir=/tmp/x,x=null",
            dict(normalize=True, d=12, xi=0.5, data_dir="/tmp/x", x=None),
        ),
        ("zoo_dataset_options", "", {}),
    ],
)
def test_values_are_read_as_the_fields_type(key: str, text: str, expected: object) -> None:
    preset = apply_overrides(TINY, {key: text})
    value = getattr(preset, key)
    assert value == expected and type(value) is type(expected)
    assert preset.name == "tiny"
    others = {f.name for f in dataclasses.fields(TINY)} - {key}
    assert all(getattr(preset, f) == getattr(TINY, f) for f in others)  # nothing else moves


def test_zoo_nets_by_name_keep_the_presets_settings() -> None:
    preset = apply_overrides(TINY, {"zoo": "fc2,lenet"})
    fc2 = next(n for n in TINY.zoo if n.model == "fc2")
    assert preset.zoo == (fc2, ZooNet("lenet"))  # known: its options and optimiser; new: defaults
    assert apply_overrides(TINY, {"sd2d_models": ""}).sd2d_models == ()


def test_zoo_nets_from_a_json_list() -> None:
    text = '[{"model": "lenet", "lr": 1, "optimizer": "adam"}, {"model": "fc2", "options": {"width": 4}}, "simplecnn"]'
    preset = apply_overrides(TINY, {"zoo": text})
    simplecnn = next(n for n in TINY.zoo if n.model == "simplecnn")
    assert preset.zoo == (
        ZooNet("lenet", optimizer="adam", lr=1.0),
        ZooNet("fc2", dict(width=4)),
        simplecnn,
    )
    assert isinstance(preset.zoo[0].lr, float)


def test_a_zoo_net_takes_its_own_epochs() -> None:
    preset = apply_overrides(TINY, {"zoo": '[{"model": "lenet", "epochs": 3}]'})
    assert preset.zoo == (ZooNet("lenet", epochs=3),)
    assert common.zoo_run(preset, preset.zoo[0], seed=0).config.epochs == 3
    assert common.zoo_run(TINY, ZooNet("lenet"), seed=0).config.epochs == TINY.zoo_epochs
    for bad in ('"3"', "2.5", "true"):
        with pytest.raises(DiffeoProbeError, match="lenet: epochs takes"):
            apply_overrides(TINY, {"zoo": f'[{{"model": "lenet", "epochs": {bad}}}]'})


def test_no_overrides_is_the_preset_itself() -> None:
    assert apply_overrides(TINY, {}) is TINY


# ---- errors -------------------------------------------------------------------------------------


def test_unknown_key_lists_the_fields_and_the_closest() -> None:
    with pytest.raises(DiffeoProbeError) as caught:
        apply_overrides(TINY, {"sd_widht": "12"})
    message = str(caught.value)
    assert "--set sd_widht=12" in message and "no field 'sd_widht'" in message
    assert "did you mean 'sd_width'?" in message
    assert "sd_depth" in message and "zoo_dataset_options" in message and "r_drop" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("sd_width", "wide", "an int"),
        ("sd_width", "12.5", "an int"),
        ("r_drop", "lots", "a number"),
        ("r_drop", "inf", "a number"),
        ("zoo_augment", "maybe", "true or false"),
        ("threads", "two", "an int or none"),
        ("seeds", "0,one", "comma-separated ints"),
        ("noise_norms", "0,x", "comma-separated numbers"),
        ("sd_stride1", "5", "2 comma-separated ints (e.g. 5,8) or none"),
        ("sd_stride1", "5,8,9", "2 comma-separated ints"),
        ("zoo_dataset_options", "{not json", "a JSON object or comma-separated k=v pairs"),
        ("zoo_dataset_options", "normalize", "a JSON object or comma-separated k=v pairs"),
        ("zoo", "[{not json", "comma-separated model names or a JSON list"),
        ("zoo", '[{"lr": 0.1}]', "comma-separated model names or a JSON list"),
        ("zoo", '[{"model": "lenet", "momentum": 0.9}]', "ZooNet has no field momentum"),
        ("zoo", '[{"model": "lenet", "lr": "fast"}]', "lr takes a number"),
    ],
)
def test_a_value_of_the_wrong_type_names_field_type_and_value(
    key: str, text: str, expected: str
) -> None:
    with pytest.raises(DiffeoProbeError) as caught:
        apply_overrides(TINY, {key: text})
    message = str(caught.value)
    assert f"--set {key}={text}" in message and f"{key} takes" in message
    assert expected in message and repr(text) in message
    assert "\n" not in message


def test_name_cannot_be_overridden() -> None:
    with pytest.raises(DiffeoProbeError, match="'name' names the preset and cannot be set"):
        apply_overrides(TINY, {"name": "mine"})


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("seeds", "0,-1", "seeds are >= 0, got -1"),
        ("zoo_seeds", "-2", "seeds are >= 0, got -2"),
        ("seeds", "", "seeds needs at least one value"),
        ("sd_tasks", "", "sd_tasks needs at least one value"),
        ("probe_size", "1", "probe_size is >= 2, got 1"),
        ("sd_width", "0", "sd_width is >= 1 (a count or size), got 0"),
        ("init_seeds", "0", "init_seeds is >= 1"),
        ("threads", "-1", "threads is >= 1"),
        ("checkpoints", "-1", "checkpoints is >= 0, got -1"),
        ("sd_stride1", "0,8", "sd_stride1 is >= 1"),
        ("noise_norms", "0,-1", "noise_norms must be >= 0"),
        ("r_drop", "0", "r_drop must be > 0"),
        ("sd_tasks", "1,3", "sd_tasks must be one of 1, 2, got 3"),
        ("executor", "slurm", "executor must be one of serial, local, dask"),
        ("zoo", "lenet,resnet1", "unknown model 'resnet1' (did you mean"),
        ("pooling_models", "vgg", "unknown model 'vgg'"),
        ("zoo_dataset", "cifar100", "unknown dataset 'cifar100'"),
    ],
)
def test_values_out_of_range_are_refused_naming_the_field(
    key: str, text: str, expected: str
) -> None:
    with pytest.raises(DiffeoProbeError) as caught:
        apply_overrides(TINY, {key: text})
    assert expected in str(caught.value) and f"--set {key}={text}" in str(caught.value)


def test_zero_where_it_means_something_is_accepted() -> None:
    preset = apply_overrides(TINY, {"checkpoints": "0", "seeds": "0", "noise_norms": "0"})
    assert (preset.checkpoints, preset.seeds, preset.noise_norms) == (0, (0,), (0.0,))
    assert apply_overrides(TINY, {"zoo": "timm:resnet18"}).zoo == (ZooNet("timm:resnet18"),)


# ---- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "sd_widht=12"], "did you mean 'sd_width'"),
        (["--set", "sd_width"], "--set takes KEY=VALUE"),
        (["--set", "seeds=a,b"], "seeds takes comma-separated ints"),
        (["--set", "name=paper"], "cannot be set"),
    ],
)
def test_cli_bad_set_exits_2_with_one_line_before_any_work(
    monkeypatch, capsys, tmp_path: Path, args: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "reproduce", "tiny", *args, "--out", str(out))
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before any work


def test_cli_list_is_unaffected(monkeypatch, capsys) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "reproduce", "tiny", "--list")
    assert code == 0 and "scale-detection" in out and "presets: quick" in out


def _runs(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir() if p.is_dir()}


def _files(directory: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


def test_an_override_trains_new_runs_and_leaves_the_old_ones(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    args = ["reproduce", "tiny", "--only", "scale-detection", "--out", str(tmp_path)]
    code, out, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 0, out
    first = json.loads((tmp_path / "reproduce.json").read_text())
    assert first["overrides"] == {} and first["preset_name"] == "tiny"
    before = _runs(tmp_path)
    untouched = {k: v for k, v in _files(tmp_path / "runs").items()}

    code, _, err = run_cli(monkeypatch, capsys, *args, "--set", "sd_width=12")
    assert code == 2 and "--force" in err  # the directory holds another preset's figures
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--set", "sd_width=12", "--force")
    assert code == 0, out
    assert "preset tiny with sd_width=12" in out
    second = json.loads((tmp_path / "reproduce.json").read_text())
    assert second["overrides"] == {"sd_width": "12"} and second["preset_name"] == "tiny"
    assert second["preset"]["sd_width"] == 12 and second["preset"]["name"] == "tiny"
    after = _runs(tmp_path)
    new = set(after) - set(before)
    assert new, "a changed configuration must train new runs"
    ids = {r["id"] for r in second["runs"]}
    assert new <= ids and ids - new <= set(before)  # runs sd_width does not change are reused
    wide = [r for r in second["runs"] if "scalecnn1d" in r["run"] and "stride=2" in r["run"]]
    assert wide and {r["id"] for r in wide} == new  # every stride-2 1D CNN, and only those
    assert all(r["status"] == "done" for r in second["runs"])
    for rid in new:
        config = json.loads((tmp_path / "runs" / rid / "config.json").read_text())["config"][
            "train"
        ]
        assert config["model_options"]["width"] == 12
    now = _files(tmp_path / "runs")
    assert {k: now[k] for k in untouched} == untouched  # the first runs were not touched


# ---- a data set that cannot be had -------------------------------------------------------------


def _cifar(tmp_path: Path, **changes: object):
    """tiny with a CIFAR-10 zoo whose files are absent (an empty data_dir) and download=True."""
    options = dict(download=True, data_dir=str(tmp_path / "no-cifar"))
    return dataclasses.replace(TINY, zoo_dataset="cifar10", zoo_dataset_options=options, **changes)


def test_availability_says_why_and_how(tmp_path: Path, no_network, monkeypatch) -> None:
    directory = tmp_path / "no-cifar"
    options = dict(download=True, data_dir=str(directory))
    reason = common.availability("cifar10", options)
    assert reason is not None and not common.available("cifar10", options)
    assert f"cifar10 not found under {directory}" in reason
    assert "www.cs.toronto.edu cannot be reached (no network)" in reason
    assert "download=True" in reason and "cifar-10-python.tar.gz" in reason
    assert set(no_network) == {("www.cs.toronto.edu", 443)}
    asked = len(no_network)

    local = common.availability("cifar10", dict(data_dir=str(directory)))  # no download asked
    assert local is not None and "cannot be reached" not in local
    assert len(no_network) == asked  # no connection tried without download

    fashion = common.availability("fashionmnist", dict(data_dir=str(directory)))
    assert fashion is not None and "apt-get install dataset-fashion-mnist" in fashion
    assert common.availability("scale-detection", dict(d=12)) is None

    monkeypatch.setattr(common, "host_reachable", lambda host, port, timeout=3.0: True)
    assert common.availability("cifar10", options) is None  # reachable: it will download


def test_host_reachable_is_cached_and_has_a_short_timeout(monkeypatch) -> None:
    real = REAL_HOST_REACHABLE
    calls: list[tuple[tuple[str, int], float]] = []

    def refuse(address: tuple[str, int], timeout: float) -> None:
        calls.append((address, timeout))
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(common, "_REACHABLE", {})
    monkeypatch.delenv(common.OFFLINE_ENV, raising=False)
    assert real("example.invalid", 443) is False
    assert real("example.invalid", 443) is False
    assert calls == [(("example.invalid", 443), common.CONNECT_TIMEOUT)]  # once per host
    assert common.CONNECT_TIMEOUT <= 5
    monkeypatch.setenv(common.OFFLINE_ENV, "1")
    assert real("other.invalid", 80) is False and len(calls) == 1  # offline: not even tried


def test_figure_without_its_data_is_skipped_with_reason_and_command(tmp_path: Path) -> None:
    preset = _cifar(tmp_path)
    spec = figure_specs(preset, ["error-vs-r"])[0]
    assert spec.requires == ("cifar10",)  # file-backed, download or not
    start = time.perf_counter()
    result = reproduce(preset, tmp_path / "out", only=["error-vs-r"])
    seconds = time.perf_counter() - start
    (figure,) = [f for f in result.figures if f.name == "error-vs-r"]
    assert figure.status == "skipped" and result.ok
    assert "cifar10 not found under" in figure.note
    assert "cannot be reached (no network)" in figure.note
    assert "build" in figure.note and "download=True" in figure.note
    assert not (tmp_path / "out" / "runs").exists()  # nothing attempted
    assert seconds < 60
    summary = json.loads((tmp_path / "out" / "reproduce.json").read_text())
    assert summary["figures"][0]["note"] == figure.note


def test_paper_preset_skips_its_cifar_zoo_without_network(monkeypatch) -> None:
    monkeypatch.setattr(common, "_loads", lambda dataset, options: False)  # no CIFAR-10 here
    specs = {s.name: s for s in figure_specs("paper")}
    assert specs["error-vs-r"].requires == ("cifar10",)
    for name in ("noisy-training", "pooling"):
        assert all(r.config.dataset != "cifar10" for r in specs[name].runs)
        assert "cannot be reached (no network)" in specs[name].description
        assert "build" in specs[name].description


def test_zoo_nets_left_out_say_why_in_the_description(tmp_path: Path) -> None:
    preset = _cifar(tmp_path, noisy_models=("simplecnn",))
    for name in ("pooling", "noisy-training"):
        spec = figure_specs(preset, [name])[0]
        assert all(r.config.dataset != "cifar10" for r in spec.runs)
        assert f"cifar10 not found under {tmp_path / 'no-cifar'}" in spec.description
        assert "cannot be reached (no network)" in spec.description


def test_the_device_reaches_every_run_and_measurement() -> None:
    preset = apply_overrides(TINY, {"device": "cuda:1"})
    specs = figure_specs(preset)
    runs_ = [run for spec in specs for run in spec.runs]
    assert runs_ and all(run.config.device == "cuda:1" for run in runs_)
    assert common.measure_options(runs_[0])["device"] == "cuda:1"
    cpu = [run for spec in figure_specs(TINY) for run in spec.runs]
    assert all(run.config == dataclasses.replace(run.config, device="cpu") for run in cpu)
