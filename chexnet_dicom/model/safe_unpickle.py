"""Restricted unpickling of foreign PyTorch checkpoints (never runs code from the file).

Published CheXNet checkpoints are pickles: a state dict (torchvision ImageNet,
arnoweng ``model.pth.tar``) or a whole pickled torchvision model (reproduce-chexnet
``pretrained/checkpoint``).  A pickle can name any importable callable and have the
loader call it, so :func:`safe_torch_load` hands :func:`torch.load` this module as its
``pickle_module``.  Torch keeps its own handling of the zip and the legacy
(PyTorch <= 1.5, magic number + protocol + sys info + pickled storages) formats and
their storages, while every global the pickle names goes through
:meth:`Unpickler.find_class`, which

* returns vetted wrappers for the tensor rebuild functions (they accept only the
  storages torch itself produced, and ignore hooks and metadata),
* allows plain containers (``collections.OrderedDict``, ``set``, ``frozenset``) and
  numpy scalars,
* turns module classes (``torchvision.*``, ``torch.nn.modules.*``, ``torch.nn.parallel.*``)
  into :class:`InertObject` placeholders: instances only record their pickled state,
  so ``_parameters``, ``_buffers`` and ``_modules`` can be walked by
  :func:`module_state_dict` without importing torchvision,
* refuses everything else with :class:`RefusedGlobalError` *before* anything is called.

Torch allocates each storage at the size the pickle *declares* before it reads the
bytes, so a small file could ask for terabytes.  Every storage record is checked first:
the storages of a checkpoint are stored uncompressed inside it, so their declared sizes
together can never exceed the file's size, and a file whose records say otherwise is
refused (:class:`StorageBudgetError`) before anything is allocated.
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextvars
import io
import logging
import pickle
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar

import torch

from chexnet_dicom.errors import WeightsError

__all__ = [
    "InertObject",
    "InertParameter",
    "RefusedGlobalError",
    "StorageBudgetError",
    "Unpickler",
    "load",
    "loads",
    "module_state_dict",
    "pickled_class_name",
    "safe_torch_load",
]

log = logging.getLogger(__name__)

#: Largest checkpoint file this module agrees to unpickle (bytes).
MAX_CHECKPOINT_BYTES = 2 << 30

#: Module prefixes whose classes become inert placeholders (never imported).
INERT_MODULE_PREFIXES: tuple[str, ...] = ("torchvision.", "torch.nn.modules.", "torch.nn.parallel.")


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle names a global that is not on the allow-list."""


class StorageBudgetError(pickle.UnpicklingError):
    """The pickle declares more storage bytes than its file can hold."""


#: Bytes the storages of the file being loaded may declare in total (None: no file, no limit).
_STORAGE_BUDGET: contextvars.ContextVar[int | None] = contextvars.ContextVar("storage_budget", default=None)


def _declared_storage(saved_id: object) -> tuple[object, int] | None:
    """(key, bytes) of a torch storage record, for the legacy and the zip layouts."""
    if not isinstance(saved_id, tuple) or len(saved_id) < 5:
        return None
    typename = saved_id[0].decode("ascii", "replace") if isinstance(saved_id[0], bytes) else saved_id[0]
    if typename != "storage":
        return None
    storage_type, key, numel = saved_id[1], saved_id[2], saved_id[4]
    if not isinstance(numel, int) or numel < 0:
        raise StorageBudgetError(f"storage record with an invalid element count {numel!r}")
    dtype = getattr(storage_type, "dtype", torch.uint8)
    itemsize = torch._utils._element_size(dtype) if isinstance(dtype, torch.dtype) else 1
    return key, numel * itemsize


