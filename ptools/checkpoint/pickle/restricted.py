"""A restricted unpickler on the standard library: allow-listed globals become inert stand-ins, the rest are recorded.

Nothing a pickle names is ever imported or called. Allowed globals (containers, torch tensor rebuilders,
storage types, dtypes, numpy scalars, argparse.Namespace...) map to small classes here that only record
what they were given (dtype, shape, stride, storage key and offset). Any other global becomes a
placeholder class: calling it, instantiating it or setting its state only records the arguments, so the
unpickling carries on and the rest of the file can still be summarised. Every global is graded safe,
suspicious (not allow-listed: importing it would run that module's code) or dangerous (known ways to run
commands or code).
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ptools.checkpoint._text import oneline
from ptools.checkpoint.dtypes import STORAGE_DTYPES, TORCH_DTYPE_NAMES
from ptools.checkpoint.pickle.static_scan import StreamScan, scan_stream

SAFE, SUSPICIOUS, DANGEROUS = "safe", "suspicious", "dangerous"
_GRADE_ORDER = {SAFE: 0, SUSPICIOUS: 1, DANGEROUS: 2}
MAX_CALL_RECORDS = 5  # per global: enough to show what a payload would have run
_REPR_LIMIT = 200


# ---------------------------------------------------------------------------------------------- grading

# Modules whose every member is a way to run commands, code, or reach the network/file system.
_DANGEROUS_MODULES: dict[str, str] = {
    "os": "runs commands / touches files",
    "posix": "runs commands / touches files",
    "nt": "runs commands / touches files",
    "subprocess": "runs commands",
    "_posixsubprocess": "runs commands",
    "pty": "runs commands",
    "commands": "runs commands",
    "platform": "runs commands (popen)",
    "runpy": "runs Python code",
    "importlib": "imports arbitrary modules",
    "imp": "imports arbitrary modules",
    "zipimport": "imports arbitrary modules",
    "pkgutil": "imports arbitrary modules",
    "pickle": "nested unpickling",
    "_pickle": "nested unpickling",
    "cPickle": "nested unpickling",
    "dill": "nested unpickling",
    "cloudpickle": "nested unpickling",
    "joblib": "nested unpickling",
    "shelve": "nested unpickling",
    "marshal": "loads code objects",
    "types": "builds functions/code objects",
    "code": "runs Python code",
    "codeop": "compiles Python code",
    "timeit": "runs Python code",
    "cProfile": "runs Python code",
    "profile": "runs Python code",
    "trace": "runs Python code",
    "pdb": "runs Python code",
    "bdb": "runs Python code",
    "doctest": "runs Python code",
    "pydoc": "runs commands",
    "site": "runs Python code",
    "sys": "interpreter internals",
    "ctypes": "calls native code",
    "_ctypes": "calls native code",
    "shutil": "copies/removes files",
    "tempfile": "creates files",
    "io": "opens files",
    "_io": "opens files",
    "socket": "network access",
    "ssl": "network access",
    "http": "network access",
    "urllib": "network access",
    "urllib2": "network access",
    "requests": "network access",
    "ftplib": "network access",
    "smtplib": "network access",
    "telnetlib": "network access",
    "webbrowser": "opens URLs / runs a browser",
    "multiprocessing": "starts processes",
    "asyncio": "starts processes / network",
    "signal": "signals processes",
    "operator": "calls arbitrary methods (attrgetter/methodcaller)",
    "setuptools": "runs build code",
    "distutils": "runs build code",
    "venv": "runs commands",
    "ensurepip": "runs commands",
    "torch.hub": "downloads and runs code",
    "torch.utils.cpp_extension": "compiles and loads native code",
    "numpy.testing": "runs Python code",
    "numpy.f2py": "compiles and runs code",
    "numpy.distutils": "runs build code",
    "numpy.ctypeslib": "calls native code",
    "_operator": "calls arbitrary methods (attrgetter/methodcaller)",
    "functools": "wraps or calls arbitrary callables",
    "copyreg": "registers or calls arbitrary constructors",
    "copy_reg": "registers or calls arbitrary constructors",
    "imaplib": "network access",
    "poplib": "network access",
    "nntplib": "network access",
    "smtpd": "network access",
    "xmlrpc": "network access",
    "socketserver": "network access",
    "asynchat": "network access",
    "asyncore": "network access",
    "_socket": "network access",
    "_ssl": "network access",
    "select": "network / file descriptors",
    "selectors": "network / file descriptors",
    "mmap": "maps files",
    "fcntl": "file descriptors",
    "termios": "terminal control",
    "_thread": "starts threads",
    "threading": "starts threads",
    "concurrent": "starts processes",
    "_signal": "signals processes",
    "gc": "reaches every object in the interpreter",
    "inspect": "reaches frames and code",
    "builtins.__dict__": "reaches every builtin",
    "codecs": "opens files",
    "fileinput": "opens files",
    "glob": "lists files",
    "zipfile": "writes/extracts files",
    "tarfile": "writes/extracts files",
    "gzip": "opens files",
    "bz2": "opens files",
    "lzma": "opens files",
    "sqlite3": "creates files / runs SQL",
    "dbm": "opens files",
    "logging": "writes files / listens on sockets",
    "tkinter": "runs Tcl code",
    "_tkinter": "runs Tcl code",
    "idlelib": "runs Python code",
    "lib2to3": "rewrites files",
    "pip": "installs packages",
    "msvcrt": "native access",
    "winreg": "native access",
    "_winapi": "starts processes",
    "_posixshmem": "shared memory",
    "resource": "process limits",
    "torch.jit": "compiles and runs TorchScript",
    "torch._C": "native interpreter internals",
    "torch.ops": "calls native operators",
    "torch._ops": "calls native operators",
    "torch.package": "imports packaged code",
    "torch.distributed": "network access",
    "torch.multiprocessing": "starts processes",
    "torch.serialization": "nested loading / saving",
    "torch._dynamo": "compiles and runs code",
    "torch._inductor": "compiles and runs code",
    "torch.fx": "builds and runs code",
    "torch.compiler": "compiles and runs code",
}
_DANGEROUS_NAMES: dict[tuple[str, str], str] = {
    ("builtins", "eval"): "evaluates Python code",
    ("builtins", "exec"): "runs Python code",
    ("builtins", "compile"): "compiles Python code",
    ("builtins", "__import__"): "imports arbitrary modules",
    ("builtins", "getattr"): "reaches any attribute (how payloads find functions)",
    ("builtins", "setattr"): "modifies objects",
    ("builtins", "delattr"): "modifies objects",
    ("builtins", "open"): "opens files",
    ("builtins", "input"): "reads the terminal",
    ("builtins", "breakpoint"): "starts a debugger",
    ("builtins", "globals"): "interpreter internals",
    ("builtins", "locals"): "interpreter internals",
    ("builtins", "vars"): "interpreter internals",
    ("builtins", "apply"): "calls arbitrary functions",
    ("builtins", "execfile"): "runs Python code",
    ("torch", "load"): "nested torch.load (full unpickling)",
    ("torch.serialization", "load"): "nested torch.load (full unpickling)",
    ("torch.storage", "_load_from_bytes"): "nested torch.load (full unpickling)",
    ("torch.jit", "load"): "loads TorchScript",
    ("torch._C", "_jit_pass_onnx"): "interpreter internals",
    ("numpy", "load"): "nested unpickling (allow_pickle)",
    ("numpy.lib.npyio", "load"): "nested unpickling (allow_pickle)",
    ("builtins", "super"): "reaches base-class methods",
    ("builtins", "memoryview"): "raw memory access",
    ("builtins", "classmethod"): "wraps arbitrary callables",
    ("builtins", "staticmethod"): "wraps arbitrary callables",
    ("builtins", "property"): "wraps arbitrary callables",
    ("builtins", "map"): "calls arbitrary callables",
    ("builtins", "filter"): "calls arbitrary callables",
    ("builtins", "print"): "writes to files",
    ("builtins", "help"): "runs the pager",
    ("builtins", "exit"): "exits the process",
    ("builtins", "quit"): "exits the process",
    ("torch", "save"): "writes files",
    ("torch", "from_file"): "maps files",
    ("torch", "compile"): "compiles and runs code",
    ("numpy", "fromfile"): "reads files",
    ("numpy", "memmap"): "maps files",
    ("numpy", "save"): "writes files",
    ("numpy", "savez"): "writes files",
    ("numpy", "savetxt"): "writes files",
    ("numpy", "loadtxt"): "reads files",
    ("numpy", "genfromtxt"): "reads files",
    ("numpy", "tofile"): "writes files",
    ("numpy.lib.format", "read_array"): "nested unpickling (allow_pickle)",
}
# How Python pickles type hints (`Optional[int]` is getitem(Union, (int, type(None))), `int | None` is
# reduce(or_, ...)): these call nothing beyond what their arguments name, which is graded on its own.
_TYPING_NAMES: dict[tuple[str, str], str] = {
    ("_operator", "getitem"): "indexes a value (how type hints such as Optional[int] pickle)",
    ("operator", "getitem"): "indexes a value (how type hints such as Optional[int] pickle)",
    ("_operator", "or_"): "combines two values with | (how int | None pickles)",
    ("operator", "or_"): "combines two values with | (how int | None pickles)",
    ("builtins", "type"): "type(None) and other one-argument type() calls (how NoneType pickles)",
    ("types", "GenericAlias"): "a generic alias such as list[int]",
    ("types", "UnionType"): "a union type such as int | None",
    ("types", "NoneType"): "the type of None",
    ("_functools", "reduce"): "folds with a callable that is graded on its own (how int | None pickles)",
}
# Dunder names that stay ordinary: module names of scripts, TorchScript and Python 2, copyreg's hooks.
_PLAIN_DUNDERS = {"__main__", "__mp_main__", "__torch__", "__builtin__", "__newobj__", "__newobj_ex__"}


def grade_global(module: str, name: str) -> tuple[str, str]:
    """(grade, reason) for a global that is not on the allow-list: graded by what the name can reach.

    A name is looked up attribute by attribute (`argparse._os.system` is `os.system`), so every dotted
    segment counts: a dunder (`__globals__`, `__builtins__`, `__subclasses__`), a private module alias
    (`_os`), a dangerous module or function anywhere in the chain makes the whole name dangerous.
    """
    if module.startswith("<"):
        if "computed" in module:
            return DANGEROUS, "the callable is only known at load time"
        return DANGEROUS, "from copyreg's extension registry"
    reason = _DANGEROUS_NAMES.get((module, name))
    if reason:
        return DANGEROUS, reason
    reason = _TYPING_NAMES.get((module, name))
    if reason or (module == "typing" and name.isidentifier()):
        return SUSPICIOUS, reason or "a typing construct (pickled type hints): importing typing runs nothing else"
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        reason = _DANGEROUS_MODULES.get(".".join(parts[:i]))
        if reason:
            return DANGEROUS, reason
    segments = [*parts, *name.split(".")]
    for seg in segments:
        if seg.startswith("__") and seg.endswith("__") and seg not in _PLAIN_DUNDERS:
            return DANGEROUS, f"reaches interpreter internals through {seg}"
        if not seg.isidentifier():
            return DANGEROUS, "not a plain Python name"
    if "." in name:
        attrs = name.split(".")
        for i, attr in enumerate(attrs[:-1]):
            # `x._os.system`, `argparse.sys.modules`: an attribute that is itself a module.
            alias = attr.lstrip("_")
            if alias in _DANGEROUS_MODULES or attr.startswith("_"):
                return DANGEROUS, f"reaches {alias or attr} through module attributes ({module}.{name})"
            owner = ".".join(attrs[: i + 1])
            if (module, owner) in _DANGEROUS_NAMES:
                return DANGEROUS, _DANGEROUS_NAMES[(module, owner)]
        last = attrs[-1]
        if ("builtins", last) in _DANGEROUS_NAMES or last in _RISKY_FUNCTIONS:
            return DANGEROUS, f"reaches {last} through module attributes ({module}.{name})"
        return SUSPICIOUS, "a nested attribute, not on the allow-list"
    if module in ("builtins", "__builtin__"):
        return SUSPICIOUS, "builtin not on the allow-list"
    return SUSPICIOUS, "not on the allow-list: unpickling would import this module and call into it"


# Function names that run commands or code in whatever module holds them (os.system, pty.spawn...).
_RISKY_FUNCTIONS = {
    "system",
    "popen",
    "spawn",
    "spawnv",
    "spawnl",
    "spawnve",
    "spawnlp",
    "execv",
    "execve",
    "execl",
    "execlp",
    "execvp",
    "fork",
    "forkpty",
    "kill",
    "remove",
    "unlink",
    "rmtree",
    "rmdir",
    "rename",
    "chmod",
    "chown",
    "run",
    "call",
    "check_call",
    "check_output",
    "Popen",
    "getoutput",
    "getstatusoutput",
    "import_module",
    "run_path",
    "run_module",
    "load",
    "loads",
    "urlopen",
    "urlretrieve",
    "open",
    "putenv",
    "startfile",
    "methodcaller",
    "attrgetter",
    "eval",
    "exec",
    "compile",
    "__import__",
}


def _short_repr(obj: Any) -> str:
    if isinstance(obj, type) and issubclass(obj, Placeholder):
        return obj.qualname()
    try:
        text = repr(obj)
    except Exception:  # a hostile object's repr must not stop the scan
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


# ------------------------------------------------------------------------------------------- stand-ins


@dataclass
class StorageRef:
    """A persistent id ('storage', type, key, location, numel): where the bytes of one storage live."""

    key: str
    dtype: str
    numel: int
    location: str
    view: tuple[str, int, int] | None = None  # legacy view metadata (view_key, offset, size)


@dataclass
class TensorRef:
    """What `torch._utils._rebuild_tensor_v2` (and friends) were given: enough to describe and map a tensor."""

    storage: StorageRef | None
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...] | None
    requires_grad: bool = False
    parameter: bool = False
    dtype: str | None = None  # for tensors without storage (meta) or quantized
    kind: str = "dense"  # dense | meta | quantized | numpy
    array: NumpyArrayData | None = None  # kind == numpy: the data lives in the pickle itself
    notes: list[str] = field(default_factory=list)

    def __setstate__(self, state: Any) -> None:  # BUILD on a tensor never happens in real files: ignore it
        self.notes.append("unexpected BUILD state ignored")

    @property
    def tensor_dtype(self) -> str:
        if self.dtype:
            return self.dtype
        return self.storage.dtype if self.storage else "unknown"


class StorageType:
    """Stand-in for torch.FloatStorage & co: only carries the dtype."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return None  # constructing a storage from a pickle never happens in real checkpoints


