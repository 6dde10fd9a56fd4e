"""Entry points of the ROS executables: command line, signals, rclpy init, teardown.

Every console script (``perception_container``, ``detector``, ``tracker``, ``classifier``) is a ``main`` here;
this module sits above :mod:`multidnn_sched.ros.container`, which sits above the node classes, so no node
module imports the container (no import cycle).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from rclpy.context import Context
from rclpy.executors import ExternalShutdownException
from rclpy.parameter import Parameter

from multidnn_sched.exceptions import CheckpointError, ConfigError
from multidnn_sched.ros.container import (
    SHUTDOWN_STEP_SEC,
    PerceptionContainer,
    RuntimeFactory,
    SpinThread,
    default_runtime_factory,
)
from multidnn_sched.ros.tasks import PerceptionTasks


def build_arg_parser(prog: str, standalone: bool = False) -> argparse.ArgumentParser:
    """The command line of ``perception_container`` (and of a standalone ``detector`` / ``tracker`` /
    ``classifier``): everything after ``--ros-args`` is ROS's and is not parsed here."""
    what = (
        f"the {prog} node alone in its process, with its own runtime (node {prog}_runtime)"
        if standalone
        else "detector, tracker and classifier in ONE process on ONE shared block executor"
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"multidnn_sched: {what}. Ctrl-C or SIGTERM: clean shutdown, exit status 0.",
        epilog=(
            "ROS arguments follow --ros-args, e.g. --ros-args --params-file config/perception.yaml "
            "-r image:=/camera/image_raw (every parameter: config/perception.yaml; docs/ros.md)."
        ),
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="run each model whole in its node callback, no shared executor (comparison; parameter baseline)",
    )
    return parser


class ShutdownRequest:
    """SIGINT / SIGTERM -> a flag, never an exception.

    rclpy's own handlers raise ``KeyboardInterrupt`` in the main thread at every SIGINT; a terminal's Ctrl-C
    under ``ros2 launch`` delivers two (one from the terminal to the process group, one from launch) about
    1 ms apart, and the second landed in the teardown (traceback, exit code -2). This handler only records
    the signal, however often it comes, so the teardown runs once, uninterrupted, and the exit status is 0.
    """

    SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: list[int] = []

    def _handle(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        self.event.set()

    def install(self) -> ShutdownRequest:
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)
        return self


def run(
    args: list[str] | None = None,
    node_names: Sequence[str] | None = None,
    container_name: str = "perception_container",
    runtime_factory: RuntimeFactory = default_runtime_factory,
    tasks: PerceptionTasks | None = None,
) -> int:
    """Parse the command line, init rclpy, build the container, spin until SIGINT / SIGTERM / external
    shutdown, tear down with joins.

    Returns:
        The process exit status: 0 after ``--help``, Ctrl-C, SIGTERM or an external shutdown, 2 for a bad
        command line, parameter or model file.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if args is None else args)
    standalone = node_names is not None and container_name != "perception_container"
    prog = node_names[0] if standalone and node_names else "perception_container"
    try:
        options = build_arg_parser(prog, standalone).parse_args(remove_ros_args(argv)[1:])
    except SystemExit as stop:  # --help (0) or a bad argument (2, usage already printed)
        return int(stop.code or 0)
    # Main thread only (signal.signal); the handler is installed before the (long) model loading so that an
    # early Ctrl-C also ends cleanly, after the load, instead of raising in the middle of it.
    shutdown = ShutdownRequest().install() if threading.current_thread() is threading.main_thread() else None
    context = Context()
    rclpy.init(args=argv, context=context, signal_handler_options=SignalHandlerOptions.NO)
    overrides: dict[str, list[Parameter]] = {}
    if node_names is not None:
        overrides[container_name] = [Parameter("nodes", Parameter.Type.STRING, ",".join(node_names))]
    container: PerceptionContainer | None = None
    spinner: SpinThread | None = None
    try:
        container = PerceptionContainer(
            context=context,
            tasks=tasks,
            runtime_factory=runtime_factory,
            parameter_overrides=overrides,
            container_name=container_name,
            baseline=True if options.baseline else None,
        )
        status = container.runtime.status()
        pool = "" if not status.workers else (
            f", {status.workers} runtime worker(s) x "
            f"{status.worker_threads or 'elastic'} intra-op thread(s) per block, "
            f"up to {status.frames_in_flight} frame(s) of a model at once"
        )
        container.node.get_logger().info(
            f"running nodes {container.node_names} "
            f"({'baseline' if container.values['baseline'] else 'blocks'}{pool})"
        )
        spinner = SpinThread(container.all_nodes, context, container.spin_threads).start()
        while spinner.thread.is_alive() and not (shutdown is not None and shutdown.event.is_set()):
            spinner.thread.join(timeout=0.1)
        return 0
    except (ConfigError, CheckpointError) as error:
        print(f"{container_name}: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):  # KeyboardInterrupt: only without our handler
        return 0
    finally:
        # Ctrl-C budget is 5 s: shut the context down first (wakes the executor at once), then join the spin
        # thread, then stop the runtime (a running block cannot be interrupted) and destroy the nodes.
        # Further signals only set the flag again: nothing here can be interrupted.
        if container is not None:
            for node in container.nodes.values():
                node.closing = True
        if context.ok():
            rclpy.shutdown(context=context)
        if spinner is not None:
            spinner.stop(timeout_sec=SHUTDOWN_STEP_SEC)
        if container is not None:
            container.destroy(timeout_sec=SHUTDOWN_STEP_SEC)
        # The handler stays installed: a signal after this (before the process ends) must not raise either.


def exit_after_teardown(code: int) -> None:
    """End the process now that everything is torn down (threads joined, nodes destroyed, context shut down).

    Python's own finalization with torch loaded took 6-8 s after the last line of ``main`` on the 2-core
    development machine under load (measured: ``import torch`` + rclpy init/shutdown, 12.5 s to ready, 20.4 s
    to exit), which would break the 5 s Ctrl-C budget; nothing is left for it to release, so skip it.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_standalone(node_name: str, args: list[str] | None = None) -> None:
    """One perception node alone in its process, with its own runtime (``ros2 run multidnn_sched <node>``)."""
    exit_after_teardown(run(args, node_names=[node_name], container_name=f"{node_name}_runtime"))


def main(args: list[str] | None = None) -> None:
    """``ros2 run multidnn_sched perception_container [--baseline] [--ros-args ...]``."""
    exit_after_teardown(run(args))


def detector_main(args: list[str] | None = None) -> None:
    """``ros2 run multidnn_sched detector``: the detector alone, with its own runtime."""
    run_standalone("detector", args)


def tracker_main(args: list[str] | None = None) -> None:
    """``ros2 run multidnn_sched tracker``: the tracker alone, with its own runtime."""
    run_standalone("tracker", args)


def classifier_main(args: list[str] | None = None) -> None:
    """``ros2 run multidnn_sched classifier``: the classifier alone, with its own runtime."""
    run_standalone("classifier", args)
