"""The conversion pipeline behind `ptools convert`: source -> layer rules -> names -> match -> write -> report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptools.checkpoint._text import oneline
from ptools.convert import layouts, match, questions, settings, shapes
from ptools.convert import rules as rules_mod
from ptools.convert.layouts import Item, LayerOptions, Note
from ptools.convert.source import Canonical, SourceTensor, load_source
from ptools.convert.writer import OutTensor, write_state_dict
from ptools.errors import PtoolsError


@dataclass
class ConvertOptions:
    rules: Path | None = None
    model: str | None = None
    template: Path | None = None
    include_optimizer: bool = False
    ema: bool = False
    verify: bool = False
    forget_bias: float = 1.0
    input_size: tuple[int, ...] | None = None  # CxHxW to trace --model with (else its example_input_array)


@dataclass
class Plan:
    """Everything the report shows; `written` is what goes into the output, in order."""

    source: Canonical
    items: list[Item]
    targets: dict[int, str]  # id(item) -> final key
    how: dict[int, str]  # id(item) -> rule | name | order | heuristic
    notes: list[Note]
    skipped: list[SourceTensor]
    rule_skipped: list[str] = field(default_factory=list)
    unmatched_items: list[Item] = field(default_factory=list)
    unfilled: list[match.TargetTensor] = field(default_factory=list)
    mismatched: list[tuple[Item, match.TargetTensor]] = field(default_factory=list)
    ambiguous: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    model: Any = None  # the instantiated --model, reused by --check-output
    renames: list[dict[str, Any]] = field(default_factory=list)  # systematic renames applied to match --model

    @property
    def undetermined(self) -> list[Item]:
        """Tensors that would be written but whose layout neither the file nor the target settles."""
        return [i for i in self.written if i.undetermined is not None]

    @property
    def written(self) -> list[Item]:
        unmatched = {id(i) for i in self.unmatched_items} | {id(i) for i, _ in self.mismatched}
        return [i for i in self.items if id(i) not in unmatched and id(i) in self.targets]

    @property
    def ok(self) -> bool:
        return not (self.unfilled or self.mismatched or self.duplicates or self.undetermined)

    def out_tensors(self) -> list[OutTensor]:
        return [OutTensor(self.targets[id(i)], i.dtype, i.shape_after, i.make, i.chunks) for i in self.written]


def _heuristic_prefix(layer: str) -> str:
    return layer.replace("/", ".")


@contextmanager
def config_errors(path: Path) -> Iterator[None]:
    """Errors raised by code walking a file's model config, as one line naming the file (--debug keeps the cause)."""
    try:
        yield
    except PtoolsError:
        raise
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, SyntaxError) as e:
        raise PtoolsError(
            f"{path}: the model config in this file does not have the structure Keras writes ({oneline(e)})",
            hint="the file is damaged or was edited by hand; re-export it from Keras",
        ) from e


