"""One export and one calibration, converted under many per-layer plans.

Sensitivity analysis and the precision search convert dozens of variants of one model that
differ only in a few layers' configs. Calibrating each would multiply the slowest step; here
the model is calibrated once, with the base quantizer (every variant's static observers are a
subset of the base's: moving a layer to dynamic or float only removes static edges), and each
variant is prepared from the same export and given the calibrated statistics.

Why that is exact: a prepared model computes in float (observers pass values through), so the
observer on the output of node X sees the same values whatever the other layers' configs are.
Statistics are copied from the base observer on the same node with the same settings (dtype,
range, scheme, axis, eps, class). A stateful observer with no such twin makes the variant
calibrate for itself (counted in `fallbacks`); tests/core/test_debug_calibrated.py checks that
a transferred variant equals one calibrated from scratch, tensor for tensor.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch.fx import GraphModule
from torchao.quantization.pt2e import DerivedObserverOrFakeQuantize, PlaceholderObserver
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from pt2e_int8.capture import as_input_tuple, export_model
from pt2e_int8.compat.torchao import fold_only_present_conv_kinds
from pt2e_int8.errors import CalibrationError, ConfigError
from pt2e_int8.quantizer import Int8Quantizer
from pt2e_int8.workflow import _mark_unobserved, calibrate

# Observer settings that must agree for two observers to hold interchangeable statistics.
_SETTINGS = ("dtype", "qscheme", "quant_min", "quant_max", "ch_axis", "is_dynamic", "reduce_range",
             "averaging_constant", "bins", "percentile", "upsample_rate")


def _setting(obs, name):
    value = getattr(obs, name, None)
    if isinstance(value, torch.Tensor):
        return tuple(value.flatten().tolist())
    return value


def _signature(obs) -> tuple:
    eps = getattr(obs, "eps", None)
    return (type(obs).__qualname__, *(_setting(obs, n) for n in _SETTINGS),
            tuple(eps.flatten().tolist()) if isinstance(eps, torch.Tensor) else eps)


def _stateless(obs) -> bool:
    """Observers whose qparams need no calibration: dynamic placeholders, derived (bias) specs."""
    return isinstance(obs, PlaceholderObserver | DerivedObserverOrFakeQuantize)


def _observers(prepared: GraphModule) -> dict[tuple, torch.nn.Module]:
    """(observed node name, observer signature) -> observer module, for stateful observers."""
    found = {}
    for node in prepared.graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        module = prepared.get_submodule(node.target)
        if not hasattr(module, "calculate_qparams") or _stateless(module):
            continue
        found[(node.args[0].name, _signature(module))] = module
    return found


@dataclass
class ConvertStats:
    variants: int = 0
    fallbacks: int = 0  # variants that had to calibrate themselves
    seconds: float = 0.0


class Calibrated:
    """A float model exported once and calibrated once under `quantizer`.

    Example:
        cal = Calibrated(model, (x[:32],), calibration, q.Int8Quantizer().set_global(q.QuantConfig.static()))
        qm = cal.convert(q.Int8Quantizer().set_global(q.QuantConfig.static()).set_module_name("fc2", None))
    """

    def __init__(
        self,
        model: torch.nn.Module,
        example_inputs,
        calibration: Iterable | None,
        quantizer: Int8Quantizer,
        *,
        dynamic_shapes="batch",
        progress: bool | None = None,
    ) -> None:
        if any(c.is_qat for c in quantizer.configs):
            raise ConfigError("Per-layer search and sensitivity work on post-training configs; "
                              "got a QAT config. Use QuantConfig.static() / dynamic() as the base.")
        self.example_inputs = as_input_tuple(example_inputs)
        self.batches = [as_input_tuple(b) for b in calibration] if calibration is not None else []
        if any(c.needs_calibration for c in quantizer.configs) and not self.batches:
            raise CalibrationError("A static base config needs calibration data: pass calibration=[batch, ...].")
        self.base = quantizer
        self.progress = progress
        self.stats = ConvertStats()
        t0 = time.perf_counter()
        model.eval()
        self.float_graph = export_model(model, self.example_inputs, dynamic_shapes).module()
        prepared = prepare_pt2e(copy.deepcopy(self.float_graph), quantizer)
        self._calibrate(prepared)
        self.observers = _observers(prepared)
        self.calibration_seconds = time.perf_counter() - t0

    def _calibrate(self, prepared: GraphModule) -> None:
        # Without static configs one pass still observes the weights (see workflow.quantize).
        calibrate(prepared, self.batches or [self.example_inputs], progress=self.progress)

    def _transfer(self, prepared: GraphModule) -> bool:
        """Copy calibrated statistics into `prepared`'s observers; False if one has no twin."""
        for key, module in _observers(prepared).items():
            source = self.observers.get(key)
            if source is None:
                return False
            module.load_state_dict(source.state_dict())
        return True

    def convert(self, quantizer: Int8Quantizer) -> GraphModule:
        """The converted model `quantizer` gives, from the one export and calibration."""
        t0 = time.perf_counter()
        prepared = prepare_pt2e(copy.deepcopy(self.float_graph), quantizer)
        if not self._transfer(prepared):
            self.stats.fallbacks += 1
            self._calibrate(prepared)
        _mark_unobserved(prepared)
        with fold_only_present_conv_kinds():  # no ~100 pattern exports per conversion
            converted = convert_pt2e(prepared)
        self.stats.variants += 1
        self.stats.seconds += time.perf_counter() - t0
        return converted
