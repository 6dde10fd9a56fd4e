"""The model registry: lookup by name, weights files, torchvision / exported / user models, block equivalence."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from multidnn_sched.exceptions import CheckpointError, ConfigError
from multidnn_sched.models.registry import SOURCES, get_model_spec, load_model
from multidnn_sched.runtime.partition import check_equivalence

SMALL_HW = (128, 128)
"""Small detector inputs keep these tests fast on a 2-core CPU."""

ISSUE_DETECTORS = (
    "torchvision:ssdlite320_mobilenet_v3_large",
    "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
    "torchvision:retinanet_resnet50_fpn_v2",
    "torchvision:fcos_resnet50_fpn",
)


def _frame(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", [*ISSUE_DETECTORS, "default:detector"])
def test_detector_blocks_reproduce_the_whole_model(name: str) -> None:
    torch.manual_seed(0)
    loaded = get_model_spec(name, input_hw=SMALL_HW if name.startswith("torchvision") else None).load()
    if hasattr(loaded.model, "roi_heads"):
        loaded.model.roi_heads.score_thresh = 0.0  # random weights: keep boxes so the comparison has tensors
    partitioned = loaded.partition()
    assert len(partitioned.blocks) >= 3
    assert partitioned.block_names[-1] == "head"
    x = loaded.preprocess(_frame())
    assert tuple(x.shape) == (1, 3, *loaded.spec.input_hw)
    diff = check_equivalence(loaded.model, partitioned, x, atol=1e-4)
    assert diff <= 1e-4
    with torch.inference_mode():
        out = partitioned(x)
    detections = loaded.postprocess(out, 0.0, 0.5, (160, 120), 10)
    assert len(detections) <= 10
    if len(detections):
        assert detections.boxes_xyxy[:, 2].max() <= 160 and detections.boxes_xyxy[:, 3].max() <= 120
        assert all(0 <= label < len(loaded.labels) for label in detections.labels)


def test_ssdlite_labels_are_coco_and_detections_are_found() -> None:
    loaded = load_model("torchvision:ssdlite320_mobilenet_v3_large", input_hw=SMALL_HW)
    assert len(loaded.labels) == 91 and loaded.labels[1] == "person"
    with torch.inference_mode():
        out = loaded.core(loaded.preprocess(_frame()))
    assert len(loaded.postprocess(out, 0.0, 0.5, (160, 120), 5)) == 5


def test_torchvision_classifier_spec_and_blocks() -> None:
    spec = get_model_spec("torchvision:efficientnet_b0", input_hw=(64, 64))
    assert spec.task == "classification" and len(spec.labels) == 1000 and spec.metric is None
    loaded = spec.load()
    crops = loaded.crops(_frame(), np.array([[0, 0, 50, 60], [10, 10, 100, 100]], np.float32))
    assert tuple(crops.shape) == (2, 3, 64, 64)
    partitioned = loaded.partition()
    assert partitioned.family == "efficientnet"
    assert check_equivalence(loaded.model, partitioned, crops, atol=1e-4) <= 1e-4


def test_default_models_by_bare_or_prefixed_name() -> None:
    assert get_model_spec("classifier").name == "default:classifier"
    spec = get_model_spec("default:detector")
    assert spec.task == "detection" and spec.metric == "map50" and "person" in spec.labels or spec.labels


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("resnet50", "source in"),
        ("hub:resnet50", "source in"),
        ("torchvision:not_a_model", "expected a torchvision classification model"),
        ("default:segmenter", "default:detector"),
        ("exported:model.onnx", "ending in .pt2"),
        ("module:no_colon_here", "module:<package.module>:<factory>"),
        ("module:surely_not_a_package_xyz:build", "cannot import"),
    ],
)
def test_bad_names_say_what_was_expected(name: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="expected") as info:
        get_model_spec(name)
    assert fragment in str(info.value)
    if "source in" in fragment:
        assert all(source in str(info.value) for source in SOURCES)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        get_model_spec("exported:" + str(tmp_path / "missing.pt2"))
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        get_model_spec("torchvision:resnet18", weights=tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="labels file not found"):
        get_model_spec("torchvision:resnet18", labels_file=tmp_path / "labels.txt")


def test_detector_input_must_be_a_multiple_of_32() -> None:
    with pytest.raises(ConfigError, match="multiples of 32, got 100x128"):
        get_model_spec("torchvision:ssdlite320_mobilenet_v3_large", input_hw=(100, 128))


def test_weights_files_load_and_mismatches_name_tensor_and_shapes(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = get_model_spec("torchvision:mobilenet_v3_small").load().model
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    safetensors_path = tmp_path / "weights.safetensors"
    save_file(state, str(safetensors_path))
    pt_path = tmp_path / "weights.pt"
    torch.save({"state_dict": state, "epoch": 3}, pt_path)
    for path in (safetensors_path, pt_path):
        loaded = load_model("torchvision:mobilenet_v3_small", weights=path).model
        for key, tensor in state.items():
            assert torch.equal(loaded.state_dict()[key], tensor), (path, key)
    bad = dict(state)
    bad["classifier.3.weight"] = torch.zeros(10, 1024)
    bad_path = tmp_path / "bad.safetensors"
    save_file(bad, str(bad_path))
    with pytest.raises(CheckpointError) as info:
        load_model("torchvision:mobilenet_v3_small", weights=bad_path)
    message = str(info.value)
    assert "'classifier.3.weight'" in message and "[1000, 1024]" in message and "[10, 1024]" in message
    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    with pytest.raises(CheckpointError, match="expected a weights file ending in .safetensors"):
        load_model("torchvision:mobilenet_v3_small", weights=text)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a zip")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_model("torchvision:mobilenet_v3_small", weights=garbage)


class TinyDetector(nn.Module):
    """(heatmap_logits[1, 2, h/8, w/8], box_ltrb[1, 4, h/8, w/8]): the project's detector output convention."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1)
        )
        self.heat = nn.Conv2d(16, 2, 1)
        self.box = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.body(x))
        return self.heat(f), torch.relu(self.box(f)) * 8.0