class TorchDtype:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class TorchMarker:
    """Stand-in for torch objects that are only ever passed around (layouts, memory formats, Tensor class)."""

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname

    def __repr__(self) -> str:
        return self.qualname


class NamespaceData:
    """argparse.Namespace as data: keyword arguments and BUILD state land in __dict__."""

    qualname: ClassVar[str] = "argparse.Namespace"

    def __init__(self, **kwargs: Any) -> None:
        _Budget.spend(_cost(tuple(kwargs.values())), "Namespace()")
        self.__dict__.update(kwargs)


class AttributeDictData(dict):
    """Lightning's AttributeDict (a dict subclass) as a plain dict."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


class DefaultDictData(dict):
    """collections.defaultdict without its factory ever being called."""

    def __init__(self, factory: Any = None, *args: Any) -> None:
        super().__init__()
        _Budget.spend(_cost(args), "defaultdict()")
        self.factory = _short_repr(factory)
        if args and isinstance(args[0], dict):
            self.update(args[0])


class NumpyDtypeData:
    """numpy.dtype('f4', False, True) + BUILD state: records the type code and byte order."""

    def __init__(self, spec: Any = "f8", align: Any = False, copy: Any = False) -> None:
        self.spec = str(spec)
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], str):
            self.byteorder = state[1]

    def numpy(self) -> Any:
        import numpy as np

        dt = np.dtype(self.spec)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt

    def __repr__(self) -> str:
        return f"dtype({self.spec!r})"


class NumpyArrayData:
    """numpy.core.multiarray._reconstruct + BUILD (version, shape, dtype, fortran, rawdata)."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] = ()
        self.dtype: NumpyDtypeData | None = None
        self.fortran = False
        self.raw: Any = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            _, shape, dtype, fortran, raw = state
            self.shape = tuple(int(d) for d in shape) if isinstance(shape, tuple) else ()
            self.dtype = dtype if isinstance(dtype, NumpyDtypeData) else None
            self.fortran, self.raw = bool(fortran), raw

    def numpy(self) -> Any:
        import numpy as np

        if self.dtype is None or not isinstance(self.raw, (bytes, bytearray)):
            raise ValueError("numpy array with object or unknown data")
        dt = self.dtype.numpy()
        if dt.kind == "O":
            raise ValueError("numpy object array")
        return np.frombuffer(bytes(self.raw), dtype=dt).reshape(self.shape, order="F" if self.fortran else "C")

    @property
    def dtype_name(self) -> str:
        try:
            return str(self.dtype.numpy()) if self.dtype else "unknown"
        except Exception:
            return "unknown"


