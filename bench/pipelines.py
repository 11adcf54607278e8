"""Every row of the benchmark: a pipeline that turns the float model into one artifact.

A pipeline is data (`Pipeline`: name, runtime, origin, the float baseline it is compared to)
plus a function `fn(ctx) -> Path | None` that writes the artifact and times its stages through
`ctx.stage(...)`. `float_eager` writes nothing: it is the PyTorch model itself.

    origin   float: the float model in each runtime (the baselines)
             ours:  pt2e_int8.quantize / prepare_qat → backends.executorch / backends.onnx
             ours_float: backends.executorch on the float model (what our lowering alone gives)
             stock: ExecuTorch's XNNPACKQuantizer flow     ort: ONNX Runtime's quantization tool
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench import anchors
from bench.models import BenchModel, ModelData

RUNTIMES = ("eager", "executorch", "onnxruntime")
# The float baseline of each runtime (ratio column), and the cross-runtime anchor.
RUNTIME_BASELINE = {"eager": "float_eager", "executorch": "float_pte", "onnxruntime": "float_onnx"}
STOCK_FLOAT_PTE = "float_pte"
# Outlier-robust activation observer of our static rows (transformer activations have outliers).
STATIC_OBSERVER = "histogram"
# Our .pte rows are exported with static shapes (batch 1), like every stock .pte they are compared
# with; `*_dynbatch` rows show what export_pte's default dynamic batch (1..64) costs.
PTE_DYNAMIC_SHAPES = None


@dataclass
class Ctx:
    """What a pipeline function gets: the model, its data, where to write, and a stage timer."""

    model: BenchModel
    data: ModelData
    workdir: Path
    quick: bool
    stages: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pipeline: str = ""  # the name of the pipeline running

    def float_model(self) -> torch.nn.Module:
        """A fresh float model (loading it is not a pipeline stage)."""
        return self.model.build(self.workdir, self.quick)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0

    def artifact(self, name: str, ext: str) -> Path:
        return self.workdir / f"{name}.{ext}"

    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"] if self.model.metric == "cosine" else ["x"]


@dataclass(frozen=True)
class Pipeline:
    name: str
    label: str
    runtime: str  # one of RUNTIMES
    origin: str  # "float" | "ours" | "ours_float" (our lowering, no int8) | "stock" | "ort"
    fn: Callable[[Ctx], Path | None]
    needs: tuple[str, ...] = ()  # pipelines whose artifacts this one reads
    qat_only: bool = False  # only for models with a QAT recipe (digits)
    fallback_for: str | None = None  # runs only when this pipeline failed (a fairer anchor in its place)
    models: tuple[str, ...] | None = None  # only for these models (None: all)

    @property
    def is_anchor(self) -> bool:
        return self.origin in ("float", "stock", "ort") and self.runtime != "eager"


PIPELINES: dict[str, Pipeline] = {}


def register(name: str, label: str, runtime: str, origin: str, *, needs: tuple[str, ...] = (),
             qat_only: bool = False, fallback_for: str | None = None, models: tuple[str, ...] | None = None):
    """Decorator: add `fn` to PIPELINES under `name` (refusing duplicates); returns `fn`."""
    assert runtime in RUNTIMES, runtime

    def wrap(fn: Callable[[Ctx], Path | None]) -> Callable[[Ctx], Path | None]:
        if name in PIPELINES:
            raise ValueError(f"pipeline {name!r} registered twice")
        PIPELINES[name] = Pipeline(name, label, runtime, origin, fn, needs, qat_only, fallback_for, models)
        return fn

    return wrap


def pipelines_for(model: BenchModel) -> list[Pipeline]:
    return [p for p in PIPELINES.values()
            if (model.has_qat or not p.qat_only) and (p.models is None or model.name in p.models)]


def blocked(pipe: Pipeline, metas: dict[str, dict]) -> tuple[str, str] | None:
    """("skip", why) when the pipeline is not needed, ("error", why) when it cannot run, else None.

    `metas` maps the pipelines exported so far to their result documents.
    """
    if pipe.fallback_for and metas.get(pipe.fallback_for, {}).get("ok"):
        return "skip", f"{pipe.fallback_for} worked"
    broken = [n for n in pipe.needs if not metas.get(n, {}).get("ok")]
    if broken:
        return "error", f"needs {', '.join(broken)}, which failed"
    return None


# --- ours -----------------------------------------------------------------------------------

# Where ours_smooth_qat_pte leaves its converted QAT graph for ours_smooth_qat_onnx (QAT runs once per run).
SMOOTH_QAT_GRAPH = "smooth_qat.pt2"


def _smooth_qat(ctx: Ctx, model):
    cache = ctx.workdir / SMOOTH_QAT_GRAPH
    if ctx.pipeline.endswith("_onnx"):
        ctx.notes.append("QAT graph of ours_smooth_qat_pte (QAT time counted there)")
        return torch.export.load(cache).module()
    with ctx.stage("qat"):
        qm = ctx.model.static_qat(model, ctx.data, ctx.workdir, ctx.quick)
    torch.export.save(torch.export.export(qm, ctx.data.example), cache)
    return qm


def _ours_quantized(ctx: Ctx, scheme: str):
    import pt2e_int8 as q

    model = ctx.float_model()
    if scheme == "qat":
        with ctx.stage("qat"):
            return ctx.model.qat(model, ctx.workdir, ctx.quick)
    if scheme == "smooth_qat":
        return _smooth_qat(ctx, model)
    if scheme in ("smooth", "smooth_insert"):
        from pt2e_int8.app.minilm import smooth_quantizer

        quantizer = smooth_quantizer(insert=scheme == "smooth_insert")
    elif scheme == "mixed":
        # MiniLM's recipe: linears only, static with the histogram observer, dynamic in the FFN.
        from pt2e_int8.app.minilm import mixed_quantizer

        quantizer = mixed_quantizer()
    else:
        cfg = q.QuantConfig.static(observer=STATIC_OBSERVER) if scheme == "static" else q.QuantConfig.dynamic()
        quantizer = q.Int8Quantizer().set_global(cfg)
    with ctx.stage("quantize"):
        return q.quantize(model, ctx.data.calibration[0], calibration=ctx.data.calibration,
                          quantizer=quantizer, progress=False)


def save_reference(ctx: Ctx, qm, artifact: Path) -> None:
    """The PyTorch reference's outputs on the held-out inputs, beside the artifact: the measure step
    reports how far the artifact is from it (`reference_steps`). The reference is the converted graph
    with its int8 layers computed as the artifact's kernels compute them (integer accumulation,
    per-row dynamic int8 in XNNPACK, ONNX QuantizeLinear's division, each runtime's LayerNorm or Softmax): the plain graph's fp32 sums flip roundings at ties, which a
    transformer amplifies to 7–32 output steps (bench/issue11/steps/GROWTH.md)."""
    if artifact.suffix == ".pte":
        from backends.executorch.reference import xnnpack_reference as emulate
    else:
        from backends.onnx.reference import onnx_reference as emulate
    ref = emulate(qm)
    with torch.no_grad():
        outs = [ref(*x) for x in ctx.data.eval_inputs]
    torch.save([o if isinstance(o, torch.Tensor) else o[0] for o in outs], reference_path(artifact))


def reference_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".ref.pt")


def _placement_note(ctx: Ctx, result) -> None:
    n8 = len(result.int8_layers)
    ctx.notes.append(f"{n8}/{len(result.placement)} layers int8")


def delegate_note(ctx: Ctx, path: Path) -> None:
    """How many XNNPACK delegate calls, and which ops run outside them, read from the .pte itself."""
    from backends.compat.executorch import pte_structure

    structure = pte_structure(path.read_bytes())
    outside = ", ".join(structure["operators"]) or "none"
    ctx.notes.append(f"{len(structure['delegates'])} delegate calls; ops outside: {outside}")


def _ours_pte(scheme: str, dynamic_shapes=PTE_DYNAMIC_SHAPES) -> Callable[[Ctx], Path]:
    def run(ctx: Ctx) -> Path:
        from backends.executorch import export_pte

        qm = _ours_quantized(ctx, scheme)
        name = f"ours_{scheme}" + ("_dynbatch" if dynamic_shapes == "batch" else "")
        with ctx.stage("lower"):
            res = export_pte(qm, ctx.data.example, ctx.artifact(name, "pte"), dynamic_shapes=dynamic_shapes)
        save_reference(ctx, qm, res.path)
        _placement_note(ctx, res)
        delegate_note(ctx, res.path)
        if dynamic_shapes == "batch":
            ctx.notes.append("dynamic batch 1..64")
        return res.path

    return run


def _onnx_notes(ctx: Ctx, res) -> None:
    """Layers in int8, the target export_onnx chose (and why), and why any quantized layer runs in float."""
    _placement_note(ctx, res)
    opts = res.options
    if opts:
        ctx.notes.append(f"target {opts['target']} ({opts['target_reason']}): {opts['weight_dtype']} weights, "
                         f"{opts['dynamic_act']} dynamic activations")
    reasons = sorted({d for k, d in res.detail.items() if res.placement.get(k) == "float" and "ONNX Runtime" in d})
    ctx.notes += [f"float: {r}" for r in reasons]


def _ours_onnx(scheme: str, **options) -> Callable[[Ctx], Path]:
    def run(ctx: Ctx) -> Path:
        from backends.onnx import export_onnx

        qm = _ours_quantized(ctx, scheme) if scheme != "float" else ctx.float_model()
        suffix = "".join(f"_{k}_{v}" for k, v in options.items())
        with ctx.stage("export"):
            res = export_onnx(qm, ctx.data.example, ctx.artifact(f"ours_{scheme}{suffix}", "onnx"), **options)
        save_reference(ctx, qm, res.path)
        _onnx_notes(ctx, res)
        return res.path

    return run


# --- registry (order = row order) -----------------------------------------------------------

@register("float_eager", "float, PyTorch eager", "eager", "float")
def _float_eager(ctx: Ctx) -> None:
    return None


@register("float_pte", "float .pte (stock XNNPACK lowering)", "executorch", "float")
def _float_pte(ctx: Ctx) -> Path:
    path = ctx.artifact("float", "pte")
    anchors.stock_float_pte(ctx.float_model(), ctx.data.example, path, ctx.stage)
    delegate_note(ctx, path)
    return path


register("ours_static_pte", f"ours int8 static ({STATIC_OBSERVER}) .pte", "executorch", "ours")(_ours_pte("static"))
register("ours_dynamic_pte", "ours int8 dynamic .pte", "executorch", "ours")(_ours_pte("dynamic"))
register("ours_qat_pte", "ours int8 QAT .pte", "executorch", "ours", qat_only=True)(_ours_pte("qat"))
register("ours_mixed_pte", "ours int8 mixed (static linears, dynamic FFN) .pte", "executorch", "ours",
         models=("minilm",))(_ours_pte("mixed"))
# Issue 11: every linear static int8, outliers handled (QuantConfig.static(smooth=True)), and its QAT by distillation.
register("ours_smooth_pte", "ours int8 static + smooth (outlier handling) .pte", "executorch", "ours",
         models=("minilm",))(_ours_pte("smooth"))
register("ours_smooth_insert_pte", "ours int8 static + smooth, multiplies inserted (smooth_insert) .pte",
         "executorch", "ours", models=("minilm",))(_ours_pte("smooth_insert"))
register("ours_smooth_qat_pte", "ours int8 static + smooth_insert, QAT by distillation .pte", "executorch", "ours",
         models=("minilm",))(_ours_pte("smooth_qat"))
register("ours_dynamic_dynbatch_pte", "ours int8 dynamic .pte, dynamic batch (export_pte's dynamic_shapes='batch')", "executorch",
         "ours", models=("minilm",))(_ours_pte("dynamic", dynamic_shapes="batch"))


@register("ours_float_pte", "ours float .pte (export_pte of the float model: our lowering, no int8)",
          "executorch", "ours_float", models=("minilm",))
def _ours_float_pte(ctx: Ctx) -> Path:
    from backends.executorch import export_pte

    with ctx.stage("lower"):
        path = export_pte(ctx.float_model(), ctx.data.example, ctx.artifact("ours_float", "pte"),
                          dynamic_shapes=PTE_DYNAMIC_SHAPES).path
    delegate_note(ctx, path)
    return path


def _stock(dynamic: bool, transform: bool = True) -> Callable[[Ctx], Path]:
    def run(ctx: Ctx) -> Path:
        path = ctx.artifact(f"stock_{'dynamic' if dynamic else 'static'}{'' if transform else '_noxform'}", "pte")
        anchors.stock_int8_pte(ctx.float_model(), ctx.data.example, ctx.data.calibration_singles(), path,
                               ctx.stage, dynamic=dynamic, transform=transform)
        delegate_note(ctx, path)
        return path

    return run


register("stock_static_pte", "stock XNNPACKQuantizer int8 static .pte", "executorch", "stock")(_stock(False))
register("stock_static_noxform_pte", "stock XNNPACKQuantizer int8 static .pte, transform_for_annotation skipped",
         "executorch", "stock", fallback_for="stock_static_pte")(_stock(False, transform=False))
register("stock_dynamic_pte", "stock XNNPACKQuantizer int8 dynamic .pte", "executorch", "stock")(_stock(True))
register("stock_dynamic_noxform_pte", "stock XNNPACKQuantizer int8 dynamic .pte, transform_for_annotation skipped",
         "executorch", "stock", fallback_for="stock_dynamic_pte")(_stock(True, transform=False))


@register("float_onnx", "float ONNX (torch.onnx dynamo) in ORT", "onnxruntime", "float")
def _float_onnx(ctx: Ctx) -> Path:
    path = ctx.artifact("float", "onnx")
    anchors.float_onnx(ctx.float_model(), ctx.data.example, path, ctx.stage, ctx.input_names())
    return path


@register("float_onnx_ortopt", "float ONNX + ORT transformer optimizer (fused attention/LayerNorm)",
          "onnxruntime", "ort", needs=("float_onnx",), models=("minilm",))
def _float_onnx_ortopt(ctx: Ctx) -> Path:
    config = ctx.float_model().bert.config
    path = ctx.artifact("float_ortopt", "onnx")
    anchors.ort_transformer_optimized(ctx.artifact("float", "onnx"), path, ctx.stage, ctx.notes,
                                      num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
    return path


def _ort(kind: str) -> Callable[[Ctx], Path]:
    def run(ctx: Ctx) -> Path:
        src, path = ctx.artifact("float", "onnx"), ctx.artifact(f"ort_{kind}", "onnx")
        if kind == "static":
            anchors.ort_static(src, path, ctx.data.calibration_singles(), ctx.stage, ctx.notes)
        elif kind == "static_sq":
            anchors.ort_static(src, path, ctx.data.calibration_singles(), ctx.stage, ctx.notes,
                               smooth_quant_alpha=0.5)
        elif kind == "static_matmul":
            anchors.ort_static(src, path, ctx.data.calibration_singles(), ctx.stage, ctx.notes,
                               op_types=["MatMul", "Gemm"])
        elif kind == "dynamic_pc_ortopt":  # ORT's transformer recipe: optimize, then quantize
            anchors.ort_dynamic(ctx.artifact("float_ortopt", "onnx"), path, ctx.stage, ctx.notes, per_channel=True,
                                preprocess=False)
        else:
            anchors.ort_dynamic(src, path, ctx.stage, ctx.notes, per_channel=kind == "dynamic_pc")
        return path

    return run


register("ort_static", "ORT quantize_static (QDQ, per-channel)", "onnxruntime", "ort",
         needs=("float_onnx",))(_ort("static"))
register("ort_static_sq", "ORT quantize_static (QDQ, per-channel) with its SmoothQuant option", "onnxruntime",
         "ort", needs=("float_onnx",), models=("minilm",))(_ort("static_sq"))
register("ort_static_matmul", "ORT quantize_static (QDQ, per-channel, MatMul/Gemm only)", "onnxruntime", "ort",
         needs=("float_onnx",))(_ort("static_matmul"))
register("ort_dynamic", "ORT quantize_dynamic", "onnxruntime", "ort", needs=("float_onnx",))(_ort("dynamic"))
register("ort_dynamic_pc", "ORT quantize_dynamic (per-channel)", "onnxruntime", "ort",
         needs=("float_onnx",))(_ort("dynamic_pc"))
register("ort_dynamic_pc_ortopt", "ORT transformer optimizer, then quantize_dynamic (per-channel)", "onnxruntime",
         "ort", needs=("float_onnx_ortopt",), models=("minilm",))(_ort("dynamic_pc_ortopt"))
# export_onnx's defaults: target="auto" (this machine's int8 types), per-row dynamic activations.
register("ours_static_onnx", f"ours int8 static ({STATIC_OBSERVER}) ONNX", "onnxruntime", "ours")(_ours_onnx("static"))
register("ours_dynamic_onnx", "ours int8 dynamic ONNX", "onnxruntime", "ours")(_ours_onnx("dynamic"))
register("ours_qat_onnx", "ours int8 QAT ONNX", "onnxruntime", "ours", qat_only=True)(_ours_onnx("qat"))
register("ours_mixed_onnx", "ours int8 mixed (static linears, dynamic FFN) ONNX", "onnxruntime", "ours",
         models=("minilm",))(_ours_onnx("mixed"))
register("ours_smooth_onnx", "ours int8 static + smooth (outlier handling) ONNX", "onnxruntime", "ours",
         models=("minilm",))(_ours_onnx("smooth"))
register("ours_smooth_insert_onnx", "ours int8 static + smooth, multiplies inserted (smooth_insert) ONNX",
         "onnxruntime", "ours", models=("minilm",))(_ours_onnx("smooth_insert"))
register("ours_smooth_qat_onnx", "ours int8 static + smooth_insert, QAT by distillation ONNX", "onnxruntime", "ours",
         needs=("ours_smooth_qat_pte",), models=("minilm",))(_ours_onnx("smooth_qat"))
# What each choice costs or buys, on the same model: per-tensor dynamic activations (the converted graph's
# numerics, standard ops only), and target x86-avx2 (uint8 weights: exact on every CPU, U8U8 kernels).
register("ours_dynamic_onnx_per_tensor", "ours int8 dynamic ONNX, per-tensor activations", "onnxruntime", "ours",
         models=("minilm",))(_ours_onnx("dynamic", dynamic_act="per-tensor"))
register("ours_dynamic_onnx_avx2", "ours int8 dynamic ONNX, target x86-avx2 (exact on every CPU)", "onnxruntime",
         "ours", models=("minilm",))(_ours_onnx("dynamic", target="x86-avx2"))
register("ours_static_onnx_avx2", f"ours int8 static ({STATIC_OBSERVER}) ONNX, target x86-avx2 (exact on every CPU)",
         "onnxruntime", "ours", models=("minilm",))(_ours_onnx("static", target="x86-avx2"))
# Our ONNX passes on the float model (no int8): what the graph rewrites alone give ORT.
register("ours_float_onnx", "ours float ONNX (export_onnx of the float model: our passes, no int8)", "onnxruntime",
         "ours_float", models=("minilm",))(_ours_onnx("float"))
