"""Tests of multidnn_sched.runtime.partition: blocks in order == whole model, functional block counts."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterator

import onnx
import pytest
import torch
import torchvision.models as tvm
from torch import Tensor, nn
from torchvision.models import detection as tvd

from multidnn_sched.exceptions import PartitionError
from multidnn_sched.models import zoo
from multidnn_sched.runtime.block import Block, PartitionedModel
from multidnn_sched.runtime.partition import check_equivalence, partition_model

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _assert_functional(pm: PartitionedModel, model: nn.Module) -> None:
    """3..12 blocks, unique names, plain modules that hold no reference to the whole model."""
    assert 3 <= len(pm.blocks) <= 12, pm.block_names
    assert len(set(pm.block_names)) == len(pm.block_names)
    for block in pm.blocks:
        assert isinstance(block.module, nn.Module)
        assert all(m is not model for m in block.module.modules()), f"block {block.name} holds the whole model"


CLASSIFICATION: list[tuple[str, Callable[[], nn.Module], int, str, list[str] | None]] = [
    ("resnet18", tvm.resnet18, 64, "resnet", ["stem", "layer1", "layer2", "layer3", "layer4", "head"]),
    ("resnext50_32x4d", tvm.resnext50_32x4d, 64, "resnet", None),
    ("wide_resnet50_2", tvm.wide_resnet50_2, 64, "resnet", None),
    ("vgg11", tvm.vgg11, 64, "vgg", ["stage1", "stage2", "stage3", "stage4", "stage5", "head"]),
    ("mobilenet_v2", tvm.mobilenet_v2, 64, "mobilenet_v2", ["stem", "stage1", "stage2", "stage3", "stage4", "head"]),
    ("mobilenet_v3_small", tvm.mobilenet_v3_small, 64, "mobilenet_v3", None),
    ("mobilenet_v3_large", tvm.mobilenet_v3_large, 64, "mobilenet_v3", None),
    ("regnet_y_400mf", tvm.regnet_y_400mf, 64, "regnet", ["stem", "block1", "block2", "block3", "block4", "head"]),
    ("efficientnet_b0", tvm.efficientnet_b0, 64, "efficientnet", None),
    ("efficientnet_v2_s", tvm.efficientnet_v2_s, 64, "efficientnet", None),
    (
        "inception_v3",
        lambda: tvm.inception_v3(weights=None, aux_logits=False, init_weights=False),
        75,
        "inception_v3",
        ["stem", "mixed5", "mixed6", "mixed7", "head"],
    ),
]


@pytest.mark.parametrize(
    ("name", "build", "size", "family", "names"), CLASSIFICATION, ids=[c[0] for c in CLASSIFICATION]
)
def test_classification_blocks_equal_whole_model(
    name: str, build: Callable[[], nn.Module], size: int, family: str, names: list[str] | None
) -> None:
    model = build().eval()
    pm = partition_model(model, name)
    assert pm.name == name and pm.family == family
    if names is not None:
        assert pm.block_names == names
    _assert_functional(pm, model)
    assert check_equivalence(model, pm, torch.randn(2, 3, size, size), atol=ATOL) <= ATOL


def test_mobilenet_blocks_group_by_output_stride() -> None:
    model = tvm.mobilenet_v3_large().eval()
    pm = partition_model(model)
    carry: Tensor = torch.randn(1, 3, 64, 64)
    widths = []
    with torch.inference_mode():
        for block in pm.blocks[:-1]:
            carry = block(carry)
            widths.append(carry.shape[-1])
    assert widths == [32, 16, 8, 4, 2]  # strides 2, 4, 8, 16, 32
    assert pm.block_names[0] == "stem" and pm.block_names[-1] == "head"


def test_inception_transform_input_is_part_of_the_stem() -> None:
    model = tvm.inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True).eval()
    pm = partition_model(model)
    assert check_equivalence(model, pm, torch.randn(1, 3, 75, 75)) <= ATOL


DETECTION: list[tuple[str, Callable[[], nn.Module], int, str, list[str]]] = [
    (
        "retinanet",
        lambda: tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None),
        96,
        "retinanet",
        ["stem", "layer1", "layer2", "layer3", "layer4", "fpn", "head"],
    ),
    (
        "fcos",
        lambda: tvd.fcos_resnet50_fpn(weights=None, weights_backbone=None),
        96,
        "fcos",
        ["stem", "layer1", "layer2", "layer3", "layer4", "fpn", "head"],
    ),
    (
        "ssdlite",
        lambda: tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None),
        320,
        "ssdlite",
        ["stem", "stage1", "stage2", "stage3", "stage4", "extra", "head"],
    ),
]


@pytest.mark.parametrize(("name", "build", "size", "family", "names"), DETECTION, ids=[c[0] for c in DETECTION])
def test_torchvision_detection_core_blocks_equal_core(
    name: str, build: Callable[[], nn.Module], size: int, family: str, names: list[str]
) -> None:
    model = build().eval()
    pm = partition_model(model, name)
    assert pm.family == family and pm.block_names == names
    _assert_functional(pm, model)
    images = torch.randn(1, 3, size, size)  # as after model.transform: normalised, batched
    assert check_equivalence(model, pm, images, atol=ATOL) <= ATOL
    with torch.inference_mode():
        out = pm(images)
    assert isinstance(out, dict) and "cls_logits" in out and "bbox_regression" in out


def test_retinanet_skip_tensors_reach_the_fpn() -> None:
    model = tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None).eval()
    pm = partition_model(model)
    carry = torch.randn(1, 3, 64, 64)
    carries = {}
    with torch.inference_mode():
        for block in pm.blocks:
            carry = block(carry)
            carries[block.name] = carry
    assert isinstance(carries["layer2"], Tensor)  # C3 alone
    assert [tuple(t.shape[1:]) for t in carries["layer4"]] == [(512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    assert len(carries["fpn"]) == 5  # P3..P7


def test_project_detector_embedder_classifier() -> None:
    cases = [
        (zoo.build_detector(), (1, 3, 64, 96), ["stem", "layer1", "layer2", "layer3", "layer4", "neck", "head"]),
        (zoo.build_embedder(), (2, 3, 64, 64), ["stem", "layer1", "layer2", "layer3", "projection"]),
        (zoo.build_classifier(), (2, 3, 64, 64), ["stem", "block1", "block2", "block3", "block4", "avgpool+fc"]),
    ]
    for model, shape, names in cases:
        model.eval()
        pm = partition_model(model)
        assert pm.family == "composed" and pm.block_names == names
        _assert_functional(pm, model)
        assert check_equivalence(model, pm, torch.randn(*shape), atol=ATOL) <= ATOL


def test_detector_backbone_carries_multiscale_features_as_a_tuple() -> None:
    model = zoo.build_detector().eval()
    pm = partition_model(model, "detector")
    with torch.inference_mode():
        carry = torch.randn(1, 3, 64, 64)
        for name in ["stem", "layer1", "layer2", "layer3", "layer4"]:
            carry = pm.block(name)(carry)
    assert isinstance(carry, tuple) and [t.shape[1] for t in carry] == [128, 256, 512]


class _TinyNet(nn.Module):
    """A net with a residual add and a concat: not a chain of children, so the FX fallback cuts it."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(8 if i else 3, 8, 3, padding=1) for i in range(8))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.convs[0](x))
        skip = x
        for conv in self.convs[1:]:
            x = torch.relu(conv(x)) + x
        x = torch.cat([x, skip], dim=1).mean(dim=(2, 3))
        return self.fc(x)


