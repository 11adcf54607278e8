"""auto_quantize: move the fewest, cheapest layers off static int8 until a metric meets a target.

    export once → calibrate once → static metric ── meets the target? ── yes → done, nothing moved
      → every layer moved to its cheapest choice (dynamic; float where static runs float anyway)
        ── misses? → every layer float ── misses? → not reachable: the best plan seen, met=False
      → sensitivity "one_on": each layer alone put back to static → rank by what moving it buys
      → the shortest prefix of the ranking that meets the target (doubling, then bisection)
      → prune: drop each chosen layer whose removal keeps the target (least gain first)
      → cheapen: float → dynamic where that keeps the target
      → the converted model and its plan (`QuantPlan`: set_module_name entries, saved as JSON)

Why rank from the accurate end: measured from all-static, one layer's error masks the others
(all-MiniLM-L6-v2: only the first FFN down-projections show any gain alone, yet those six moved
to dynamic reach 0.991, short of 0.995); measured from all-moved, each layer's harm is small
and harms add up, so the ranking predicts combinations. Fewest layers first, then the least
estimated latency (cost.py: from where each layer runs). Every variant is converted from the one
calibration (`Calibrated`), evaluated with the metric and cached: none is converted twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch.fx import GraphModule

from pt2e_int8.config import QuantConfig
from pt2e_int8.debug.calibrated import Calibrated
from pt2e_int8.debug.plan import QuantPlan
from pt2e_int8.debug.sensitivity import (
    NON_STATIC,
    Emulate,
    Metric,
    SensitivityReport,
    Space,
    run_sensitivity,
)
from pt2e_int8.errors import ConfigError
from pt2e_int8.quantizer import Int8Quantizer
from pt2e_int8.text_table import text_table


@dataclass
class AutoResult:
    """What auto_quantize chose, and what it measured on the way."""

    model: GraphModule  # the converted model of `plan` (the real graph, not an evaluation copy)
    plan: QuantPlan
    metric_name: str
    target: float
    base_metric: float  # static int8 everywhere the base quantizer says so
    metric: float  # the chosen plan's
    met: bool
    moved: dict[str, str]  # module path -> "dynamic" / "float"
    cost: float  # estimated latency added, fraction of the static model's
    units: int  # how many layers could be moved
    sensitivity: SensitivityReport | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time
    cpu_seconds: float = 0.0  # this process's CPU time: what a shared machine cannot inflate
    conversions: int = 0

    @property
    def noop(self) -> bool:
        return self.met and not self.moved

    def _fmt(self, value: float) -> str:
        """As many decimals as the target was given with (at least 4)."""
        text = repr(float(self.target))
        digits = max(4, len(text.split(".")[1]) if "." in text and "e" not in text else 4)
        return f"{value:.{digits}f}"

    @property
    def message(self) -> str:
        name, f = self.metric_name, self._fmt
        if self.noop:
            return (f"static int8 already meets the target ({name} {f(self.base_metric)} >= {f(self.target)}): "
                    "no layer moved off static int8")
        kinds = {c: sum(1 for v in self.moved.values() if v == c) for c in NON_STATIC}
        what = ", ".join(f"{n} {c}" for c, n in kinds.items() if n) or "none"
        if not self.met:
            return (f"target not reachable: the best plan found moves {len(self.moved)} of {self.units} layers "
                    f"({what}) and gives {name} {f(self.metric)} < {f(self.target)} (static: {f(self.base_metric)})")
        return (f"moved {len(self.moved)} of {self.units} layers off static int8 ({what}): {name} "
                f"{f(self.metric)} >= {f(self.target)} (static: {f(self.base_metric)}); "
                f"estimated latency {self.cost:+.1%}")

    def to_dict(self) -> dict:
        return {"metric": self.metric_name, "target": self.target, "base_metric": self.base_metric,
                "achieved": self.metric, "met": self.met, "noop": self.noop, "moved": self.moved,
                "estimated_latency_cost": self.cost, "movable_layers": self.units,
                "seconds": round(self.seconds, 1), "cpu_seconds": round(self.cpu_seconds, 1),
                "conversions": self.conversions, "message": self.message,
                "history": self.history,
                "sensitivity": self.sensitivity.to_dict() if self.sensitivity is not None else None}

    def __str__(self) -> str:
        rows = [(path, choice) for path, choice in self.moved.items()]
        table = text_table(("layer", "runs as"), rows) + "\n" if rows else ""
        return (f"{table}{self.message}\n"
                f"{self.conversions} conversions from one calibration, {self.seconds:.1f} s "
                f"({self.cpu_seconds:.1f} s CPU)")


class _Search:
    def __init__(self, space: Space, target: float) -> None:
        self.space, self.target = space, target
        self.history: list[dict] = []

    def meets(self, changes: Mapping[str, str], why: str) -> bool:
        value = self.space.evaluate(changes)
        ok = value >= self.target
        self.history.append({"step": why, "moved": dict(changes), "metric": value, "met": ok})
        name = getattr(self.space.metric, "__name__", "metric")
        self.space.say(f"search: {why}: {len(changes)} moved, {name} {value:.4f} "
                       f"{'meets' if ok else 'misses'} {self.target:.4f}")
        return ok

    def shortest_prefix(self, order: list[str], picks: Mapping[str, str]) -> dict[str, str]:
        """The shortest prefix of `order` (as `picks`) that meets the target; the whole of
        `order` must meet it. Doubling, then bisection: O(log n) evaluations."""
        prefix = lambda k: {u: picks[u] for u in order[:k]}  # noqa: E731
        n = len(order)
        lo, hi = 0, 1
        while hi < n and not self.meets(prefix(hi), f"top {hi}"):
            lo, hi = hi, min(2 * hi, n)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.meets(prefix(mid), f"top {mid}"):
                hi = mid
            else:
                lo = mid
        return prefix(hi)

    def prune(self, chosen: dict[str, str], gains: Mapping[str, float]) -> dict[str, str]:
        for unit in sorted(chosen, key=lambda u: gains.get(u, 0.0)):
            trial = {u: c for u, c in chosen.items() if u != unit}
            if trial and self.meets(trial, f"without {unit}"):
                chosen = trial
        return chosen

    def cheapen(self, chosen: dict[str, str], choices: Iterable[str]) -> dict[str, str]:
        for unit, choice in list(chosen.items()):
            if choice == "float" and "dynamic" in self.space.units[unit].choices(choices):
                trial = {**chosen, unit: "dynamic"}
                if self.meets(trial, f"{unit} dynamic instead of float"):
                    chosen = trial
        return chosen


def auto_quantize(
    model: torch.nn.Module,
    example_inputs,
    calibration: Iterable | None,
    metric: Metric,
    target: float | None = None,
    *,
    max_drop: float | None = None,
    quantizer: Int8Quantizer | None = None,
    choices: Iterable[str] = NON_STATIC,
    emulate: Emulate | None = None,
    placement: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> AutoResult:
    """Static int8, with the fewest and cheapest layers moved to dynamic int8 or float to meet a target.

    Args:
        model: the float model.
        example_inputs: a tensor or tuple of tensors, batch first.
        calibration: calibration batches, used once for every variant.
        metric: `fn(model) -> float`, higher is better (accuracy, `metrics.output_cosine(...)`, -loss).
        target: the metric value to reach.
        max_drop: instead of `target`: at most this much below the float model's metric.
        quantizer: the static base (default: static int8 everywhere); its overrides are kept.
        choices: where a layer may move: "dynamic" and/or "float".
        emulate: turns a converted model into what the target runtime computes before measuring
            (`backends.executorch.reference.xnnpack_reference`: XNNPACK's per-row dynamic int8).
        placement: coverage row -> "int8"/"float" where the static model runs (latency costs).
        progress: called with one line per step.

    Returns:
        An AutoResult: `.model` (converted), `.plan` (`.plan.save("plan.json")`), `.message`.

    Example:
        res = q.auto_quantize(model, (x[:32],), calib, output_cosine(model, [(x_val,)]), target=0.995)
        res.plan.save("plan.json")          # later: QuantPlan.load("plan.json").to_quantizer()
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    if (target is None) == (max_drop is None):
        raise ConfigError("auto_quantize needs exactly one of target= (the metric value to reach) or "
                          "max_drop= (how far below the float model's metric it may fall).")
    if max_drop is not None:
        if not max_drop >= 0:
            raise ConfigError(f"max_drop must be >= 0, got {max_drop}.")
        with torch.no_grad():
            target = float(metric(model.eval())) - max_drop
    choices = tuple(choices)
    if not choices or any(c not in NON_STATIC for c in choices):
        raise ConfigError(f"choices must be a non-empty subset of {NON_STATIC}, got {choices}.")
    quantizer = quantizer or Int8Quantizer().set_global(QuantConfig.static())
    calibrated = Calibrated(model, example_inputs, calibration, quantizer)
    plan = QuantPlan.from_quantizer(quantizer, calibrated.float_graph)
    space = Space(calibrated, plan, metric, emulate=emulate, placement=placement, progress=progress)
    name = getattr(metric, "__name__", "metric")
    search = _Search(space, target)

    def result(chosen: dict[str, str], met: bool, report: SensitivityReport | None) -> AutoResult:
        final_plan = space.plan_with(chosen)
        value = space.evaluate(chosen)
        final_plan.info = {"metric": name, "target": target, "achieved": value, "static": space.base_metric,
                           "met": met, "moved": dict(chosen), "emulated": getattr(emulate, "__name__", None)}
        converted = space.base_model if not chosen else calibrated.convert(final_plan.to_quantizer())
        return AutoResult(converted, final_plan, name, target, space.base_metric, value, met, dict(chosen),
                          space.cost(chosen), len(space.units), report, search.history,
                          time.perf_counter() - t0, time.process_time() - cpu0, calibrated.stats.variants)

    if space.base_metric >= target:
        return result({}, True, None)
    # The accurate end: every movable layer off static int8, at its cheapest choice; float for
    # every layer if that is not enough; and if even that misses, the target is out of reach.
    ends = [tuple(choices)] + ([("float",)] if "float" in choices and choices != ("float",) else [])
    for allowed in ends:
        end = space.cheapest(allowed)
        if not end or not search.meets(end, f"every layer {_kinds(end)}"):
            continue
        report = run_sensitivity(space, choices=allowed, mode="one_on")
        gains = {r.unit: r.gain for r in report.rows}
        order = sorted(end, key=lambda u: (-gains.get(u, 0.0), space.cost({u: end[u]}), u))
        chosen = search.shortest_prefix(order, end)
        chosen = search.cheapen(search.prune(chosen, gains), choices)
        return result(chosen, True, report)
    best_seen = max(space.cache.items(), key=lambda kv: kv[1])[0]
    return result(dict(best_seen), False, None)


def _kinds(changes: Mapping[str, str]) -> str:
    return "moved to " + " / ".join(sorted(set(changes.values())))
