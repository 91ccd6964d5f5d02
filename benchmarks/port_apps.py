"""`ptools port` on keras.applications and transfer-learning models, Keras 3 and tf_keras, against Keras.

    python benchmarks/port_apps.py --tf-python /path/to/venv-with-tensorflow/bin/python [--out DIR] [--only NAME]

Two interpreters: the one running this script has ptools and torch; `--tf-python` has TensorFlow 2.x, tf_keras
and Keras 3 (`pip install tensorflow tf-keras`), and writes the models (this same file, run with `--make`).
Each model gets random weights (kernels from Keras' initializers, random biases, BN/LN gammas and betas and
ConvNeXt's layer-scale factors) and real BatchNormalization statistics: the moving mean and variance are the
batch statistics of one training-mode pass over the calibration images (momentum 0, dropout off), so every
layer sees activations of the scale it was built for. Each model is saved as a Keras 3 `.keras`, a Keras 3
`.h5`, a tf_keras `.h5` and a tf_keras SavedModel, with Keras' `predict` outputs for 4 other images (0-255).
Then every file is ported (`ptools.port.api.build` + `write` with the output check) and the table printed:
max abs error of the logits against Keras, the size of the emitted model.py, port time. An independent
judge of whether an error is float32 round-off: the same module run in float64 (`f64`): when the port is
right, Keras' float32 outputs and the port's both lie within round-off of it (columns `keras-f64`,
`port-f64`); a wrong port is far from it while Keras is not.
Files are 2-115 MB each (ConvNeXtTiny), so this runs outside CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = 64
CLASSES = 7


def _models(k):
    """name -> builder for one Keras family (module k: keras or tf_keras)."""
    A, L = k.applications, k.layers

    def app(cls, **kw):
        return lambda: getattr(A, cls)(
            input_shape=(SIZE, SIZE, 3), weights=None, classes=CLASSES, classifier_activation=None, **kw
        )

    def tl_functional():
        """The transfer-learning tutorial: augmentation, preprocess_input, a frozen base called with
        training=False, pooling, dropout, a new head."""
        base = A.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=None)
        aug = k.Sequential([L.RandomFlip("horizontal"), L.RandomRotation(0.2)], name="data_augmentation")
        inp = k.Input((96, 96, 3))
        x = aug(inp)
        x = A.mobilenet_v2.preprocess_input(x)
        x = base(x, training=False)
        x = L.GlobalAveragePooling2D()(x)
        x = L.Dropout(0.2)(x)
        return k.Model(inp, L.Dense(1)(x)), base

    def tl_sequential():
        base = A.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=None)
        return k.Sequential([base, L.GlobalAveragePooling2D(), L.Dropout(0.2), L.Dense(5)]), base

    return {
        "MobileNetV3Small": app("MobileNetV3Small"),
        "MobileNetV3Large": app("MobileNetV3Large"),
        "EfficientNetV2B0": app("EfficientNetV2B0"),
        "ConvNeXtTiny": app("ConvNeXtTiny"),
        "TransferFunctional": tl_functional,
        "TransferSequential": tl_sequential,
    }


def _randomize(model, rng) -> None:
    """Random biases, norm gammas/betas and layer-scale factors (kernels keep Keras' random initialisers)."""
    for w in model.weights:
        path = str(getattr(w, "path", w.name))
        leaf = path.rsplit("/", 1)[-1].split(":")[0]
        shape = tuple(w.shape)
        if leaf in ("bias", "beta"):
            w.assign(rng.normal(0.0, 0.1, shape).astype("float32"))
        elif leaf == "gamma" or "layer_scale" in path:
            w.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))


def _calibrate(model, images, k) -> None:
    """BatchNormalization moving statistics := the batch statistics of one training-mode pass."""
    bns, drops = [], []
    for layer in _all_layers(model):
        name = type(layer).__name__
        if name == "BatchNormalization":
            bns.append((layer, layer.momentum))
            layer.momentum = 0.0
        elif name == "Dropout":
            drops.append((layer, layer.rate))
            layer.rate = 0.0
    model(images, training=True)
    for layer, m in bns:
        layer.momentum = m
    for layer, r in drops:
        layer.rate = r


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def make(out: Path, only: list[str]) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN's float32 conv is wrong on some strided shapes (input 7x6, kernel 5x5, strides (1, 3),
    # batch 2: garbage values): Keras' reference outputs come from TF's Eigen kernels instead.
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import keras
    import tf_keras

    out.mkdir(parents=True, exist_ok=True)
    for fam, k in (("k3", keras), ("tfk", tf_keras)):
        for i, (name, build) in enumerate(_models(k).items()):
            if only and name not in only:
                continue
            rng = np.random.default_rng(1000 + i)
            built = build()
            model, base = built if isinstance(built, tuple) else (built, None)
            size = model.inputs[0].shape[1]
            calib = rng.uniform(0, 255, (16, size, size, 3)).astype("float32")
            _randomize(model, rng)
            if base is not None:  # the frozen base sees preprocessed images; its statistics come from those
                base.trainable = True
                _calibrate(base, calib / 127.5 - 1.0, k)
                base.trainable = False
            else:
                _calibrate(model, calib, k)
            x = rng.uniform(0, 255, (4, size, size, 3)).astype("float32")
            y = model.predict(x, verbose=0)
            stem = out / f"{name}_{fam}"
            files = [f"{stem}.keras", f"{stem}.h5"] if fam == "k3" else [f"{stem}.h5", f"{stem}_savedmodel"]
            for f in files:
                if f.endswith("_savedmodel"):
                    model.save(f, save_format="tf")
                else:
                    model.save(f)
            np.save(f"{stem}_in.npy", x)
            np.save(f"{stem}_out.npy", np.asarray(y))
            print(json.dumps({"made": name, "family": fam, "files": files, "params": int(model.count_params())}))
            sys.stdout.flush()


