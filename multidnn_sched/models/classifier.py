"""Attribute classifier: torchvision RegNetY-400MF on 96x96 crops of tracked objects -> logits over ATTRIBUTES.

``forward(crops[N, 3, 96, 96]) -> logits[N, num_attributes]``. A different family from the detector and the
embedder (ResNet), so the block partitioner meets RegNet stages too.
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn

CLASSIFIER_INPUT_HW: tuple[int, int] = (96, 96)
"""Crop (height, width), pixels."""


class AttributeClassifier(nn.Module):
    """torchvision ``regnet_y_400mf`` with a ``num_attributes``-way output layer.

    Attributes:
        stem: stride-2 conv stem.
        trunk_output: ``nn.Sequential`` of the four RegNet stages ``block1``..``block4``.
        avgpool: global average pool.
        fc: linear classifier (440 -> num_attributes).
    """

    def __init__(self, num_attributes: int) -> None:
        super().__init__()
        regnet = torchvision.models.regnet_y_400mf(weights=None, num_classes=num_attributes)
        self.stem = regnet.stem
        self.trunk_output = regnet.trunk_output
        self.avgpool = regnet.avgpool
        self.fc = regnet.fc
        self.num_attributes = num_attributes

    def forward(self, crops: Tensor) -> Tensor:
        x = self.avgpool(self.trunk_output(self.stem(crops)))
        return self.fc(x.flatten(1))
