"""Appearance embedding network for the tracker: ResNet-18 trunk on 64x64 crops -> L2-normalised [N, 128].

``forward(crops[N, 3, 64, 64]) -> embeddings[N, 128]`` (unit length). Training uses a cosine classifier over
appearance identities (see ``multidnn_sched.models.train``); that classifier is not part of this module.
"""

from __future__ import annotations

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

EMBEDDER_INPUT_HW: tuple[int, int] = (64, 64)
"""Crop (height, width), pixels."""

EMBEDDING_DIM: int = 128


class Embedder(nn.Module):
    """ResNet-18 stem + layer1..layer3 (torchvision), global average pool, linear projection, L2 norm.

    Attributes:
        stem, layer1, layer2, layer3: torchvision ResNet-18 parts.
        projection: pool + flatten + linear to ``embedding_dim``.
    """

    def __init__(self, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        resnet = torchvision.models.resnet18(weights=None)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.projection = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, embedding_dim))
        self.embedding_dim = embedding_dim

    def forward(self, crops: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(crops))))
        return F.normalize(self.projection(x), dim=1)
