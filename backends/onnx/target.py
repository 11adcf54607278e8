"""Which ONNX Runtime int8 kernels a file is written for: the signedness of weights and activations.

ONNX Runtime's CPU GEMMs (MLAS) dispatch on the signedness of the activation (A) and weight (B):

    target     activations  weights           kernels ONNX Runtime picks            exact?
    x86-avx2   uint8        uint8 (w + 128)*  U8U8: widen to int16, then multiply   yes, on every CPU
    x86-vnni   uint8        int8              U8S8: vpdpbusd (AVX512-VNNI/AVX-VNNI)  yes, int32 sums
    arm64      int8 static  int8              S8S8 sdot/smmla; U8S8 udot/usmmla      yes, int32 sums
               uint8 dynamic                  (DynamicQuantizeLinear is uint8)

    * weights already within 7 bits (-64..63) stay int8 under x86-avx2: U8S8 cannot saturate them.

Sources: ONNX Runtime's quantization guide ("Data type selection": S8S8 with QDQ is the default
and first choice; on x86-64 with AVX2/AVX512 but no VNNI, U8S8 uses VPMADDUBSW, which can
saturate — use U8U8 or 7-bit weights; "there is no such issue on x64 with VNNI and ARM"), and
MLAS `MlasGemmQuantGetDispatch` (qgemm.h): ARM64 has native S8S8 and U8S8 dispatches; x86 has
no fast S8S8 GEMM without AVX-VNNI-INT8, so ONNX Runtime rewrites int8 activations to uint8
on x86 (QDQS8ToU8Transformer; `QDQIsInt8Allowed()` is true only on ARM). On arm64 the choice
follows those sources; it has not been timed on ARM hardware here.

Measured on an Intel Xeon with AVX512-VNNI and AMX (ONNX Runtime 1.32, one thread, [128, 384] ×
[384, 1536]): U8S8 0.24 ms, U8U8 0.83 ms, float 0.89 ms. The uint8-weight form that is exact on
AVX2-only CPUs therefore costs 3.5× on every int8 GEMM of a VNNI host, which is why the choice is
per target and not global. A file written for x86-vnni or arm64 still runs on an AVX2-only CPU,
but ONNX Runtime's U8S8 kernel there saturates int16 pair sums and drifts (up to 32 output steps
measured against a numpy model of the kernel): build for `x86-avx2` to ship one file everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.cpu_features import ARM64_MACHINES, X86_MACHINES, this_cpu
from pt2e_int8.errors import ConfigError

# metadata_props keys written into every exported file (ONNX Runtime: session.get_modelmeta().custom_metadata_map).
METADATA_TARGET = "pt2e_int8.target"
METADATA_WHY = "pt2e_int8.target_reason"
METADATA_WEIGHTS = "pt2e_int8.weight_dtype"
METADATA_ACTS = "pt2e_int8.act_dtype"
METADATA_DYNAMIC_ACT = "pt2e_int8.dynamic_act"


@dataclass(frozen=True)
class OnnxTarget:
    """The int8 data types one family of CPUs runs exactly and fastest in ONNX Runtime."""

    name: str
    act_dtype: str  # activations of static Q/DQ: "uint8" | "int8" (dynamic ones are uint8 in ONNX)
    weight_dtype: str  # "uint8" (w + 128, zero point 128) or "int8"; 7-bit weights stay int8 either way
    kernels: str  # what ONNX Runtime runs, for reports
    runs_exactly_on: str  # CPUs where ONNX Runtime computes these files exactly


TARGETS: dict[str, OnnxTarget] = {t.name: t for t in (
    OnnxTarget("x86-avx2", "uint8", "uint8", "U8U8 (U8S8 for 7-bit weights)", "every CPU"),
    OnnxTarget("x86-vnni", "uint8", "int8", "U8S8 with VNNI dot products", "x86 with AVX512-VNNI or AVX-VNNI, and ARM64"),
    OnnxTarget("arm64", "int8", "int8", "S8S8 (static) / U8S8 (dynamic) with sdot/udot/i8mm", "ARM64, and x86 with VNNI"),
)}
TARGET_NAMES = ("auto", *TARGETS)
# Any of these in the building CPU's flags makes U8S8 exact on x86 (vpdpbusd sums into int32).
_VNNI = ("avx512_vnni", "avx_vnni")


def detect_target(machine: str | None = None, isa: dict[str, bool] | None = None) -> tuple[OnnxTarget, str]:
    """The target of a CPU (default: this one) and a sentence saying why.

    Args:
        machine: platform.machine() spelling ("x86_64", "aarch64", ...).
        isa: `backends.cpu_features.isa_features` of the CPU.
    """
    if machine is None or isa is None:
        here_machine, here_isa = this_cpu()
        machine, isa = machine or here_machine, isa if isa is not None else here_isa
    machine = machine.lower()
    if machine in ARM64_MACHINES:
        return TARGETS["arm64"], f"auto: this CPU is {machine} (ARM64: int8 × int8 kernels, no saturation)"
    if machine in X86_MACHINES:
        vnni = [f for f in _VNNI if isa.get(f)]
        if vnni:
            return TARGETS["x86-vnni"], f"auto: this CPU has {', '.join(vnni)} (U8S8 is exact and fastest)"
        return TARGETS["x86-avx2"], ("auto: this x86 CPU has no VNNI (U8S8 would saturate int16 sums; "
                                     "uint8 weights run U8U8, exact)")
    return TARGETS["x86-avx2"], (f"auto: unknown CPU architecture {machine!r}: uint8 weights, "
                                 "exact with ONNX Runtime on every CPU")


def resolve_target(target: str | OnnxTarget) -> tuple[OnnxTarget, str]:
    """(OnnxTarget, why) for a `target=` argument: "auto" (this CPU) or one of TARGETS."""
    if isinstance(target, OnnxTarget):
        return target, "given"
    if target == "auto":
        return detect_target()
    if target not in TARGETS:
        raise ConfigError(f"target={target!r} is not one of {', '.join(TARGET_NAMES)}. Pick the CPU family the "
                          "file will run on, or 'auto' for the building machine's; 'x86-avx2' is exact everywhere.")
    return TARGETS[target], "given"


def drift_warning(file_target: str | None, machine: str | None = None, isa: dict[str, bool] | None = None
                  ) -> str | None:
    """Why a file written for `file_target` may not run exactly on this CPU (default: this one), or None.

    Only an int8-weight file (x86-vnni, arm64) on an x86 CPU without VNNI is at risk: ONNX Runtime
    then runs U8S8 with vpmaddubsw, whose int16 pair sums saturate on full-range weights.
    """
    if file_target not in ("x86-vnni", "arm64"):
        return None
    if machine is None or isa is None:
        machine, isa = this_cpu()
    if machine.lower() not in X86_MACHINES or any(isa.get(f) for f in _VNNI):
        return None
    return (f"this ONNX file was exported for {file_target} (int8 weights); on this x86 CPU without VNNI, "
            "ONNX Runtime's U8S8 kernel saturates int16 sums and can drift by tens of output steps. "
            "Re-export with `--target x86-avx2` (export_onnx(..., target='x86-avx2')) for a file exact on every CPU.")
