"""Session fixtures for the core tests: the digits data set (real data) and a trained MLP."""

import pytest
import torch

from tests.core._helpers import DigitsMLP, train


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits, standardized, split 75/25 with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-3
    return (xtr - mean) / std, ytr, (xte - mean) / std, yte


@pytest.fixture(scope="session")
def digits_mlp(digits):
    """A float MLP trained on digits (a few seconds); tests must not mutate it."""
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits
    return train(DigitsMLP(), xtr, ytr, epochs=8).eval()
