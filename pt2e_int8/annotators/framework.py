"""The annotator framework: registry, the one graph walk, and shared match helpers.

An annotator is match → check → annotate for one op family, anchored on a set of
`OpOverload`s. It returns an `Annotation` (qspecs per node, and the nodes it consumes)
or `Rejected(reason)`; the walk applies annotations and records a `Decision` per anchor
node (pt2e_int8/decision.py), where `coverage()` reads it back for the user.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

from pt2e_int8.compat.torchao import is_annotated, set_annotation
from pt2e_int8.config import QuantConfig
from pt2e_int8.decision import Decision, keep_float_reason, pending_notes, record
from pt2e_int8.ops import FUSED_ACTIVATIONS, INT8_INPUT_OPS, SHARED_QPARAM_OPS, int8_limit

aten = torch.ops.aten


@dataclass(frozen=True)
class Annotation:
    """An annotator's decision for one anchor node."""

    annotations: dict[Node, QuantizationAnnotation]
    # Every op node of the matched pattern: marked annotated so no other annotator takes it.
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Rejected:
    """Why an annotator left a node in float; shown in the coverage report."""

    reason: str


AnnotateFn = Callable[[Node, QuantConfig], Annotation | Rejected]


@dataclass(frozen=True)
class OpAnnotator:
    """One op family's annotator: callable like the function it wraps."""

    name: str
    targets: frozenset
    # Higher runs first: fused patterns (linear+relu) claim nodes before generic ones.
    priority: int
    fn: AnnotateFn = field(compare=False)

    def __call__(self, node: Node, cfg: QuantConfig) -> Annotation | Rejected:
        return self.fn(node, cfg)


def op_annotator(*, name: str, targets: Iterable, priority: int) -> Callable[[AnnotateFn], OpAnnotator]:
    """Decorator: turn `fn(node, cfg)` into an `OpAnnotator` (still callable, still testable)."""

    def wrap(fn: AnnotateFn) -> OpAnnotator:
        return OpAnnotator(name=name, targets=frozenset(targets), priority=priority, fn=fn)

    return wrap


class AnnotatorRegistry:
    """An ordered, duplicate-free set of annotators."""

    def __init__(self, annotators: Sequence[OpAnnotator]) -> None:
        names = [a.name for a in annotators]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate annotator names: {dupes}")
        self.annotators = tuple(sorted(annotators, key=lambda a: -a.priority))

    def __iter__(self):
        return iter(self.annotators)


# -- the walk -----------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    """The config a node gets, and which override gave it (for the coverage report)."""

    config: QuantConfig | None
    source: str


def _decide(node: Node, annotator: str, config: QuantConfig | None, reason: str | None) -> None:
    scheme = config.scheme if config is not None else None
    record(node, Decision(annotator=annotator, scheme=scheme, reason=reason, notes=pending_notes(node)))


def annotate_graph(
    gm: GraphModule, registry: AnnotatorRegistry, resolve: Callable[[Node], Resolved]
) -> None:
    """Run every annotator, highest priority first, over the graph in topological order.

    Skips nodes already claimed by a pattern, nodes a transform pinned to float
    (`decision.keep_float`) and nodes whose resolved config is None (kept float by the user);
    records a `Decision` for each anchor node.
    """
    for annotator in registry:
        for node in gm.graph.nodes:
            if node.op != "call_function" or node.target not in annotator.targets:
                continue
            if is_annotated(node):
                continue
            pinned = keep_float_reason(node)
            if pinned is not None:
                _decide(node, annotator.name, None, pinned)
                continue
            resolved = resolve(node)
            if resolved.config is None:
                _decide(node, annotator.name, None, f"kept float by {resolved.source}")
                continue
            result = annotator(node, resolved.config)
            if isinstance(result, Rejected):
                _decide(node, annotator.name, None, result.reason)
                continue
            claimed = [n for n in result.nodes if n.op == "call_function" and is_annotated(n)]
            if claimed:
                names = ", ".join(n.name for n in claimed)
                _decide(node, annotator.name, None, f"overlaps a pattern already quantized ({names})")
                continue
            for target, ann in result.annotations.items():
                set_annotation(target, ann)
            for n in result.nodes:
                set_annotation(n)
            _decide(node, annotator.name, resolved.config, None)


# -- match helpers shared by the op families ------------------------------------------
def tensor_dtype(node) -> torch.dtype | None:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return val.dtype if isinstance(val, torch.Tensor) else None


def is_float_tensor(node) -> bool:
    """Only floating-point tensors are quantized: masks, positions and indices stay as exported."""
    dtype = tensor_dtype(node)
    return dtype is not None and dtype.is_floating_point


def carries_data(node: Node) -> bool:
    """Whether a float tensor derives from a float input or parameter.

    A float tensor built only from integer/boolean inputs and constants is mask
    arithmetic (Hugging Face turns the int attention mask into `finfo.min` fills):
    quantizing it would spend the int8 grid on -3.4e38.
    """
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op in ("placeholder", "get_attr") and is_float_tensor(n):
            return True
        stack.extend(n.all_input_nodes)
    return False


def is_param(node) -> bool:
    """A constant tensor of the module (weight, bias, buffer)."""
    return isinstance(node, Node) and node.op == "get_attr"


def fused_activation(node: Node) -> Node | None:
    """The clamp-like op `node`'s int8 kernel absorbs (ops.FUSED_ACTIVATIONS): its only user, if one."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    fusable = FUSED_ACTIVATIONS.get(node.target, frozenset())
    if user.op == "call_function" and user.target in fusable and user.args[0] is node:
        return user
    return None


def int8_readers(node: Node) -> Iterator[Node]:
    """The readers of `node`'s result that take it in int8, and the model output if it reads it.

    Data movement and pooling pass int8 through unchanged, so they are looked through and
    their readers count instead; one with an int8 limit of its own counts as neither.
    """
    seen, todo = set(), list(node.users)
    while todo:
        user = todo.pop()
        if user in seen:
            continue
        seen.add(user)
        if user.op == "output":
            yield user
            continue
        if user.op != "call_function" or user.target not in INT8_INPUT_OPS:
            continue
        if user.target in SHARED_QPARAM_OPS:
            if int8_limit(user) is None:  # passes int8 on: its consumers decide
                todo.extend(user.users)
            continue
        yield user


def feeds_int8(node: Node) -> bool:
    """Whether `node`'s result reaches an int8 consumer or a model output.

    A result feeding only float ops (a transformer residual into LayerNorm) would be
    dequantized at once: quantizing it adds a round trip and error, nothing else. A residual
    that is transposed and then normalized still feeds only a float op (`int8_readers` looks
    through data movement). A model output ends the int8 path as a final linear's quantized
    output does.
    """
    return next(int8_readers(node), None) is not None


def output_is_quantized(node: Node) -> bool:
    """Whether `node`'s output tensor already carries an output qspec (so consumers can share it)."""
    ann = node.meta.get(Q_ANNOTATION_KEY)
    return ann is not None and ann.output_qspec is not None
