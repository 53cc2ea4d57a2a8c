"""Hostile, tampered and truncated checkpoints are refused without running anything."""

from __future__ import annotations

import collections
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chexnet_dicom.errors import WeightsError
from chexnet_dicom.model.registry import HashSpec, file_digests, git_blob_sha1, verify_file
from chexnet_dicom.model.safe_unpickle import InertObject, module_state_dict, safe_torch_load
from chexnet_dicom.model.safe_unpickle import loads as safe_loads
from chexnet_dicom.model.weights import import_checkpoint


class _Marker:
    """Pickles into a call that creates a marker file if it is ever executed."""

    def __init__(self, call: tuple[object, tuple[object, ...]]) -> None:
        self.call = call

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.call


def _hostile_calls(marker: Path) -> dict[str, tuple[object, tuple[object, ...]]]:
    return {
        "os.system": (os.system, (f"touch {marker}",)),
        "subprocess.call": (subprocess.call, (["touch", str(marker)],)),
        "builtins.exec": (exec, (f"open({str(marker)!r}, 'w').close()",)),
        "builtins.eval": (eval, (f"open({str(marker)!r}, 'w').close()",)),
    }


@pytest.mark.parametrize("call_name", ["os.system", "subprocess.call", "builtins.exec", "builtins.eval"])
@pytest.mark.parametrize("layout", ["legacy", "zip", "raw-pickle"])
def test_code_executing_pickle_is_refused_without_running(
    tmp_path: Path, call_name: str, layout: str
) -> None:
    marker = tmp_path / "PWNED"
    payload = {
        "state_dict": collections.OrderedDict(w=torch.zeros(2)),
        "x": _Marker(_hostile_calls(marker)[call_name]),
    }
    path = tmp_path / "evil.pth"
    if layout == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    elif layout == "zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload["x"], protocol=2))
    with pytest.raises(WeightsError, match="not on the allow-list"):
        safe_torch_load(path)
    assert not marker.exists()


def test_hostile_pickle_inside_a_module_state_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    module = torch.nn.Linear(2, 2)
    module.hook = _Marker((os.system, (f"touch {marker}",)))  # type: ignore[assignment]
    path = tmp_path / "model.pth"
    torch.save({"model": module}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match=r"posix.system|os.system"):
        safe_torch_load(path)
    assert not marker.exists()


def test_reconstructor_only_builds_placeholders(tmp_path: Path) -> None:
    import copyreg

    path = tmp_path / "r.pth"
    path.write_bytes(
        pickle.dumps(_Marker((copyreg._reconstructor, (collections.OrderedDict, object, None))), protocol=2)
    )  # type: ignore[attr-defined]
    with pytest.raises(WeightsError, match="only allowed for module placeholders"):
        safe_torch_load(path)
    # protocol 0/1 pickles of modules use it legitimately
    relu = safe_loads(pickle.dumps({"m": torch.nn.ReLU()}, protocol=1))["m"]
    assert isinstance(relu, InertObject)
    assert relu.pickled_name == "ReLU"


def test_tensor_rebuild_rejects_forged_storage(tmp_path: Path) -> None:
    path = tmp_path / "forged.pth"
    path.write_bytes(
        pickle.dumps(
            _Marker((torch._utils._rebuild_tensor_v2, ("not a storage", 0, (2,), (1,), False, None))),
            protocol=2,
        )
    )
    with pytest.raises(WeightsError, match="instead of a storage"):
        safe_torch_load(path)


