"""Registry models through the ROS container: params file -> replay, the `device` parameter, model errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
import torch
import yaml
from rclpy.context import Context
from rclpy.parameter import Parameter

from multidnn_sched.evaluation.replay import load_bag, parse_options, replay_mode
from multidnn_sched.exceptions import ConfigError
from multidnn_sched.ros.container import PerceptionContainer
from multidnn_sched.ros.launcher import run
from multidnn_sched.ros.model_setup import read_model_choice, resolve_device
from multidnn_sched.ros.params import CONTAINER_PARAMS, DETECTOR_PARAMS, specs_by_name, validate
from multidnn_sched.scenes.bag import write_scene_bag
from multidnn_sched.scenes.generator import SceneConfig

needs_cuda = pytest.mark.needs_cuda


@pytest.fixture
def ros_context() -> Iterator[Context]:
    context = Context()
    rclpy.init(context=context, domain_id=110 + os.getpid() % 40)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def tiny_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "tiny"
    config = SceneConfig(width=320, height=240, min_size_px=40.0, max_size_px=70.0, min_objects=2, max_objects=3)
    write_scene_bag(path, config=config, seed=7, n_frames=6, progress=False)
    return path


def _params_file(path: Path, device: str = "cpu") -> Path:
    params = {
        "perception_container": {"ros__parameters": {"device": device}},
        "detector": {
            "ros__parameters": {
                "model": "torchvision:ssdlite320_mobilenet_v3_large",  # random weights: boxes, no meaning
                "input_width": 160,
                "input_height": 128,
                "score_threshold": 0.0,
                "max_detections": 5,
            }
        },
        "tracker": {"ros__parameters": {"min_hits": 1}},
        "classifier": {
            "ros__parameters": {"model": "torchvision:efficientnet_b0", "input_width": 64, "input_height": 64}
        },
    }
    path.write_text(yaml.safe_dump(params))
    return path


def test_replay_with_params_file_runs_torchvision_detector_and_classifier(tiny_bag: Path, tmp_path: Path) -> None:
    # Random weights are drawn from torch's global generator: seed it, or whether the random detector's boxes
    # ever become tracks (and so classifications) changes from run to run.
    torch.manual_seed(0)
    params = _params_file(tmp_path / "params.yaml")
    options = parse_options(
        [str(tiny_bag), "--mode", "blocks", "--params-file", str(params), "--rate", "3", "--no-progress"]
    )
    assert options.params_file == params
    bag = load_bag(options.bag, options.image_topic, options.gt_topic)
    run_ = replay_mode("blocks", bag, options, None)
    detections = run_.outputs["detections"]
    assert len(detections) >= 4
    assert all(len(o.scores) > 0 for o in detections)
    from torchvision.models import get_model_weights

    coco = set(get_model_weights("ssdlite320_mobilenet_v3_large").DEFAULT.meta["categories"])
    assert {c for o in detections for c in o.class_ids} <= coco  # names from the model's labels
    imagenet = set(get_model_weights("efficientnet_b0").DEFAULT.meta["categories"])
    attributes = [a for o in run_.outputs["classified"] for a in o.attributes if a]
    assert attributes, "the classifier published no classification"
    assert set(attributes) <= imagenet


def test_parse_options_rejects_a_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--params-file"):
        parse_options(["bag", "--params-file", str(tmp_path / "nope.yaml")])


def test_device_parameter_validation() -> None:
    spec = specs_by_name(CONTAINER_PARAMS)["device"]
    assert validate(spec, "cpu") is None and validate(spec, "cuda:1") is None
    assert "expected cpu, cuda or cuda:N, got 'gpu'" in (validate(spec, "gpu") or "")
    model = specs_by_name(DETECTOR_PARAMS)["model"]
    assert validate(model, "torchvision:resnet50") is None
    assert "expected a registry name" in (validate(model, "yolov8n.pt") or "")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_gpu_is_a_start_up_error(monkeypatch: pytest.MonkeyPatch, ros_context: Context) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="'cuda' requested but no CUDA GPU is usable"):
        resolve_device("cuda")
    overrides = {"perception_container": [Parameter("device", value="cuda"), Parameter("nodes", value="detector")]}
    with pytest.raises(ConfigError, match="start-up parameters rejected: device: 'cuda' requested"):
        PerceptionContainer(context=ros_context, parameter_overrides=overrides)


def test_container_main_exits_2_for_cuda_without_gpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = run(["perception_container", "--ros-args", "-p", "device:=cuda:0"], node_names=["detector"])
    assert code == 2
    assert "no CUDA GPU is usable" in capsys.readouterr().err


def test_node_model_parameters_are_read_before_the_runtime(ros_context: Context) -> None:
    overrides = [Parameter("model", value="torchvision:resnet18"), Parameter("input_width", value=64)]
    with pytest.raises(ConfigError, match="input_width and input_height both set"):
        read_model_choice("classifier", ros_context, overrides)
    choice = read_model_choice(
        "classifier", ros_context, [*overrides, Parameter("input_height", value=48)]
    )
    assert choice.model == "torchvision:resnet18" and choice.input_hw == (48, 64) and not choice.is_default


def test_detector_node_refuses_a_classifier_model(ros_context: Context) -> None:
    overrides = {
        "perception_container": [Parameter("nodes", value="detector")],
        "detector": [Parameter("model", value="torchvision:resnet18")],
    }
    with pytest.raises(ConfigError, match="expected a detection model, got 'torchvision:resnet18'"):
        PerceptionContainer(context=ros_context, parameter_overrides=overrides)


@needs_cuda
def test_container_runs_registry_models_on_cuda(tiny_bag: Path, tmp_path: Path) -> None:
    params = _params_file(tmp_path / "params.yaml", device="cuda")
    options = parse_options([str(tiny_bag), "--mode", "blocks", "--params-file", str(params), "--no-progress"])
    bag = load_bag(options.bag, options.image_topic, options.gt_topic)
    run_ = replay_mode("blocks", bag, options, None)
    assert len(run_.outputs["detections"]) >= 4
    assert all(len(o.scores) > 0 for o in run_.outputs["detections"])


def test_exported_detector_and_module_classifier_run_in_the_container(
    tiny_bag: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import textwrap

    from torch import nn

    class TinyDetector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 4, 1))
            self.heat = nn.Conv2d(8, 2, 1)
            self.box = nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = torch.relu(self.body(x))
            return self.heat(f) + 3.0, torch.relu(self.box(f)) * 8.0 + 8.0

    torch.manual_seed(4)
    exported = tmp_path / "det.pt2"
    torch.export.save(torch.export.export(TinyDetector().eval(), (torch.zeros(1, 3, 64, 96),)), str(exported))
    (tmp_path / "det_labels.txt").write_text("robot\npallet\n")
    package = tmp_path / "user_nets_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent("""
        from torch import nn

        def build() -> nn.Module:
            return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                                 nn.Linear(8, 3))
    """))
    (tmp_path / "cls_labels.txt").write_text("ok\nworn\nbroken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "detector": {"ros__parameters": {
            "model": f"exported:{exported}", "labels_file": str(tmp_path / "det_labels.txt"),
            "score_threshold": 0.0, "max_detections": 4}},
        "tracker": {"ros__parameters": {"min_hits": 1}},
        "classifier": {"ros__parameters": {"model": "module:user_nets_pkg.nets:build", "input_width": 32,
                                           "input_height": 32, "labels_file": str(tmp_path / "cls_labels.txt")}},
    }))
    options = parse_options([str(tiny_bag), "--mode", "baseline", "--params-file", str(params), "--rate", "3",
                             "--no-progress"])
    run_ = replay_mode("baseline", load_bag(options.bag, options.image_topic, options.gt_topic), options, None)
    detections = run_.outputs["detections"]
    assert len(detections) >= 4 and all(len(o.scores) > 0 for o in detections)
    assert {c for o in detections for c in o.class_ids} <= {"robot", "pallet"}
    attributes = [a for o in run_.outputs["classified"] for a in o.attributes if a]
    assert attributes and set(attributes) <= {"ok", "worn", "broken"}


def test_the_container_serves_its_models_with_onednn_pointwise_kernels() -> None:
    from multidnn_sched.ros.model_setup import ModelChoice, load_models
    from multidnn_sched.runtime.kernels import OneDnnPointwiseConv2d

    loaded = load_models({"classifier": ModelChoice("classifier", "default:classifier", "", "", None)},
                         torch.device("cpu"))
    converted = [m for m in loaded["classifier"].model.modules() if isinstance(m, OneDnnPointwiseConv2d)]
    assert converted and all(m.kernel_size == (1, 1) and m.stride == (1, 1) for m in converted)