@pytest.mark.parametrize(
    ("build", "family"),
    [(_TinyNet, None), (tvm.squeezenet1_0, "fx"), (tvm.shufflenet_v2_x0_5, "fx")],
    ids=["tiny", "squeezenet1_0", "shufflenet_v2_x0_5"],
)
def test_fx_fallback_blocks_equal_whole_model(build: Callable[[], nn.Module], family: str | None) -> None:
    model = build().eval()
    pm = partition_model(model, "net", family=family)
    assert pm.family == "fx"
    assert pm.block_names == [f"part{i + 1}" for i in range(len(pm.blocks))]
    _assert_functional(pm, model)
    assert check_equivalence(model, pm, torch.randn(1, 3, 48, 48), atol=ATOL) <= ATOL


def test_fx_fallback_respects_num_blocks() -> None:
    model = tvm.squeezenet1_0().eval()
    pm = partition_model(model, family="fx", num_blocks=6)
    assert len(pm.blocks) == 6
    assert check_equivalence(model, pm, torch.randn(1, 3, 48, 48)) <= ATOL


def test_unrecognised_torchvision_models_cut_between_children() -> None:
    model = tvm.shufflenet_v2_x0_5().eval()
    pm = partition_model(model)
    assert pm.family == "composed"
    assert pm.block_names == ["conv1", "maxpool+stage2", "stage3", "stage4", "conv5", "fc"]
    assert check_equivalence(model, pm, torch.randn(1, 3, 48, 48)) <= ATOL


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:  # Python control flow on a tensor value: FX cannot trace it
            return self.conv(x)
        return -self.conv(x)


