"""The config package: one override path for every door, messages that name the key and type."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import chexnet_dicom.config as config
from chexnet_dicom.config import (
    AnalysisConfig,
    BatchConfig,
    RuntimeConfig,
    TrainConfig,
    apply_overrides,
    check_pseudonymization,
    load_analysis_config,
    load_batch_config,
    load_node_config,
    load_train_config,
)
from chexnet_dicom.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
OPEN = {"access.open": True}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"listen.port": "11112"}, "listen.port must be an integer, not a string"),
        ({"listen.quiet_period": True}, "listen.quiet_period must be a number, not true or false"),
        ({"access.allow": "MODALITY"}, "access.allow must be a list of strings, not a string"),
        ({"access.allow": ["A", 3]}, r"access.allow\[1\] must be a string, not an integer"),
        ({"spool.own_outputs": "keep"}, "spool.own_outputs must be one of 'drop', 'store', not 'keep'"),
        (
            {"destination.timeouts.max_pdu": 1.5},
            "destination.timeouts.max_pdu must be an integer, not a number",
        ),
        ({"weights": 3}, "weights must be a string, not an integer"),
        ({"listen": 3}, "listen must be a table, not an integer"),
        ({"runtime.device": "gpu"}, "runtime.device must be auto, cpu, cuda or cuda:N, not 'gpu'"),
    ],
)
def test_a_bad_override_names_its_key_and_the_type_expected(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_node_config(None, {**OPEN, **overrides})


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("listen.prot", r"unknown setting 'listen.prot': \[listen\] has acse_timeout, ae_title, bind"),
        ("weight", "unknown setting 'weight': the top level has access, destination"),
        ("destination.timeouts.pdu", r"\[destination.timeouts\] has acse_timeout, dimse_timeout"),
        ("listen.port.number", "setting 'listen.port.number': listen.port is not a table"),
        ("listen..port", "must be KEY or TABLE.KEY"),
    ],
)
def test_an_unknown_override_key_is_named_with_the_settings_of_its_table(key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_node_config(None, {**OPEN, key: 1})


def test_the_file_and_the_overrides_meet_before_validation(tmp_path: Path) -> None:
    # the file alone is refused (no allow-list); with the flag's list it is a valid node
    path = tmp_path / "node.toml"
    path.write_text('[listen]\nport = 104\n\n[spool]\ndir = "s"\n')
    with pytest.raises(ConfigError, match=r"access.allow is empty"):
        load_node_config(path)
    cfg = load_node_config(path, {"access.allow": ["MODALITY"], "listen.ae_title": "NODE"})
    assert (cfg.listen.port, cfg.listen.ae_title, cfg.access.allow, cfg.spool.dir) == (
        104,
        "NODE",
        ("MODALITY",),
        "s",
    )
    # an override replaces the file's value, the file is not modified in memory between loads
    assert load_node_config(path, {**OPEN, "listen.port": 11113}).listen.port == 11113
    assert load_node_config(path, OPEN).listen.port == 104


def test_every_door_takes_the_same_overrides(tmp_path: Path) -> None:
    flags = {"runtime.device": "cuda:1", "runtime.threads": 3, "weights": "card"}
    analysis = tmp_path / "a.toml"
    analysis.write_text('[runtime]\nbackend = "torch"\n')
    for cfg in (
        load_analysis_config(analysis, flags),
        load_batch_config(analysis, flags),
        load_node_config(analysis, {**OPEN, **flags}),
        apply_overrides(AnalysisConfig(), {**flags, "runtime.backend": "torch"}),
    ):
        assert (cfg.runtime.device, cfg.runtime.threads, cfg.runtime.backend, cfg.weights) == (
            "cuda:1",
            3,
            "torch",
            "card",
        )


def test_training_overrides_follow_the_same_path() -> None:
    recipe = REPO / "pipelines" / "demo_nih500.toml"
    cfg = load_train_config(recipe, {"train.epochs": 2, "augment.scale": [0.9, 1.1]})
    assert (cfg.train.epochs, cfg.augment.scale) == (2, (0.9, 1.1))
    with pytest.raises(ConfigError, match=r"unknown setting 'train.epoch': \[train\] has"):
        load_train_config(recipe, {"train.epoch": 2})
    with pytest.raises(ConfigError, match=r"train.epochs must be an integer, not a string"):
        load_train_config(recipe, {"train.epochs": "2"})
    with pytest.raises(ConfigError, match=r"train.device must be auto, cpu, cuda or cuda:N"):
        load_train_config(recipe, {"train.device": "cuda1"})


def test_apply_overrides_validates_again_and_keeps_the_rest() -> None:
    base = apply_overrides(TrainConfig(), {"train.lr": 0.01})
    again = apply_overrides(base, {"train.epochs": 3})
    assert (again.train.lr, again.train.epochs, again.data) == (0.01, 3, TrainConfig().data)
    assert apply_overrides(base, {}) is base
    with pytest.raises(ConfigError, match=r"train.lr must be > 0"):
        apply_overrides(base, {"train.lr": 0})


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_accepted(device: str) -> None:
    assert RuntimeConfig(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cuda:1 ", "CPU", "cuda:-1", "cpu\n"])
def test_device_names_refused(device: str) -> None:
    with pytest.raises(ConfigError, match=r"runtime.device must be auto, cpu, cuda or cuda:N"):
        RuntimeConfig(device=device)


def test_pseudonymisation_never_comes_with_dicom_results() -> None:
    check_pseudonymization(True, write_dicom=False, send=False)
    check_pseudonymization(False, write_dicom=True, send=True)
    for write_dicom, send in ((True, False), (False, True), (True, True)):
        with pytest.raises(ConfigError, match=r"--pseudonymize .* cannot be combined"):
            check_pseudonymization(True, write_dicom=write_dicom, send=send)
    # the configuration holds the rule, whether the file or the flags set it
    with pytest.raises(ConfigError, match=r"batch.pseudonymize"):
        apply_overrides(BatchConfig(), {"batch.pseudonymize": True, "destination.url": "PACS@127.0.0.1:104"})
    with pytest.raises(ConfigError, match=r"batch.write_dicom"):
        load_batch_config(None, {"batch.pseudonymize": True, "batch.write_dicom": True})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("MODALITY@127.0.0.1:104", "is not a host name or IP address"),
        ("MODALITY@host.example:104", "is not a host name or IP address"),
        ("MODALITY@", "empty host"),
        ("MODALITY\n", "is not a valid AE title"),
        ("MODA\tLITY", "is not a valid AE title"),
        ("A" * 17, "is not a valid AE title"),
    ],
)
def test_allow_list_entries_listen_would_misread_are_refused(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_node_config(None, {"access.allow": [entry]})


def test_allow_list_entries_with_an_ipv6_host_are_kept() -> None:
    assert config.parse_allowed("MODALITY@::1") == ("MODALITY", "::1")
    assert config.parse_allowed(" MODALITY @ 10.0.0.1") == ("MODALITY", "10.0.0.1")


def test_the_package_map_names_every_submodule_and_each_re_export_exists() -> None:
    doc = config.__doc__ or ""
    submodules = sorted(m.name for m in pkgutil.iter_modules(config.__path__))
    assert submodules  # the package has submodules, each on the map
    for name in submodules:
        assert f":mod:`chexnet_dicom.config.{name}`" in doc, name
    for name in config.__all__:
        assert hasattr(config, name), name
    # every public name of every submodule is re-exported (imports keep working from the package)
    for name in submodules:
        module = importlib.import_module(f"chexnet_dicom.config.{name}")
        missing = set(getattr(module, "__all__", ())) - set(config.__all__)
        assert not missing, (name, missing)
