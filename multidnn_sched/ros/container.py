"""``perception_container``: detector, tracker and classifier in ONE process on ONE runtime.

A ``perception_container`` node owns the runtime parameters (``lag.*``, ``policy.*``, ``models.*``,
``force_variant``, ``force_mode``) and publishes ``/diagnostics``; the perception nodes it creates (parameter
``nodes``) share its runtime. With more than one node the images are subscribed to once (on the container
node, in a callback group of its own), each image is decoded once and the same frame goes to every node
(:class:`~multidnn_sched.ros.image_input.ImageInput`); a node alone subscribes itself. Everything is spun by
one executor (``spin_threads``): with the shared runtime a ``SingleThreadedExecutor`` (the callbacks only
convert, hand over and publish; the models run on the runtime's workers), in baseline mode a
``MultiThreadedExecutor`` where each node has its own mutually exclusive callback group, so the nodes' models
run concurrently and one node never runs two frames at once.

``--baseline`` (or parameter ``baseline: true``) runs the same nodes the way ROS users do today: each model
whole, in its node's callback, no shared executor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.context import Context
from rclpy.executors import (
    Executor,
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from multidnn_sched.exceptions import CheckpointError, ConfigError, MultiDnnError
from multidnn_sched.ros.classifier_node import ClassifierNode
from multidnn_sched.ros.common import PerceptionNode
from multidnn_sched.ros.detector_node import DetectorNode
from multidnn_sched.ros.diagnostics import build_diagnostic_array
from multidnn_sched.ros.heap import HEAP_TRIM_PERIOD_SEC, release_free_heap
from multidnn_sched.ros.image_input import ImageInput
from multidnn_sched.ros.params import (
    CONTAINER_PARAMS,
    MODEL_NAMES,
    Override,
    ParamValue,
    check_parameters,
    declare_parameters,
    parse_overrides,
    split_list,
)
from multidnn_sched.ros.runtime import ModelRuntime
from multidnn_sched.ros.settings import settings_from_values
from multidnn_sched.ros.tasks import PerceptionTasks
from multidnn_sched.ros.timing import CpuMeter
from multidnn_sched.ros.tracker_node import TrackerNode

NODE_MODELS: dict[str, str] = {"detector": "detector", "tracker": "embedder", "classifier": "classifier"}
"""Which runtime model each node submits to."""

SPIN_THREADS = 5
"""Baseline mode's MultiThreadedExecutor threads: one per node (its model runs in its callback), one for the
container's timer and services, one for the shared image callback."""

SHARED_RUNTIME_SPIN_THREADS = 1
"""Executor threads with the shared runtime (parameter ``spin_threads`` 0): a ``SingleThreadedExecutor``. The
nodes' callbacks only convert, hand frames to the runtime and publish, so one thread serves them, and fewer
Python threads leave the GIL and the cores to the runtime's worker. Measured in ``make demo``'s blocks+swap
replay (15 Hz, 300 frames, quiet machine, 2026-12-02): rclpy's MultiThreadedExecutor with 5 threads spent ~40 %
of the process's GIL time rebuilding wait sets (py-spy ``--gil``), and gave coverage 0.53-0.75 and p99
680 / 680 / 748 ms (detector / tracker / classifier); one thread gave coverage 0.96 and p99 251 / 182 / 177 ms.
(rclpy's experimental EventsExecutor deadlocked here: a publish and a subscription in one process.)"""

SHUTDOWN_STEP_SEC = 2.0
"""Longest wait for the spin thread, then for the runtime's threads, at shutdown (Ctrl-C: < 5 s)."""

RuntimeFactory = Callable[[Mapping[str, ParamValue], Sequence[str]], ModelRuntime]
"""``(container parameter values, model names) -> runtime``."""


