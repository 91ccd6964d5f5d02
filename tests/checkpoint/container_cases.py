"""Seeded generators of files whose loaders execute code (npy/npz object arrays, torch.package, PyTables
attributes, TorchScript I/O, Keras configs naming functions) and of benign twins that must not be flagged.

Every generator takes a `random.Random` and a folder and returns a `Case`: the file, whether a loader of it
would run an attacker's code, and what that code would do (each payload touches `marker`, so a test can
check that nothing ran). The draws (protocol, callable, container layout, names, where the payload sits)
come from the seed, so a new seed gives files no test has seen.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import struct
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Case:
    kind: str  # the class of the issue it belongs to
    path: Path
    malicious: bool
    note: str  # what was drawn, for failure messages
    allow_suspicious: bool = False  # benign files where "suspicious" is the honest grade (code that runs)


class Reduce:
    """Pickles as `func(*args)`: what every pickle payload is."""

    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def _command(marker: Path) -> str:
    return f"touch {marker}"


def payload(rng: random.Random, marker: Path) -> Reduce:
    """A callable that would run a command or code, drawn."""
    cmd = _command(marker)
    choice = rng.randrange(5)
    if choice == 0:
        return Reduce(os.system, (cmd,))
    if choice == 1:
        return Reduce(subprocess.check_output, (["touch", str(marker)],))
    if choice == 2:
        return Reduce(eval, (f"__import__('os').system({cmd!r})",))
    if choice == 3:
        return Reduce(exec, (f"open({str(marker)!r}, 'w').close()",))
    return Reduce(os.popen, (cmd,))


def _text_payload(rng: random.Random, marker: Path) -> bytes:
    """A protocol-0 pickle written by hand (what PyTables attributes hold): module and name drawn."""
    module, name = rng.choice(
        [("os", "system"), ("posix", "system"), ("subprocess", "getoutput"), ("builtins", "eval")]
    )
    arg = _command(marker) if name != "eval" else f"__import__('os').system({_command(marker)!r})"
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


def _benign_objects(rng: random.Random) -> list:
    pool = [rng.randrange(-1000, 1000), "lr", None, {"a": rng.random()}, [1, 2.5], ("x", 3), b"raw", True]
    return rng.sample(pool, rng.randint(1, len(pool)))


# ------------------------------------------------------------------------------------------------ numpy


def npy_bytes(arr: object, protocol: int, version: tuple[int, int] = (1, 0)) -> bytes:
    """An .npy file as numpy writes it, with the object pickle at a chosen protocol (numpy.save uses 3)."""
    import numpy as np

    buf = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(arr)
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, header)
    else:
        np.lib.format.write_array_header_2_0(buf, header)
    if arr.dtype.hasobject:
        pickle.dump(arr, buf, protocol=protocol)
    else:
        buf.write(arr.tobytes(order="F" if header["fortran_order"] else "C"))
    return buf.getvalue()


def _numeric(rng: random.Random) -> object:
    import numpy as np

    dtype = rng.choice(["<f4", ">f4", "<f8", "<i8", ">i2", "|u1", "|b1", "<f2", "<c8"])
    shape = tuple(rng.randint(0 if rng.random() < 0.1 else 1, 5) for _ in range(rng.randint(0, 3)))
    data = np.random.default_rng(rng.randrange(1 << 30)).normal(size=shape) * 10
    arr = data.astype(dtype)
    return np.asfortranarray(arr) if rng.random() < 0.3 and arr.ndim > 1 else arr


def _object_array(rng: random.Random, malicious: bool, marker: Path) -> object:
    import numpy as np

    items = _benign_objects(rng)
    if malicious:
        items.insert(rng.randrange(len(items) + 1), payload(rng, marker))
    arr = np.empty(len(items), dtype=object)
    for i, v in enumerate(items):
        arr[i] = v
    return arr


def npy_case(rng: random.Random, folder: Path, malicious: bool, marker: Path) -> Case:
    arr = _object_array(rng, malicious, marker) if malicious or rng.random() < 0.5 else _numeric(rng)
    protocol = rng.choice([2, 3, 4, 5])
    version = rng.choice([(1, 0), (2, 0)])
    path = folder / f"arr{rng.randrange(1000)}.npy"
    path.write_bytes(npy_bytes(arr, protocol, version))
    return Case("npy", path, malicious, f"npy protocol {protocol} version {version} dtype {arr.dtype}")


def npz_case(rng: random.Random, folder: Path, malicious: bool, marker: Path) -> Case:
    names = rng.sample(["w", "b", "layer.0.weight", "emb", "meta", "steps"], rng.randint(2, 5))
    bad = rng.randrange(len(names)) if malicious else -1
    compress = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    path = folder / f"arrays{rng.randrange(1000)}.npz"
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for i, name in enumerate(names):
            if i == bad or (not malicious and rng.random() < 0.3):
                arr = _object_array(rng, i == bad, marker)
            else:
                arr = _numeric(rng)
            zf.writestr(name + ".npy", npy_bytes(arr, rng.choice([2, 3, 4, 5])))
    return Case("npz", path, malicious, f"npz {names} bad={bad} compress={compress}")


def keras_npz_case(rng: random.Random, folder: Path, malicious: bool, marker: Path) -> Case:
    """`model.weights.npz` as Keras' NpzIOStore writes it: one 0-d object array (a dict of arrays) per layer
    path; Keras loads it with numpy.load(allow_pickle=True)."""
    import numpy as np

    path = folder / "model.weights.npz"
    layers = rng.sample(["layers/dense/vars", "layers/conv2d/vars", "layers/batch_normalization/vars"], 2)
    contents: dict[str, object] = {}
    for k, lp in enumerate(layers):
        d = {str(i): np.random.default_rng(i).normal(size=(rng.randint(1, 4), 3)).astype("float32") for i in range(2)}
        if malicious and k == 0:
            d[str(rng.randrange(2, 5))] = payload(rng, marker)
        cell = np.empty((), dtype=object)
        cell[()] = d
        contents[lp] = cell
    buf = io.BytesIO()
    np.savez(buf, **contents)
    path.write_bytes(buf.getvalue())
    return Case("keras-npz", path, malicious, f"keras npz {layers}")


def keras_zip_npz_case(rng: random.Random, folder: Path, malicious: bool, marker: Path) -> Case:
    """A `.keras` archive saved with weights_format="npz": Keras loads model.weights.npz with allow_pickle."""
    inner = keras_npz_case(rng, folder, malicious, marker)
    config = keras_config(rng, False, marker, family=False)
    path = folder / f"model{rng.randrange(1000)}.keras"
    with zipfile.ZipFile(path, "w", compression=rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.npz", inner.path.read_bytes())
    inner.path.unlink()
    return Case("keras-zip-npz", path, malicious, f"keras zip with npz weights ({inner.note})")


# ---------------------------------------------------------------------------------------- torch.package


def torch_package_case(rng: random.Random, folder: Path, malicious: bool, marker: Path) -> Case:
    """A torch.package archive: its own Python source runs when PackageImporter imports it (load_pickle)."""
    import torch
    from torch.package import PackageExporter

    path = folder / f"pkg{rng.randrange(1000)}.pt"
    module = rng.choice(["mymodels.net", "lib.layers", "net"])
    if malicious:
        how = rng.choice(
            [
                f"import os\nos.system({_command(marker)!r})\n",
                f"import subprocess\nsubprocess.run(['touch', {str(marker)!r}])\n",
                f"exec(\"open({str(marker)!r}, 'w').close()\")\n",
                f"__import__('os').system({_command(marker)!r})\n",
            ]
        )
    else:
        how = "SCALE = 2\n"
    source = how + "import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    source += "        self.fc = torch.nn.Linear(3, 2)\n"
    with_code = malicious or rng.random() < 0.5
    with PackageExporter(str(path)) as e:
        e.extern("torch.**")
        if with_code:
            e.save_source_string(module, source, is_package=False)
            if "." in module:
                e.save_source_string(module.rsplit(".", 1)[0], "", is_package=True)
            # The pickle names the packaged class: load_pickle imports its module, which runs the source.
            e.save_binary("model", "model.pkl", f"c{module}\nNet\n)R.".encode())
        else:
            e.save_pickle("model", "weights.pkl", {"w": torch.ones(2, 2), "epoch": rng.randrange(10)})
    return Case(
        "torch-package", path, malicious, f"package module={module} code={with_code}", allow_suspicious=with_code
    )


# ------------------------------------------------------------------------------------------ HDF5 / PyTables


def pytables_case(rng: random.Random, folder: Path, malicious: bool, marker: Path) -> Case:
    """Pickled attributes as PyTables writes them (a protocol-0 pickle in a scalar ASCII string attribute,
    unpickled when the node's attributes are read), in a Keras weights file or a plain HDF5 file."""
    import h5py
    import numpy as np

    keras = rng.random() < 0.5
    path = folder / (f"w{rng.randrange(1000)}.weights.h5" if keras else f"t{rng.randrange(1000)}.h5")
    with h5py.File(path, "w") as f:
        if keras:
            g = f.create_group("layers/dense/vars")
            g.attrs["name"] = "dense"
            g.create_dataset("0", data=np.ones((3, 2), dtype="float32"))
            g.create_dataset("1", data=np.zeros(2, dtype="float32"))
            nodes = [f, g, g["0"]]
        else:
            f.attrs["CLASS"] = np.bytes_(b"GROUP")
            f.attrs["PYTABLES_FORMAT_VERSION"] = np.bytes_(b"2.1")
            d = f.create_dataset("w", data=np.arange(4.0))
            d.attrs["CLASS"] = np.bytes_(b"ARRAY")
            nodes = [f, d]
        node = rng.choice(nodes)
        benign = {"lr": rng.random(), "layers": [1, 2]} if rng.random() < 0.5 else ("x", rng.randrange(9))
        node.attrs["config"] = np.bytes_(pickle.dumps(benign, 0))
        if malicious:
            where = rng.choice(nodes)
            where.attrs[rng.choice(["cfg", "TITLE", "meta"])] = np.bytes_(_text_payload(rng, marker))
    return Case("pytables", path, malicious, f"pytables keras={keras}")


def pytables_vlarray_case(rng: random.Random, folder: Path, malicious: bool, marker: Path) -> Case:
    """A PyTables VLArray of ObjectAtom: each row is a pickle (vlen uint8), unpickled when read."""
    import h5py
    import numpy as np

    path = folder / f"objs{rng.randrange(1000)}.h5"
    rows = [pickle.dumps(o, protocol=rng.choice([0, 2, 5])) for o in _benign_objects(rng)]
    if malicious:
        rows.insert(rng.randrange(len(rows) + 1), pickle.dumps(payload(rng, marker), protocol=rng.choice([0, 2, 5])))
    with h5py.File(path, "w") as f:
        f.attrs["CLASS"] = np.bytes_(b"GROUP")
        ds = f.create_dataset("objs", (len(rows),), dtype=h5py.vlen_dtype(np.uint8))
        for i, r in enumerate(rows):
            ds[i] = np.frombuffer(r, dtype=np.uint8)
        ds.attrs["CLASS"] = np.bytes_(b"VLARRAY")
        ds.attrs["PSEUDOATOM"] = np.bytes_(b"object")
    return Case("pytables-vlarray", path, malicious, f"vlarray rows={len(rows)}")


# ----------------------------------------------------------------------------------------- TorchScript


def torchscript_case(rng: random.Random, folder: Path, malicious: bool, marker: Path) -> Case:
    """A scripted module whose code writes or maps files (in forward, or in __setstate__, which
    torch.jit.load runs); the benign twin has ordinary code and a __setstate__ without I/O."""
    import torch

    op = rng.choice(["save", "from_file"]) if malicious else None
    in_setstate = malicious and rng.random() < 0.5
    target = str(marker)
    io_line = {
        "save": f"        torch.save(x, {target!r})\n",
        "from_file": f"        x = x + torch.from_file({target!r}, True, 4)\n",
        None: "        x = x * 2.0\n",
    }[op]
    src = "import torch\nfrom typing import Tuple\n\nclass M(torch.nn.Module):\n"
    src += "    def __init__(self):\n        super().__init__()\n        self.b = torch.ones(4)\n"
    src += "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
    src += (io_line if not in_setstate else "") + "        return x + self.b\n"
    if in_setstate or rng.random() < 0.5:
        src += "    @torch.jit.export\n    def __getstate__(self) -> Tuple[torch.Tensor, bool]:\n"
        src += "        return (self.b, self.training)\n"
        src += "    @torch.jit.export\n    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:\n"
        src += "        x = state[0]\n" + (io_line if in_setstate else "        x = x + 1.0\n")
        src += "        self.b = x\n        self.training = state[1]\n"
    name = f"tsmod{rng.randrange(1 << 30)}"
    mod_path = folder / f"{name}.py"
    mod_path.write_text(src)
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, mod_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(mod.M())
    path = folder / f"{name}.pt"
    scripted.save(str(path))
    mod_path.unlink()
    return Case("torchscript", path, malicious, f"torchscript op={op} setstate={in_setstate}")


# ---------------------------------------------------------------------------------------------- Keras


def _keras_layer(name: str, units: int) -> dict:
    return {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {"name": name, "units": units, "activation": "relu", "dtype": "float32"},
        "registered_name": None,
    }


def _function_layer(rng: random.Random, marker: Path) -> dict:
    """A Keras utility (not a layer) that a functional model would call with the node's arguments."""
    module, name, kwargs = rng.choice(
        [
            ("keras.utils", "get_file", {"fname": str(marker), "origin": "http://127.0.0.1:9/x"}),
            ("keras.src.utils.file_utils", "get_file", {"fname": str(marker), "origin": "http://127.0.0.1:9/x"}),
            ("keras.saving", "save_model", {"filepath": str(marker)}),
            ("keras.src.utils.io_utils", "ask_to_proceed_with_overwrite", {"filepath": str(marker)}),
            # Keras' families register their exported functions too (keras_hub>upload_preset uploads files).
            ("keras_hub.src.utils.preset_utils", "upload_preset", {"uri": "kaggle://x/y/z", "preset": str(marker)}),
        ]
    )
    registered = f"keras_hub>{name}" if module.startswith("keras_hub") else rng.choice([None, name])
    return {
        "module": module,
        "class_name": name,
        "config": kwargs,
        "registered_name": registered,
        "name": "payload",
        "inbound_nodes": [{"args": [], "kwargs": kwargs}],
    }


def keras_config(rng: random.Random, malicious: bool, marker: Path, family: bool) -> dict:
    layers = [_keras_layer(f"dense_{i}", rng.randint(1, 8)) for i in range(rng.randint(1, 3))]
    if family:  # Keras' own families register their classes as "package>Name"
        pkg = rng.choice(["keras_hub", "keras_nlp"])
        cls = rng.choice(["GemmaBackbone", "BertBackbone", "GPT2Tokenizer", "TransformerEncoder"])
        layers.append(
            {
                "module": f"{pkg}.src.models.{cls.lower()}",
                "class_name": cls,
                "config": {"name": cls.lower()},
                "registered_name": f"{pkg}>{cls}",
            }
        )
    if malicious and rng.random() < 0.5:
        layers.insert(rng.randrange(len(layers) + 1), _function_layer(rng, marker))
    elif malicious:  # or as a "function" object where an activation goes
        module, name = rng.choice([("keras.utils", "get_file"), ("keras.src.saving.saving_api", "save_model")])
        fn = {"module": module, "class_name": "function", "config": name, "registered_name": name}
        rng.choice(layers)["config"]["activation"] = fn
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "sequential", "layers": layers},
        "registered_name": None,
    }


