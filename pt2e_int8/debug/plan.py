"""A per-layer precision plan: an `Int8Quantizer` configuration as plain data, saved as JSON.

    {"format": "pt2e-int8/quant-plan", "version": 1,
     "global": {"mode": "static", "observer": "histogram", ...},
     "annotators": ["linear"],                      # null: all op families
     "modules": {"bert.encoder.layer.3.output.dense": {"mode": "dynamic", ...},
                 "classifier": null},               # null keeps that module float
     "info": {...}}                                 # free-form: metric, target, how it was found

`to_quantizer()` is `Int8Quantizer(annotators=...).set_global(...)` plus one `set_module_name`
per entry, so a plan found by `auto_quantize` is reused without searching again. A plan file is
untrusted input: it is parsed as JSON and validated field by field; nothing in it is executed or
imported. Module *types* are not stored (that would mean importing a class named by the file):
`from_quantizer` expands a quantizer's `set_module_type` entries into the module paths of the
model that have that type, keeping the quantizer's precedence.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.fx import GraphModule

from pt2e_int8.annotators import ALL_ANNOTATORS
from pt2e_int8.atomic import write_text_atomic
from pt2e_int8.config import QuantConfig
from pt2e_int8.errors import ConfigError, InputFileError
from pt2e_int8.quantizer import Int8Quantizer, _type_name, module_stack
from pt2e_int8.transforms import PRE_ANNOTATION_TRANSFORMS

FORMAT, VERSION = "pt2e-int8/quant-plan", 1
_DTYPES = {"int8": torch.int8, "uint8": torch.uint8}
_ANNOTATORS = {a.name: a for a in ALL_ANNOTATORS}
_TRANSFORMS = {t.__name__: t for t in PRE_ANNOTATION_TRANSFORMS}


def config_to_dict(cfg: QuantConfig | None) -> dict | None:
    if cfg is None:
        return None
    out = {}
    for f in dataclasses.fields(QuantConfig):
        value = getattr(cfg, f.name)
        out[f.name] = str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else value
    return out


def config_from_dict(data, where: str) -> QuantConfig | None:
    """A QuantConfig from its JSON form; every unknown or bad field is named in one ConfigError."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object of QuantConfig fields or null, got {type(data).__name__}.")
    known = {f.name for f in dataclasses.fields(QuantConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown QuantConfig field(s) {unknown}; known: {sorted(known)}.")
    kwargs = dict(data)
    if "act_dtype" in kwargs:
        if kwargs["act_dtype"] not in _DTYPES:
            raise ConfigError(f"{where}: act_dtype {kwargs['act_dtype']!r} is not one of {sorted(_DTYPES)}.")
        kwargs["act_dtype"] = _DTYPES[kwargs["act_dtype"]]
    try:
        return QuantConfig(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def _layer_paths(gm: GraphModule) -> dict[str, str]:
    """module path -> qualified type name, for every module on any node's stack."""
    return {path: tname for node in gm.graph.nodes for path, tname in module_stack(node)}


@dataclass
class QuantPlan:
    """Global config, op families, and one config (or None: float) per module path.

    Example:
        plan = QuantPlan.load("plan.json")
        qm = q.quantize(model, example, calibration, quantizer=plan.to_quantizer())
    """

    global_config: QuantConfig | None = None
    annotators: tuple[str, ...] | None = None  # None: every op family
    modules: dict[str, QuantConfig | None] = field(default_factory=dict)
    transforms: tuple[str, ...] | None = None  # None: the default pre-annotation transforms
    info: dict = field(default_factory=dict)

    # -- to and from a quantizer ----------------------------------------------------
    def to_quantizer(self) -> Int8Quantizer:
        annotators = ALL_ANNOTATORS if self.annotators is None else tuple(_ANNOTATORS[n] for n in self.annotators)
        transforms = None if self.transforms is None else [_TRANSFORMS[n]() for n in self.transforms]
        quantizer = Int8Quantizer(annotators=annotators, transforms=transforms).set_global(self.global_config)
        for name, cfg in self.modules.items():
            quantizer.set_module_name(name, cfg)
        return quantizer

    @classmethod
    def from_quantizer(cls, quantizer: Int8Quantizer, gm: GraphModule) -> QuantPlan:
        """The plan equivalent to `quantizer` on the model exported as `gm`.

        `set_module_type(T, cfg)` becomes `set_module_name(path, cfg)` for each module of type T,
        except under a module that has its own `set_module_name` entry, which outranks any type
        entry and so keeps deciding there.
        """
        annotators = tuple(a.name for a in quantizer.registry)
        unknown = [a for a in annotators if a not in _ANNOTATORS]
        if unknown:
            raise ConfigError(f"annotators {unknown} are not pt2e-int8's own; a plan file can only name "
                              f"{sorted(_ANNOTATORS)}.")
        transforms = tuple(type(t).__name__ for t in quantizer.transforms)
        default_transforms = tuple(t.__name__ for t in PRE_ANNOTATION_TRANSFORMS)
        if any(t not in _TRANSFORMS for t in transforms):
            raise ConfigError(f"transforms {list(transforms)} include ones a plan file cannot name; "
                              f"known: {sorted(_TRANSFORMS)}.")
        paths = _layer_paths(gm)
        modules: dict[str, QuantConfig | None] = {}
        named = quantizer.module_name_config
        by_type = {_type_name(t): cfg for t, cfg in quantizer.module_type_config.items()}
        for path, tname in sorted(paths.items()):
            if tname not in by_type:
                continue
            covered = any(path == n or path.startswith(n + ".") for n in named)
            if not covered:
                modules[path] = by_type[tname]
        modules.update(named)
        all_families = set(annotators) == set(_ANNOTATORS) and len(annotators) == len(_ANNOTATORS)
        return cls(quantizer.global_config, None if all_families else annotators, modules,
                   None if transforms == default_transforms else transforms)

    # -- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION,
            "global": config_to_dict(self.global_config),
            "annotators": list(self.annotators) if self.annotators is not None else None,
            "transforms": list(self.transforms) if self.transforms is not None else None,
            "modules": {name: config_to_dict(cfg) for name, cfg in self.modules.items()},
            "info": self.info,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        return write_text_atomic(path, self.to_json())

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "plan") -> QuantPlan:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ConfigError(f"{where} is not a pt2e-int8 plan (no \"format\": \"{FORMAT}\"); "
                              "write plans with QuantPlan.save or `pt2e-int8 export --target-metric`.")
        if data.get("version") != VERSION:
            raise ConfigError(f"{where} has plan version {data.get('version')!r}; this pt2e-int8 reads {VERSION}.")
        annotators = data.get("annotators")
        if annotators is not None:
            bad = [a for a in annotators if a not in _ANNOTATORS] if isinstance(annotators, list) else [annotators]
            if bad:
                raise ConfigError(f"{where}: unknown annotator(s) {bad}; known: {sorted(_ANNOTATORS)}.")
        transforms = data.get("transforms")
        if transforms is not None:
            bad = [t for t in transforms if t not in _TRANSFORMS] if isinstance(transforms, list) else [transforms]
            if bad:
                raise ConfigError(f"{where}: unknown transform(s) {bad}; known: {sorted(_TRANSFORMS)}.")
        modules = data.get("modules") or {}
        if not isinstance(modules, Mapping) or not all(isinstance(k, str) and k for k in modules):
            raise ConfigError(f"{where}: \"modules\" must map module paths to configs or null.")
        info = data.get("info") or {}
        return cls(
            config_from_dict(data.get("global"), f"{where} global"),
            tuple(annotators) if annotators is not None else None,
            {name: config_from_dict(cfg, f"{where} module {name!r}") for name, cfg in modules.items()},
            tuple(transforms) if transforms is not None else None,
            dict(info) if isinstance(info, Mapping) else {},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> QuantPlan:
        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"{path}: no such plan file. Write one with QuantPlan.save or "
                                 "`pt2e-int8 export --target-metric ...` (DIR/plan.json).")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputFileError(f"{path}: not a JSON plan file ({e}).") from e
        return cls.from_dict(data, str(path))

    # -- editing -------------------------------------------------------------------------
    def non_static(self) -> dict[str, str]:
        """module path -> "dynamic" / "weight_only" / "float", for entries that are not static."""
        return {name: "float" if cfg is None else cfg.mode for name, cfg in self.modules.items()
                if cfg is None or cfg.mode != "static"}