def test_untraceable_model_raises_partition_error_naming_it() -> None:
    with pytest.raises(PartitionError, match="my_weird_net") as info:
        partition_model(_DataDependent(), "my_weird_net")
    assert "control flow" in str(info.value)


def test_unknown_family_raises() -> None:
    with pytest.raises(PartitionError, match="unknown family 'nope'"):
        partition_model(tvm.resnet18(), family="nope")


def test_check_equivalence_detects_a_wrong_block() -> None:
    model = tvm.resnet18(num_classes=10).eval()
    pm = partition_model(model)
    wrong_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(512, 10))
    broken = PartitionedModel(pm.name, [*pm.blocks[:-1], Block("head", wrong_head)], pm.family)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(PartitionError, match="differ from the whole model"):
        check_equivalence(model, broken, x)
    assert check_equivalence(model, broken, x, atol=None) > ATOL
    truncated = PartitionedModel(pm.name, pm.blocks[:-1], pm.family)
    with pytest.raises(PartitionError, match="shape"):
        check_equivalence(model, truncated, x)


def test_check_equivalence_restores_training_mode() -> None:
    model = tvm.resnet18(num_classes=10).train()
    pm = partition_model(model)
    check_equivalence(model, pm, torch.randn(1, 3, 64, 64))
    assert model.training and all(m.training for b in pm.blocks for m in b.module.modules())


def test_blocks_state_dict_and_pickle_round_trip() -> None:
    model = zoo.build_detector().eval()
    pm = partition_model(model)
    carry: object = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        for block in pm.blocks[:4]:
            carry = block(carry)
        expected = pm.blocks[4](carry)
    layer4 = pickle.loads(pickle.dumps(pm.blocks[4].module))
    buffer = io.BytesIO()
    torch.save(pm.blocks[4].module.state_dict(), buffer)
    buffer.seek(0)
    layer4.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.inference_mode():
        got = layer4(carry)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy (dynamo=False) exporter warns
def test_tuple_carry_block_exports_to_onnx() -> None:
    model = zoo.build_detector().eval()
    pm = partition_model(model)
    with torch.no_grad():  # export traces with autograd: inference-mode tensors are not allowed as inputs
        carry = pm.block("layer2")(pm.block("layer1")(pm.block("stem")(torch.randn(1, 3, 64, 64))))
    buffer = io.BytesIO()
    torch.onnx.export(pm.block("layer3").module, (carry,), buffer, dynamo=False)
    graph = onnx.load_from_string(buffer.getvalue()).graph
    assert len(graph.output) == 2  # (c3, c4)


@pytest.mark.needs_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_blocks_equal_whole_model_on_cuda() -> None:
    model = zoo.build_detector().eval().cuda()
    pm = partition_model(model)
    assert check_equivalence(model, pm, torch.randn(1, 3, 64, 96, device="cuda"), atol=1e-4) <= 1e-4
