"""Keep CPython's cycle collector off the objects a process builds once and keeps.

CPython's collector is generational, and a full collection walks every tracked object
of the process.  Most objects of a ``chexdcm`` process are long-lived and never
garbage: module code and data (pydicom's and highdicom's code dictionaries and IOD
tables, ONNX Runtime's bindings), the model and its caches, about 190,000 tracked
objects after the write step's imports.  Importing them is also what triggers the full
collections: measured on a warm one-image ``chexdcm infer`` (2 shared cores, CPython
3.11), two full collections over them cost 28 ms during start-up and 58 ms during the
write step's import of the output stack, and 23 middle-generation ones 32 ms.

:func:`long_lived` pauses the collector while such objects are built (imports, model
load, a door's warm-up) and then moves everything alive to the permanent generation
(:func:`gc.freeze`): later collections never walk it again, and reference counting frees
those objects as before.  The cost: cyclic garbage that exists at the freeze is never
collected; pass ``collect=True`` where a full collection first is affordable (a warm-up
before a door takes work), not in a study's path.

A long-running process that hosts the node freezes once it has started
(:func:`freeze_long_lived`, from :meth:`chexnet_dicom.node.service.Node.start`): there a
full collection holds the interpreter lock that the listener needs (measured in the node
benchmark's main process: 5-7 per run after the start, 60-211 ms each; with the freeze at
most one, 46-53 ms), and C-ECHO waits for it.
:func:`thaw` gives the frozen objects back to the collector (``Node.stop``).
"""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType

__all__ = ["freeze_long_lived", "import_long_lived", "long_lived", "thaw"]


@contextmanager
def long_lived(*, collect: bool | Callable[[], bool] = False) -> Iterator[None]:
    """Build long-lived objects with the cycle collector paused, then freeze them.

    Parameters
    ----------
    collect
        Run a full collection before the freeze, so that no cyclic garbage of the block
        is frozen (costs one walk of every object: for set-up, not for a study's path);
        or a callable, asked when the block ends (e.g. only when the block loaded a
        library known to leave cyclic garbage).

    Yields
    ------
    None
        The block runs with automatic collection off; it is restored afterwards, also
        when the block raises.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        freeze_long_lived(collect=collect() if callable(collect) else collect)
        if enabled:
            gc.enable()


def import_long_lived(name: str) -> ModuleType:
    """Import module ``name`` inside :func:`long_lived`, unless it is imported already.

    For a lazy import in a per-study path (the write step's output stack): the first
    call pays the import with the collector paused and freezes what it built; later calls
    return the module without touching the collector.

    Parameters
    ----------
    name
        Absolute module name.

    Returns
    -------
    types.ModuleType
        The module.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    with long_lived():
        return importlib.import_module(name)


def freeze_long_lived(*, collect: bool = True) -> None:
    """Freeze everything alive now out of later collections (a started service's state).

    Parameters
    ----------
    collect
        Run a full collection first, so that no cyclic garbage is frozen.
    """
    if collect:
        gc.collect()
    gc.freeze()


def thaw() -> None:
    """Give every frozen object back to the collector (its oldest generation): :func:`gc.unfreeze`."""
    gc.unfreeze()
