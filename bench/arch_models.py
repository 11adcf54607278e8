"""The real-architecture benchmark's models: torchvision CNNs, a small ViT, recurrent and 1-D/U-Net nets.

Random init (no weights are downloaded), with batch-norm statistics re-estimated on random
data so activations have realistic ranges. torchvision's `_C` extension is a CUDA build that
CPU torch cannot load; its model code does not need it, so the two registration modules that
import it are stubbed before `import torchvision` (`import_torchvision`).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# Model kinds: the targets of bench/arch.py apply to "cnn" rows.
CNN, TRANSFORMER, RECURRENT, CONV1D, UNET = "cnn", "transformer", "recurrent", "conv1d", "unet"


def import_torchvision():
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import torchvision

    return torchvision


@dataclass(frozen=True)
class ArchModel:
    name: str
    kind: str
    build: Callable[[], nn.Module]  # random init, float, train mode
    input_shape: tuple[int, ...]  # batch-1 input
    quick: bool = False  # small enough for the --quick smoke run


def reestimate_batch_norm(model: nn.Module, shape: tuple[int, ...], batches: int = 8, batch: int = 8,
                          seed: int = 0) -> nn.Module:
    """Replace BN running statistics by their average over random batches; returns the model in eval."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch, *shape[1:], generator=gen))
    return model.eval()


def _tv(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return getattr(import_torchvision().models, name)(**kwargs)

    return build


def _small_vit() -> nn.Module:
    from_tv = import_torchvision().models.vision_transformer.VisionTransformer
    # ViT-Ti/16 width (192, 3 heads), 6 blocks instead of 12: the same ops, half the lowering time.
    return from_tv(image_size=224, patch_size=16, num_layers=6, num_heads=3, hidden_dim=192, mlp_dim=768)


class SeqClassifier(nn.Module):
    """A keyword-spotting-sized recurrent classifier: 49 frames of 40 features."""

    def __init__(self, cell: str, features: int = 40, hidden: int = 128, classes: int = 12) -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class AudioConv1d(nn.Module):
    """A 1-D CNN over 40 mel bands (conv-bn-relu blocks, pooling, a linear head)."""

    def __init__(self, classes: int = 12) -> None:
        super().__init__()
        layers, ch = [], 40
        for out, stride in ((64, 1), (128, 2), (128, 1), (256, 2)):
            layers += [nn.Conv1d(ch, out, 3, stride=stride, padding=1), nn.BatchNorm1d(out), nn.ReLU()]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(-1))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """A small U-Net: conv encoder, ConvTranspose2d decoder with skip concatenations."""

    def __init__(self, ch: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.enc1, self.enc2, self.enc3 = _block(3, ch), _block(ch, 2 * ch), _block(2 * ch, 4 * ch)
        self.pool = nn.MaxPool2d(2)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * ch, 2 * ch, 2, stride=2), _block(4 * ch, 2 * ch)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * ch, ch, 2, stride=2), _block(2 * ch, ch)
        self.out = nn.Conv2d(ch, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


IMAGE = (1, 3, 224, 224)
MODELS: dict[str, ArchModel] = {m.name: m for m in (
    ArchModel("mobilenet_v2", CNN, _tv("mobilenet_v2"), IMAGE),
    ArchModel("mobilenet_v3_small", CNN, _tv("mobilenet_v3_small"), IMAGE),
    ArchModel("efficientnet_b0", CNN, _tv("efficientnet_b0"), IMAGE),
    ArchModel("shufflenet_v2_x1_0", CNN, _tv("shufflenet_v2_x1_0"), IMAGE),
    ArchModel("squeezenet1_1", CNN, _tv("squeezenet1_1"), IMAGE),
    ArchModel("resnet18", CNN, _tv("resnet18"), IMAGE),
    ArchModel("vit_ti6", TRANSFORMER, _small_vit, IMAGE),
    ArchModel("lstm", RECURRENT, lambda: SeqClassifier("LSTM"), (1, 49, 40)),
    ArchModel("gru", RECURRENT, lambda: SeqClassifier("GRU"), (1, 49, 40)),
    ArchModel("conv1d", CONV1D, AudioConv1d, (1, 40, 98), quick=True),
    ArchModel("unet", UNET, UNet, (1, 3, 128, 128), quick=True),
)}


def build(name: str, seed: int = 0) -> nn.Module:
    """The named model, random init (seeded), BN statistics re-estimated, in eval mode."""
    spec = MODELS[name]
    torch.manual_seed(seed)
    return reestimate_batch_norm(spec.build(), spec.input_shape, seed=seed)
