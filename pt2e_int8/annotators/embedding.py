"""Embedding: weight-only int8 table (one scale per row); indices stay integer, output float."""

import torch
from torch.fx import Node
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

from pt2e_int8.annotators.framework import Annotation, Rejected, is_param, op_annotator
from pt2e_int8.config import QuantConfig, embedding_weight_spec

aten = torch.ops.aten


@op_annotator(name="embedding", targets=(aten.embedding.default,), priority=20)
def annotate_embedding(node: Node, cfg: QuantConfig) -> Annotation | Rejected:
    if cfg.mode != "weight_only":
        return Rejected(
            "embeddings are quantized weight-only: "
            "set_module_type(nn.Embedding, QuantConfig.weight_only())"
        )
    table = node.args[0]
    if not is_param(table):
        return Rejected("embedding table is not a constant parameter")
    ann = QuantizationAnnotation(input_qspec_map={table: embedding_weight_spec(cfg)})
    return Annotation({node: ann}, (node, table))