class NumpyScalarData:
    """numpy.core.multiarray.scalar(dtype, bytes): the Python value when the dtype is numeric."""

    def __init__(self, dtype: Any = None, data: Any = None) -> None:
        self.dtype = dtype
        self.value: Any = None
        try:
            import numpy as np

            if isinstance(dtype, NumpyDtypeData) and isinstance(data, (bytes, bytearray)):
                dt = dtype.numpy()
                if dt.kind in "biufc" and dt.itemsize == len(data):
                    self.value = np.frombuffer(bytes(data), dtype=dt)[0].item()
        except Exception:
            self.value = None

    def __repr__(self) -> str:
        return repr(self.value)


def _numpy_ndarray_marker(*args: Any, **kwargs: Any) -> Any:
    return NumpyArrayData()


def _np_reconstruct(cls: Any = None, shape: Any = None, dtype: Any = None) -> NumpyArrayData:
    return NumpyArrayData()


class Placeholder:
    """Base of the inert classes that replace globals not on the allow-list.

    Instantiating, calling, BUILD, APPEND(S) and SETITEM(S) only record what was passed.
    """

    _module: ClassVar[str] = ""
    _name: ClassVar[str] = ""
    _on_call: ClassVar[Callable[[Placeholder], None] | None] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items=[], mapping={}, result_of=None)
        if cls._on_call is not None:
            cls._on_call(obj)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["mapping"][key] = value

    def append(self, value: Any) -> None:
        self.__dict__["items"].append(value)

    def extend(self, values: Any) -> None:
        self.__dict__["items"].extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:
        # Calling an instance (e.g. the result of getattr(...)) yields another inert instance.
        out = type(self).__new__(type(self), *args, **kwargs)
        out.__dict__["result_of"] = self
        return out

    def __reduce__(self) -> Any:  # never re-pickle a placeholder
        raise TypeError("placeholder")

    @classmethod
    def qualname(cls) -> str:
        return f"{cls._module}.{cls._name}"

    def call_repr(self) -> str:
        parts = [_short_repr(a) for a in self.__dict__.get("args", ())]
        parts += [f"{k}={_short_repr(v)}" for k, v in self.__dict__.get("kwargs", {}).items()]
        text = f"{self.qualname()}({', '.join(parts)})"
        return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."

    def __repr__(self) -> str:
        return f"<{self.qualname()} (not loaded)>"