def default_runtime_factory(values: Mapping[str, ParamValue], models: Sequence[str]) -> ModelRuntime:
    """The default models from the registry on the container's ``device``; ``baseline`` ->
    :class:`DirectRuntime`, else the shared ``BlockExecutor``. (The container itself, given this factory, loads
    the models its nodes' ``model`` parameters name instead.)"""
    from multidnn_sched.models.registry import load_model
    from multidnn_sched.ros.model_setup import resolve_device, runtime_from_models
    from multidnn_sched.runtime.kernels import use_onednn_pointwise

    device = resolve_device(str(values.get("device", "cpu")))
    loaded = {name: load_model(f"default:{name}", device) for name in models}
    for model in loaded.values():
        use_onednn_pointwise(model.model)  # as load_models does (runtime.kernels)
    return runtime_from_models(values, loaded)  # type: ignore[return-value]


class PerceptionContainer:
    """The container node, its runtime and its perception nodes.

    Args:
        context: rclpy context (``None``: the default one).
        tasks: pre/post-processing (``None``: :func:`~multidnn_sched.ros.tasks.default_tasks`).
        runtime: use this runtime instead of building one (tests).
        runtime_factory: builds the runtime from the container's parameters when ``runtime`` is ``None``.
        parameter_overrides: start-up values per node name (``"perception_container"``, ``"detector"``...).
        container_name: name of the container node.
        baseline: force baseline mode (the ``--baseline`` switch); ``None``: the ``baseline`` parameter.
    """

    def __init__(
        self,
        context: Context | None = None,
        tasks: PerceptionTasks | None = None,
        runtime: ModelRuntime | None = None,
        runtime_factory: RuntimeFactory = default_runtime_factory,
        parameter_overrides: Mapping[str, list[Parameter]] | None = None,
        container_name: str = "perception_container",
        baseline: bool | None = None,
    ) -> None:
        overrides = dict(parameter_overrides or {})
        own = list(overrides.get(container_name, []))
        if baseline is not None:
            own.append(Parameter("baseline", Parameter.Type.BOOL, baseline))
        self.node = Node(container_name, context=context, parameter_overrides=own)
        self.values = declare_parameters(self.node, CONTAINER_PARAMS)
        self.node_names = split_list(str(self.values["nodes"]))
        models = [NODE_MODELS[n] for n in self.node_names]
        try:
            tasks, runtime = self._load_models(context, overrides, tasks, runtime, runtime_factory, models)
        except (ConfigError, CheckpointError) as error:
            self.node.destroy_node()
            raise ConfigError(f"{container_name}: start-up parameters rejected: {error}") from error
        self.runtime = runtime
        self._overrides: dict[str, list[Override]] = {"force_variant": [], "force_mode": []}
        try:
            self.runtime.configure(settings_from_values(self.values))
            for name in ("force_variant", "force_mode"):
                self._apply_overrides(name, str(self.values[name]))
        except (MultiDnnError, KeyError, ValueError) as error:
            self.runtime.shutdown()
            self.node.destroy_node()
            raise ConfigError(f"{container_name}: start-up parameters rejected: {error}") from error
        self.nodes: dict[str, PerceptionNode] = {}
        shared_input = len(self.node_names) > 1
        for name in self.node_names:
            self.nodes[name] = self._make_node(name, tasks, context, overrides.get(name), not shared_input)
            self.nodes[name].torch_threads = int(self.values["node_torch_threads"])
        self.image_input: ImageInput | None = None
        if shared_input:
            try:
                self.image_input = self._shared_image_input()
            except ConfigError:
                self.destroy()
                raise
        self.node.add_on_set_parameters_callback(self._on_set_parameters)
        self.cpu = CpuMeter()
        self.diagnostics_publisher = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.diagnostics_timer = self.node.create_timer(
            float(self.values["diagnostics_period_sec"]), self.publish_diagnostics
        )
        # Freed frame buffers stay resident in glibc's arenas (RSS grows over a soak); give them back.
        self.heap_trim_timer = self.node.create_timer(HEAP_TRIM_PERIOD_SEC, release_free_heap)

    def _load_models(
        self,
        context: Context | None,
        overrides: Mapping[str, list[Parameter]],
        tasks: PerceptionTasks | None,
        runtime: ModelRuntime | None,
        runtime_factory: RuntimeFactory,
        models: list[str],
    ) -> tuple[PerceptionTasks, ModelRuntime]:
        """Resolve ``device``, read the nodes' ``model`` parameters, load those models from the registry (when
        the default factory or the default tasks need them) and build tasks and runtime."""
        from multidnn_sched.ros.model_setup import (
            load_models,
            read_model_choice,
            resolve_device,
            runtime_from_models,
            tasks_from_models,
        )
        from multidnn_sched.ros.tasks import default_tasks

        device = resolve_device(str(self.values["device"]))
        if tasks is not None and runtime is not None:  # both injected (tests): nothing to load
            return tasks, runtime
        choices = {n: read_model_choice(n, context, overrides.get(n)) for n in self.node_names}
        use_registry = runtime is None and runtime_factory is default_runtime_factory
        loaded = {}
        if use_registry or (tasks is None and not all(c.is_default for c in choices.values())):
            loaded = load_models(choices, device)
        if tasks is None:
            tasks = tasks_from_models(loaded, default_tasks()) if loaded else default_tasks()
        if runtime is None:
            if use_registry:
                runtime = runtime_from_models(self.values, {NODE_MODELS[n]: m for n, m in loaded.items()})
            else:
                runtime = runtime_factory(self.values, models)
        return tasks, runtime  # type: ignore[return-value]

    def _make_node(
        self,
        name: str,
        tasks: PerceptionTasks,
        context: Context | None,
        overrides: list[Parameter] | None,
        subscribe_image: bool,
    ) -> PerceptionNode:
        if name == "detector":
            return DetectorNode(self.runtime, tasks.detector, context, overrides, subscribe_image=subscribe_image)
        if name == "tracker":
            return TrackerNode(
                self.runtime,
                tasks.embedder,
                tasks.make_tracker,
                list(tasks.detector.class_names),
                context,
                overrides,
                subscribe_image=subscribe_image,
            )
        return ClassifierNode(self.runtime, tasks.classifier, context, overrides, subscribe_image=subscribe_image)

    def _shared_image_input(self) -> ImageInput:
        """One subscription for every node, on the container node in a callback group of its own: reliable if
        any node asks for it, the largest depth; the nodes must agree on ``image_transport``."""
        nodes = list(self.nodes.values())
        transports = {str(n.values["image_transport"]) for n in nodes}
        if len(transports) != 1:
            raise ConfigError(
                f"{self.node.get_name()}: expected one image_transport for all nodes of the container, got "
                + ", ".join(f"{n.get_name()}={n.values['image_transport']}" for n in nodes)
            )
        reliable = any(n.values["image_reliability"] == "reliable" for n in nodes)
        depth = max(int(n.values["image_depth"]) for n in nodes)
        args = (transports.pop(), "reliable" if reliable else "best_effort", depth)
        # A callback group of its own, on the container node: images are taken and decoded while the nodes
        # pre- and post-process (and, in the baseline, run their models) on their threads. On the 2-core
        # development machine with 1280x720 JPEG at 15 Hz, decoding in the detector's group instead gave a
        # detector transport p50 of 17 and 341 ms in two runs (images backed up in DDS), this 9 and 12 ms.
        return ImageInput(self.node, nodes, *args, MutuallyExclusiveCallbackGroup())

    @property
    def all_nodes(self) -> list[Node]:
        return [self.node, *self.nodes.values()]

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        result = check_parameters(CONTAINER_PARAMS, params)
        if not result.successful:
            return result
        candidate = dict(self.values)
        candidate.update({p.name: p.value for p in params if p.name in candidate})
        try:
            settings = settings_from_values(candidate)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        for p in params:
            if p.name in self._overrides:
                try:
                    self._apply_overrides(p.name, str(p.value))
                except (MultiDnnError, KeyError, ValueError) as error:
                    self._apply_overrides(p.name, str(self.values[p.name]))  # back to the accepted state
                    return SetParametersResult(successful=False, reason=f"{p.name}: {error}")
        self.values = candidate
        self.runtime.configure(settings)
        return result

    def _apply_overrides(self, name: str, text: str) -> None:
        new = parse_overrides(text, modes_only=name == "force_mode")
        targets = {(o.model, o.block) for o in new}
        for old in self._overrides[name]:
            if (old.model, old.block) not in targets:
                self._set_override(name, Override(old.model, old.block, "auto"))
        for override in new:
            self._set_override(name, override)
        self._overrides[name] = new

    def _set_override(self, name: str, override: Override) -> None:
        if name == "force_mode":
            self.runtime.set_override(override.model, override.block, mode=override.value)
        else:
            self.runtime.set_override(override.model, override.block, variant=override.value)

    def publish_diagnostics(self) -> None:
        """Publish one ``DiagnosticArray`` (nodes, models' blocks, recent decisions)."""
        deadlines = {m: float(self.values[f"models.{m}.deadline_ms"]) for m in MODEL_NAMES}
        process: dict[str, float | int] = {"cpu_percent": self.cpu.read_percent()}
        inputs = [self.image_input] if self.image_input is not None else [
            n.image_input for n in self.nodes.values() if n.image_input is not None
        ]
        for image_input in inputs[:1]:
            process.update({f"images_{k}": v for k, v in image_input.counts().items()})
        array = build_diagnostic_array(
            [node.stats.snapshot() for node in self.nodes.values()],
            self.runtime.status(),
            self.node.get_clock().now().to_msg(),
            deadlines,
            hardware_id=self.node.get_name(),
            process=process,
        )
        self.diagnostics_publisher.publish(array)

    @property
    def spin_threads(self) -> int:
        """Executor threads to spin this container with (parameter ``spin_threads``; 0: auto)."""
        wanted = int(self.values["spin_threads"])
        if wanted:
            return wanted
        return SPIN_THREADS if bool(self.values["baseline"]) else SHARED_RUNTIME_SPIN_THREADS

    def add_to(self, executor: Executor) -> None:
        for node in self.all_nodes:
            executor.add_node(node)

    def destroy(self, timeout_sec: float = 3.0) -> bool:
        """Shut the runtime down (joins its threads) and destroy every node."""
        for node in self.nodes.values():
            node.closing = True
        ok = self.runtime.shutdown(timeout_sec)
        for node in self.all_nodes:
            node.destroy_node()
        return ok


class SpinThread:
    """An executor spinning in a thread (``num_threads`` 1: a ``SingleThreadedExecutor``, else a
    ``MultiThreadedExecutor``); :meth:`stop` shuts it down and joins the thread."""

    def __init__(
        self, nodes: Sequence[Node], context: Context | None = None, num_threads: int = SPIN_THREADS
    ) -> None:
        if num_threads < 1:
            raise ValueError(f"SpinThread num_threads must be >= 1, got {num_threads!r}")
        self.executor: Executor = (
            SingleThreadedExecutor(context=context)
            if num_threads == 1
            else MultiThreadedExecutor(num_threads=num_threads, context=context)
        )
        for node in nodes:
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self._spin, name="ros-spin", daemon=True)
        self.error: BaseException | None = None

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass
        except Exception as error:  # noqa: BLE001 - reported by stop()
            self.error = error

    def start(self) -> SpinThread:
        self.thread.start()
        return self

    def stop(self, timeout_sec: float = 3.0) -> bool:
        """Shut the executor down and join the spinning thread; ``True`` when it joined in time."""
        self.executor.shutdown(timeout_sec=timeout_sec)
        self.thread.join(timeout=timeout_sec)
        return not self.thread.is_alive()
