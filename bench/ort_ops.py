"""ONNX Runtime's CPU kernels on all-MiniLM-L6-v2's shapes: which graph forms are fast, measured.

    .venv/bin/python bench/ort_ops.py [--threads 2] [--iters 300] [--out bench]

Each family times the candidate forms of one piece of a transformer layer (batch 1, seq 128,
hidden 384, 12 heads, FFN 1536; 10 of 128 keys attended, as for a short sentence padded to 128)
interleaved in one process, in default ONNX Runtime sessions, and reports each form's median and
minimum as a ratio to the family's first form. These are the measurements behind the ONNX
backend's choices: the int8 types per target (backends/onnx/target.py), per-row dynamic
activations (passes/quantize_activation_rows.py), clamping masked softmax logits
(passes/clamp_masked_softmax.py), keeping residual LayerNorms out of SkipLayerNormalization
(passes/flatten_residual_layer_norm.py), and not emitting ORT's fused attention contrib ops.
Writes OUT/ORT_OPS.md and OUT/ort_ops.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pt2e_int8.app.device import describe_device, summary_line  # noqa: E402
from pt2e_int8.text_table import markdown_table  # noqa: E402

B, S, E, H, F = 1, 128, 384, 12, 1536
D, KEPT = E // H, 10
F32, U8, I8, I32, I64 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, TensorProto.INT64
RNG = np.random.default_rng(0)


def _init(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs: dict[str, np.ndarray], inits=()) -> bytes:
    types = {np.float32: F32, np.uint8: U8, np.int8: I8, np.int32: I32, np.int64: I64}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, types[a.dtype.type], list(a.shape)) for n, a in inputs.items()],
        [helper.make_tensor_value_info("y", F32, None)], list(inits))
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


N = helper.make_node


def _ms(name, op, inputs, outputs, **attrs):
    return N(op, inputs, outputs, name=name, domain="com.microsoft", **attrs)


def _weights(k: int, n: int):
    w = RNG.standard_normal((k, n)).astype(np.float32) * 0.05
    scale = (np.abs(w).max(0) / 127).astype(np.float32)
    wq = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return wq, scale, (wq.astype(np.float32) * scale)


def gemm_family():
    """An FFN-up linear [128, 384] × [384, 1536]: float, and dynamic int8 in each signedness / granularity."""
    x = {"x": RNG.standard_normal((B, S, E)).astype(np.float32)}
    wq, scale, wd = _weights(E, F)
    w_u8 = (wq.astype(np.int16) + 128).astype(np.uint8)
    rows = [N("Reshape", ["x", "k2"], ["x2"]), N("ReduceMax", ["x2", "ax1"], ["hi"]), N("ReduceMin", ["x2", "ax1"], ["lo"]),
            N("Neg", ["lo"], ["nlo"]), N("Max", ["hi", "nlo", "tiny"], ["amax"]), N("Div", ["amax", "c127"], ["s"]),
            N("Reshape", ["s", "flat"], ["s1"]), N("Shape", ["s1"], ["cnt"]), N("Expand", ["z128", "cnt"], ["zs"]),
            N("QuantizeLinear", ["x2", "s1", "zs"], ["q"], axis=0),
            _ms("mm", "MatMulIntegerToFloat", ["q", "W", "s", "sw", "z128", "wz"], ["y2"]),
            N("Reshape", ["y2", "out3"], ["y"])]
    row_inits = [_init("k2", np.array([-1, E], np.int64)), _init("ax1", np.array([1], np.int64)),
                 _init("tiny", np.float32(1e-30)), _init("c127", np.float32(127)), _init("flat", np.array([-1], np.int64)),
                 _init("z128", np.uint8(128)), _init("W", wq), _init("sw", scale), _init("wz", np.zeros(F, np.int8)),
                 _init("out3", np.array([-1, S, F], np.int64))]
    return "linear 384→1536 (x[1,128,384])", [
        ("float MatMul", _model([N("MatMul", ["x", "W"], ["y"])], x, [_init("W", wd)]), x),
        ("DynamicQuantizeMatMul, int8 weights (U8S8: x86-vnni, arm64)",
         _model([_ms("d", "DynamicQuantizeMatMul", ["x", "W", "sw", "wz"], ["y"])], x,
                [_init("W", wq), _init("sw", scale), _init("wz", np.zeros(F, np.int8))]), x),
        ("DynamicQuantizeMatMul, uint8 weights (U8U8: x86-avx2)",
         _model([_ms("d", "DynamicQuantizeMatMul", ["x", "W", "sw", "wz"], ["y"])], x,
                [_init("W", w_u8), _init("sw", scale), _init("wz", np.full(F, 128, np.uint8))]), x),
        ("per-row: QuantizeLinear rows + MatMulIntegerToFloat, int8 weights", _model(rows, x, row_inits), x),
    ]


def layer_norm_family():
    """The residual Add → LayerNorm after attention: ORT's fusion vs the same ops on 2-D rows."""
    feeds = {"a": RNG.standard_normal((B, S, E)).astype(np.float32), "b": RNG.standard_normal((B, S, E)).astype(np.float32)}
    inits = [_init("g", np.ones(E, np.float32)), _init("be", np.zeros(E, np.float32)),
             _init("k2", np.array([-1, E], np.int64)), _init("k3", np.array([-1, S, E], np.int64))]
    fused = [N("Add", ["a", "b"], ["s"]), N("LayerNormalization", ["s", "g", "be"], ["y"], axis=-1, epsilon=1e-12)]
    flat = [N("Add", ["a", "b"], ["s"]), N("Reshape", ["s", "k2"], ["s2"]),
            N("LayerNormalization", ["s2", "g", "be"], ["y2"], axis=-1, epsilon=1e-12), N("Reshape", ["y2", "k3"], ["y"])]
    return "residual Add + LayerNorm [1,128,384]", [
        ("Add → LayerNorm (ORT fuses: SkipLayerNormalization)", _model(fused, feeds, inits), feeds),
        ("Add → LayerNorm on 2-D rows (FlattenResidualLayerNormPass)", _model(flat, feeds, inits), feeds),
    ]


