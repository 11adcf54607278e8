"""Per-op-family annotators, registered explicitly (no import side effects)."""

from pt2e_int8.annotators.conv import annotate_conv
from pt2e_int8.annotators.conv_transpose import annotate_conv_transpose
from pt2e_int8.annotators.elementwise import annotate_elementwise
from pt2e_int8.annotators.embedding import annotate_embedding
from pt2e_int8.annotators.framework import AnnotatorRegistry, OpAnnotator
from pt2e_int8.annotators.linear import annotate_linear
from pt2e_int8.annotators.matmul import annotate_matmul
from pt2e_int8.annotators.shared_qparams import annotate_shared_qparams

ALL_ANNOTATORS: tuple[OpAnnotator, ...] = (
    annotate_linear,
    annotate_conv,
    annotate_conv_transpose,
    annotate_matmul,
    annotate_elementwise,
    annotate_embedding,
    annotate_shared_qparams,
)

__all__ = ["ALL_ANNOTATORS", "AnnotatorRegistry", "OpAnnotator"]
