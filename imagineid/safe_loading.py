"""Loading weight files we did not write, without ever running code from them.

A pickle can call any importable function while it loads (`os.system` included), and FLAME / DECA ship
pickles. So every bring-your-own file goes through one of these, and the files we write are safetensors:

    arrays = load_pickle("generic_model.pkl", section="FLAME")      # FLAME 2020, no chumpy needed
    embedding = load_npy("landmark_embedding.npy", section="FLAME")  # DECA's pickled dict inside a .npy
    state = load_torch("deca_model.tar", section="DECA")             # torch.load(..., weights_only=True)

`load_pickle` / `load_npy` use `RestrictedUnpickler`: only numpy arrays / dtypes / scalars, scipy sparse
matrices, chumpy `Ch` arrays, torch tensors (storages re-loaded with `weights_only=True`), OrderedDict
and set may be built; any other global is refused with `UnsafeFileError` before it is imported. What
comes back holds plain numpy arrays only:
- `chumpy.ch.Ch` objects become the array of their pickled `x` state (FLAME's `shapedirs`), so chumpy
  need not be installed (it does not build on current numpy). A chumpy *expression* (a Ch subclass
  without a stored `x`) is refused: re-export the file with its values.
- scipy sparse matrices become dense arrays (FLAME's `J_regressor` is a (5, 5023) csc matrix).
- torch tensors become numpy arrays (DECA's embedding stores two of its arrays as tensors).
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from imagineid.errors import (
    MalformedWeightsError,
    MissingWeightsError,
    UnsafeFileError,
    see_docs,
)


class _ChumpyArray:
    """Stands in for `chumpy.ch.Ch` while unpickling; keeps the pickled state."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _SparseMatrix:
    """Stands in for a scipy sparse matrix while unpickling (its state: data, indices, indptr, shape)."""

    layout = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state


_SPARSE = {layout: type(f"_{layout}_matrix", (_SparseMatrix,), {"layout": layout}) for layout in ("csc", "csr", "coo")}
_MULTIARRAY = getattr(np, "_core", None) or np.core  # numpy 2 moved it; pickles name either path


def _reconstruct(subtype: type, *args: Any) -> np.ndarray:
    """numpy's array reconstructor, for ndarray itself only."""
    if subtype is not np.ndarray:
        raise UnsafeFileError(f"refused to rebuild an array of type {subtype!r}")
    return _MULTIARRAY.multiarray._reconstruct(np.ndarray, *args)


def _copyreg_reconstructor(cls: type, base: type, state: Any) -> Any:
    """Protocol 0/1 object creation (Python 2 pickles), for our placeholders only."""
    if not (isinstance(cls, type) and issubclass(cls, (_ChumpyArray, _SparseMatrix))) or base is not object:
        raise UnsafeFileError(f"refused to rebuild {cls!r} from {base!r}")
    return cls()