def _mask_bias() -> np.ndarray:
    bias = np.zeros((B, 1, 1, S), np.float32)
    bias[..., KEPT:] = np.finfo(np.float32).min
    return bias


def softmax_family():
    """Softmax of attention scores plus Hugging Face's additive mask (finfo.min on padded keys)."""
    feeds = {"x": RNG.standard_normal((B, H, S, S)).astype(np.float32) * 3, "m": _mask_bias()}
    plain = [N("Add", ["x", "m"], ["a"]), N("Softmax", ["a"], ["y"], axis=-1)]
    clamped = [N("Add", ["x", "m"], ["a"]), N("ReduceMax", ["a", "ax"], ["mx"]), N("Sub", ["mx", "gap"], ["fl"]),
               N("Max", ["a", "fl"], ["c"]), N("Softmax", ["c"], ["y"], axis=-1)]
    inits = [_init("ax", np.array([-1], np.int64)), _init("gap", np.float32(80))]
    unmasked = {"x": feeds["x"], "m": np.zeros_like(feeds["m"])}
    return "masked softmax [1,12,128,128], 118 of 128 keys masked", [
        ("Add mask → Softmax (denormal exps)", _model(plain, feeds), feeds),
        ("Add mask → clamp at row max − 80 → Softmax (ClampMaskedSoftmaxPass)", _model(clamped, feeds, inits), feeds),
        ("reference: same ops, nothing masked", _model(plain, unmasked), unmasked),
    ]


