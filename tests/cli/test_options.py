"""The shared runtime flags (declared once, ``cuda:N`` accepted) and ``config check`` parity with ``listen``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from chexnet_dicom.cli import _build_parser, main
from chexnet_dicom.cli.batch import _settings as batch_settings
from chexnet_dicom.cli.infer import _settings as infer_settings
from chexnet_dicom.cli.listen import config_from_args
from chexnet_dicom.cli.options import RUNTIME_FLAGS, runtime_overrides
from chexnet_dicom.config import AnalysisConfig, BatchConfig, NodeConfig

REPO = Path(__file__).resolve().parents[2]


def _parse(*argv: str) -> argparse.Namespace:
    return _build_parser(list(argv)).parse_args(list(argv))


def _door_args(door: str, tmp_path: Path, *flags: str) -> argparse.Namespace:
    if door == "infer":
        return _parse("infer", str(tmp_path), *flags)
    if door == "batch":
        return _parse("batch", str(tmp_path), "--out", str(tmp_path / "out"), *flags)
    return _parse("listen", "--open", "--spool", str(tmp_path / "spool"), *flags)


def _door_config(door: str, args: argparse.Namespace) -> AnalysisConfig | BatchConfig | NodeConfig:
    if door == "infer":
        return infer_settings(args)
    return batch_settings(args) if door == "batch" else config_from_args(args)


@pytest.mark.parametrize("door", ["infer", "batch", "listen"])
@pytest.mark.parametrize("device", ["cuda:1", "cuda:0", "cuda", "cpu", "auto"])
def test_every_door_accepts_the_devices_the_config_accepts(door: str, device: str, tmp_path: Path) -> None:
    args = _door_args(door, tmp_path, "--device", device, "--weights", "w.card.json")
    cfg = _door_config(door, args)
    assert (cfg.runtime.device, cfg.weights) == (device, "w.card.json")


@pytest.mark.parametrize("door", ["infer", "batch", "listen"])
@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:one", "CUDA"])
def test_every_door_refuses_other_devices_as_a_usage_error(
    door: str, device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = {
        "infer": ["infer", str(tmp_path)],
        "batch": ["batch", str(tmp_path), "--out", str(tmp_path / "o")],
        "listen": ["listen", "--open"],
    }[door]
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err
    assert "--device must be auto, cpu, cuda or cuda:N" in err and repr(device) in err


def test_the_runtime_flags_become_runtime_settings(tmp_path: Path) -> None:
    args = _parse(
        "infer",
        str(tmp_path),
        "--device=cuda:2",
        "--backend=torch",
        "--precision=bf16",
        "--threads=3",
        "--workers=0",
        "--tta",
    )
    assert runtime_overrides(args) == {
        "runtime.device": "cuda:2",
        "runtime.backend": "torch",
        "runtime.precision": "bf16",
        "runtime.threads": 3,
        "runtime.workers": 0,
        "runtime.tta": "tencrop",
    }
    assert runtime_overrides(_parse("infer", str(tmp_path))) == {}  # nothing given: the file's values stay
    batch = _parse("batch", str(tmp_path), "--out", "o", "--batch-size", "4", "--workers", "2")
    assert runtime_overrides(batch) == {"runtime.batch_size": 4, "runtime.workers": 2}
    assert set(RUNTIME_FLAGS) <= set(infer_settings(args).runtime.__dataclass_fields__)


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text(
        'weights = "file.card.json"\n[runtime]\ndevice = "cpu"\nthreads = 2\n[outputs]\nsc = true\n'
    )
    settings = infer_settings(
        _parse("infer", str(tmp_path), "--config", str(cfg), "--device", "cuda:1", "--no-sc")
    )
    assert (settings.runtime.device, settings.runtime.threads, settings.outputs.sc, settings.weights) == (
        "cuda:1",
        2,
        False,
        "file.card.json",
    )


@pytest.mark.parametrize(("flag", "value"), [("--threads", "0"), ("--workers", "-1"), ("--threads", "two")])
def test_bad_counts_are_usage_errors(flag: str, value: str, tmp_path: Path) -> None:
    assert main(["infer", str(tmp_path), flag, value]) == 2
    assert main(["batch", str(tmp_path), "--out", str(tmp_path / "o"), flag, value]) == 2


def test_a_bad_setting_in_the_file_is_named_by_every_door(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[runtime]\nthreads = "four"\n')
    for argv in (
        ["infer", str(tmp_path), "--config", str(cfg)],
        ["batch", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(cfg)],
        ["listen", "--open", "--config", str(cfg)],
    ):
        assert main(argv) == 2
        assert "runtime.threads must be an integer, not a string" in capsys.readouterr().err


def test_batch_refuses_pseudonymised_tables_with_a_configured_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "batch.toml"
    cfg.write_text('[batch]\npseudonymize = true\n[destination]\nurl = "PACS@127.0.0.1:104"\n')
    assert main(["batch", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "cannot be combined" in capsys.readouterr().err
    # a destination in the file alone implies writing the DICOM results it sends
    cfg.write_text('[destination]\nurl = "PACS@127.0.0.1:104"\n')
    assert batch_settings(
        _parse("batch", str(tmp_path), "--out", "o", "--config", str(cfg))
    ).batch.write_dicom


def _node_toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(f'[spool]\ndir = "{tmp_path / "spool"}"\n{body}')
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[access]\nallow = ["MODALITY@nonexistent.invalid"]\n', "does not resolve"),
        ('[access]\nallow = ["MODALITY@127.0.0.1:104"]\n', "is not a host name or IP address"),
        (
            '[access]\nopen = true\n[tls]\nenabled = true\ncert = "c.pem"\nkey = "k.pem"\nca_bundle = "ca.pem"\n',
            "TLS",
        ),
        ('[access]\nopen = true\n[destination]\nurl = "not a destination"\n', "destination"),
    ],
)
def test_config_check_refuses_what_listen_refuses(
    tmp_path: Path, body: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _node_toml(tmp_path, body)
    assert main(["config", "check", str(path)]) == 2
    check_err = capsys.readouterr().err
    assert message in check_err
    # listen stops at the same place, with the same message, before it binds
    assert main(["listen", "--config", str(path)]) == 2
    assert check_err.split("error: ", 1)[1] == capsys.readouterr().err.split("error: ", 1)[1]


def test_config_check_accepts_the_shipped_configurations(capsys: pytest.CaptureFixture[str]) -> None:
    kinds = {"node.toml": "node", "batch.toml": "batch", "demo_nih500.toml": "train"}
    for name, kind in kinds.items():
        assert main(["config", "check", str(REPO / "pipelines" / name)]) == 0
        assert f"ok ({kind} configuration)" in capsys.readouterr().out


@pytest.mark.parametrize("door", ["infer", "batch", "listen"])
def test_draw_unreliable_becomes_the_outputs_setting_in_every_door(door: str, tmp_path: Path) -> None:
    assert _door_config(door, _door_args(door, tmp_path)).outputs.draw_unreliable is False
    args = _door_args(door, tmp_path, "--draw-unreliable")
    assert _door_config(door, args).outputs.draw_unreliable is True
