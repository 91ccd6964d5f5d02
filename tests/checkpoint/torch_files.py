"""Small real checkpoints written by torch.save / safetensors for the inspect tests, and hostile pickles."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn


class TinyNet(nn.Module):
    """A model with a conv, a batch norm (buffers) and a head: enough keys for the load checks."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, classes)


class TiedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight  # tied, as language models do


def tiny_state_dict(seed: int = 0) -> OrderedDict:
    torch.manual_seed(seed)
    return TinyNet().state_dict()


def adam_state(params: list[torch.Tensor]) -> dict:
    """The shape of torch.optim.Adam's state_dict after one step (built directly: a real step costs seconds
    of first-call overhead on a loaded CI machine)."""
    state = {
        i: {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
        for i, p in enumerate(params)
    }
    group = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False}
    return {"state": state, "param_groups": [{**group, "params": list(range(len(params)))}]}


def save_nested(path: Path, seed: int = 0) -> dict:
    """nanoGPT-style: model + optimizer (Adam state) + epoch."""
    torch.manual_seed(seed)
    model = TinyNet()
    ckpt = {"model": model.state_dict(), "optimizer": adam_state(list(model.parameters())), "epoch": 7}
    torch.save(ckpt, path)
    return ckpt


def save_lightning(path: Path) -> dict:
    """The keys a Lightning checkpoint has, with numpy scalars and a Namespace in the hyper-parameters."""
    import argparse

    import numpy as np

    sd = OrderedDict((f"model.{k}", v) for k, v in tiny_state_dict().items())
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": sd,
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.25), "monitor": "val_loss"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}],
        "lr_schedulers": [],
        "hparams_name": "hparams",
        "hyper_parameters": {
            "lr": np.float64(0.01),
            "depth": np.int64(4),
            "args": argparse.Namespace(batch_size=8, name="run"),
            "tags": ["a", "b"],
        },
    }
    torch.save(ckpt, path)
    return ckpt


class Payload:
    """A pickle payload: `__reduce__` returns a callable that would create `target` if ever run."""

    def __init__(self, kind: str, target: Path) -> None:
        self.kind, self.target = kind, str(target)

    def __reduce__(self):  # noqa: ANN204
        if self.kind == "os.system":
            return os.system, (f"touch {self.target}",)
        if self.kind == "exec":
            return builtins.exec, (f"open({self.target!r}, 'w').close()",)
        if self.kind == "eval":
            return builtins.eval, (f"open({self.target!r}, 'w')",)
        if self.kind == "popen":
            return subprocess.Popen, (["touch", self.target],)
        raise ValueError(self.kind)


PAYLOAD_KINDS = ("os.system", "exec", "eval", "popen")


def save_malicious(path: Path, kind: str, target: Path, *, legacy: bool = False) -> None:
    """A real torch.save file whose state dict carries a payload next to honest tensors."""
    obj = {"weight": torch.ones(2, 2), "config": {"payload": Payload(kind, target)}, "epoch": 1}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)


def save_bare_pickle(path: Path, kind: str, target: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(kind, target), protocol=2))


class UserConfig:
    """A user's own class: pickled by reference to this module, so not on any allow-list."""

    def __init__(self) -> None:
        self.lr = 0.1
        self.layers = [2, 3]
