"""QuantConfig: what int8 scheme a scope of the model gets, and the torchao specs it stands for.

A `QuantConfig` is plain data, validated on construction; `specs_for` turns it into the
torchao `QuantizationSpec`s the annotators attach to graph edges. One config per scope
(global, module type, module name) is resolved by `Int8Quantizer`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torchao.quantization.pt2e import (
    FakeQuantize,
    FusedMovingAvgObsFakeQuantize,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from torchao.quantization.pt2e.learnable_fake_quantize import LearnableFakeQuantize
from torchao.quantization.pt2e.quantizer import DerivedQuantizationSpec, QuantizationSpec

from pt2e_int8.errors import ConfigError
from pt2e_int8.observers import PercentileObserver

Mode = Literal["static", "dynamic", "weight_only"]
ObserverName = Literal["minmax", "moving_average", "histogram", "percentile"]

MODES = ("static", "dynamic", "weight_only")
ACT_DTYPES = (torch.int8, torch.uint8)
# Keeps tiny ranges (constant activations, dead channels) from giving scale 0.
SCALE_EPS = 2**-12

_ACT_OBSERVERS = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "histogram": HistogramObserver,
    "percentile": PercentileObserver,
}


@dataclass(frozen=True)
class QuantConfig:
    """How one scope of a model is quantized to int8.

    Use the presets (`static()`, `dynamic()`, `weight_only()`, `qat()`) and override
    fields by keyword: `QuantConfig.static(observer="percentile")`.
    """

    # static: int8 activations with calibrated qparams; dynamic: activation qparams
    # computed per batch at run time; weight_only: int8 weights, float activations.
    mode: Mode = "static"
    # Fake-quantize for training (prepare_qat) instead of observing (PTQ).
    is_qat: bool = False
    # One weight scale per output channel: the accuracy default, supported by XNNPACK and ORT.
    per_channel: bool = True
    # int8 matches XNNPACK's qs8 kernels; uint8 suits x86 CPUs without VNNI in some runtimes.
    act_dtype: torch.dtype = torch.int8
    # Activation observer of static configs, PTQ and QAT alike (QAT fake-quantizes with it;
    # the qat() preset picks moving_average). minmax is exact on small nets; transformer
    # activations have outliers, for which histogram or percentile keep far more accuracy.
    observer: ObserverName = "minmax"
    # Upper percentile kept by the percentile observer (lower one mirrors it).
    percentile: float = 99.99
    # Symmetric restricted range: -127..127 keeps the weight grid symmetric around 0,
    # which XNNPACK's qs8/qc8 kernels and ONNX Runtime's int8 GEMMs both expect.
    weight_qmin: int = -127
    weight_qmax: int = 127
    # False: the bias stays a float constant and each backend quantizes it to int32 with
    # act_scale * weight_scale itself (XNNPACK does; the ONNX exporter writes the int32 bias).
    # This is the form XNNPACK's partitioner takes: behind a dequantize, an int32 bias makes
    # ExecuTorch's standard lowering reject the linear/conv ("Expected bias to be a static param").
    # True: int32 bias in the graph (static only), for backends that want it there.
    quantize_bias: bool = False
    # Outlier handling for static int8 transformers (off by default: it needs calibration data
    # before annotation and only pays on models with outlier channels). Before annotation,
    # factors measured on the calibration batches (pt2e_int8/transforms/): SmoothQuant moves
    # input-channel outliers into the weights where a LayerNorm or linear can absorb the division,
    # and linear outputs whose few huge channels would set the whole per-tensor scale (BERT's FFN
    # output: 190 in one channel, ±5 elsewhere) are divided by powers of two and restored in float.
    # Exact in float. The `static(smooth=True)` preset for all-MiniLM-L6-v2: cosine 0.95 -> 0.99+.
    smooth: bool = False
    # SmoothQuant migration strength s_j = max|x_j|^a / max|w_j|^(1-a): None searches a per layer
    # (0.05..0.95) by that layer's int8 error on the calibration rows; a number fixes it everywhere.
    smooth_alpha: float | None = None
    # Also smooth inputs no op can absorb the division for (a post-LN transformer's LayerNorm output,
    # which the residual add reads too; GELU outputs), with a float multiply before the linears:
    # exact, more accurate, but one elementwise op per smoothed input, so off by default.
    smooth_insert: bool = False
    # QAT only: each activation's scale and zero point become trainable parameters (LSQ, torchao's
    # LearnableFakeQuantize), started from the observer's calibrated range. They train only after
    # `learn_ranges(prepared)`; until then the observer sets them. The converted model uses the
    # learned values. Fully static MiniLM distilled on 4,267 sentences, 534 steps: held-out cosine
    # 0.9962 with the calibrated ranges fixed, 0.9968 learned (bench/issue11/QAT_EXPERIMENTS.md).
    learn_ranges: bool = False

    def __post_init__(self) -> None:
        problems = _type_problems(self)
        if problems:  # the value checks below would fail on the wrong types with a raw TypeError
            raise ConfigError("Invalid QuantConfig: " + "; ".join(problems) + ".")
        if self.mode not in MODES:
            problems.append(f"mode={self.mode!r} is not one of {MODES}")
        if self.act_dtype not in ACT_DTYPES:
            problems.append(f"act_dtype={self.act_dtype} is not torch.int8 or torch.uint8")
        if self.observer not in _ACT_OBSERVERS:
            problems.append(f"observer={self.observer!r} is not one of {tuple(_ACT_OBSERVERS)}")
        if not 50.0 < self.percentile <= 100.0:
            problems.append(f"percentile={self.percentile} must be in (50, 100]")
        if not -128 <= self.weight_qmin < self.weight_qmax <= 127:
            problems.append(
                f"weight range [{self.weight_qmin}, {self.weight_qmax}] must lie within int8 [-128, 127]"
            )
        if self.smooth and self.mode != "static":
            problems.append(f"smooth=True needs mode='static' (got {self.mode!r}): only static int8 activations "
                            "have calibrated ranges that outliers spoil")
        if self.smooth_insert and not self.smooth:
            problems.append("smooth_insert=True needs smooth=True")
        if self.smooth_alpha is not None and not 0.0 <= self.smooth_alpha <= 1.0:
            problems.append(f"smooth_alpha={self.smooth_alpha} must be None (searched per layer) or in [0, 1]")
        if self.learn_ranges and not (self.is_qat and self.mode == "static"):
            problems.append("learn_ranges=True needs a static QAT config: QuantConfig.qat(learn_ranges=True)")
        if self.is_qat and self.mode == "weight_only":
            problems.append("is_qat=True with mode='weight_only' is not supported; use QuantConfig.qat()")
        if problems:
            raise ConfigError("Invalid QuantConfig: " + "; ".join(problems) + ".")

    # -- presets ---------------------------------------------------------------
    @classmethod
    def static(cls, **overrides) -> QuantConfig:
        """int8 activations (per-tensor affine, calibrated), int8 per-channel weights, float bias
        (quantized to int32 by the backend)."""
        return cls(mode="static", **overrides)

    @classmethod
    def dynamic(cls, **overrides) -> QuantConfig:
        """int8 weights; activation qparams chosen per batch at run time. No calibration needed."""
        return cls(mode="dynamic", **overrides)

    @classmethod
    def weight_only(cls, **overrides) -> QuantConfig:
        """int8 weights, float activations: smallest files, float compute."""
        return cls(mode="weight_only", **overrides)

    @classmethod
    def qat(cls, **overrides) -> QuantConfig:
        """Static int8 with fake-quantization for training; moving-average observers."""
        overrides.setdefault("observer", "moving_average")
        return cls(mode="static", is_qat=True, **overrides)

    def replace(self, **changes) -> QuantConfig:
        return dataclasses.replace(self, **changes)

    @property
    def scheme(self) -> str:
        """Short human name, as printed in coverage: `static/per-channel`."""
        mode = self.mode.replace("_", "-")
        return f"{mode}{'+qat' if self.is_qat else ''}/{'per-channel' if self.per_channel else 'per-tensor'}"

    @property
    def quantizes_activations(self) -> bool:
        return self.mode in ("static", "dynamic")

    @property
    def needs_calibration(self) -> bool:
        return self.mode == "static" and not self.is_qat


def _type_problems(cfg: QuantConfig) -> list[str]:
    """Fields of the wrong type, each named with what it should be (`per_channel="yes"` is not True)."""
    expected = {
        "mode": (str, "a str"), "observer": (str, "a str"), "act_dtype": (torch.dtype, "a torch.dtype"),
        "is_qat": (bool, "True or False"), "per_channel": (bool, "True or False"),
        "quantize_bias": (bool, "True or False"), "learn_ranges": (bool, "True or False"), "percentile": ((int, float), "a number"),
        "weight_qmin": (int, "an int"), "weight_qmax": (int, "an int"),
    }
    problems = []
    for name, (types, words) in expected.items():
        value = getattr(cfg, name)
        wrong_bool = isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
        if not isinstance(value, types) or wrong_bool:
            problems.append(f"{name}={value!r} must be {words}")
    return problems


# -- specs -------------------------------------------------------------------------
def _act_range(dtype: torch.dtype) -> tuple[int, int]:
    info = torch.iinfo(dtype)
    return info.min, info.max


@functools.cache
# Cached: equal configs must give the *same* spec object, so torchao shares one observer
# between a producer's output and its consumers' input edges instead of requantizing.
def activation_spec(cfg: QuantConfig) -> QuantizationSpec | None:
    """Spec for an activation edge; None when the config keeps activations float."""
    if cfg.mode == "weight_only":
        return None
    qmin, qmax = _act_range(cfg.act_dtype)
    dynamic = cfg.mode == "dynamic"
    if dynamic:
        ctr = (
            FakeQuantize.with_args(
                observer=MovingAverageMinMaxObserver.with_args(averaging_constant=1), eps=SCALE_EPS
            )
            if cfg.is_qat
            else PlaceholderObserver.with_args(eps=SCALE_EPS)
        )
    elif cfg.learn_ranges:
        ctr = LearnableFakeQuantize.with_args(observer=_observer_ctr(cfg, eps=SCALE_EPS), use_grad_scaling=True)
    elif cfg.is_qat:
        ctr = (
            FusedMovingAvgObsFakeQuantize.with_args(eps=SCALE_EPS)
            if cfg.observer == "moving_average"
            else FakeQuantize.with_args(observer=_observer_ctr(cfg), eps=SCALE_EPS)
        )
    else:
        ctr = _observer_ctr(cfg, eps=SCALE_EPS)
    return QuantizationSpec(
        dtype=cfg.act_dtype,
        quant_min=qmin,
        quant_max=qmax,
        qscheme=torch.per_tensor_affine,
        is_dynamic=dynamic,
        observer_or_fake_quant_ctr=ctr,
    )


def _observer_ctr(cfg: QuantConfig, **kwargs):
    # One with_args call: torchao reads the observer class name off the partial, which a
    # chained with_args(...).with_args(...) hides.
    observer = _ACT_OBSERVERS[cfg.observer]
    if observer is PercentileObserver:
        kwargs["percentile"] = cfg.percentile
    return observer.with_args(**kwargs)


@functools.cache
def weight_spec(cfg: QuantConfig, ch_axis: int = 0) -> QuantizationSpec:
    """Symmetric int8 weight spec; `ch_axis` is the output-channel axis of the weight tensor."""
    if cfg.per_channel:
        qscheme = torch.per_channel_symmetric
        observer = MovingAveragePerChannelMinMaxObserver if cfg.is_qat else PerChannelMinMaxObserver
    else:
        qscheme = torch.per_tensor_symmetric
        observer = MovingAverageMinMaxObserver if cfg.is_qat else MinMaxObserver
    ctr = (
        FusedMovingAvgObsFakeQuantize.with_args(observer=observer, eps=SCALE_EPS)
        if cfg.is_qat
        else observer.with_args(eps=SCALE_EPS)
    )
    return QuantizationSpec(
        dtype=torch.int8,
        quant_min=cfg.weight_qmin,
        quant_max=cfg.weight_qmax,
        qscheme=qscheme,
        ch_axis=ch_axis if cfg.per_channel else None,
        is_dynamic=False,
        observer_or_fake_quant_ctr=ctr,
    )


def _derive_bias_qparams(obs_or_fqs):
    act, weight = obs_or_fqs
    act_scale, _ = act.calculate_qparams()
    weight_scale, _ = weight.calculate_qparams()
    scale = (act_scale * weight_scale).to(torch.float32)
    return scale, torch.zeros_like(scale, dtype=torch.int32)


def bias_spec(cfg: QuantConfig, act_edge, weight_edge) -> DerivedQuantizationSpec | None:
    """int32 bias with scale act_scale * weight_scale, or None (float bias) when not static."""
    if cfg.mode != "static" or not cfg.quantize_bias:
        return None
    return DerivedQuantizationSpec(
        derived_from=[act_edge, weight_edge],
        derive_qparams_fn=_derive_bias_qparams,
        dtype=torch.int32,
        quant_min=-(2**31),
        quant_max=2**31 - 1,
        qscheme=torch.per_channel_symmetric if cfg.per_channel else torch.per_tensor_symmetric,
        ch_axis=0 if cfg.per_channel else None,
    )


def embedding_weight_spec(cfg: QuantConfig) -> QuantizationSpec:
    """Per-row int8 table: one scale per embedding vector."""
    return weight_spec(cfg.replace(per_channel=True), ch_axis=0)