# ------------------------------------------------------------------------------------ torch rebuilders


def _as_shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)) and all(isinstance(d, int) for d in value):
        return tuple(value)
    raise ValueError(f"bad tensor shape {_short_repr(value)}")


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any = 0,
    size: Any = (),
    stride: Any = None,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> TensorRef:
    ref = TensorRef(
        storage=storage if isinstance(storage, StorageRef) else None,
        offset=storage_offset if isinstance(storage_offset, int) else 0,
        shape=_as_shape(size),
        stride=tuple(stride) if isinstance(stride, (tuple, list)) else None,
        requires_grad=bool(requires_grad) if isinstance(requires_grad, bool) else False,
    )
    if not isinstance(storage, StorageRef):
        ref.notes.append("storage is not a persistent id")
    if backward_hooks:
        ref.notes.append("backward hooks recorded (ignored)")
    return ref


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):  # noqa: ANN001, ANN202
    ref = _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks)
    if isinstance(dtype, TorchDtype):
        ref.dtype = dtype.name
    return ref


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> TensorRef:
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None, state: Any = None) -> Any:
    if isinstance(data, TensorRef):
        data.parameter = True
        data.requires_grad = bool(requires_grad) if isinstance(requires_grad, bool) else True
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    # func is one of our stand-ins (or a placeholder, which only records); new_type is a marker.
    result = func(*args) if callable(func) and isinstance(args, tuple) else None
    if isinstance(result, TensorRef) and isinstance(new_type, TorchMarker) and "Parameter" in new_type.qualname:
        result.parameter = True
    return result


def _rebuild_meta_tensor_no_storage(dtype: Any, size: Any, stride: Any, requires_grad: Any = False) -> TensorRef:
    return TensorRef(
        storage=None,
        offset=0,
        shape=_as_shape(size),
        stride=tuple(stride) if isinstance(stride, (tuple, list)) else None,
        dtype=dtype.name if isinstance(dtype, TorchDtype) else "unknown",
        kind="meta",
    )


def _rebuild_qtensor(storage, storage_offset, size, stride, quantizer_params, requires_grad, backward_hooks):  # noqa: ANN001, ANN202
    ref = _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad)
    ref.kind = "quantized"
    return ref


def _rebuild_device_tensor_from_numpy(data: Any, dtype: Any, device: Any, requires_grad: Any) -> TensorRef:
    arr = data if isinstance(data, NumpyArrayData) else NumpyArrayData()
    return TensorRef(
        storage=None,
        offset=0,
        shape=arr.shape,
        stride=None,
        dtype=dtype.name if isinstance(dtype, TorchDtype) else arr.dtype_name,
        kind="numpy",
        array=arr,
    )


def _rebuild_sparse_tensor(layout: Any, data: Any) -> dict[str, Any]:
    parts = data if isinstance(data, tuple) else (data,)
    return {"__class__": f"sparse tensor ({layout!r})", **{f"part{i}": p for i, p in enumerate(parts)}}


def _codecs_encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    # How protocol-2 pickles spell bytes: _codecs.encode('...', 'latin1').
    if isinstance(obj, str) and encoding in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        return obj.encode(encoding, "surrogatepass")
    raise ValueError("_codecs.encode with unexpected arguments")