class InertObject:
    """Placeholder for a pickled class that is never imported.

    Creating one records the constructor arguments; ``__setstate__`` records the
    pickled state.  Nothing else happens, whatever the pickle asks for.
    """

    pickled_module: ClassVar[str] = ""
    pickled_name: ClassVar[str] = ""
    pickled_args: tuple[Any, ...]
    pickled_state: Any

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = object.__new__(cls)
        obj.__dict__["pickled_args"] = args
        obj.__dict__["pickled_state"] = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["pickled_state"] = state

    def __repr__(self) -> str:
        return f"<inert {self.pickled_module}.{self.pickled_name}>"


class InertParameter(InertObject):
    """Placeholder for ``torch.nn.Parameter`` pickled by PyTorch 0.3 (``Parameter(data)`` + state)."""

    pickled_module = "torch.nn.parameter"
    pickled_name = "Parameter"


_INERT_CLASSES: dict[tuple[str, str], type[InertObject]] = {}


def _inert_class(module: str, name: str) -> type[InertObject]:
    key = (module, name)
    cls = _INERT_CLASSES.get(key)
    if cls is None:
        cls = type(name, (InertObject,), {"pickled_module": module, "pickled_name": name})
        _INERT_CLASSES[key] = cls
    return cls


def pickled_class_name(obj: object) -> str:
    """Return ``module.Name`` of the class an inert placeholder stands for ('' otherwise)."""
    if isinstance(obj, InertObject):
        return f"{obj.pickled_module}.{obj.pickled_name}"
    return ""


def _check_storage(storage: object) -> torch.storage.TypedStorage:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise RefusedGlobalError(f"tensor rebuild with a {type(storage).__name__} instead of a storage")
    return storage