def keras_case(rng: random.Random, folder: Path, malicious: bool, marker: Path) -> Case:
    """A `.keras` archive (or a legacy `.h5` with model_config) naming a Keras function where a layer goes."""
    import h5py
    import numpy as np

    family = not malicious or rng.random() < 0.3
    config = keras_config(rng, malicious, marker, family)
    as_h5 = rng.random() < 0.4
    if as_h5:
        path = folder / f"model{rng.randrange(1000)}.h5"
        with h5py.File(path, "w") as f:
            f.attrs["model_config"] = json.dumps(config)
            f.attrs["keras_version"] = "3.15.1"
            mw = f.create_group("model_weights")
            mw.attrs["layer_names"] = np.array([b"dense_0"])
            g = mw.create_group("dense_0")
            g.attrs["weight_names"] = np.array([b"dense_0/kernel"])
            g.create_dataset("dense_0/kernel", data=np.ones((2, 2), dtype="float32"))
        return Case("keras-config", path, malicious, f"keras h5 family={family}")
    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        g = f.create_group("layers/dense/vars")
        g.attrs["name"] = "dense_0"
        g.create_dataset("0", data=np.ones((2, 2), dtype="float32"))
    path = folder / f"model{rng.randrange(1000)}.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", weights.getvalue())
    return Case("keras-config", path, malicious, f"keras zip family={family}")


