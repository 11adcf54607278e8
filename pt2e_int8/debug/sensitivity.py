"""Sensitivity: the model-level metric with one layer moved off static int8 at a time.

The unit of choice is what `Int8Quantizer.set_module_name` can target: the innermost module of a
quantized layer (`bert.encoder.layer.3.output.dense`; both attention matmuls of one attention
module form one unit). Every variant comes from one export and one calibration
(`Calibrated`); each costs a prepare, a convert and one metric evaluation.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch.fx import GraphModule, Node

from pt2e_int8.config import QuantConfig
from pt2e_int8.coverage_report import coverage
from pt2e_int8.debug.anchors import unit_of
from pt2e_int8.debug.calibrated import Calibrated
from pt2e_int8.debug.cost import choice_cost, model_cost
from pt2e_int8.debug.fast_eval import evaluation_model
from pt2e_int8.debug.plan import QuantPlan
from pt2e_int8.errors import ConfigError
from pt2e_int8.ops import layer_op, layer_operands
from pt2e_int8.quantizer import Int8Quantizer, module_stack
from pt2e_int8.text_table import text_table

Metric = Callable[[torch.nn.Module], float]
# A converted model -> the model the target runtime really computes (e.g. XNNPACK's per-row
# dynamic quantization: backends.executorch.reference.xnnpack_reference).
Emulate = Callable[[GraphModule], torch.nn.Module]
NON_STATIC = ("dynamic", "float")


@dataclass(frozen=True)
class Unit:
    """One choosable module: its path, its quantized layer nodes, its static config."""

    path: str
    nodes: tuple[str, ...]  # layer node names in the exported graph
    rows: tuple[str, ...]  # coverage row names
    static_config: QuantConfig
    dynamic_kernel: bool  # has a weight: a dynamic int8 kernel exists (act x act has none)

    def choices(self, wanted: Iterable[str]) -> list[str]:
        return [c for c in wanted if c != "dynamic" or self.dynamic_kernel]


class Space:
    """The search space: one calibration, a base plan, its units, a metric and the cost model.

    Evaluations are cached by plan, so the search never converts the same variant twice.
    """

    def __init__(
        self,
        calibrated: Calibrated,
        plan: QuantPlan,
        metric: Metric,
        *,
        emulate: Emulate | None = None,
        placement: Mapping[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.calibrated, self.plan, self.metric = calibrated, plan, metric
        self.emulate, self.placement = emulate, placement
        self.say = progress or (lambda text: None)
        self.base_quantizer = plan.to_quantizer()
        self.cache: dict[tuple, float] = {}
        self.eval_seconds = 0.0
        self.base_model = calibrated.convert(self.base_quantizer)
        self.float_graph = calibrated.float_graph
        self.layer_nodes = [n for n in self.float_graph.graph.nodes if layer_op(n) is not None]
        self.rows = {r.node: r.name for r in coverage(self.base_model).layers if r.node}
        self.units = self._units()
        self.total_cost = model_cost(self.layer_nodes, rows=self.rows, placement=placement)
        self.base_metric = self._measure(copy.deepcopy(self.base_model))  # measuring rewrites it
        self.cache[()] = self.base_metric

    def _units(self) -> dict[str, Unit]:
        rows = {r.node: r for r in coverage(self.base_model).layers if r.node}
        by_node = {n.name: n for n in self.layer_nodes}
        units: dict[str, list[Node]] = {}
        for name, row in rows.items():
            node = by_node.get(name)
            if node is None or not row.quantized or not (row.scheme or "").startswith("static"):
                continue
            path = unit_of(node)
            if path is not None:
                units.setdefault(path, []).append(node)
        out = {}
        for path, nodes in units.items():
            cfg = self.base_quantizer.resolve(nodes[0]).config
            weighted = all(layer_operands(n).weight is not None and layer_operands(n).weight.op == "get_attr"
                           for n in nodes)
            out[path] = Unit(path, tuple(n.name for n in nodes), tuple(rows[n.name].name for n in nodes),
                             cfg, weighted)
        return out

    # -- plans -----------------------------------------------------------------------------
    def config_for(self, unit: Unit, choice: str) -> QuantConfig | None:
        if choice == "float":
            return None
        if choice == "dynamic":
            return unit.static_config.replace(mode="dynamic", observer="minmax")
        if choice == "static":
            return unit.static_config
        raise ConfigError(f"choice {choice!r} is not one of static, dynamic, float.")

    def plan_with(self, changes: Mapping[str, str]) -> QuantPlan:
        """The base plan with `changes` (unit path -> choice) applied; layers under a changed
        module that are not themselves changed keep their config (pinned by name)."""
        modules = dict(self.plan.modules)
        for path, choice in changes.items():
            modules[path] = self.config_for(self.units[path], choice)
        before = self.base_quantizer
        for _ in range(8):  # pinning one module can expose another under it; depth bounds this
            after = QuantPlan(self.plan.global_config, self.plan.annotators, modules, self.plan.transforms).to_quantizer()
            pins = {}
            for node in self.layer_nodes:
                own = unit_of(node)
                if own is None or own in changes or own in modules:
                    continue
                old, new = before.resolve(node).config, after.resolve(node).config
                if old != new and any(p in changes for p, _ in module_stack(node)):
                    pins[own] = old
            if not pins:
                break
            modules.update(pins)
        return QuantPlan(self.plan.global_config, self.plan.annotators, modules, self.plan.transforms,
                         dict(self.plan.info))

    def quantizer_with(self, changes: Mapping[str, str]) -> Int8Quantizer:
        return self.plan_with(changes).to_quantizer()

    # -- evaluation ------------------------------------------------------------------------
    def _measure(self, converted: GraphModule) -> float:
        """The metric of a converted model this Space owns (it is rewritten for speed)."""
        t0 = time.perf_counter()
        model = self.emulate(converted) if self.emulate is not None else converted
        if isinstance(model, GraphModule):
            model = evaluation_model(model)
        with torch.no_grad():
            value = float(self.metric(model))
        self.eval_seconds += time.perf_counter() - t0
        return value

    def evaluate(self, changes: Mapping[str, str]) -> float:
        key = tuple(sorted(changes.items()))
        if key not in self.cache:
            self.cache[key] = self._measure(self.calibrated.convert(self.quantizer_with(changes)))
            # GraphModules hold reference cycles: without a collection, dozens of converted
            # variants (90 MB each for MiniLM) wait for the cyclic GC and memory climbs to GBs.
            gc.collect()
        return self.cache[key]

    def cheapest(self, choices: Iterable[str]) -> dict[str, str]:
        """Every unit moved to its cheapest allowed choice (dynamic where a kernel exists,
        float where the static layer runs in float anyway)."""
        choices = tuple(choices)
        return {p: min(u.choices(choices), key=lambda c: (self.cost({p: c}), NON_STATIC.index(c)))
                for p, u in self.units.items() if u.choices(choices)}

    def cost(self, changes: Mapping[str, str]) -> float:
        """Estimated latency added by `changes`, as a fraction of the static model's."""
        by_node = {n.name: n for n in self.layer_nodes}
        total = 0.0
        for path, choice in changes.items():
            unit = self.units[path]
            total += choice_cost([by_node[n] for n in unit.nodes], choice, rows=self.rows,
                                 placement=self.placement, dynamic_kernel=unit.dynamic_kernel,
                                 total=self.total_cost)
        return total


