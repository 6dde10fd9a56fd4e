"""Pre- and post-processing around the tensor core of a torchvision detector (RetinaNet, FCOS, SSD, SSDlite,
Faster R-CNN).

The runtime runs the detector's *tensor core* (``images [1, 3, h, w] -> raw head outputs``; see
``multidnn_sched.runtime.partition_detection``). Here, outside the blocks:

* :func:`tv_detection_preprocess`: RGB frame -> resized to the registry input size (a multiple of 32, so
  torchvision's own padding is a no-op) and normalised with the model's ``transform`` mean / std;
* :class:`TvDetectionPostprocess`: head outputs -> anchors -> the model's own ``postprocess_detections`` ->
  boxes scaled back to the original frame, score-filtered, per-class NMS, top-k -> ``Detections``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.ops import batched_nms

from multidnn_sched.models.detector import Detections, resize_uint8


def tv_detection_preprocess(
    image_rgb_uint8: np.ndarray, input_hw: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> Tensor:
    """RGB ``uint8[H, W, 3]`` -> ``float32[1, 3, h, w]``: resized to ``input_hw``, ``(x / 255 - mean) / std``."""
    image = resize_uint8(image_rgb_uint8, input_hw).float() / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (image - mean_t) / std_t


class TvDetectionPostprocess:
    """Decode a torchvision detector's head outputs for ONE image.

    Args:
        model: the whole torchvision detector (its anchor generator, box coder and ``postprocess_detections``
            are used; the backbone runs once per input size to learn the feature-map sizes).
        input_hw: the network input (height, width) the preprocessing produced, pixels.

    ``__call__(output, score_threshold, nms_iou_threshold, (width, height), max_detections) -> Detections`` in
    original-image pixels, sorted by decreasing score.
    """

    def __init__(self, model: nn.Module, input_hw: tuple[int, int]) -> None:
        self.model = model
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self._grid: list[tuple[int, int]] | None = None
        self._anchors: list[Tensor] | None = None
        self._lock = threading.Lock()

    def _anchor_state(self) -> tuple[list[tuple[int, int]], list[Tensor]]:
        with self._lock:
            if self._grid is None or self._anchors is None:
                param = next(self.model.parameters())
                with torch.inference_mode():
                    images = torch.zeros(1, 3, *self.input_hw, dtype=param.dtype, device=param.device)
                    features = self.model.backbone(images)
                    if isinstance(features, Tensor):
                        features = {"0": features}
                    feature_list = list(features.values())
                    self._grid = [(int(f.shape[-2]), int(f.shape[-1])) for f in feature_list]
                    if not isinstance(self.model, FasterRCNN):
                        image_list = ImageList(images, [self.input_hw])
                        self._anchors = [a.cpu() for a in self.model.anchor_generator(image_list, feature_list)]
                    else:
                        self._anchors = []
            return self._grid, self._anchors

    def raw_detections(self, output: object) -> dict[str, Tensor]:
        """The model's own decoded detections (``boxes`` in network-input pixels, ``scores``, ``labels``)."""
        if isinstance(self.model, FasterRCNN):
            if isinstance(output, list):
                output = output[0]
            if not isinstance(output, Mapping):
                raise ValueError(
                    f"expected the Faster R-CNN head's dict of boxes/scores/labels, got {type(output).__name__}"
                )
            return {k: v.detach().cpu() for k, v in output.items()}
        if not isinstance(output, Mapping):
            raise ValueError(f"expected the detection head's dict of tensors, got {type(output).__name__}")
        head = {k: v.detach().float().cpu() for k, v in output.items()}
        grid, anchors = self._anchor_state()
        batch = next(iter(head.values())).shape[0]
        if batch != 1:
            raise ValueError(f"expected head outputs of ONE image, got batch size {batch}")
        model = self.model  # postprocess_detections uses no parameters: CPU tensors, wherever the model is
        with torch.inference_mode():
            if isinstance(model, (RetinaNet, FCOS)):
                per_level = [h * w for h, w in grid]
                first = next(iter(head.values()))
                a = first.shape[1] // sum(per_level)
                counts = [n * a for n in per_level]
                split_head = {k: list(v.split(counts, dim=1)) for k, v in head.items()}
                split_anchors = [list(anchors[0].split(counts))]
                detections = model.postprocess_detections(split_head, split_anchors, [self.input_hw])
            else:
                detections = model.postprocess_detections(head, anchors, [self.input_hw])
        return detections[0]

    def __call__(
        self,
        output: object,
        score_threshold: float,
        nms_iou_threshold: float,
        image_size: tuple[int, int],
        max_detections: int,
    ) -> Detections:
        raw = self.raw_detections(output)
        return scale_and_filter(
            raw["boxes"],
            raw["scores"],
            raw["labels"],
            score_threshold,
            nms_iou_threshold,
            image_size,
            max_detections,
            self.input_hw,
        )


def scale_and_filter(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    score_threshold: float,
    nms_iou_threshold: float,
    image_size: tuple[int, int],
    max_detections: int,
    input_hw: tuple[int, int],
) -> Detections:
    """Boxes in network-input pixels -> ``Detections`` in the original image (score filter, per-class NMS, top-k).

    Args:
        boxes: ``Tensor[N, 4]`` (x1, y1, x2, y2), network-input pixels.
        scores: ``Tensor[N]``.
        labels: ``Tensor[N]`` class ids.
        image_size: ORIGINAL image (width, height), pixels.
        input_hw: network input (height, width), pixels.
    """
    boxes = boxes.detach().float().cpu().reshape(-1, 4)
    scores = scores.detach().float().cpu().reshape(-1)
    labels = labels.detach().long().cpu().reshape(-1)
    keep = scores >= score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if scores.numel() == 0:
        return Detections.empty()
    image_w, image_h = image_size
    in_h, in_w = input_hw
    scale = torch.tensor([image_w / in_w, image_h / in_h, image_w / in_w, image_h / in_h])
    boxes = boxes * scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image_h)
    order = batched_nms(boxes, scores, labels, nms_iou_threshold)[:max_detections]
    return Detections(
        boxes_xyxy=boxes[order].numpy().astype(np.float32),
        scores=scores[order].numpy().astype(np.float32),
        labels=labels[order].numpy().astype(np.int64),
    )
