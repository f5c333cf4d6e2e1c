"""Data (scikit-learn's bundled 8x8 digits, no download) and the float model."""
from collections import OrderedDict
from typing import Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["DigitsNet", "load_digits_split", "WEIGHT_LAYERS"]

# Layers with a weight (quantized weight and quantized input), in graph order.
WEIGHT_LAYERS = ("conv1", "conv2", "fc1", "fc2")


def load_digits_split(seed: int = 0, test_fraction: float = 0.3
                      ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``: the 1797 images of
    ``sklearn.datasets.load_digits`` (pixel values 0..16 scaled to [0, 1], shape [N, 1, 8, 8])
    split by ``train_test_split`` (stratified, ``random_state=seed``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    x_tr, x_te, y_tr, y_te = train_test_split(images, digits.target, test_size=test_fraction,
                                              random_state=seed, stratify=digits.target)
    return (torch.from_numpy(np.ascontiguousarray(x_tr)), torch.from_numpy(y_tr).long(),
            torch.from_numpy(np.ascontiguousarray(x_te)), torch.from_numpy(y_te).long())


class DigitsNet(nn.Module):
    """conv(1->w, 3x3) relu conv(w->2w, 3x3) relu maxpool(2) flatten fc(32w->hidden) relu
    fc(hidden->10). A plain ``nn.Sequential`` in ``self.layers`` so the quantized wrapper and
    the ONNX writer can walk it in order."""

    def __init__(self, width: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.width = width
        self.hidden = hidden
        self.layers = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(1, width, 3, padding=1)),
            ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(width, 2 * width, 3, padding=1)),
            ("relu2", nn.ReLU()),
            ("pool", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(2 * width * 16, hidden)),
            ("relu3", nn.ReLU()),
            ("fc2", nn.Linear(hidden, 10)),
        ]))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
