"""Bench workloads, schema v2: registry models with their own rates, input sizes and crops; v1 keeps loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from multidnn_sched.bench.tasks import build_model, build_task_inputs, render_truth_and_frames, task_accuracy
from multidnn_sched.bench.workload import load_workload
from multidnn_sched.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _tiny_v2(path: Path, resnet_weights: Path | None = None) -> Path:
    workload = {
        "version": 2,
        "name": "tiny_four",
        "duration_sec": 0.6,
        "warmup_sec": 0.2,
        "scene": {"seed": 3, "width": 192, "height": 160, "unique_frames": 2},
        "models": [
            {"name": "ssdlite", "model": "torchvision:ssdlite320_mobilenet_v3_large", "task": "detection",
             "rate_hz": 4.0, "input": [64, 64], "deadline_ms": 2000, "priority": 2},
            {"name": "mobilenet", "model": "torchvision:mobilenet_v3_small", "rate_hz": 6.0, "input": [48, 48],
             "deadline_ms": 2000, "priority": 1},
            {"name": "effnet", "model": "torchvision:efficientnet_b0", "rate_hz": 3.0, "input": [48, 48],
             "crops": 2, "deadline_ms": 2000},
            {"name": "resnet", "model": "torchvision:resnet18", "rate_hz": 2.0, "input": [48, 48],
             "deadline_ms": 2000, "queue_depth": 2},
        ],
    }
    if resnet_weights is not None:
        workload["models"][3]["weights"] = str(resnet_weights)
    path.write_text(yaml.safe_dump(workload))
    return path


def test_v2_workload_parses_per_model_rates_inputs_and_crops(tmp_path: Path) -> None:
    workload = load_workload(_tiny_v2(tmp_path / "w.yaml"))
    assert workload.version == 2 and [m.name for m in workload.models] == ["ssdlite", "mobilenet", "effnet", "resnet"]
    assert workload.rate_hz == 6.0  # the fastest model's rate: the shared frame clock
    assert [workload.rate_for(m.name) for m in workload.models] == [4.0, 6.0, 3.0, 2.0]
    arrivals = workload.arrivals_for("resnet", 10.0)
    assert len(arrivals) == 1 and arrivals[0] == 10.0
    assert len(workload.arrivals_for("mobilenet", 0.0)) == 4
    effnet = workload.model("effnet")
    assert (effnet.input_hw, effnet.crops, effnet.model) == ((48, 48), 2, "torchvision:efficientnet_b0")


def test_v2_tasks_have_inputs_of_the_chosen_size_and_no_accuracy(tmp_path: Path) -> None:
    workload = load_workload(_tiny_v2(tmp_path / "w.yaml"))
    images, truth = render_truth_and_frames(workload.scene, workload.rate_hz)
    task = build_task_inputs("effnet", images, truth)  # by name: the loaded workload's entry
    assert tuple(task.inputs[0].shape) == (2, 3, 48, 48) and task.metric is None
    detector = build_task_inputs(workload.model("ssdlite"), images, truth)
    assert tuple(detector.inputs[0].shape) == (1, 3, 64, 64)
    model = build_model("ssdlite")
    with torch.inference_mode():
        out = model(detector.inputs[0])
    assert isinstance(out, dict) and {"bbox_regression", "cls_logits"} <= set(out)
    assert task_accuracy(detector, {0: out}) is None  # random weights, labels not the scene's: n/a


def test_v1_files_keep_loading_with_their_metrics() -> None:
    workload = load_workload(ROOT / "config" / "workloads" / "default.yaml", duration_sec=1.0)
    assert workload.version == 1 and workload.rate_hz == 15.0
    assert all(workload.rate_for(m.name) == 15.0 for m in workload.models)
    assert [m.model for m in workload.models] == ["default:detector", "default:embedder", "default:classifier"]


@pytest.mark.parametrize("name", ["seed_heterogeneous.yaml", "seed_edge_mix.yaml"])
def test_shipped_v2_workloads_parse(name: str) -> None:
    from multidnn_sched.models.registry import get_model_spec

    workload = load_workload(ROOT / "config" / "workloads" / name)
    assert workload.version == 2 and len(workload.models) == 4
    assert len({workload.rate_for(m.name) for m in workload.models}) >= 3  # different per-model rates
    for m in workload.models:
        spec = get_model_spec(m.model, input_hw=m.input_hw, task=m.task)
        assert spec.task == m.task


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"model": "resnet50", "deadline_ms": 5, "rate_hz": 1}, "expected a registry name"),
        ({"model": "torchvision:resnet50", "deadline_ms": 5}, "expected rate_hz"),
        ({"model": "torchvision:resnet50", "deadline_ms": 5, "rate_hz": 1, "input": [224]}, "input"),
        ({"model": "torchvision:resnet50", "deadline_ms": 5, "rate_hz": 1, "fps": 3}, "unknown keys"),
    ],
)
def test_bad_v2_entries_are_clear_errors(tmp_path: Path, entry: dict, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"version": 2, "models": [entry]}))
    with pytest.raises(ConfigError, match=message):
        load_workload(path)


def test_v2_workload_of_four_torchvision_models_runs_every_bench_mode(tmp_path: Path) -> None:
    from compression_tools.cli import main as compress
    from multidnn_sched.bench.cli import main
    from multidnn_sched.bench.modes import MODES

    # Variants belong to the weights they were cut from: the workload's resnet and the build share one file.
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    path = _tiny_v2(tmp_path / "w.yaml", resnet_weights=weights)
    variants = tmp_path / "variants"
    assert compress(["build", "--model", "torchvision:resnet18", "--name", "resnet", "--input", "48", "48",
                     "--weights", str(weights),
                     "--block", "layer4", "--kinds", "int8", "--out", str(variants), "--frames", "2",
                     "--calibration", "2", "--repeats", "2", "--threads", "1", "--quiet"]) == 0
    out = tmp_path / "bench.json"
    assert main(["--workload", str(path), "--json", str(out), "--modes", ",".join(MODES), "--repeats", "1",
                 "--probe-sec", "0.5", "--variants", str(variants / "manifest.json")]) == 0
    result = json.loads(out.read_text())
    assert set(result["modes"]) == set(MODES)
    offered = {name: s["frames_offered"]["median"] for name, s in result["modes"]["blocks"]["models"].items()}
    assert offered["mobilenet"] > offered["resnet"], "per-model rates: 6 Hz vs 2 Hz"
    for mode, entry in result["modes"].items():
        text = json.dumps(entry)
        for name in ("ssdlite", "mobilenet", "effnet", "resnet"):
            assert name in text, (mode, name)


def test_executor_device_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _tiny_v2(tmp_path / "w.yaml")
    raw = yaml.safe_load(path.read_text())
    raw["executor"] = {"device": "gpu0"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="expected cpu, cuda or cuda:N, got 'gpu0'"):
        load_workload(path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    raw["executor"] = {"device": "cuda"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="'cuda' requested but no CUDA GPU is usable"):
        load_workload(path)


@pytest.mark.needs_cuda
def test_bench_blocks_mode_runs_on_cuda(tmp_path: Path) -> None:
    """Runs the blocks mode with ``executor: {device: cuda}``; the models' blocks must allocate GPU memory
    (``bench/block_modes.py`` has to hand ``workload.executor.device`` to its BlockExecutor)."""
    from multidnn_sched.bench.cli import main

    path = _tiny_v2(tmp_path / "w.yaml")
    raw = yaml.safe_load(path.read_text())
    raw["executor"] = {"device": "cuda"}
    path.write_text(yaml.safe_dump(raw))
    torch.cuda.reset_peak_memory_stats()
    out = tmp_path / "bench.json"
    assert main(["--workload", str(path), "--json", str(out), "--modes", "blocks"]) == 0
    assert "blocks" in json.loads(out.read_text())["modes"]
    assert torch.cuda.max_memory_allocated() > 0