# --------------------------------------------------------------------------------------- false alarms


def exotic_dtype_case(rng: random.Random, folder: Path) -> Case:
    """Tensors of dtypes torch.load(weights_only=True) accepts but numpy lacks (bits8, float4_e2m1fn_x2...)."""
    import torch

    names = [n for n in ("bits8", "bits16", "float4_e2m1fn_x2", "bits1x8", "bits2x4", "bits4x2") if hasattr(torch, n)]
    picked = rng.sample(names, rng.randint(1, len(names)))
    sd = {}
    for n in picked:
        dt = getattr(torch, n)
        base = torch.int16 if dt.itemsize == 2 else torch.uint8
        sd[n] = torch.zeros(rng.randint(1, 6), dtype=base).view(dt)
    path = folder / f"exotic{rng.randrange(1000)}.pt"
    torch.save(sd, path)
    return Case("exotic-dtype", path, False, f"dtypes {picked}")


def typing_case(rng: random.Random, folder: Path) -> Case:
    """Type hints pickled inside a checkpoint (a config dataclass's annotations): _operator.getitem, type(None)."""
    import typing

    import torch

    # The typing spellings on purpose: they are what pickles as _operator.getitem(typing.X, ...).
    hints = [typing.Optional[int], type(None), typing.List[int], typing.Union[int, str], typing.Dict[str, float]]  # noqa: UP006, UP007, UP045
    cfg = {"types": rng.sample(hints, rng.randint(1, len(hints))), "lr": rng.random()}
    path = folder / f"typed{rng.randrange(1000)}.pt"
    torch.save({"w": torch.ones(2), "cfg": cfg}, path, pickle_protocol=rng.choice([2, 4]))
    return Case("typing", path, False, f"hints {cfg['types']}", allow_suspicious=True)