def _reconstructor(cls: Any, base: Any = object, state: Any = None) -> Any:
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls.__new__(cls)
    if cls in (NamespaceData, NumpyArrayData):
        return cls()
    if isinstance(cls, type) and cls in _PLAIN_TYPES:
        _Budget.spend(_cost((state,)), "copyreg._reconstructor")
        return cls() if state is None else cls(state)
    raise ValueError(f"copyreg._reconstructor of {_short_repr(cls)}")


def _newobj(cls: Any, *args: Any) -> Any:
    if isinstance(cls, type) and (issubclass(cls, Placeholder) or cls in _PLAIN_TYPES):
        _Budget.spend(_cost(args), "copyreg.__newobj__")
        return cls.__new__(cls, *args)
    raise ValueError(f"copyreg.__newobj__ of {_short_repr(cls)}")


_MAX_BYTES = 1 << 26


class _Budget:
    """How much data allow-listed builders (bytes(n), list(range(n)), copies of containers) may still create
    in one load: a few pickle bytes can ask for gigabytes through them."""

    left = 0

    @classmethod
    def reset(cls, stream_bytes: int) -> None:
        cls.left = max(256 << 20, 4 * stream_bytes)

    @classmethod
    def spend(cls, n: int, what: str) -> None:
        cls.left -= n
        if cls.left < 0:
            raise ValueError(f"{what}: the pickle builds more data than a checkpoint of its size could hold")


def _cost(args: tuple[Any, ...]) -> int:
    n = 64
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool):
            n += abs(a) if abs(a) < (1 << 62) else 1 << 62
        elif isinstance(a, (str, bytes, bytearray)):
            n += len(a)
        elif isinstance(a, (range, list, tuple, dict, set, frozenset)):
            n += 64 * len(a)
    return n


def _budgeted(builder: Any, name: str) -> Any:
    def build(*args: Any, **kwargs: Any) -> Any:
        if name in ("bytes", "bytearray") and args and isinstance(args[0], int) and args[0] > _MAX_BYTES:
            raise ValueError(f"{name}() of a huge size")
        if name == "range":
            r = range(*args)
            if len(r) > 1 << 20:
                raise ValueError("range() too long")
            _Budget.spend(64 * len(r), name)
            return r
        _Budget.spend(_cost(args) + _cost(tuple(kwargs.values())), f"{name}()")
        return builder(*args, **kwargs)

    build.__name__ = name
    return build


_safe_bytes = _budgeted(bytes, "bytes")
_safe_bytearray = _budgeted(bytearray, "bytearray")
_safe_range = _budgeted(range, "range")


class _SizeStandIn(tuple):
    """torch.Size as a plain tuple."""


class OrderedDictData(OrderedDict):
    """collections.OrderedDict; what it copies counts against the load's budget."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _Budget.spend(_cost(args) + _cost(tuple(kwargs.values())), "OrderedDict()")
        super().__init__(*args, **kwargs)


class CounterData(dict):
    """collections.Counter (torch's weights_only loader accepts it) as a plain dict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _Budget.spend(_cost(args) + _cost(tuple(kwargs.values())), "Counter()")
        if args and isinstance(args[0], dict):
            self.update(args[0])
        self.update({k: v for k, v in kwargs.items()})


_PLAIN_TYPES = (dict, list, tuple, set, frozenset, OrderedDict, OrderedDictData, AttributeDictData, CounterData)

_BUILTINS: dict[str, Any] = {
    "dict": _budgeted(dict, "dict"),
    "list": _budgeted(list, "list"),
    "tuple": _budgeted(tuple, "tuple"),
    "set": _budgeted(set, "set"),
    "frozenset": _budgeted(frozenset, "frozenset"),
    "int": int,
    "float": float,
    "complex": complex,
    "bool": bool,
    "str": _budgeted(str, "str"),
    "bytes": _safe_bytes,
    "bytearray": _safe_bytearray,
    "slice": slice,
    "range": _safe_range,
    "object": object,
    "NoneType": type(None),
    "Ellipsis": Ellipsis,
    "NotImplemented": NotImplemented,
}

_TORCH_MARKERS = {
    "Tensor",
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "jagged",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "per_tensor_affine",
    "per_channel_affine",
    "per_tensor_symmetric",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
}

_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDictData,
    ("collections", "Counter"): CounterData,
    ("collections", "defaultdict"): DefaultDictData,
    ("argparse", "Namespace"): NamespaceData,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copyreg", "__newobj__"): _newobj,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._utils", "_rebuild_meta_tensor_no_storage"): _rebuild_meta_tensor_no_storage,
    ("torch._utils", "_rebuild_qtensor"): _rebuild_qtensor,
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): _rebuild_device_tensor_from_numpy,
    ("torch._utils", "_rebuild_sparse_tensor"): _rebuild_sparse_tensor,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): _SizeStandIn,
    ("torch", "device"): lambda *a, **k: ":".join(str(x) for x in a),
    ("torch.nn.parameter", "Parameter"): TorchMarker("torch.nn.parameter.Parameter"),
    ("torch.nn.parameter", "Buffer"): TorchMarker("torch.nn.parameter.Buffer"),
    ("torch.serialization", "_get_layout"): lambda name: TorchMarker(f"torch.{name}"),
    ("torch.torch_version", "TorchVersion"): str,
    ("pathlib", "PosixPath"): lambda *parts: "/".join(str(p) for p in parts),
    ("pathlib", "WindowsPath"): lambda *parts: "\\".join(str(p) for p in parts),
    ("pathlib", "PurePosixPath"): lambda *parts: "/".join(str(p) for p in parts),
    ("pathlib", "Path"): lambda *parts: "/".join(str(p) for p in parts),
    ("numpy", "dtype"): NumpyDtypeData,
    ("numpy", "ndarray"): _numpy_ndarray_marker,
    ("numpy.core.multiarray", "scalar"): NumpyScalarData,
    ("numpy._core.multiarray", "scalar"): NumpyScalarData,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("lightning_fabric.utilities.data", "AttributeDict"): AttributeDictData,
    ("lightning.fabric.utilities.data", "AttributeDict"): AttributeDictData,
    ("pytorch_lightning.utilities.parsing", "AttributeDict"): AttributeDictData,
    ("lightning.pytorch.utilities.parsing", "AttributeDict"): AttributeDictData,
}