@dataclass(frozen=True)
class SensitivityRow:
    unit: str
    choice: str  # "dynamic" or "float": where the unit is moved from static int8
    metric: float  # with this unit alone moved ("one_off") or alone static ("one_on")
    gain: float  # what moving this unit buys (see run_sensitivity)
    cost: float  # estimated latency added, fraction of the static model's


@dataclass
class SensitivityReport:
    metric_name: str
    mode: str  # "one_off" or "one_on" (see run_sensitivity)
    reference: str  # the plan gains are measured from
    reference_metric: float
    rows: list[SensitivityRow]  # best gain first
    conversions: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def best(self) -> dict[str, SensitivityRow]:
        """Per unit, its row with the highest gain (the cheaper choice on a tie)."""
        out: dict[str, SensitivityRow] = {}
        for row in self.rows:
            cur = out.get(row.unit)
            if cur is None or (row.gain, -row.cost) > (cur.gain, -cur.cost):
                out[row.unit] = row
        return out

    def to_dict(self) -> dict:
        return {"metric": self.metric_name, "mode": self.mode, "reference": self.reference,
                "reference_metric": self.reference_metric,
                "rows": [asdict(r) for r in self.rows], "conversions": self.conversions,
                "seconds": round(self.seconds, 2), "notes": self.notes}

    def __str__(self) -> str:
        what = "alone moved" if self.mode == "one_off" else "alone static"
        header = ("layer", "moved to", f"{self.metric_name}, {what}", "gain from moving", "latency cost")
        body = [(r.unit, r.choice, f"{r.metric:.4f}", f"{r.gain:+.4f}", f"{r.cost:+.1%}") for r in self.rows]
        return (f"{self.metric_name} with {self.reference}: {self.reference_metric:.4f}\n"
                + text_table(header, body, right=(2, 3, 4))
                + f"\n{self.conversions} conversions from one calibration in {self.seconds:.1f} s")


def _sort(rows: list[SensitivityRow]) -> list[SensitivityRow]:
    return sorted(rows, key=lambda r: (-r.gain, r.cost, r.unit))


MODES = ("one_off", "one_on")


