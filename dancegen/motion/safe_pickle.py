"""A restricted unpickler for motion files: numpy arrays, dtypes and scalars inside builtin containers, nothing else.

MDM's `results.npy` (an `np.save`d dict) and AIST++'s `keypoints3d/*.pkl` are pickles. A pickle can name any
importable callable (`os.system`, `builtins.eval`, ...) and have it called while loading, so these files are never
given to `pickle.load` or `np.load(..., allow_pickle=True)`. `RestrictedUnpickler.find_class` resolves only the
globals numpy's own pickling emits (read from `ndarray.__reduce_ex__`, `dtype.__reduce__` and
`np.float32(1).__reduce__()` under numpy 1.x and 2.x), plus the few builtins that pickle protocols 0-2 reference for
sets, bytes and complex numbers. Any other global raises `InputError` at the opcode that names it, before anything
is called. Dicts, lists, tuples, strings and numbers need no global and load as usual.
"""

from __future__ import annotations

import io
import os
import pickle

from dancegen.errors import InputError

# (module, name) pairs numpy writes when pickling arrays, dtypes and scalars. numpy >= 2 writes `numpy._core.*`,
# numpy 1.x wrote `numpy.core.*`; both resolve to the module present in this environment.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),  # protocol 5 (out-of-band buffers)
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}

# Builtins protocols 0-2 reach through a global: `set`/`frozenset` are pickled as calls, and Python 3 `bytes` under
# protocol 2 as `_codecs.encode(str, "latin1")`. Python 2 pickles say `__builtin__` instead of `builtins`.
_BUILTIN_NAMES = frozenset({"set", "frozenset", "bytearray", "bytes", "complex"})


def _numpy_global(kind: str, name: str):
    import numpy as np

    if kind == "numpy":
        return getattr(np, name)
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    return getattr(multiarray if kind == "multiarray" else numeric, name)


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` accepts only numpy's array/dtype/scalar globals and a few builtins.

    Args:
        file: Binary file object positioned at the start of the pickle.
        path: Shown in error messages.
    """

    def __init__(self, file, path: str | os.PathLike | None = None):
        # latin1 lets Python 2 pickles of numpy arrays load (numpy's own advice for np.load); Python 3 pickles store
        # text as unicode and are unaffected.
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_global(*_NUMPY_GLOBALS[(module, name)])
        if module in ("builtins", "__builtin__") and name in _BUILTIN_NAMES:
            import builtins

            return getattr(builtins, name)
        if (module, name) == ("_codecs", "encode"):
            import codecs

            return codecs.encode
        raise InputError(
            f"refuses to unpickle {module}.{name}: motion pickles may only hold numpy arrays, dtypes, scalars and "
            "builtin containers",
            self._path,
        )

    def persistent_load(self, pid):
        raise InputError("refuses to unpickle a persistent id (not a plain data pickle)", self._path)


def safe_unpickle(fileobj_or_bytes, path: str | os.PathLike | None = None):
    """Load a pickle that may only contain numpy arrays / dtypes / scalars, builtin containers, strings and numbers.

    Args:
        fileobj_or_bytes: `bytes`/`bytearray`/`memoryview`, or a binary file object positioned at the pickle.
        path: File name for error messages (default: the file object's `name`, if any).

    Returns:
        The unpickled object.

    Raises:
        InputError: The pickle names any other global ("... refuses to unpickle os.system ..."; raised before the
            global is called), or it is truncated / not a pickle.
    """
    if isinstance(fileobj_or_bytes, (bytes, bytearray, memoryview)):
        fileobj = io.BytesIO(bytes(fileobj_or_bytes))
    else:
        fileobj = fileobj_or_bytes
        if path is None:
            name = getattr(fileobj, "name", None)
            path = name if isinstance(name, (str, os.PathLike)) else None
    try:
        return RestrictedUnpickler(fileobj, path).load()
    except InputError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        UnicodeDecodeError,
        MemoryError,
        OverflowError,
    ) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"not a readable data pickle ({type(e).__name__}: {detail})", path) from None


__all__ = ["RestrictedUnpickler", "safe_unpickle"]