def _check_geometry(
    size: object, stride: object, offset: object
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    if not isinstance(offset, int) or offset < 0:
        raise RefusedGlobalError("tensor rebuild with an invalid storage offset")
    dims: list[tuple[int, ...]] = []
    for seq in (size, stride):
        if not isinstance(seq, (tuple, list, torch.Size)) or not all(
            isinstance(v, int) and v >= 0 for v in seq
        ):
            raise RefusedGlobalError("tensor rebuild with an invalid size or stride")
        dims.append(tuple(int(v) for v in seq))
    if len(dims[0]) != len(dims[1]):
        raise RefusedGlobalError("tensor rebuild with mismatched size and stride")
    return dims[0], dims[1], offset


def _rebuild_tensor(storage: object, storage_offset: object, size: object, stride: object) -> torch.Tensor:
    """Vetted ``torch._utils._rebuild_tensor`` (PyTorch 0.3 and 0.4 files)."""
    st = _check_storage(storage)
    sz, sd, off = _check_geometry(size, stride, storage_offset)
    t = torch.empty((0,), dtype=st.dtype, device=st._untyped_storage.device)
    # set_ checks that the view fits inside the storage.
    return t.set_(st._untyped_storage, off, sz, sd)


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> torch.Tensor:
    """Vetted ``torch._utils._rebuild_tensor_v2``: hooks and metadata are ignored."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(
    data: object, requires_grad: object = True, backward_hooks: object = None
) -> torch.Tensor:
    """Parameters are loaded as plain tensors (hooks ignored)."""
    if not isinstance(data, torch.Tensor):
        raise RefusedGlobalError("parameter rebuild without a tensor")
    return data


def _rebuild_parameter_with_state(
    data: object, requires_grad: object, backward_hooks: object, state: object
) -> torch.Tensor:
    """Parameters with Python state: the state is ignored."""
    return _rebuild_parameter(data)


def _inert_backend() -> None:
    """Stand-in for PyTorch 0.3 ``torch.nn.backends.thnn._get_thnn_function_backend``."""
    return None


def _reconstructor(cls: object, base: object, state: object) -> object:
    """Protocol 0/1 ``copyreg._reconstructor`` restricted to placeholders."""
    if not (isinstance(cls, type) and issubclass(cls, InertObject)) or base is not object:
        raise RefusedGlobalError("copyreg._reconstructor is only allowed for module placeholders")
    return cls()


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]

    def safe_scalar(dtype: object, data: object = None) -> object:
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
            raise RefusedGlobalError("numpy scalar with an object dtype or without raw bytes")
        return scalar(dtype, data)

    return {
        ("numpy.core.multiarray", "scalar"): safe_scalar,
        ("numpy._core.multiarray", "scalar"): safe_scalar,
        ("numpy", "dtype"): np.dtype,
    }


#: Globals a checkpoint may name, mapped to what it gets instead.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,  # base class argument of copyreg._reconstructor
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.nn.parameter", "Parameter"): InertParameter,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _inert_backend,
    ("copyreg", "_reconstructor"): _reconstructor,
}


class Unpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` whose ``find_class`` only grants :data:`ALLOWED_GLOBALS`.

    The ``persistent_load`` torch installs is wrapped: each storage record's declared
    size is charged against the file's size before torch allocates it.
    """

    def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
        self._torch_persistent_load: Callable[[Any], Any] | None = None
        self._declared: dict[object, int] = {}
        super().__init__(file, **kwargs)

    @property
    def persistent_load(self) -> Callable[[Any], Any]:
        """The checked persistent-id loader (torch assigns its own, which this wraps)."""
        return self._checked_persistent_load

    @persistent_load.setter
    def persistent_load(self, fn: Callable[[Any], Any]) -> None:
        self._torch_persistent_load = fn

    def _checked_persistent_load(self, saved_id: Any) -> Any:
        declared = _declared_storage(saved_id)
        budget = _STORAGE_BUDGET.get()
        if declared is not None and budget is not None:
            key, nbytes = declared
            self._declared[key] = max(nbytes, self._declared.get(key, 0))
            total = sum(self._declared.values())
            if total > budget:
                raise StorageBudgetError(
                    f"the checkpoint declares {total} bytes of tensor storage but the file has only "
                    f"{budget} bytes"
                )
        if self._torch_persistent_load is None:
            raise pickle.UnpicklingError("persistent id in a plain pickle: not a checkpoint")
        return self._torch_persistent_load(saved_id)

    def find_class(self, module: str, name: str, /) -> Any:
        """Return the allowed stand-in for ``module.name`` or raise :class:`RefusedGlobalError`."""
        # Python 2 pickles name py2 modules (copy_reg, __builtin__): map like pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        if module.startswith("numpy"):
            numpy_allowed = _numpy_globals().get((module, name))
            if numpy_allowed is not None:
                return numpy_allowed
        if module.startswith(INERT_MODULE_PREFIXES) and name.isidentifier() and not name.startswith("__"):
            return _inert_class(module, name)
        raise RefusedGlobalError(
            f"the checkpoint asks to load {module}.{name}, which is not on the allow-list "
            "(only tensors, containers and module placeholders are accepted)"
        )


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` with the restricted :class:`Unpickler` (used by :func:`torch.load`)."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    """``pickle.loads`` with the restricted :class:`Unpickler`."""
    return load(io.BytesIO(data), **kwargs)


def _refuse_torchscript(p: Path) -> None:
    """Refuse TorchScript archives: ``torch.load`` hands them to ``torch.jit.load``, which
    runs their code and never consults the restricted unpickler."""
    try:
        if not zipfile.is_zipfile(p):
            return
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(f"checkpoint {p.name} is truncated or corrupt ({exc}); download it again") from exc
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        raise WeightsError(
            f"refused to load {p.name}: it is a TorchScript archive (it carries code), not a weights checkpoint"
        )


def safe_torch_load(path: str | Path) -> Any:
    """Load a ``torch.save`` file (zip or legacy format) on CPU through the restricted unpickler.

    Parameters
    ----------
    path
        The checkpoint file.

    Returns
    -------
    object
        The unpickled object: tensors, containers and :class:`InertObject` placeholders.

    Raises
    ------
    WeightsError
        The file is missing, too large, truncated, corrupt, or names a refused global.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise WeightsError(f"checkpoint {p} cannot be read: {exc.strerror or exc}") from exc
    if size > MAX_CHECKPOINT_BYTES:
        raise WeightsError(
            f"checkpoint {p.name} is {size} bytes, above the {MAX_CHECKPOINT_BYTES}-byte limit"
        )
    _refuse_torchscript(p)
    this_module = sys.modules[__name__]
    token = _STORAGE_BUDGET.set(size)
    try:
        with warnings.catch_warnings():
            # Legacy files carry module source for a check that cannot apply to placeholders.
            warnings.simplefilter("ignore")
            return torch.load(str(p), map_location="cpu", pickle_module=this_module, weights_only=False)
    except StorageBudgetError as exc:
        raise WeightsError(
            f"checkpoint {p.name} is truncated or corrupt: {exc} (refused before allocating); "
            "download it again"
        ) from exc
    except RefusedGlobalError as exc:
        raise WeightsError(f"refused to load {p.name}: {exc}; it is not a plain weights checkpoint") from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        RuntimeError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        OSError,
        MemoryError,
        zipfile.BadZipFile,
    ) as exc:
        log.debug("torch.load failed on %s: %r", p.name, exc)
        raise WeightsError(
            f"checkpoint {p.name} is truncated or corrupt ({type(exc).__name__}: {str(exc)[:200]}); "
            "download it again"
        ) from exc
    finally:
        _STORAGE_BUDGET.reset(token)


def _state_dict_of(obj: InertObject) -> dict[str, Any]:
    state = obj.pickled_state
    if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
        state = state[0]
    if not isinstance(state, dict):
        raise WeightsError(f"pickled module {pickled_class_name(obj)} carries no attribute state")
    return state


def _tensor_of(value: object, key: str) -> torch.Tensor:
    if isinstance(value, InertParameter):  # PyTorch 0.3: Parameter(data)
        args = value.pickled_args
        value = args[0] if args else None
    if not isinstance(value, torch.Tensor):
        raise WeightsError(f"pickled module entry {key} is a {type(value).__name__}, not a tensor")
    return value


def module_state_dict(root: object, *, max_depth: int = 32) -> collections.OrderedDict[str, torch.Tensor]:
    """Walk pickled module placeholders like ``nn.Module.state_dict()`` would.

    Parameters
    ----------
    root
        An :class:`InertObject` standing for an ``nn.Module``.
    max_depth
        Nesting limit (a guard against cyclic or hostile structures).

    Returns
    -------
    OrderedDict
        Dotted names (as the original module's ``state_dict``) to tensors; ``None``
        entries and non-persistent buffers are skipped.

    Raises
    ------
    WeightsError
        If the object is not a pickled module or holds something that is not a tensor.
    """
    out: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()

    def walk(obj: object, prefix: str, depth: int) -> None:
        if depth > max_depth:
            raise WeightsError(f"pickled module nesting deeper than {max_depth} at {prefix!r}")
        if not isinstance(obj, InertObject):
            raise WeightsError(
                f"{prefix or 'the checkpoint'} is a {type(obj).__name__}, not a pickled module"
            )
        state = _state_dict_of(obj)
        skip = state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            entries = state.get(group) or {}
            if not isinstance(entries, dict):
                raise WeightsError(f"pickled module {prefix or 'root'} has a malformed {group}")
            for name, value in entries.items():
                if value is None or (group == "_buffers" and name in skip):
                    continue
                out[prefix + str(name)] = _tensor_of(value, prefix + str(name))
        children = state.get("_modules") or {}
        if not isinstance(children, dict):
            raise WeightsError(f"pickled module {prefix or 'root'} has malformed _modules")
        for name, child in children.items():
            if child is not None:
                walk(child, f"{prefix}{name}.", depth + 1)

    walk(root, "", 0)
    return out