def _encode(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode`, as protocol-2 pickles use it for bytes (latin-1 only)."""
    if codecs.lookup(encoding).name not in ("latin-1", "iso8859-1", "utf-8"):
        raise UnsafeFileError(f"refused codec {encoding!r}")
    return codecs.encode(text, encoding)


def _torch_storage(data: bytes) -> Any:
    """`torch.storage._load_from_bytes` with weights_only=True (the original unpickles freely)."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _torch_tensor(storage: Any, *args: Any) -> Any:
    import torch

    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise UnsafeFileError(f"refused to rebuild a tensor from {type(storage).__name__}")
    return torch._utils._rebuild_tensor_v2(storage, *args)


def _allowed() -> dict[tuple[str, str], Any]:
    """(module, name) → what the unpickler may build; old module paths map to the same objects."""
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _encode,
        ("copy_reg", "_reconstructor"): _copyreg_reconstructor,
        ("copyreg", "_reconstructor"): _copyreg_reconstructor,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("chumpy.ch", "Ch"): _ChumpyArray,
        ("torch._utils", "_rebuild_tensor_v2"): _torch_tensor,
        ("torch.storage", "_load_from_bytes"): _torch_storage,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = _reconstruct
        table[(module, "scalar")] = _MULTIARRAY.multiarray.scalar
    for builtins in ("builtins", "__builtin__"):
        table[(builtins, "set")] = set
        table[(builtins, "frozenset")] = frozenset
        table[(builtins, "object")] = object  # base argument of copyreg._reconstructor
    for layout, placeholder in _SPARSE.items():
        for module in (f"scipy.sparse.{layout}", f"scipy.sparse._{layout}"):
            table[(module, f"{layout}_matrix")] = placeholder
    return table


_ALLOWED = _allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose `find_class` knows only `_ALLOWED`: anything else raises `UnsafeFileError`."""

    def __init__(self, file, source: str = "pickle", **kwargs: Any) -> None:
        super().__init__(file, encoding="latin1", **kwargs)  # latin1: Python 2 pickles (FLAME) hold str arrays
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{self.source} asks to run {module}.{name} while loading; refused (only numpy / scipy sparse / "
                f"chumpy arrays and torch tensors may be loaded)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"{self.source} uses persistent ids; refused")


def _plain(value: Any, source: str) -> Any:
    """Placeholders, tensors and containers → numpy arrays and plain containers."""
    if isinstance(value, _ChumpyArray):
        state = value.state if isinstance(value.state, dict) else {}
        if "x" not in state:
            raise MalformedWeightsError(
                f"{source} holds a chumpy object without a stored array (an expression, not data); "
                "re-export the file with plain numpy arrays"
            )
        return np.asarray(_plain(state["x"], source))
    if isinstance(value, _SparseMatrix):
        return _dense(value, source)
    if isinstance(value, dict):
        return {k: _plain(v, source) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, source) for v in value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        flat = [_plain(v, source) for v in value.reshape(-1)]
        out = np.empty(value.shape, dtype=object)
        out.reshape(-1)[:] = flat if value.size != 1 else [flat[0]]
        return out
    if type(value).__module__ == "torch" and type(value).__name__ == "Tensor":
        return value.detach().cpu().numpy()
    return value


def _dense(matrix: _SparseMatrix, source: str) -> np.ndarray:
    import scipy.sparse as sp

    state = matrix.state if isinstance(matrix.state, dict) else {}
    shape = state.get("_shape", state.get("shape"))
    try:
        if matrix.layout == "coo":
            built = sp.coo_matrix((state["data"], (state["row"], state["col"])), shape=shape)
        else:
            build = sp.csc_matrix if matrix.layout == "csc" else sp.csr_matrix
            built = build((state["data"], state["indices"], state["indptr"]), shape=shape)
    except (KeyError, TypeError, ValueError) as err:
        raise MalformedWeightsError(f"{source} holds a malformed {matrix.layout} sparse matrix: {err}") from err
    return built.toarray()


def _require(path: str | Path, section: str, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"missing {what}: {path} ({see_docs(section)})")
    return path


def unpickle(data: bytes | io.BufferedIOBase, source: str = "pickle") -> Any:
    """Restricted-unpickle bytes or a binary stream; returns plain numpy arrays and containers."""
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        value = RestrictedUnpickler(stream, source=source).load()
    except (UnsafeFileError, MalformedWeightsError):
        raise
    except Exception as err:  # truncated / not a pickle / wrong state: report, never crash the caller
        raise MalformedWeightsError(f"{source} is not a readable pickle: {type(err).__name__}: {err}") from err
    return _plain(value, source)


def load_pickle(path: str | Path, section: str, what: str = "pickle file") -> Any:
    """A pickle file (e.g. FLAME's generic_model.pkl) through `RestrictedUnpickler`."""
    path = _require(path, section, what)
    with open(path, "rb") as fh:
        return _with_docs(lambda: unpickle(fh, source=str(path)), section)


def load_npy(path: str | Path, section: str, what: str = ".npy file") -> Any:
    """A .npy file; object arrays (a pickled dict, as DECA's landmark_embedding.npy) go through
    `RestrictedUnpickler`. A 0-d object array is returned as its single item."""
    path = _require(path, section, what)

    def read() -> Any:
        with open(path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                _, _, dtype = header(fh)
            except ValueError as err:
                raise MalformedWeightsError(f"{path} is not a .npy file: {err}") from err
            if not dtype.hasobject:
                fh.seek(0)
                return np.load(fh, allow_pickle=False)
            array = unpickle(fh, source=str(path))
        if not isinstance(array, np.ndarray):
            raise MalformedWeightsError(f"{path} holds a {type(array).__name__}, not an array")
        return array.reshape(-1)[0] if array.shape == () else array

    return _with_docs(read, section)


def load_npz(path: str | Path, section: str, what: str = ".npz file") -> dict[str, np.ndarray]:
    """A .npz archive of plain arrays (object arrays refused)."""
    path = _require(path, section, what)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise MalformedWeightsError(f"{path} is not a plain-array .npz file: {err} ({see_docs(section)})") from err


def load_torch(path: str | Path, section: str, what: str = "checkpoint") -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)` with one-line errors."""
    import torch

    path = _require(path, section, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        unsafe = [line for line in lines if "GLOBAL" in line or "Unsupported global" in line]
        if unsafe:  # the file asks for a class or function: it would run code under weights_only=False
            raise UnsafeFileError(
                f"{path} is refused by torch.load(weights_only=True): {unsafe[0]} ({see_docs(section)})"
            ) from err
        detail = next((line for line in lines if line.startswith("Unsupported")), lines[-1] if lines else "")
        raise MalformedWeightsError(f"{path} is not a torch checkpoint ({detail}) ({see_docs(section)})") from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MalformedWeightsError(f"{path} is not a torch checkpoint: {first} ({see_docs(section)})") from err


def _with_docs(read, section: str) -> Any:
    """Run `read()`, appending the docs pointer to any malformed / unsafe error it raises."""
    try:
        return read()
    except MalformedWeightsError as err:
        if see_docs(section) in str(err):
            raise
        raise type(err)(f"{err} ({see_docs(section)})") from err
