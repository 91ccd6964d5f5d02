"""Training checkpoints as real trainers write them: parameters are the model's only; optimizer state (any
torch optimizer), EMA copies and RNG state are recognised and counted apart; --key offers only models.

Every checkpoint is built with real torch: seeded random models, real optimizers stepped on real gradients,
the dict shapes of nanoGPT-style loops, timm, Lightning, the Hugging Face Trainer folder and ptools' own
trainer. The judge is torch itself: `sum(p.numel() for p in model.parameters())` and `model.buffers()`.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ptools.cli import app
from tests.defectgan.conftest import tiny_config, tiny_data  # noqa: F401 (tiny_data: a fixture)

OPTIMIZERS = {
    "Adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.05),
    "SGD-momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "RMSprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, centered=True),
    "Adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-2),
    "NAdam": lambda ps: torch.optim.NAdam(ps, lr=1e-3),
    "RAdam": lambda ps: torch.optim.RAdam(ps, lr=1e-3),
    "Adamax": lambda ps: torch.optim.Adamax(ps, lr=1e-3),
    "Adadelta": lambda ps: torch.optim.Adadelta(ps),
    "ASGD": lambda ps: torch.optim.ASGD(ps, lr=1e-2),
    "Rprop": lambda ps: torch.optim.Rprop(ps, lr=1e-2),
}


def random_model(rng: np.random.Generator) -> nn.Module:
    """A small conv net of random depth and widths, with or without biases and batch norm."""
    layers: list[nn.Module] = []
    c = 3
    for _ in range(int(rng.integers(1, 4))):
        out = int(rng.integers(2, 9))
        layers.append(nn.Conv2d(c, out, int(rng.choice([1, 3])), padding=1, bias=bool(rng.integers(2))))
        if rng.integers(2):
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU())
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, int(rng.integers(2, 6)))]
    return nn.Sequential(*layers)


def stepped(model: nn.Module, name: str, steps: int, rng: np.random.Generator) -> torch.optim.Optimizer:
    """The optimizer after `steps` real updates (its state holds what that optimizer keeps per parameter)."""
    opt = OPTIMIZERS[name](model.parameters())
    for _ in range(steps):
        x = torch.from_numpy(rng.standard_normal((2, 3, 6, 6)).astype(np.float32))
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return opt


def counts(model: nn.Module) -> tuple[int, int]:
    return sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers())


def tensor_values(obj) -> int:
    """Values in every tensor of a nested object (the independent count of what is not the model)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if isinstance(obj, dict):
        return sum(tensor_values(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_values(v) for v in obj)
    return 0


def inspect_json(runner, *args: str) -> dict:
    result = runner.invoke(app, ["inspect", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def state_by_role(doc: dict) -> dict[str, int]:
    return {row["role"]: row["params"] for row in doc["training_state"]}


@pytest.mark.parametrize("seed", [9101, 9102, 9103])
def test_any_torch_optimizer_state_is_recognised_and_not_counted_as_parameters(runner, tmp_path, seed):
    rng = np.random.default_rng(seed)
    for name in OPTIMIZERS:
        torch.manual_seed(int(rng.integers(1 << 30)))
        model = random_model(rng)
        opt = stepped(model, name, int(rng.integers(1, 4)), rng)
        path = tmp_path / f"{name}.pt"
        torch.save(opt.state_dict(), path)
        doc = inspect_json(runner, str(path))
        assert doc["kind"].startswith("optimizer state_dict"), (name, doc["kind"])
        assert doc["totals"]["params"] == 0 and doc["totals"]["tensors"] == 0, name
        assert state_by_role(doc) == {"optimizer": tensor_values(opt.state_dict())}, name
        assert doc["selection"]["candidates"] == [], name  # no "62 state_dicts" made of Adam moments


@pytest.mark.parametrize("seed", [9201, 9202, 9203, 9204])
def test_plain_training_dicts_count_the_model_alone(runner, tmp_path, seed):
    """{model, optimizer, ema, rng, ...} under the names loops give them, in a varied order."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = random_model(rng)
    opt_name = str(rng.choice(list(OPTIMIZERS)))
    opt = stepped(model, opt_name, 2, rng)
    ema = random_model(np.random.default_rng(seed))  # same architecture, other values
    ema.load_state_dict({k: v + 1 for k, v in model.state_dict().items()})
    names = {
        "model": str(rng.choice(["model", "net", "state_dict", "model_state_dict"])),
        "optimizer": str(rng.choice(["optimizer", "optim", "opt", "optimizer_state_dict", "opt_state"])),
        "ema": str(rng.choice(["ema", "model_ema", "ema_state_dict", "ema_model"])),
        "rng": str(rng.choice(["rng", "rng_state", "rng_states"])),
    }
    rng_state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    parts = {
        names["model"]: model.state_dict(),
        names["optimizer"]: opt.state_dict(),
        names["ema"]: ema.state_dict(),
        names["rng"]: rng_state,
        "epoch": int(rng.integers(100)),
        "scaler": {"scale": 65536.0, "_growth_tracker": 0},
    }
    order = list(parts)
    random.Random(seed).shuffle(order)
    path = tmp_path / "ckpt.pt"
    torch.save({k: parts[k] for k in order}, path)

    params, buffers = counts(model)
    doc = inspect_json(runner, str(path))
    assert doc["selection"]["path"] == names["model"], (names, opt_name)
    assert (doc["totals"]["params"], doc["totals"]["buffers"]) == (params, buffers), (names, opt_name)
    assert doc["selection"]["candidates"] == sorted(doc["selection"]["candidates"], key=order.index)
    assert set(doc["selection"]["candidates"]) == {names["model"], names["ema"]}  # models only: no optimizer
    assert "EMA copy" in doc["selection"]["note"]

    whole = inspect_json(runner, str(path), "--key", names["optimizer"])  # asked for, it is still optimizer state
    assert whole["totals"]["params"] == 0
    assert state_by_role(whole) == {"optimizer": tensor_values(opt.state_dict())}
    shown = inspect_json(runner, str(path), "--key", names["ema"])  # the EMA copy, asked for, is a model
    assert (shown["totals"]["params"], shown["totals"]["buffers"]) == (params, buffers)


@pytest.mark.parametrize("seed", [9301, 9302])
def test_gan_dict_with_two_models_ema_and_optimizers(runner, tmp_path, seed):
    """No single model: the whole file, with parameters = G + D, and everything else listed apart."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    g, d = random_model(rng), random_model(rng)
    opt_g, opt_d = stepped(g, "Adam", 1, rng), stepped(d, "SGD-momentum", 2, rng)
    state = {
        "G": g.state_dict(),
        "D": d.state_dict(),
        "G_ema": g.state_dict(),
        "opt_G": opt_g.state_dict(),
        "opt_D": opt_d.state_dict(),
        "rng": [{"cpu": torch.get_rng_state()}],
    }
    path = tmp_path / "gan.pt"
    torch.save(state, path)
    doc = inspect_json(runner, str(path))
    assert doc["selection"]["path"] is None and doc["selection"]["candidates"] == ["G", "D", "G_ema"]
    (pg, bg), (pd, bd) = counts(g), counts(d)
    assert (doc["totals"]["params"], doc["totals"]["buffers"]) == (pg + pd, bg + bd)
    assert state_by_role(doc) == {
        "optimizer": tensor_values([opt_g.state_dict(), opt_d.state_dict()]),
        "ema": pg + bg,
        "rng": torch.get_rng_state().numel(),
    }
    human = runner.invoke(app, ["inspect", str(path)])
    assert f"{pg + pd:,} parameters" in human.stdout and "Training state (not counted above)" in human.stdout


def test_timm_and_lightning_checkpoints(runner, tmp_path):
    rng = np.random.default_rng(9401)
    torch.manual_seed(9401)
    model = random_model(rng)
    params, buffers = counts(model)
    opt = stepped(model, "AdamW", 2, rng)
    timm = tmp_path / "timm.pth.tar"
    sd = model.state_dict()
    torch.save({"epoch": 4, "arch": "x", "state_dict": sd, "state_dict_ema": sd, "optimizer": opt.state_dict()}, timm)
    doc = inspect_json(runner, str(timm))
    assert doc["selection"]["path"] == "state_dict" and "state_dict_ema" in doc["selection"]["note"]
    assert (doc["totals"]["params"], doc["totals"]["buffers"]) == (params, buffers)

    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    lightning = tmp_path / "last.ckpt"
    torch.save(
        {
            "epoch": 1,
            "global_step": 20,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"net.{k}": v for k, v in sd.items()},
            "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 2}}}},
            "callbacks": {},
            "optimizer_states": [opt.state_dict()],
            "lr_schedulers": [sched.state_dict()],
        },
        lightning,
    )
    doc = inspect_json(runner, str(lightning))
    assert doc["kind"] == "lightning" and doc["selection"]["path"] == "state_dict"
    assert doc["selection"]["candidates"] == ["state_dict"]
    assert (doc["totals"]["params"], doc["totals"]["buffers"]) == (params, buffers)
    assert "optimizer state" in doc["lightning"]["optimizer_states"]


def test_hugging_face_trainer_folder(runner, tmp_path):
    """checkpoint-N/: model.safetensors beside optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json."""
    rng = np.random.default_rng(9501)
    torch.manual_seed(9501)
    model = random_model(rng)
    opt = stepped(model, "AdamW", 1, rng)
    folder = tmp_path / "checkpoint-500"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    torch.save(opt.state_dict(), folder / "optimizer.pt")
    torch.save(torch.optim.lr_scheduler.StepLR(opt, 5).state_dict(), folder / "scheduler.pt")
    rng_file = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state(), "cuda": []}
    torch.save(rng_file, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 500, "epoch": 2.0, "log_history": []}))

    doc = inspect_json(runner, str(folder))
    params, buffers = counts(model)
    assert doc["selection"]["path"] == "model"
    assert (doc["totals"]["params"], doc["totals"]["buffers"]) == (params, buffers)
    assert doc["values"] == {} or "global_step" not in doc["values"]
    roles = {row["key"]: row["summary"] for row in doc["top_level"]}
    assert roles["optimizer"].startswith("optimizer state") and roles["rng_state"].startswith("RNG state")
    assert state_by_role(doc) == {}  # the model alone is selected; the top level names the rest
    alone = inspect_json(runner, str(folder / "rng_state.pth"))
    assert alone["kind"].startswith("RNG state") and alone["totals"]["buffers"] == 0
    assert state_by_role(alone) == {"rng": torch.get_rng_state().numel() + 624}
    against = runner.invoke(app, ["inspect", str(folder), "--keys"])
    assert against.exit_code == 0 and "optimizer" not in against.stdout.split("\n", 1)[1]


def test_ptools_own_training_checkpoint(runner, tmp_path, tiny_data):  # noqa: F811
    """latest.pt of a real (tiny) run: G + D parameters; EMA, both Adam states and RNG apart."""
    from ptools.defectgan.models import build_models
    from ptools.defectgan.trainer import train

    config = tiny_config(steps=1)
    result = train(config, data_root=tiny_data, run_dir=tmp_path / "run", device="cpu", progress=False)
    g, d = build_models(tiny_config(labels=config.labels), torch.device("cpu"))
    (pg, bg), (pd, bd) = counts(g), counts(d)
    state = torch.load(result.checkpoint, weights_only=True)
    doc = inspect_json(runner, str(result.checkpoint))
    assert (doc["totals"]["params"], doc["totals"]["buffers"]) == (pg + pd, bg + bd)
    by_role = state_by_role(doc)
    assert by_role["optimizer"] == tensor_values([state["opt_g"], state["opt_d"]])
    assert by_role["ema"] == tensor_values(state["generator_ema"])
    assert by_role["rng"] == tensor_values(state["rng"])
    assert doc["selection"]["candidates"] == ["generator", "discriminator", "generator_ema"]
