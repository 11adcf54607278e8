"""Int8Quantizer: a torchao pt2e `Quantizer` with XNNPACK-style int8 patterns and scoped overrides.

Precedence, resolved once per node from its `nn_module_stack`:
    set_module_name(name, cfg)  >  set_module_type(T, cfg)  >  set_global(cfg)
The innermost matching module wins within each level; `None` keeps that scope in float.
"""

from __future__ import annotations

import difflib
import warnings

from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantizer import Quantizer

from pt2e_int8.annotators import ALL_ANNOTATORS, AnnotatorRegistry
from pt2e_int8.annotators.framework import Resolved, annotate_graph
from pt2e_int8.config import QuantConfig
from pt2e_int8.decision import record_param_names
from pt2e_int8.errors import ConfigError
from pt2e_int8.transforms import PRE_ANNOTATION_TRANSFORMS, run_transforms


def _type_name(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def module_stack(node: Node) -> list[tuple[str, str]]:
    """(module path, type name) from outermost to innermost; paths as in `named_modules()`."""
    stack = node.meta.get("nn_module_stack") or {}
    return [(path, tp if isinstance(tp, str) else _type_name(tp)) for path, tp in stack.values()]


def _check_config(cfg, where: str) -> None:
    if cfg is not None and not isinstance(cfg, QuantConfig):
        raise ConfigError(
            f"{where} got {type(cfg).__name__}; pass a pt2e_int8.QuantConfig "
            "(e.g. QuantConfig.static()) or None to keep that scope in float."
        )


class Int8Quantizer(Quantizer):
    """Annotates the aten graph of `torch.export.export(...).module()` for int8.

    Example:
        quantizer = (Int8Quantizer().set_global(QuantConfig.static())
                     .set_module_type(nn.Embedding, QuantConfig.weight_only())
                     .set_module_name("classifier", None))
    """

    def __init__(self, annotators=ALL_ANNOTATORS, transforms=None) -> None:
        """`annotators`: the op families to quantize (default: all). `transforms`: graph rewrites
        run before annotation (default: `pt2e_int8.transforms.PRE_ANNOTATION_TRANSFORMS`)."""
        super().__init__()
        self.transforms = ([t() for t in PRE_ANNOTATION_TRANSFORMS] if transforms is None
                           else list(transforms))
        self.global_config: QuantConfig | None = None
        self.module_type_config: dict[type, QuantConfig | None] = {}
        self.module_name_config: dict[str, QuantConfig | None] = {}
        self.registry = AnnotatorRegistry(annotators)

    # -- configuration ------------------------------------------------------------
    def set_global(self, cfg: QuantConfig | None) -> Int8Quantizer:
        _check_config(cfg, "set_global")
        self.global_config = cfg
        return self

    def set_module_type(self, module_type: type, cfg: QuantConfig | None) -> Int8Quantizer:
        if not isinstance(module_type, type):
            raise ConfigError(
                f"set_module_type takes a class such as torch.nn.Linear, got {module_type!r}; "
                "for a module path use set_module_name."
            )
        _check_config(cfg, f"set_module_type({module_type.__name__})")
        self.module_type_config[module_type] = cfg
        return self

    def set_module_name(self, name: str, cfg: QuantConfig | None) -> Int8Quantizer:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"set_module_name takes a module path like 'encoder.layer.0', got {name!r}.")
        _check_config(cfg, f"set_module_name({name!r})")
        self.module_name_config[name] = cfg
        return self

    @property
    def configs(self) -> list[QuantConfig]:
        """Every non-None config this quantizer can apply."""
        all_cfgs = [self.global_config, *self.module_type_config.values(), *self.module_name_config.values()]
        return [c for c in all_cfgs if c is not None]

    # -- resolution -----------------------------------------------------------------
    def resolve(self, node: Node) -> Resolved:
        stack = module_stack(node)
        for path, _ in reversed(stack):
            if path in self.module_name_config:
                return Resolved(self.module_name_config[path], f"set_module_name({path!r})")
        type_names = {_type_name(t): t for t in self.module_type_config}
        for _, tname in reversed(stack):
            if tname in type_names:
                tp = type_names[tname]
                return Resolved(self.module_type_config[tp], f"set_module_type({tp.__name__})")
        return Resolved(self.global_config, "set_global")

    def _check_overrides_match(self, gm: GraphModule) -> None:
        paths, types = set(), set()
        for node in gm.graph.nodes:
            for path, tname in module_stack(node):
                paths.add(path)
                types.add(tname)
        unknown = [n for n in self.module_name_config if n not in paths]
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, sorted(paths), n=3)
                hints.append(f"{name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
            raise ConfigError(
                "set_module_name names no module of this model: " + "; ".join(hints)
                + ". Use paths as printed by model.named_modules()."
            )
        for tp in self.module_type_config:
            if _type_name(tp) not in types:
                warnings.warn(
                    f"set_module_type({tp.__name__}) matches no module of this model; it has no effect.",
                    stacklevel=3,
                )

    # -- Quantizer API --------------------------------------------------------------
    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        # Only our own float-exact rewrites: integer and boolean subgraphs stay exactly as
        # exported (the stock quantizer's transforms turn integer scalars into float tensors).
        model, _ = run_transforms(model, self.transforms)
        record_param_names(model)
        return model

    def annotate(self, model: GraphModule) -> GraphModule:
        self._check_overrides_match(model)
        annotate_graph(model, self.registry, self.resolve)
        return model

    def validate(self, model: GraphModule) -> None:
        return None