# ---------------------------------------------------------------------------------------------- results


@dataclass
class GlobalRef:
    """One global the pickle names, how it was graded, and where its objects ended up."""

    module: str
    name: str
    grade: str
    reason: str
    count: int = 0
    where: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    source: str = ""  # which pickle inside the file (data.pkl, constants.pkl, nested pickle in storage 3)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "name": self.name,
            "grade": self.grade,
            "reason": self.reason,
            "count": self.count,
            "where": self.where,
            "calls": self.calls,
            "source": self.source,
        }


@dataclass
class ScanResult:
    """Everything one restricted unpickling produced."""

    obj: Any = None
    globals: dict[tuple[str, str], GlobalRef] = field(default_factory=dict)
    storages: dict[str, StorageRef] = field(default_factory=dict)
    error: str | None = None  # the unpickling stopped early (corrupt or hostile stream)
    protocol: int | None = None
    end: int | None = None  # stream position after the pickle
    notes: list[str] = field(default_factory=list)  # members or streams that could not be scanned
    static: StreamScan | None = None  # the opcode scan of the loaded stream

    @property
    def unsafe(self) -> list[GlobalRef]:
        return [g for g in self.globals.values() if g.grade != SAFE]

    def merge(self, other: ScanResult) -> None:
        for key, ref in other.globals.items():
            mine = self.globals.get(key)
            if mine is None:
                self.globals[key] = ref
            else:
                mine.count += ref.count
                mine.where.extend(w for w in ref.where if w not in mine.where)
                mine.calls.extend(ref.calls[: max(0, MAX_CALL_RECORDS - len(mine.calls))])


# ------------------------------------------------------------------------------------------- unpickler


# Accepted by torch.load(weights_only=True) (torch/_weights_only_unpickler.py and torch.serialization's
# default safe globals) without a data stand-in here: graded safe, recorded by an inert placeholder.
_WEIGHTS_ONLY_SAFE = {
    # torch's own classes that torch.load(weights_only=True) accepts once torch has imported their module
    # (torch.nested, torch._dynamo, torch.distributed.tensor register them): nested jagged tensors, DTensors.
    ("torch.nested._internal.nested_tensor", "NestedTensor"),
    ("torch.nested._internal.nested_tensor", "_rebuild_njt"),
    ("torch._dynamo.decorators", "_DimRange"),
    ("torch.distributed.device_mesh", "DeviceMesh"),
    ("torch.distributed._mesh_layout", "_MeshLayout"),
    ("torch.distributed._mesh_layout", "_FlatLayout"),
    ("torch.distributed.tensor", "DTensor"),
    ("torch.distributed.tensor._api", "DTensor"),
    ("torch.distributed.tensor._dtensor_spec", "DTensorSpec"),
    ("torch.distributed.tensor._dtensor_spec", "TensorMeta"),
    ("torch.distributed.tensor._dtensor_spec", "ShardOrderEntry"),
    ("torch.distributed.tensor.placement_types", "Partial"),
    ("torch.distributed.tensor.placement_types", "Replicate"),
    ("torch.distributed.tensor.placement_types", "Shard"),
    ("torch.distributed.tensor.placement_types", "_StridedShard"),
    ("traceback", "FrameSummary"),
    ("traceback", "StackSummary"),
    ("torch._utils", "_rebuild_nested_tensor"),
    ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._utils", "_rebuild_device_tensor_from_cpu_tensor"),
    ("torch.storage", "UntypedStorage"),
    ("torch.storage", "TypedStorage"),
    ("torch", "UntypedStorage"),
    ("torch", "TypedStorage"),
}
_TENSOR_CLASSES = {
    f"{p}Tensor" for p in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
}


def _weights_only_safe(module: str, name: str) -> bool:
    if (module, name) in _WEIGHTS_ONLY_SAFE:
        return True
    if module in ("torch", "torch.cuda") and name in _TENSOR_CLASSES:
        return True
    if module == "builtins" and name.endswith(("Error", "Exception", "Warning", "Interrupt", "Exit")):
        return name.isidentifier() and name[0].isupper()
    return False


def classify(module: str, name: str, torchscript: bool = False) -> tuple[str, str]:
    """(grade, reason) for a global, allow-list included: the one grading both the scan and the loader use."""
    module, name = _normalise(module, name)
    if _allowed_target(module, name) is not None:
        return SAFE, "allow-listed"
    if _weights_only_safe(module, name):
        return SAFE, "accepted by torch.load(weights_only=True)"
    if torchscript and (module.startswith("__torch__") or module == "torch.jit._pickle"):
        return SAFE, "TorchScript type"
    return grade_global(module, name)


def _allowed_target(module: str, name: str) -> Any:
    allowed = _ALLOWED.get((module, name))
    if allowed is not None:
        return allowed
    if module == "builtins" and name in _BUILTINS:
        return _BUILTINS[name]
    if module in ("torch", "torch.storage", "torch.cuda") and name in STORAGE_DTYPES:
        return StorageType(name, STORAGE_DTYPES[name])
    if module == "torch" and name in TORCH_DTYPE_NAMES:
        return TorchDtype(TORCH_DTYPE_NAMES[name])
    if module in ("torch", "torch._tensor") and name in _TORCH_MARKERS:
        return TorchMarker(f"torch.{name}")
    return None