def plan(src: str | Path, opts: ConvertOptions) -> Plan:
    rules = rules_mod.load_rules(opts.rules) if opts.rules else []
    canon = load_source(src, include_optimizer=opts.include_optimizer, ema=opts.ema, verify=opts.verify)
    rule_skipped: list[str] = []
    by_layer: dict[str, dict[str, SourceTensor]] = {}
    for t in canon.tensors.values():
        hit = rules_mod.first_match(rules, t.key)
        if hit and hit[0].skip:
            rule_skipped.append(t.key)
            continue
        rel = t.key[len(t.layer) + 1 :] if t.layer and t.key.startswith(t.layer + "/") else t.key
        by_layer.setdefault(t.layer, {})[rel] = t
    # Layer configs come from the file: a damaged or hand-edited one must end in one line naming it.
    with config_errors(canon.path):
        recorded = {m.config_key: m.input_shape for m in canon.layers.values()}
        cl_by_config: dict[str, str] = {}
        by_config = shapes.flatten_segments(canon.model_config, recorded, cl_by_config)
        # keyed by the canonical layer (a nested model's inner layers are `base/dense`, `dense` in the config)
        segments = {name: by_config[m.config_key] for name, m in canon.layers.items() if m.config_key in by_config}
        flat = {
            name: s[0][0] for name, s in segments.items() if isinstance(s, list) and len(s) == 1 and s[0][0] is not None
        }
        multi = {name: s for name, s in segments.items() if isinstance(s, list) and name not in flat}
        unknown = {name: s for name, s in segments.items() if isinstance(s, str)}  # open: why
        flat_source = {layer: "config" for layer in flat}
        for r in rules:
            if r.flatten_shape:  # an explicit pre-Flatten shape for the Dense whose kernel the rule names
                for t in canon.tensors.values():
                    if r.pattern.fullmatch(t.key):
                        flat[t.layer] = r.flatten_shape
                        flat_source[t.layer] = "rule"
        items: list[Item] = []
        notes: list[Note] = []
        for layer, vars_ in by_layer.items():
            meta = canon.layers[layer]
            if any(v.role != "weight" for v in vars_.values()):
                # optimizer slots / counters (--include-optimizer): written as stored, under their own names
                items += [
                    layouts.copy_item(_heuristic_prefix(layer), rel.replace("/", "."), t) for rel, t in vars_.items()
                ]
                continue
            per_feature = meta.class_name in shapes.PER_FEATURE
            lopts = LayerOptions(
                flatten_shape=None if per_feature else flat.get(layer),
                flatten_segments=None if per_feature else multi.get(layer),  # type: ignore[arg-type]
                forget_bias=opts.forget_bias,
                keras3=canon.keras3,
            )
            its, ns = layouts.convert_layer(meta, vars_, _heuristic_prefix(layer), lopts)
            if per_feature and (layer in flat or layer in multi):
                seg_opts = LayerOptions(flatten_shape=flat.get(layer), flatten_segments=multi.get(layer))  # type: ignore[arg-type]
                ns += layouts.feature_items(its, seg_opts, layer)
                for it in its:
                    if it.flatten_source is not None:
                        it.flatten_shape = tuple(flat[layer]) if layer in flat else None
                        it.decided_by = "config"
            elif per_feature and layer in unknown:
                why = (
                    "not the shape it flattens"
                    if unknown[layer] == shapes.UNKNOWN
                    else f"{unknown[layer]} (a Flatten's features reach it)"
                )
                for it in its:
                    if len(it.shape_after) == 1 and not it.synthetic:
                        it.undetermined = layouts.Undetermined(
                            "flatten",
                            f"the config says a Flatten feeds `{layer}` ({meta.class_name}) but {why}, so the "
                            "(H, W, C) order of its per-feature weights is unknown",
                            "--model (traced), or a --map rule with a transform for it",
                        )
            for it in its:
                if it.transform.startswith("dense_after_flatten"):
                    it.flatten_source = flat_source.get(layer, "config")
                    it.decided_by = it.flatten_source
                    it.flatten_shape = tuple(flat[layer]) if layer in flat else None
            items += its
            notes += ns
        notes = _with_config_settings(notes, canon)
        questions.mark_flatten_questions(items, canon, set(flat) | set(multi), unknown)
        cl = {name: cl_by_config[m.config_key] for name, m in canon.layers.items() if m.config_key in cl_by_config}
        questions.mark_channels_last_flattens(items, cl)
    targets, how, fixed = _apply_rules(items, rules)
    p = Plan(canon, items, targets, how, notes, canon.skipped, rule_skipped)
    if opts.model or opts.template:
        if opts.model:
            p.model = match.load_model_factory(opts.model)
            tgts = match.targets_from_model(p.model)
        else:
            assert opts.template is not None
            tgts = match.targets_from_template(opts.template)
        # Match with the names chosen so far (rules, heuristics); then adopt the target's names.
        for it in items:
            it.target = targets[id(it)]
        fixed_idx = {i for i, it in enumerate(items) if id(it) in fixed}
        res = match.match(items, tgts, fixed_idx, name_sorted=not canon.model_order)
        for it, t, _ in res.pairs:  # a target's shape settles a depthwise-or-conv kernel
            choice = it.choice_for(t.shape)
            if choice is not None:
                it.choose(choice, f"target shape {tuple(t.shape)}")
            elif match.vector_fits(it, t.shape):
                make, shape = it.make, tuple(t.shape)
                it.make = lambda make=make, shape=shape: make().reshape(shape)
                it.chunks = None
                it.transform += f", reshape{shape}"
                it.shape_after = shape
        p.targets = {id(it): t.key for it, t, _ in res.pairs}
        p.how = {id(it): h for it, t, h in res.pairs}
        p.unmatched_items, p.unfilled, p.mismatched, p.ambiguous = (
            res.unmatched_items,
            res.unfilled,
            res.mismatched,
            res.ambiguous,
        )
        p.renames = res.renames
        if p.model is not None:
            questions.settle_flatten_by_trace(p, opts.input_size)
            questions.settle_norm_axes_by_trace(p, opts.input_size)
    else:
        seen: dict[str, Item] = {}
        for it in items:
            key = targets[id(it)]
            if key in seen:
                p.duplicates.append({"target": key, "sources": [list(seen[key].sources), list(it.sources)]})
            seen[key] = it
    return p