def check(out: Path, only: list[str]) -> list[dict]:
    from ptools.errors import PtoolsError
    from ptools.port import api

    rows = []
    for f in sorted(out.iterdir()):
        if f.name.endswith(("_in.npy", "_out.npy")) or not (f.suffix in (".keras", ".h5") or f.is_dir()):
            continue
        stem = f.name.removesuffix("_savedmodel").rsplit(".", 1)[0]
        name, fam = stem.rsplit("_", 1)
        if only and name not in only:
            continue
        fmt = {".keras": "Keras 3 .keras", ".h5": f"{'Keras 3' if fam == 'k3' else 'tf_keras'} .h5"}.get(
            f.suffix, "tf_keras SavedModel"
        )
        row = {"model": name, "format": fmt}
        t0 = time.perf_counter()
        try:
            p = api.build(f)
            if not p.ok:
                row["result"] = "refused: " + "; ".join(f"{u['layer']}: {u['reason']}" for u in p.unsupported[:3])
            else:
                x_in, y_out = out / f"{stem}_in.npy", out / f"{stem}_out.npy"
                with tempfile.TemporaryDirectory() as d:
                    res = api.write(p, Path(d), check=(x_in, y_out), tolerance=1e9)
                    assert res is not None
                    row |= _float64_judge(p, Path(d), np.load(x_in), np.load(y_out))
                row["max_abs_error"] = res["max_abs_error"]
                row["lines"] = p.code.count("\n")
                row["result"] = "ok"
        except PtoolsError as e:
            row["result"] = f"exit {int(e.exit_code)}: {e.message}"
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:  # the CLI says "damaged", exit 2
            row["result"] = f"exit 2: the config does not have the structure Keras writes ({type(e).__name__}: {e})"
        row["seconds"] = round(time.perf_counter() - t0, 1)
        ref = np.load(out / f"{stem}_out.npy")
        row["output_scale"] = float(np.abs(ref).max())
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def _float64_judge(p, folder: Path, x: np.ndarray, y: np.ndarray) -> dict:
    """The emitted module in float64 on the same inputs: max |Keras - f64| and |port float32 - f64|."""
    import torch

    from ptools.port import api

    model = api.instantiate(p, folder)
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1) if p.inputs[0].cf else x))
    with torch.no_grad():
        o32 = model(t).numpy()
        o64 = model.double()(t.double()).numpy()
    return {"keras_f64": float(np.abs(y - o64).max()), "port_f64": float(np.abs(o32 - o64).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tf-python", help="interpreter with TensorFlow, tf_keras and Keras 3 (writes the models)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "ptools-port-apps")
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--make", action="store_true", help="(internal) write the models; run with --tf-python's")
    ap.add_argument("--skip-make", action="store_true", help="check the files already in --out")
    args = ap.parse_args()
    if args.make:
        make(args.out, args.only)
        return
    if not args.skip_make:
        if not args.tf_python:
            sys.exit("port_apps: give --tf-python (an interpreter with TensorFlow and tf_keras), or --skip-make")
        only = ["--only", *args.only] if args.only else []
        subprocess.run([args.tf_python, __file__, "--make", "--out", str(args.out), *only], check=True)
    rows = check(args.out, args.only)
    head = f"{'model':20} {'format':22} {'keras-port':>10} {'keras-f64':>10} {'port-f64':>10} {'|logit|':>8}"
    print(f"{head} {'lines':>6} {'s':>6}  result")
    for r in rows:
        errs = [f"{r[k]:.1e}" if k in r else "-" for k in ("max_abs_error", "keras_f64", "port_f64")]
        print(
            f"{r['model']:20} {r['format']:22} {errs[0]:>10} {errs[1]:>10} {errs[2]:>10} {r['output_scale']:8.2f} "
            f"{r.get('lines', '-'):>6} {r['seconds']:6.1f}  {r['result']}"
        )


if __name__ == "__main__":
    main()