def test_module_classes_become_inert_and_torchvision_is_never_imported(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    path = tmp_path / "m.pth"
    torch.save({"model": model}, path, _use_new_zipfile_serialization=False)
    before = set(sys.modules)
    obj = safe_torch_load(path)
    assert isinstance(obj["model"], InertObject)
    assert not isinstance(obj["model"], torch.nn.Module)
    state = module_state_dict(obj["model"])
    assert list(state) == list(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not any(m.startswith("torchvision") for m in set(sys.modules) - before)


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy", "zip"])
@pytest.mark.parametrize("keep", [0.97, 0.5, 0.05])
def test_truncated_file_is_a_weights_error(tmp_path: Path, zip_format: bool, keep: float) -> None:
    sd = collections.OrderedDict((f"w{i}", torch.randn(64, 64)) for i in range(8))
    path = tmp_path / "full.pth"
    torch.save({"state_dict": sd}, path, _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        safe_torch_load(cut)


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy", "zip"])
def test_a_storage_declared_larger_than_the_file_is_refused_before_allocation(
    tmp_path: Path, zip_format: bool
) -> None:
    """A small file whose storage record claims 8 GiB must not make torch allocate 8 GiB."""
    path = tmp_path / "honest.pth"
    torch.save({"w": torch.zeros(65537)}, path, _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    # BININT 65537: first the storage record's element count, then the tensor's shape
    honest_numel = b"J\x01\x00\x01\x00"
    assert data.count(honest_numel) == 2
    crafted = tmp_path / "crafted.pth"
    crafted.write_bytes(data.replace(honest_numel, b"J\xff\xff\xff\x7f", 1))  # 2**31 - 1 floats
    if zip_format:  # the zip format keeps the pickle in a checksummed member: re-pack it
        import zipfile

        with zipfile.ZipFile(path) as src, zipfile.ZipFile(crafted, "w", zipfile.ZIP_STORED) as dst:
            for item in src.infolist():
                body = src.read(item)
                if item.filename.endswith("data.pkl"):
                    body = body.replace(honest_numel, b"J\xff\xff\xff\x7f", 1)
                dst.writestr(item, body)
    with pytest.raises(WeightsError, match="declares 8589934588 bytes of tensor storage"):
        safe_torch_load(crafted)
    assert safe_torch_load(path)["w"].shape == (65537,)  # the honest file still loads


def test_a_torchscript_archive_is_refused_without_running_it(tmp_path: Path) -> None:
    """torch.load would hand it to torch.jit.load, past the restricted unpickler."""
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "scripted.pt"
    torch.jit.save(scripted, str(path))
    with pytest.raises(WeightsError, match="TorchScript archive"):
        safe_torch_load(path)


def test_not_a_checkpoint_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        safe_torch_load(junk)
    with pytest.raises(WeightsError, match="cannot be read"):
        safe_torch_load(tmp_path / "absent.pth")


# ------------------------------------------------------------------ hashes


def test_git_blob_sha1_matches_git(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    hello = tmp_path / "hello"
    hello.write_bytes(b"hello world\n")
    assert git_blob_sha1(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_sha1(hello) == "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"
    git = shutil.which("git")
    if git is not None:
        blob = tmp_path / "blob.bin"
        blob.write_bytes(os.urandom(3 << 20))  # spans several read chunks
        expected = subprocess.run([git, "hash-object", str(blob)], capture_output=True, text=True, check=True)
        assert git_blob_sha1(blob) == expected.stdout.strip()
        assert file_digests(blob)["git-blob-sha1"] == expected.stdout.strip()


def test_verify_file_accepts_and_rejects(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(os.urandom(1000))
    d = file_digests(f)
    verify_file(f, HashSpec("sha256", d["sha256"]), size=1000)
    verify_file(f, HashSpec("git-blob-sha1", d["git-blob-sha1"]))
    verify_file(f, HashSpec("sha256-prefix", d["sha256"][:8]))  # what torchvision checks
    f.write_bytes(b"\x00" + f.read_bytes()[1:])  # tamper one byte
    for spec in (
        HashSpec("sha256", d["sha256"]),
        HashSpec("git-blob-sha1", d["git-blob-sha1"]),
        HashSpec("sha256-prefix", d["sha256"][:8]),
    ):
        if spec.kind == "sha256-prefix" and file_digests(f)["sha256"].startswith(spec.value):
            continue  # 2**-32 chance that the prefix still matches
        with pytest.raises(WeightsError, match="tampered"):
            verify_file(f, spec)
    with pytest.raises(WeightsError, match="1000"):
        verify_file(f, HashSpec("sha256", d["sha256"]), size=999)


def test_bad_hash_spec_is_rejected() -> None:
    with pytest.raises(WeightsError):
        HashSpec("sha256", "abc")
    with pytest.raises(WeightsError):
        HashSpec("git-blob-sha1", "Z" * 40)


def test_import_verifies_the_hash_before_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.pth.tar"
    torch.save({"x": _Marker((os.system, (f"touch {marker}",)))}, path, _use_new_zipfile_serialization=False)
    wrong = HashSpec("sha256", "0" * 64)
    with pytest.raises(WeightsError, match="tampered"):
        import_checkpoint(path, tmp_path / "out", expected=wrong)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