def nested_tensor_case(rng: random.Random, folder: Path) -> Case:
    """A jagged nested tensor: torch's own helpers, accepted by weights_only once torch.nested is imported."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [torch.randn(rng.randint(1, 4), 3) for _ in range(rng.randint(1, 3))]
        nt = torch.nested.nested_tensor(parts, layout=torch.jagged)
    path = folder / f"njt{rng.randrange(1000)}.pt"
    torch.save({"njt": nt, "w": torch.ones(2)}, path)
    return Case("nested-tensor", path, False, f"njt {len(parts)} parts")


def bytes_pickle_case(rng: random.Random, folder: Path) -> Case:
    """A bytes value holding a pickle that names no global: nothing in it can run."""
    import torch

    inner = pickle.dumps(
        {"step": rng.randrange(100), "names": ["a", "b"], "x": rng.random()}, protocol=rng.choice([2, 4, 5])
    )
    path = folder / f"blob{rng.randrange(1000)}.pt"
    torch.save({"w": torch.ones(2), "blob": inner}, path)
    return Case("bytes-pickle", path, False, f"inner pickle of {len(inner)} bytes")


def text_case(rng: random.Random, folder: Path) -> Case:
    """A text file given by mistake (model.py for model.pt): not a pickle, whatever letters it starts with."""
    import sysconfig

    lib = Path(sysconfig.get_paths()["stdlib"])
    sources = sorted(p for p in lib.glob("*.py") if p.stat().st_size < 200_000)
    src = rng.choice(sources)
    ext = rng.choice([".py", ".pt", ".pkl", ".txt"])
    path = folder / f"{src.stem}{ext}"
    text = src.read_bytes()
    if rng.random() < 0.5:  # start at a random line: any first letter
        lines = text.splitlines(keepends=True)
        text = b"".join(lines[rng.randrange(len(lines)) :]) or text
    path.write_bytes(text)
    return Case("text", path, False, f"{src.name} as {ext}")


MALICIOUS_AND_TWINS = {
    "npy": npy_case,
    "npz": npz_case,
    "keras-npz": keras_npz_case,
    "keras-zip-npz": keras_zip_npz_case,
    "torch-package": torch_package_case,
    "pytables": pytables_case,
    "pytables-vlarray": pytables_vlarray_case,
    "torchscript": torchscript_case,
    "keras-config": keras_case,
}
BENIGN_ONLY = {
    "exotic-dtype": exotic_dtype_case,
    "typing": typing_case,
    "nested-tensor": nested_tensor_case,
    "bytes-pickle": bytes_pickle_case,
    "text": text_case,
}


def loader_imports(data: bytes) -> list[tuple[str, str]]:
    """What Python's own unpickler would import from these bytes before it stops (nothing is imported:
    find_class records and refuses). Module names that cannot be imported stop it, as a real import would."""
    seen: list[tuple[str, str]] = []

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            ok = all(part.isidentifier() for part in module.split(".")) and all(
                p.isidentifier() for p in name.split(".")
            )
            if not ok:
                raise ModuleNotFoundError(module)
            seen.append((module, name))
            raise pickle.UnpicklingError("refused")

    try:
        Recorder(io.BytesIO(data)).load()
    except Exception:  # noqa: BLE001 - any stop is the answer; what it imported first is recorded
        pass
    return seen


__all__ = ["Case", "MALICIOUS_AND_TWINS", "BENIGN_ONLY", "loader_imports", "npy_bytes", "payload", "struct"]
