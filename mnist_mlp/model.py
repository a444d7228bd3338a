"""The HW9 reference network: three Linear-BatchNorm-ReLU-Dropout blocks, then Linear-BatchNorm."""

from __future__ import annotations

import torch
from torch import nn


class MnistMlp(nn.Module):
    """784-200-150-50-10 MLP whose module names and order are those of the HW9 report.

    ``activation`` is registered last (after ``bn4``) because that is where the reference printed
    it; it is shared by the three hidden blocks and never applied to the logits.
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden1: int = 200,
        hidden2: int = 150,
        hidden3: int = 50,
        num_classes: int = 10,
        dropout1: float = 0.5,
        dropout2: float = 0.3,
        dropout3: float = 0.2,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.wih = nn.Linear(in_features, hidden1)
        self.bn1 = nn.BatchNorm1d(hidden1, eps=bn_eps, momentum=bn_momentum)
        self.dropout1 = nn.Dropout(dropout1)
        self.hidden2 = nn.Linear(hidden1, hidden2)
        self.bn2 = nn.BatchNorm1d(hidden2, eps=bn_eps, momentum=bn_momentum)
        self.dropout2 = nn.Dropout(dropout2)
        self.hidden3 = nn.Linear(hidden2, hidden3)
        self.bn3 = nn.BatchNorm1d(hidden3, eps=bn_eps, momentum=bn_momentum)
        self.dropout3 = nn.Dropout(dropout3)
        self.who = nn.Linear(hidden3, num_classes)
        self.bn4 = nn.BatchNorm1d(num_classes, eps=bn_eps, momentum=bn_momentum)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images, flattened here so callers may pass ``N×28×28``."""
        x = x.flatten(1)
        x = self.dropout1(self.activation(self.bn1(self.wih(x))))
        x = self.dropout2(self.activation(self.bn2(self.hidden2(x))))
        x = self.dropout3(self.activation(self.bn3(self.hidden3(x))))
        return self.bn4(self.who(x))