def _with_config_settings(notes: list[Note], canon: Canonical) -> list[Note]:
    """Add the weightless layers' settings (pooling, padding, upsampling, activations), all in model order."""
    from ptools.checkpoint.keras.h5 import config_layers_by_name

    cfgs = config_layers_by_name(canon.model_config)
    if not cfgs:
        return notes
    extra = []
    for name, lc in cfgs.items():
        cfg = lc.get("config", {})
        if isinstance(cfg, dict):
            extra += settings.layer_settings(name, lc.get("class_name"), cfg, canon.keras3)
    rank = {name: i for i, name in enumerate(cfgs)}
    return sorted(notes + extra, key=lambda n: rank.get(n.layer, len(rank)))


def _apply_rules(items: list[Item], rules: list[rules_mod.Rule]) -> tuple[dict[int, str], dict[int, str], set[int]]:
    """Final names: a --map rule where one matches the item's source, otherwise the name heuristics."""
    targets: dict[int, str] = {}
    how: dict[int, str] = {}
    fixed: set[int] = set()
    renamed_prefix: dict[str, str] = {}  # heuristic layer prefix -> renamed prefix, for synthetic siblings
    per_source: dict[str, int] = {}
    for it in items:
        for s in it.sources[:1]:
            per_source[s] = per_source.get(s, 0) + 1
    for it in items:
        key = it.sources[0] if it.sources else None
        hit = rules_mod.first_match(rules, key) if key else None
        if hit is None or hit[0].replace is None and hit[0].transform is None:
            continue
        rule, m = hit
        layer_prefix = _heuristic_prefix(it.layer)
        suffix = (
            it.target[len(layer_prefix) :] if layer_prefix and it.target.startswith(layer_prefix) else "." + it.role
        )
        if rule.replace is not None:
            new = m.expand(rule.replace)
            if "/" not in new:
                target = (
                    new
                    if per_source.get(key or "", 0) == 1 or new.endswith("." + it.role)
                    else (new.rsplit(".", 1)[0] + "." + it.role)
                )
                new_prefix = target[: -len(suffix)] if target.endswith(suffix) else target.rsplit(".", 1)[0]
            else:
                n_var = len(key.split("/")) - (len(it.layer.split("/")) if it.layer else 0) if key else 1
                new_layer = "/".join(new.split("/")[:-n_var]) if n_var else new
                new_prefix = _heuristic_prefix(new_layer)
                target = new_prefix + suffix
            renamed_prefix[layer_prefix] = new_prefix
            targets[id(it)] = target
            how[id(it)] = "rule"
            fixed.add(id(it))
        if rule.transform is not None and key and len(it.sources) == 1 and not it.synthetic:
            fn = rules_mod.transform_fn(rule)
            raw = it.raw
            assert raw is not None
            it.transform = f"{rule.transform} (--map)"
            it.shape_after = rules_mod.transformed_shape(rule.transform, it.shape_before, rule.flatten_shape)
            it.make = lambda fn=fn, raw=raw: fn(raw())
            it.chunks = None
            it.undetermined = None  # an explicit rule settles any layout question
            it.decided_by = "--map"
            if rule.transform == "dense_after_flatten":
                it.flatten_source = "rule"  # a target that is traced still decides the row order
                it.flatten_shape = tuple(rule.flatten_shape) if rule.flatten_shape else None
    for it in items:
        if id(it) in targets:
            continue
        layer_prefix = _heuristic_prefix(it.layer)
        if layer_prefix in renamed_prefix and it.target.startswith(layer_prefix):
            targets[id(it)] = renamed_prefix[layer_prefix] + it.target[len(layer_prefix) :]
            how[id(it)] = "rule"
            fixed.add(id(it))
        else:
            targets[id(it)] = it.target
            how[id(it)] = "heuristic"
    return targets, how, fixed


