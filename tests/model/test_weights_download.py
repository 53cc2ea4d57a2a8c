"""Verified, atomic, cached downloads (a local HTTP server, no internet) and weights resolution."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest

from chexnet_dicom.cli import main
from chexnet_dicom.errors import WeightsError
from chexnet_dicom.model import resolve
from chexnet_dicom.model.card import ModelCard
from chexnet_dicom.model.download import fetch_file
from chexnet_dicom.model.registry import (
    DEFAULT_CHECKPOINT,
    REGISTRY,
    CheckpointEntry,
    HashSpec,
    bundle_dir,
    cache_dir,
    download_path,
    file_digests,
)
from chexnet_dicom.model.resolve import DEMO_CARD, resolve_weights
from tests.helpers.checkpoints import serve_directory

pytestmark = pytest.mark.network  # binds a loopback socket


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("CHEXDCM_CACHE", str(root))
    monkeypatch.delenv("CHEXDCM_WEIGHTS", raising=False)
    return root


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, bytes]:
    www = tmp_path / "www"
    www.mkdir()
    payload = os.urandom(300_000)
    (www / "model.pth.tar").write_bytes(payload)
    return www, payload


def _entry(url: str, spec: HashSpec | None, **kw: object) -> CheckpointEntry:
    base = CheckpointEntry(
        name="test-ckpt",
        url=url,
        filename="model.pth.tar",
        format="arnoweng",
        hash=spec,
        size=None,
        max_bytes=1 << 20,
        description="test",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def _no_partials(folder: Path) -> bool:
    return not folder.exists() or not any(p.name.endswith(".part") for p in folder.iterdir())


def test_cache_dir_follows_environment(cache: Path) -> None:
    assert cache_dir() == cache
    assert download_path(REGISTRY[DEFAULT_CHECKPOINT]) == cache / "downloads" / "model.pth.tar"


@pytest.mark.parametrize("kind", ["sha256", "git-blob-sha1"])
def test_download_verifies_and_caches(cache: Path, served: tuple[Path, bytes], kind: str) -> None:
    www, payload = served
    digests = file_digests(www / "model.pth.tar")
    with serve_directory(www) as base:
        entry = _entry(f"{base}/model.pth.tar", HashSpec(kind, digests[kind]), size=len(payload))  # type: ignore[arg-type]
        path = fetch_file(entry)
    assert path == download_path(entry)
    assert path.read_bytes() == payload
    assert _no_partials(path.parent)
    # the server is gone: the cached copy is verified and used without the network
    assert fetch_file(entry) == path


def test_tampered_download_is_refused_and_nothing_is_stored(cache: Path, served: tuple[Path, bytes]) -> None:
    www, payload = served
    good = file_digests(www / "model.pth.tar")["git-blob-sha1"]
    (www / "model.pth.tar").write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))
    with serve_directory(www) as base:
        entry = _entry(f"{base}/model.pth.tar", HashSpec("git-blob-sha1", good))
        with pytest.raises(WeightsError, match=r"git blob SHA-1.*tampered.*nothing was stored"):
            fetch_file(entry)
    target = download_path(entry)
    assert not target.exists()
    assert _no_partials(target.parent)


def test_tampered_cached_file_is_refused(cache: Path, served: tuple[Path, bytes]) -> None:
    www, payload = served
    entry = _entry(
        "http://127.0.0.1:9/unused", HashSpec("sha256", file_digests(www / "model.pth.tar")["sha256"])
    )
    target = download_path(entry)
    target.parent.mkdir(parents=True)
    target.write_bytes(payload[:1000])  # a truncated manual copy
    with pytest.raises(WeightsError, match=f"tampered.*delete {target}"):
        fetch_file(entry)


def test_oversized_download_is_cut_off_without_partial_file(cache: Path, served: tuple[Path, bytes]) -> None:
    www, payload = served
    spec = HashSpec("sha256", file_digests(www / "model.pth.tar")["sha256"])
    with serve_directory(www) as base:
        entry = _entry(f"{base}/model.pth.tar", spec, max_bytes=len(payload) // 2)
        with pytest.raises(WeightsError, match="cap"):
            fetch_file(entry)
    assert not download_path(entry).exists()
    assert _no_partials(download_path(entry).parent)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_offline_fetch_says_where_to_put_the_file(cache: Path) -> None:
    real = REGISTRY[DEFAULT_CHECKPOINT]
    assert real.hash is not None
    entry = dataclasses.replace(real, url=f"http://127.0.0.1:{_closed_port()}/model.pth.tar")
    target = download_path(entry)
    with pytest.raises(WeightsError) as info:
        fetch_file(entry, timeout=5)
    msg = str(info.value)
    assert str(target) in msg
    assert real.hash.value in msg
    assert f"chexdcm weights fetch {entry.name}" in msg
    assert not target.exists()
    assert _no_partials(target.parent)


def test_missing_file_on_server_is_an_error(cache: Path, served: tuple[Path, bytes]) -> None:
    www, _ = served
    with serve_directory(www) as base:
        entry = _entry(f"{base}/absent.bin", HashSpec("sha256", "0" * 64))
        with pytest.raises(WeightsError, match="cannot download"):
            fetch_file(entry)
    assert _no_partials(download_path(entry).parent)


def test_entry_without_hash_needs_one(cache: Path, served: tuple[Path, bytes]) -> None:
    www, payload = served
    with serve_directory(www) as base:
        entry = _entry(f"{base}/model.pth.tar", None)
        with pytest.raises(WeightsError, match="no published hash"):
            fetch_file(entry)
        path = fetch_file(entry, expected=HashSpec("sha256", file_digests(www / "model.pth.tar")["sha256"]))
    assert path.read_bytes() == payload


def test_registry_entries_are_consistent() -> None:
    assert REGISTRY[DEFAULT_CHECKPOINT].chexnet
    arno = REGISTRY["arnoweng-chexnet"].hash
    assert arno == HashSpec("git-blob-sha1", "14922ae7de18767793f6ac85cf51df950327d96c")
    tv = REGISTRY["torchvision-densenet121"]
    # torchvision's check: the hex after the last '-' of the file name is a sha256 prefix
    assert tv.hash == HashSpec("sha256-prefix", tv.filename.rsplit("-", 1)[1].split(".")[0])
    assert all(e.url.startswith("https://") for e in REGISTRY.values())


# ------------------------------------------------------------------ resolve_weights


def _card(folder: Path, stem: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{stem}.card.json"
    p.write_text("{}", encoding="utf-8")
    return p


def test_resolve_order(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = _card(tmp_path / "demo", "chexnet_demo")
    monkeypatch.setattr(resolve, "DEMO_CARD", demo)
    assert resolve_weights() == (
        demo,
        "bundled demo weights: pipeline demonstration only, not for clinical use",
    )
    cached = _card(bundle_dir(REGISTRY[DEFAULT_CHECKPOINT]), DEFAULT_CHECKPOINT)
    path, why = resolve_weights()
    assert path == cached and "cached" in why
    env = _card(tmp_path / "env", "env")
    monkeypatch.setenv("CHEXDCM_WEIGHTS", str(env.parent))  # a folder holding one card
    assert resolve_weights() == (env, f"CHEXDCM_WEIGHTS={env.parent}")
    explicit = _card(tmp_path / "x", "explicit")
    assert resolve_weights(str(explicit))[0] == explicit
    assert resolve_weights(DEFAULT_CHECKPOINT)[0] == cached  # a registry name


def test_resolve_errors(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolve, "DEMO_CARD", tmp_path / "absent.card.json")
    with pytest.raises(WeightsError, match=r"no model weights found.*chexdcm weights fetch"):
        resolve_weights()
    raw = tmp_path / "model.pth.tar"
    raw.write_bytes(b"x")
    with pytest.raises(WeightsError, match="weights import"):
        resolve_weights(str(raw))
    with pytest.raises(WeightsError, match="not in the cache yet"):
        resolve_weights("reproduce-chexnet")
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(str(tmp_path / "nothing"))
    two = tmp_path / "two"
    _card(two, "a")
    _card(two, "b")
    with pytest.raises(WeightsError, match="2 model cards"):
        resolve_weights(str(two))


# ------------------------------------------------------------------ CLI


def test_cli_list_and_usage(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out
    assert "14922ae7de18767793f6ac85cf51df950327d96c" in out
    # the bundled demo weights that infer falls back to are listed too
    demo = ModelCard.read(DEMO_CARD)
    assert f"{demo.name} {demo.version} (bundled with the package)" in out and str(DEMO_CARD) in out
    assert main(["weights"]) == 2
    assert main(["weights", "fetch", "no-such-model"]) == 1
    assert "unknown checkpoint" in capsys.readouterr().err


def test_cli_fetch_offline_exit_code(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "fetch", "reproduce-chexnet", "--no-convert"]) == 1
    assert "no published hash" in capsys.readouterr().err