class _RestrictedMixin:
    """find_class never imports; persistent_load records storages. Mixed into the C and the Python unpickler."""

    def __init__(
        self,
        file: Any,
        result: ScanResult,
        *,
        source: str = "data.pkl",
        torchscript: bool = False,
        legacy_ids: bool = False,
    ) -> None:
        # latin1 decodes any Python 2 str without failing; keys are ASCII in practice.
        super().__init__(file, encoding="latin1")  # type: ignore[call-arg]
        self.result = result
        self.source = source
        self.torchscript = torchscript
        self.legacy_ids = legacy_ids
        self._placeholders: dict[tuple[str, str], type[Placeholder]] = {}
        self._pending_calls: list[tuple[GlobalRef, Placeholder]] = []  # rendered once loading stops

    # -- globals
    def find_class(self, module: str, name: str) -> Any:
        module, name = _normalise(module, name)
        key = (module, name)
        ref = self.result.globals.get(key)
        target, grade, reason = self._resolve(module, name)
        if ref is None:
            ref = self.result.globals[key] = GlobalRef(module, name, grade, reason, source=self.source)
        ref.count += 1
        return target

    def _resolve(self, module: str, name: str) -> tuple[Any, str, str]:
        target = _allowed_target(module, name)
        if target is not None:
            return target, SAFE, "allow-listed"
        grade, reason = classify(module, name, self.torchscript)
        return self._placeholder(module, name), grade, reason

    def _placeholder(self, module: str, name: str) -> type[Placeholder]:
        cls = self._placeholders.get((module, name))
        if cls is None:
            ref_key = (module, name)

            def on_call(obj: Placeholder, _key: tuple[str, str] = ref_key) -> None:
                ref = self.result.globals.get(_key)
                if ref is not None and len(ref.calls) < MAX_CALL_RECORDS:
                    # Arguments are recorded after the call; store the object and render later.
                    self._pending_calls.append((ref, obj))

            cls = type(name if name.isidentifier() else "Global", (Placeholder,), {})
            cls._module, cls._name, cls._on_call = module, name, staticmethod(on_call)
            self._placeholders[(module, name)] = cls
        return cls

    # -- storages
    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            storage_type, key, location, numel = pid[1], str(pid[2]), str(pid[3]), pid[4]
            dtype = storage_type.dtype if isinstance(storage_type, StorageType) else "uint8"
            if isinstance(storage_type, TorchDtype):  # some writers pass the dtype itself
                dtype = storage_type.name
            ref = self.result.storages.get(key)
            if ref is None:
                ref = StorageRef(
                    key=key, dtype=dtype, numel=int(numel) if isinstance(numel, int) else 0, location=location
                )
                self.result.storages[key] = ref
            view = pid[5] if len(pid) > 5 else None
            if self.legacy_ids and isinstance(view, tuple) and len(view) == 3:
                # A legacy storage view: same bytes, different start and length.
                return StorageRef(key=key, dtype=dtype, numel=int(view[2]), location=location, view=view)
            return ref
        if isinstance(pid, tuple) and pid and pid[0] == "module":
            return {"__class__": "legacy module source", "name": _short_repr(pid[1:2])}
        if isinstance(pid, (str, int)):  # torch's old tar format: ids of tensors in its `tensors` member
            return f"<persistent id {_short_repr(pid)}>"
        raise pickle.UnpicklingError(f"unsupported persistent id {_short_repr(pid)}")


class RestrictedUnpickler(_RestrictedMixin, pickle.Unpickler):  # type: ignore[misc]
    """The C unpickler, restricted: fast; its memo is an array sized by the largest memo index."""


class _PyRestrictedUnpickler(_RestrictedMixin, pickle._Unpickler):  # type: ignore[misc]
    """The pure-Python unpickler, restricted: its memo is a dict, so a huge LONG_BINPUT index costs nothing."""


def _normalise(module: str, name: str) -> tuple[str, str]:
    # Python 2 spellings (__builtin__, copy_reg): the C unpickler maps these only in its own find_class.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


MAX_NESTING = 10_000  # deeper tuples crash CPython's hash() (C recursion): such streams are not loaded


def load_limit(stream_bytes: int) -> int:
    """Memory a restricted load may use for one stream: the promise is max(4*S, 512 MiB) per command."""
    return max(384 << 20, 3 * stream_bytes)