def convert(src: str | Path, dst: str | Path | None, opts: ConvertOptions, force: bool = False) -> tuple[Plan, bool]:
    """Plan, then write `dst` (if given) only when every target is filled and every shape agrees.

    Returns the plan and whether the file was written.
    """
    p = plan(src, opts)
    if dst is None or not p.ok:
        return p, False
    write_state_dict(Path(dst), p.out_tensors(), force=force, metadata=source_metadata(src))
    return p, True


def source_metadata(src: str | Path) -> dict[str, str]:
    """safetensors `__metadata__`: `format: pt` (what transformers and friends expect) and provenance."""
    return {"format": "pt", "converted_by": "ptools", "source": Path(src).name}


def report(p: Plan, dst: str | Path | None, written: bool) -> dict[str, Any]:
    """The --json document (schema ptools.convert/1)."""
    rows = []
    unmatched = {id(i) for i in p.unmatched_items}
    mism = {id(i): t for i, t in p.mismatched}
    for it in p.items:
        rows.append(
            {
                "source": list(it.sources),
                "target": p.targets.get(id(it)) if id(it) not in unmatched and id(it) not in mism else None,
                "proposed": it.target,
                "transform": it.transform,
                "shape_before": list(it.shape_before),
                "shape_after": list(it.shape_after),
                "dtype": it.dtype,
                "match": "unmatched"
                if id(it) in unmatched
                else ("shape-mismatch" if id(it) in mism else p.how.get(id(it))),
                "synthetic": it.synthetic,
                "decided_by": it.decided_by,
                "undetermined": None
                if it.undetermined is None
                else {"kind": it.undetermined.kind, "why": it.undetermined.why, "settle": it.undetermined.settle},
            }
        )
    return {
        "source": {"path": str(p.source.path), "format": p.source.format, "tensors": len(p.source.tensors)},
        "output": str(dst) if dst is not None else None,
        "written": written,
        "ok": p.ok,
        "tensors": rows,
        "unmatched_source": [list(i.sources) or [i.target] for i in p.unmatched_items],
        "unfilled_target": [{"key": t.key, "shape": list(t.shape)} for t in p.unfilled],
        "shape_mismatch": [
            {
                "source": list(i.sources),
                "target": t.key,
                "converted_shape": list(i.shape_after),
                "target_shape": list(t.shape),
            }
            for i, t in p.mismatched
        ],
        "ambiguous": p.ambiguous,
        "undetermined": [
            {
                "source": list(i.sources),
                "target": p.targets.get(id(i)),
                "kind": i.undetermined.kind,
                "why": i.undetermined.why,
                "settle": i.undetermined.settle,
            }
            for i in p.undetermined
            if i.undetermined is not None
        ],
        "renames": p.renames,
        "duplicates": p.duplicates,
        "skipped": [{"key": s.key, "role": s.role} for s in p.skipped]
        + [{"key": k, "role": "rule-skip"} for k in p.rule_skipped],
        "notes": [{"layer": n.layer, "setting": n.setting, "value": n.value, "message": n.message} for n in p.notes],
        "layers": [
            {"name": m.name, "class": m.class_name, "class_inferred": m.class_inferred, "stored_as": m.stored_as}
            for m in p.source.layers.values()
            if m.class_name not in (None, "InputLayer")
        ],
    }
