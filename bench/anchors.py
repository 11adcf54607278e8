"""The anchors: what a user would pick instead of pt2e-int8, each done the way its docs show.

    stock ExecuTorch  torch.export (batch 1) → [XNNPACKQuantizer: prepare_pt2e → calibrate →
                      convert_pt2e → torch.export] → to_edge_transform_and_lower(XnnpackPartitioner)
                      → to_executorch
    ONNX Runtime      torch.onnx.export(dynamo=True) of the float model, then
                      onnxruntime.quantization.quantize_static (QDQ, per-channel, a
                      CalibrationDataReader on the calibration inputs) or quantize_dynamic

Nothing here comes from pt2e_int8 or backends/: the anchors must not inherit our fixes.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _write_pte(exported, path: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    path.write_bytes(edge.to_executorch().buffer)


def stock_float_pte(model: torch.nn.Module, example: tuple, path: Path, stage) -> None:
    with stage("export"):
        ep = torch.export.export(model, example)
    with stage("lower"):
        _write_pte(ep, path)


def stock_quantizer(*, dynamic: bool, transform: bool = True):
    """ExecuTorch's XNNPACKQuantizer, symmetric per-channel; `transform=False` skips its
    `transform_for_annotation` (scalars → tensor attributes), which breaks BERT's integer
    attention-mask arithmetic ("tensors used as indices must be long, ...")."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    class _NoTransform(XNNPACKQuantizer):
        def transform_for_annotation(self, model):
            return model

    cls = XNNPACKQuantizer if transform else _NoTransform
    return cls().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))


def stock_int8_pte(model: torch.nn.Module, example: tuple, calibration: list[tuple], path: Path, stage, *,
                   dynamic: bool, transform: bool = True) -> None:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with stage("quantize"):
        gm = torch.export.export(model, example).module()
        prepared = prepare_pt2e(gm, stock_quantizer(dynamic=dynamic, transform=transform))
        with torch.no_grad():
            for batch in calibration if not dynamic else [example]:
                prepared(*batch)
        converted = convert_pt2e(prepared)
    with stage("lower"):
        _write_pte(torch.export.export(converted, example), path)


def float_onnx(model: torch.nn.Module, example: tuple, path: Path, stage, input_names: list[str]) -> None:
    with stage("export"):
        torch.onnx.export(model, example, str(path), dynamo=True, input_names=input_names,
                          output_names=["output"], verbose=False)


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over our calibration inputs."""

    def __init__(self, names: list[str], batches: list[tuple]) -> None:
        self._feeds = iter([{n: t.numpy() for n, t in zip(names, b, strict=True)} for b in batches])

    def get_next(self):
        return next(self._feeds, None)


def _preprocess(src: Path, dst: Path, notes: list[str]) -> Path:
    """ORT's recommended `quant_pre_process` (shape inference + graph optimization); the raw file if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception as e:  # noqa: BLE001  (an anchor that cannot preprocess still quantizes)
        notes.append(f"quant_pre_process failed ({type(e).__name__}: {str(e)[:120]}); quantized the raw export")
        return src
    return dst


# ONNX Runtime's SmoothQuant option runs Intel Neural Compressor 2.x's ONNX SmoothQuant (INC 3.x dropped
# it). INC 2.6 pins numpy<2 and pulls TensorFlow-era extras, so it is installed without its dependencies:
INC_INSTALL = ("pip install --no-deps neural-compressor==2.6 schema==0.7.8 prettytable==3.18.0 psutil==7.2.2 "
               "opencv-python-headless==5.0.0.93 pycocotools==2.0.11 six==1.17.0")


def ort_static(float_path: Path, path: Path, calibration: list[tuple], stage, notes: list[str], *,
               op_types: list[str] | None = None, smooth_quant_alpha: float | None = None) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    extra = {}
    if smooth_quant_alpha is not None:
        try:
            import neural_compressor.adaptor.ox_utils.smooth_quant  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"ORT's SmoothQuant option needs Intel Neural Compressor 2.x: {INC_INSTALL}") from e
        extra = {"SmoothQuant": True, "SmoothQuantAlpha": smooth_quant_alpha, "SmoothQuantFolding": True}

    with stage("preprocess"):
        src = _preprocess(float_path, path.with_suffix(".pre.onnx"), notes)
    names = [i.name for i in onnx.load(str(src), load_external_data=False).graph.input]

    class Reader(_Reader, CalibrationDataReader):
        pass

    with stage("quantize"):
        quantize_static(str(src), str(path), Reader(names, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, op_types_to_quantize=op_types, extra_options=extra)
    notes.append("QDQ, per-channel, " + (f"only {'/'.join(op_types)}" if op_types else "all supported ops")
                 + (f", SmoothQuant alpha {smooth_quant_alpha} (INC 2.6)" if extra else ""))


def ort_dynamic(float_path: Path, path: Path, stage, notes: list[str], *, per_channel: bool,
                preprocess: bool = True) -> None:
    from onnxruntime.quantization import quantize_dynamic

    src = float_path
    if preprocess:
        with stage("preprocess"):
            src = _preprocess(float_path, path.with_suffix(".pre.onnx"), notes)
    with stage("quantize"):
        quantize_dynamic(str(src), str(path), per_channel=per_channel)
    notes.append("per-channel" if per_channel else "per-tensor (the default)")


def ort_transformer_optimized(float_path: Path, path: Path, stage, notes: list[str], *, num_heads: int,
                              hidden_size: int) -> None:
    """ONNX Runtime's transformer optimizer on the float file (fused Attention, SkipLayerNormalization, ...):
    the float baseline a user tuning for ORT would run, and the fair anchor for fused int8 graphs."""
    from onnxruntime.transformers import optimizer

    # opt_level=0: the Python fusions only; with ORT's own graph optimizations on top, the saved file
    # of a torch.onnx dynamo export fails to load ("Attempt to replace the existing tensor").
    with stage("optimize"):
        model = optimizer.optimize_model(str(float_path), model_type="bert", num_heads=num_heads,
                                         hidden_size=hidden_size, opt_level=0)
        model.save_model_to_file(str(path))
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    notes.append("fused: " + (", ".join(f"{k} {v}" for k, v in fused.items()) or "nothing"))