def run_sensitivity(
    space: Space,
    *,
    choices: Iterable[str] = NON_STATIC,
    mode: str = "one_off",
    float_for_top: int | None = None,
) -> SensitivityReport:
    """What moving each unit off static int8 buys, measured one unit at a time.

    Args:
        space: the search space.
        choices: "dynamic" and/or "float" (dynamic is skipped where no dynamic kernel exists).
        mode: "one_off": each unit alone moved (to each choice), everything else static;
            gain = metric(unit moved) - metric(all static). "one_on": every unit moved to its
            cheapest choice, each unit alone put back to static; gain = metric(all moved) -
            metric(all moved but this unit). The second is what the search ranks by: near the
            accurate end, each layer's harm is small and the harms add up, while from the
            all-static end one dominant layer masks the rest.
        float_for_top: "one_off" only: evaluate the later choices only for the N units with the
            best first-choice gain (None: all).
    """
    t0 = time.perf_counter()
    conv0 = space.calibrated.stats.variants
    choices = [c for c in choices if c in NON_STATIC]
    if not choices:
        raise ConfigError("choices must include 'dynamic' and/or 'float'.")
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is not one of {MODES}.")
    name = getattr(space.metric, "__name__", "metric")
    rows: list[SensitivityRow] = []
    units = [u for u in space.units.values() if u.choices(choices)]
    notes = []
    if mode == "one_on":
        moved = space.cheapest(choices)
        reference = space.evaluate(moved)
        label = f"every layer moved ({_summary(moved)})"
        for i, unit in enumerate(units, 1):
            rest = {p: c for p, c in moved.items() if p != unit.path}
            value = space.evaluate(rest)
            row = SensitivityRow(unit.path, moved[unit.path], value, reference - value, space.cost({unit.path: moved[unit.path]}))
            rows.append(row)
            space.say(f"sensitivity {i}/{len(units)}: only {unit.path} static: {name} {value:.4f} "
                      f"(moving it buys {row.gain:+.4f})")
    else:
        reference, label = space.base_metric, "static int8"

        def measure(unit: Unit, choice: str, i: int, n: int) -> None:
            value = space.evaluate({unit.path: choice})
            row = SensitivityRow(unit.path, choice, value, value - reference, space.cost({unit.path: choice}))
            rows.append(row)
            space.say(f"sensitivity {i}/{n}: {unit.path} -> {choice}: {name} {value:.4f} ({row.gain:+.4f})")

        first = [(u, u.choices(choices)[0]) for u in units]
        for i, (unit, choice) in enumerate(first, 1):
            measure(unit, choice, i, len(first))
        ranked = [r.unit for r in _sort(rows)]
        top = ranked if float_for_top is None else ranked[:float_for_top]
        done = {(r.unit, r.choice) for r in rows}
        more = [(space.units[u], c) for u in top for c in space.units[u].choices(choices) if (u, c) not in done]
        for i, (unit, choice) in enumerate(more, 1):
            measure(unit, choice, i, len(more))
        if float_for_top is not None and len(choices) > 1:
            notes.append(f"{', '.join(choices[1:])} evaluated only for the {float_for_top} units with the best "
                         f"{choices[0]} gain")
    if space.calibrated.stats.fallbacks:
        notes.append(f"{space.calibrated.stats.fallbacks} variants needed their own calibration")
    return SensitivityReport(name, mode, label, reference, _sort(rows),
                             space.calibrated.stats.variants - conv0, time.perf_counter() - t0, notes)


def _summary(changes: Mapping[str, str]) -> str:
    counts = {c: sum(1 for v in changes.values() if v == c) for c in NON_STATIC}
    return ", ".join(f"{n} {c}" for c, n in counts.items() if n)


def sensitivity(
    model: torch.nn.Module,
    example_inputs,
    calibration: Iterable | None,
    metric: Metric,
    *,
    quantizer: Int8Quantizer | None = None,
    choices: Iterable[str] = NON_STATIC,
    mode: str = "one_off",
    emulate: Emulate | None = None,
    placement: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SensitivityReport:
    """The metric with each quantized layer moved alone to dynamic int8 or float (or, with
    mode="one_on", alone kept static while every other layer is moved), best gain first.

    Args:
        model: the float model.
        example_inputs: a tensor or tuple of tensors, batch first.
        calibration: calibration batches (used once, for every variant).
        metric: `fn(model) -> float`, higher is better (e.g. `pt2e_int8.debug.metrics.output_cosine`).
        quantizer: the base (static) quantizer; default static int8 everywhere.
        choices: which moves to try per layer: "dynamic", "float".
        mode: "one_off" or "one_on" (see run_sensitivity).
        emulate: turns a converted model into what the target runtime computes before measuring.
        placement: coverage row -> "int8"/"float" where the static model runs (latency costs).
        progress: called with one line per evaluated variant.

    Example:
        rep = q.sensitivity(model, (x[:32],), calib, output_cosine(model, [(x_val,)]))
        print(rep)
    """
    quantizer = quantizer or Int8Quantizer().set_global(QuantConfig.static())
    calibrated = Calibrated(model, example_inputs, calibration, quantizer)
    space = Space(calibrated, QuantPlan.from_quantizer(quantizer, calibrated.float_graph), metric,
                  emulate=emulate, placement=placement, progress=progress)
    return run_sensitivity(space, choices=choices, mode=mode)