def restricted_load(
    data: bytes | Any,
    *,
    source: str = "data.pkl",
    torchscript: bool = False,
    legacy_ids: bool = False,
    result: ScanResult | None = None,
    offset: int = 0,
    static: StreamScan | None = None,
) -> ScanResult:
    """Scan, then (when that is safe for this process) unpickle `data` from `offset` restrictedly.

    `data` is a buffer (bytes, mmap). The static scan of the stream (`pickle_scan.scan_stream`, or the
    one given) decides the verdict: every global it names is recorded even when the load stops early or is
    skipped. The load only adds the structure, where each global sits, and the calls it would make.
    Never raises for a bad stream: the error is recorded in `result.error`; `result.end` is where the
    pickle ended (the next one of a sequence starts there), None when it is broken.
    """
    result = result or ScanResult()
    if not isinstance(data, (bytes, bytearray, memoryview)) and not hasattr(data, "find"):
        data = data.read()  # a file object: its bytes (callers pass buffers)
    if static is None:
        static = scan_stream(data, offset)
    result.static = static
    result.protocol = static.protocol if static.protocol >= 2 else None
    result.end = static.end
    stop = static.end if static.end is not None else static.error_at
    length = max(0, stop - offset)
    skip = None
    if static.max_depth > MAX_NESTING:
        skip = f"the pickle nests {static.max_depth} levels deep (more than {MAX_NESTING}): not loaded"
    elif static.estimated_bytes > load_limit(length):
        skip = f"the pickle would build about {static.estimated_bytes >> 20} MiB of objects: not loaded"
    if skip is None:
        # Never hand the unpickler bytes past the point where the stream breaks (a BYTEARRAY8 claiming
        # 10**17 bytes there would be allocated before being read).
        whole = offset == 0 and stop == len(data) and isinstance(data, bytes)
        stream = io.BytesIO(data if whole else bytes(data[offset:stop]))
        # The C unpickler's memo is an array sized by the largest index: a LONG_BINPUT of 2**31 costs GiBs.
        big_memo = static.max_memo > max(1024, length // 2)
        cls = _PyRestrictedUnpickler if big_memo else RestrictedUnpickler
        unpickler = cls(stream, result, source=source, torchscript=torchscript, legacy_ids=legacy_ids)
        _Budget.reset(length)
        try:
            result.obj = unpickler.load()
        except RecursionError:
            result.error = "pickle nests too deeply"
        except Exception as e:  # corrupt or hostile streams raise anything: keep what we learnt
            result.error = oneline(e)
        finally:
            for ref, obj in unpickler._pending_calls:
                if len(ref.calls) < MAX_CALL_RECORDS:
                    ref.calls.append(obj.call_repr())
    else:
        result.error = skip
    if static.error and static.end is None:
        result.error = static.error
    add_static_globals(result, [static], source, torchscript)
    if result.obj is not None:
        _locate_placeholders(result)
    return result


def add_static_globals(result: ScanResult, streams: list[StreamScan], source: str, torchscript: bool) -> None:
    """Every global the opcode scan found, graded; the loader's own records (calls, where) are kept.

    A stream cut by a scan limit is reported itself: past a limit a file is flagged, never passed."""
    for s in streams:
        if s.limited:
            result.globals.setdefault(
                ("<scan limit>", source),
                GlobalRef(
                    "<scan limit>",
                    source,
                    SUSPICIOUS,
                    f"{s.error} at offset {s.start}: the rest was only swept for globals, not parsed",
                    count=1,
                    where=[f"offset {s.start}"],
                    source=source,
                ),
            )
        for (module, name), count in s.globals.items():
            key = _normalise(module, name)
            ref = result.globals.get(key)
            if ref is None:
                grade, reason = classify(*key, torchscript)
                at = s.offsets[(module, name)][0]
                where = f"offset {at}, after the stream breaks" if s.swept else f"offset {at}"
                ref = result.globals[key] = GlobalRef(
                    *key, grade, reason, count=0, where=[f"{where} (not reached by the loader)"], source=source
                )
            ref.count = max(ref.count, count)
    _grade_partials(result, streams, torchscript)


def _grade_partials(result: ScanResult, streams: list[StreamScan], torchscript: bool) -> None:
    """functools.partial and reduce are as dangerous as what they wrap (torchvision models hold
    partial(nn.BatchNorm2d); `int | None` pickles as reduce(or_, ...))."""
    for key in _CALLERS:
        ref = result.globals.get(key)
        if ref is None:
            continue
        wrapped: set[tuple[str, str]] = set()
        for s in streams:
            wrapped |= s.wraps.get(key, set())
        if not wrapped:
            continue
        grades = [classify(m, n, torchscript)[0] for m, n in wrapped]
        if DANGEROUS in grades:
            ref.grade = DANGEROUS
        elif key == ("functools", "partial"):
            ref.grade = SUSPICIOUS
        ref.reason = "wraps " + ", ".join(sorted(f"{m}.{n}" for m, n in wrapped))


# Globals that call the callables they are given: as dangerous as what they wrap.
_CALLERS = [("functools", "partial"), ("_functools", "reduce")]


def _locate_placeholders(result: ScanResult) -> None:
    """Record where in the structure each non-allowed global's objects ended up."""
    seen: set[int] = set()

    def visit(obj: Any, path: str, depth: int) -> None:
        if depth > 200 or id(obj) in seen:
            return
        if isinstance(obj, (str, bytes, int, float, bool, type(None))):
            return
        seen.add(id(obj))
        if isinstance(obj, Placeholder):
            ref = result.globals.get((obj._module, obj._name))
            if ref is not None and len(ref.where) < 20 and path not in ref.where:
                ref.where.append(path or "<root>")
            for i, a in enumerate(obj.__dict__.get("args", ())):
                visit(a, f"{path}(arg {i})", depth + 1)
            visit(obj.__dict__.get("state"), path, depth + 1)
            for k, v in obj.__dict__.get("mapping", {}).items():
                visit(v, join_path(path, k), depth + 1)
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                visit(v, join_path(path, k), depth + 1)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            for i, v in enumerate(obj):
                visit(v, join_path(path, i), depth + 1)
        elif isinstance(obj, NamespaceData):
            for k, v in vars(obj).items():
                visit(v, join_path(path, k), depth + 1)
        elif isinstance(obj, type) and issubclass(obj, Placeholder):
            ref = result.globals.get((obj._module, obj._name))
            if ref is not None and len(ref.where) < 20 and path not in ref.where:
                ref.where.append((path or "<root>") + " (the global itself)")

    visit(result.obj, "", 0)


_MAX_KEY = 256  # characters of one key segment kept in a path
_MAX_PATH = 4096  # characters of a whole path: a chain of long keys must not grow paths quadratically


def join_path(prefix: str, key: Any) -> str:
    key = key if isinstance(key, str) else _short_repr(key)
    if len(key) > _MAX_KEY:
        key = key[: _MAX_KEY - 3] + "..."
    path = f"{prefix}.{key}" if prefix else key
    return path if len(path) <= _MAX_PATH else "..." + path[-(_MAX_PATH - 3) :]


def looks_like_pickle(head: bytes) -> bool:
    """A cheap test for an embedded pickle: PROTO 2-5 at the start."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def worst_grade(refs: list[GlobalRef]) -> str:
    grade = SAFE
    for r in refs:
        if _GRADE_ORDER[r.grade] > _GRADE_ORDER[grade]:
            grade = r.grade
    return grade
