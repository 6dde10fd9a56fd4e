"""Default model zoo: constructors, shipped weights, and the per-frame perception pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from multidnn_sched.models.checkpoints import WEIGHTS_DIR, load_checkpoint
from multidnn_sched.models.classifier import AttributeClassifier
from multidnn_sched.models.detector import Detector
from multidnn_sched.models.embedding import Embedder
from multidnn_sched.scenes.generator import ATTRIBUTES, CLASSES

NUM_CLASSES: int = len(CLASSES)
NUM_ATTRIBUTES: int = len(ATTRIBUTES)


def build_detector() -> Detector:
    """ResNet-18 + FPN + anchor-free head over ``CLASSES``, random init."""
    return Detector(NUM_CLASSES)


def build_embedder() -> Embedder:
    """ResNet-18 (to layer3) appearance embedding network, 128-d, random init."""
    return Embedder()


def build_classifier() -> AttributeClassifier:
    """RegNetY-400MF attribute classifier over ``ATTRIBUTES``, random init."""
    return AttributeClassifier(NUM_ATTRIBUTES)


@dataclass
class DefaultModels:
    """The three default networks, in eval mode on one device."""

    detector: Detector
    embedder: Embedder
    classifier: AttributeClassifier

    def as_dict(self) -> dict[str, nn.Module]:
        return {"detector": self.detector, "embedder": self.embedder, "classifier": self.classifier}


def load_default_models(device: str | torch.device = "cpu", weights_dir: Path = WEIGHTS_DIR) -> DefaultModels:
    """Build the three networks and load the shipped (sha256-verified) weights.

    Args:
        device: torch device for the models.
        weights_dir: directory with ``manifest.json`` and the safetensors files.

    Raises:
        CheckpointError: a file is missing, fails its sha256 check, or has the wrong tensors / shapes.
    """
    models = DefaultModels(build_detector(), build_embedder(), build_classifier())
    for name, model in models.as_dict().items():
        load_checkpoint(model, name, weights_dir)
        model.to(device).eval()
    return models
