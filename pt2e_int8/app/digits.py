"""The demo's data and model: scikit-learn's digits (ships with the install) and a small MLP.

8x8 grey digits, 1,797 samples: big enough that int8 loses measurable accuracy when done
wrong, small enough to train in seconds on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

SEED = 0
BATCH = 64


@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_split(test_fraction: float = 0.2) -> Split:
    """Pixels scaled to [0, 1], a stratified train/test split with a fixed seed."""
    from pt2e_int8.app.extras import require

    load_digits = require("sklearn.datasets", "demo").load_digits
    train_test_split = require("sklearn.model_selection", "demo").train_test_split

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=SEED, stratify=y)
    return Split(x_tr, y_tr, x_te, y_te)


class DigitsMLP(nn.Module):
    """64 → 128 → 64 → 10 with ReLU and dropout: three Linear layers for the quantizer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 64)
        self.head = nn.Linear(64, 10)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.fc1(x)))
        x = torch.relu(self.fc2(x))
        return self.head(x)


class DigitsCNN(nn.Module):
    """The digits as 1x8x8 images: two conv-bn-relu blocks, max-pool, a linear head.

    `width` scales the channels (8/16 for fast tests, 16/32 for the example and bench).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width)
        self.head = nn.Linear(2 * width * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x.reshape(-1, 1, 8, 8))))
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.head(torch.flatten(x, 1))


def batches(x: torch.Tensor, y: torch.Tensor, size: int, gen: torch.Generator):
    order = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), size):
        idx = order[i:i + size]
        yield x[idx], y[idx]


def train(model: nn.Module, split: Split, epochs: int, lr: float, *, on_step=None) -> nn.Module:
    """Adam + cross-entropy; `on_step` runs after each optimizer step (a QATSchedule's .step)."""
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for xb, yb in batches(split.x_train, split.y_train, BATCH, gen):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            if on_step is not None:
                on_step()
    model.eval()
    return model


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=-1) == labels).float().mean().item()