def test_exported_detector_loads_partitions_and_runs(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = TinyDetector().eval()
    path = tmp_path / "tiny_detector.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 64, 96),)), str(path))
    labels = tmp_path / "labels.txt"
    labels.write_text("# my classes\nrobot\nbox\n")
    loaded = load_model(f"exported:{path}", task="detection", labels_file=labels)
    assert loaded.spec.input_hw == (64, 96) and loaded.labels == ("robot", "box")
    x = loaded.preprocess(_frame())
    assert tuple(x.shape) == (1, 3, 64, 96)
    partitioned = loaded.partition()
    assert partitioned.family in ("fx", "composed") and len(partitioned.blocks) >= 2
    assert check_equivalence(loaded.model, partitioned, x, atol=1e-5) <= 1e-5
    with torch.inference_mode():
        expected = model(x)
        got = partitioned(x)
    assert torch.allclose(expected[0], got[0], atol=1e-5)
    detections = loaded.postprocess(got, 0.0, 0.5, (160, 120), 7)
    assert 0 < len(detections) <= 7 and set(detections.labels.tolist()) <= {0, 1}


def test_user_module_classifier_with_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "my_robot_nets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build_classifier() -> nn.Module:
                return nn.Sequential(
                    nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 3),
                )

            def not_a_module():
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(3)
    sys.modules.pop("my_robot_nets.nets", None)
    reference = get_model_spec("module:my_robot_nets.nets:build_classifier").load().model
    weights = tmp_path / "classifier.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    labels = tmp_path / "labels.txt"
    labels.write_text("ok\nworn\nbroken\n")
    loaded = load_model(
        "module:my_robot_nets.nets:build_classifier", weights=weights, labels_file=labels, input_hw=(32, 32)
    )
    crops = loaded.crops(_frame(), np.array([[0, 0, 40, 40], [20, 20, 90, 70], [5, 5, 150, 110]], np.float32))
    partitioned = loaded.partition()
    with torch.inference_mode():
        logits = partitioned(crops)
        expected = reference(crops)
    assert tuple(logits.shape) == (3, 3)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert loaded.labels == ("ok", "worn", "broken")
    with pytest.raises(ConfigError, match="expected not_a_module\\(\\) to return an nn.Module, got int"):
        load_model("module:my_robot_nets.nets:not_a_module")
    with pytest.raises(ConfigError, match="is a classification model, expected task 'detection'"):
        get_model_spec("torchvision:resnet18", task="detection")