def _unfused_attention(clamp: bool, prefix: str = "") -> list:
    """q, k, v [1,128,384] → heads → scores · 1/√d + mask → softmax → context [1,128,384]."""
    nodes = []
    for t in "qkv":
        nodes += [N("Reshape", [f"{prefix}{t}", "heads"], [f"{t}4"]), N("Transpose", [f"{t}4"], [f"{t}h"], perm=[0, 2, 1, 3])]
    nodes += [N("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]), N("MatMul", ["qh", "kt"], ["sc"]),
              N("Mul", ["sc", "scale"], ["ss"]), N("Add", ["ss", "m"], ["a"])]
    if clamp:
        nodes += [N("ReduceMax", ["a", "ax"], ["mx"]), N("Sub", ["mx", "gap"], ["fl"]), N("Max", ["a", "fl"], ["a2"])]
    nodes += [N("Softmax", ["a2" if clamp else "a"], ["p"], axis=-1), N("MatMul", ["p", "vh"], ["ctx"]),
              N("Transpose", ["ctx"], ["ct"], perm=[0, 2, 1, 3]), N("Reshape", ["ct", "flat3"], ["y"])]
    return nodes


def _attention_inits():
    return [_init("heads", np.array([B, S, H, D], np.int64)), _init("scale", np.float32(1 / np.sqrt(D))),
            _init("ax", np.array([-1], np.int64)), _init("gap", np.float32(80)),
            _init("flat3", np.array([B, S, E], np.int64))]


def attention_family():
    """The attention core on projected q, k, v: ORT's contrib ops against the unfused ops."""
    qkv = {t: RNG.standard_normal((B, S, E)).astype(np.float32) for t in "qkv"}
    feeds = {**qkv, "m": _mask_bias()}
    pad = np.zeros((B, S), np.int32)
    pad[:, :KEPT] = 1
    mha_feeds = {**qkv, "kpm": pad}
    mha = [_ms("mha", "MultiHeadAttention", ["q", "k", "v", "", "kpm"], ["y"], num_heads=H)]
    return "attention core (q, k, v [1,128,384] → context), 10 of 128 keys", [
        ("unfused ops (torch.onnx's graph)", _model(_unfused_attention(False), feeds, _attention_inits()), feeds),
        ("unfused ops + ClampMaskedSoftmaxPass", _model(_unfused_attention(True), feeds, _attention_inits()), feeds),
        ("com.microsoft.MultiHeadAttention (key padding mask)", _model(mha, mha_feeds), mha_feeds),
    ]


def qkv_attention_family():
    """The whole self-attention from the layer input: ORT's Attention / QAttention against QKV linears + core."""
    x = RNG.standard_normal((B, S, E)).astype(np.float32)
    wq, scale, wd = _weights(E, 3 * E)
    bias = (RNG.standard_normal(3 * E) * 0.1).astype(np.float32)
    pad = np.zeros((B, S), np.int32)
    pad[:, :KEPT] = 1
    feeds, mask_feeds = {"x": x, "m": _mask_bias()}, {"x": x, "mi": pad}
    split = [N("Split", ["lin", "sizes"], ["q", "k", "v"], axis=-1)]
    sizes = _init("sizes", np.array([E, E, E], np.int64))
    float_lin = [N("MatMul", ["x", "W"], ["mm"]), N("Add", ["mm", "b"], ["lin"])]
    int8_lin = [_ms("d", "DynamicQuantizeMatMul", ["x", "W", "sw", "wz", "b"], ["lin"])]
    qatt = [N("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
            _ms("qa", "QAttention", ["xq", "W", "b", "xs", "sw1", "mi", "xz", "wz1"], ["y"], num_heads=H)]
    w_f = [_init("W", wd), _init("b", bias)]
    w_i = [_init("W", wq), _init("sw", scale), _init("wz", np.zeros(3 * E, np.int8)), _init("b", bias)]
    scalar_w = np.clip(np.round(wd / np.abs(wd).max() * 127), -127, 127).astype(np.int8)  # QAttention: one weight scale
    qatt_inits = [_init("W", scalar_w), _init("b", bias), _init("sw1", np.float32(np.abs(wd).max() / 127)),
                  _init("wz1", np.int8(0))]
    return "self-attention from the layer input (QKV linears + core)", [
        ("float QKV linear + unfused core", _model(float_lin + split + _unfused_attention(False), feeds,
                                                   w_f + [sizes] + _attention_inits()), feeds),
        ("float QKV linear + unfused core + clamp", _model(float_lin + split + _unfused_attention(True), feeds,
                                                           w_f + [sizes] + _attention_inits()), feeds),
        ("com.microsoft.Attention (float)", _model([_ms("att", "Attention", ["x", "W", "b", "mi"], ["y"], num_heads=H)],
                                                   mask_feeds, w_f), mask_feeds),
        ("int8 QKV linear (DynamicQuantizeMatMul) + unfused core + clamp",
         _model(int8_lin + split + _unfused_attention(True), feeds, w_i + [sizes] + _attention_inits()), feeds),
        ("com.microsoft.QAttention (int8, per-tensor)", _model(qatt, mask_feeds, qatt_inits), mask_feeds),
    ]


def gelu_family():
    """FFN-up bias + GELU [1,128,1536]: ORT's BiasGelu fusion against the bias kept in the GEMM."""
    feeds = {"x": RNG.standard_normal((B, S, F)).astype(np.float32)}
    b = [_init("b", (RNG.standard_normal(F) * 0.1).astype(np.float32))]
    return "bias + GELU [1,128,1536]", [
        ("Add bias → Gelu (ORT fuses: BiasGelu)", _model([N("Add", ["x", "b"], ["a"]), N("Gelu", ["a"], ["y"])], feeds, b),
         feeds),
        ("Gelu alone (bias inside the GEMM)", _model([N("Gelu", ["x"], ["y"])], feeds), feeds),
    ]


FAMILIES = (gemm_family, layer_norm_family, softmax_family, attention_family, qkv_attention_family, gelu_family)


def _session(model: bytes, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()  # default graph optimizations, like a user's session
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def time_family(variants, threads: int, iters: int, warmup: int) -> list[dict]:
    sessions = [(label, _session(model, threads), feeds) for label, model, feeds in variants]
    for _, sess, feeds in sessions:
        for _ in range(warmup):
            sess.run(None, feeds)
    times = [[] for _ in sessions]
    for _ in range(iters):
        for i, (_, sess, feeds) in enumerate(sessions):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times[i].append((time.perf_counter() - t0) * 1e3)
    base_med, base_min = float(np.median(times[0])), min(times[0])
    return [{"form": label, "median_ms": round(float(np.median(t)), 4), "min_ms": round(min(t), 4),
             "x_median": round(float(np.median(t)) / base_med, 3), "x_min": round(min(t) / base_min, 3)}
            for (label, _, _), t in zip(sessions, times, strict=True)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--out", type=Path, default=REPO / "bench")
    args = p.parse_args(argv)
    device = describe_device()
    doc = {"command": "HF_HUB_OFFLINE=1 .venv/bin/python bench/ort_ops.py " + " ".join(argv or sys.argv[1:]),
           "device": device, "device_line": summary_line(device), "threads": args.threads, "iters": args.iters,
           "families": {}}
    for family in FAMILIES:
        title, variants = family()
        print(f"{title} ...", flush=True)
        doc["families"][title] = time_family(variants, args.threads, args.iters, args.warmup)
    lines = ["# ONNX Runtime CPU kernels on MiniLM's shapes", "", f"Command: `{doc['command'].strip()}`  ",
             f"Device: {doc['device_line']}; onnxruntime {ort.__version__}  ",
             f"Threads: {args.threads}; {args.iters} interleaved runs per form after {args.warmup} warm-up; default "
             "session options. Ratios are to each family's first form (median, and min as the low-noise view).", ""]
    for title, rows in doc["families"].items():
        lines += [f"## {title}", "", markdown_table(
            ("form", "median ms", "min ms", "× first (median)", "× first (min)"),
            [(r["form"], f"{r['median_ms']:.3f}", f"{r['min_ms']:.3f}", f"{r['x_median']:.2f}", f"{r['x_min']:.2f}")
             for r in rows], right=range(1, 5)), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ORT_OPS.md").write_text("\n".join(lines))
    (args.out / "ort_ops.json").write_text(json.dumps(doc, indent=2, default=str))
    print(f"wrote {args.out / 'ORT_OPS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
