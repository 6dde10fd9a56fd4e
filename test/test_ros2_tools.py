"""The robot path with the REAL ROS 2 Kilted tools: colcon, ``ros2 launch``, ``ros2 node``/``param``/``topic``,
Ctrl-C, ``colcon test`` and rosdep keys.

The tools are not on PyPI: ``../shared/ros2-tools`` holds their unchanged release sources and ``install.sh``.
A module fixture builds, in a temp directory:

* a scratch venv that sees the project's ``.venv`` (a ``.pth`` that adds its site-packages: rclpy, the ros-*
  wheels, torch) and gets the tools (``install.sh``), colcon (PyPI) and setuptools 68.1.2 (Ubuntu 24.04's, the
  one colcon uses on a Kilted robot) of its own, so the project's ``.venv`` is not changed;
* two colcon workspaces with a copy of this package: ``colcon build`` and ``colcon build --symlink-install``.

Every command runs the way the README's "On a robot" section says, in a shell that sourced the workspace's
``install/setup.bash``, on a private ``ROS_DOMAIN_ID`` with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``.
Skipped (one line) only where ``../shared/ros2-tools`` is absent (a user's own clone); CI always has it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT.parent / "shared" / "ros2-tools"

pytestmark = pytest.mark.skipif(
    not (TOOLS / "install.sh").is_file(), reason=f"no ../shared/ros2-tools ({TOOLS}): real ROS 2 tools absent"
)

DOMAIN_ID = 20 + os.getpid() % 80
"""Private DDS domain (other ROS tests of this process use 101..200)."""

COLCON = ["colcon-core==0.21.3", "colcon-ros==0.5.0", "colcon-common-extensions==0.3.0"]
"""colcon from PyPI, pinned (the versions of the local index when this module was written)."""
SETUPTOOLS = "setuptools==68.1.2"
"""Ubuntu 24.04's python3-setuptools: what colcon builds ament_python packages with on a Kilted robot."""

UBUNTU = "noble"
ROS_PACKAGE_KEYS = {
    "rclpy", "launch", "launch_ros", "ament_index_python", "sensor_msgs", "std_msgs", "vision_msgs",
    "diagnostic_msgs", "rcl_interfaces", "rosgraph_msgs", "ros2bag",
}
"""Keys that are ROS packages (rosdep resolves them from the Kilted distribution file, not base/python.yaml)."""

SHUTDOWN_LIMIT_SEC = 5.0
START_TIMEOUT_SEC = 150.0
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "install", "log", "runs", "data", "__pycache__", ".pytest_cache", ".ruff_cache",
    "*.egg-info",
)


@dataclass
class Ros2Tools:
    """The scratch environment: ``run`` executes a command line in a shell that sourced a workspace."""

    root: Path
    venv: Path
    env: dict[str, str]
    timings_sec: dict[str, float] = field(default_factory=dict)
    builds: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def ws(self, name: str) -> Path:
        return self.root / name

    def command(self, ws: Path | None, args: list[str]) -> list[str]:
        source = f'source "{ws}/install/setup.bash" && ' if ws is not None else ""
        return ["bash", "-c", source + 'exec "$@"', "bash", *args]

    def run(self, ws: Path | None, args: list[str], timeout: float = 60.0, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(ws, args), env=self.env, cwd=cwd or self.root, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def run_discovered(self, ws: Path | None, args: list[str], timeout_sec: float = 20.0
                       ) -> subprocess.CompletedProcess[str]:
        """``run`` again while the CLI answers "Node not found": each ``ros2`` call is a new DDS participant,
        and on a loaded machine its discovery of the node's services can lag the daemon's node list."""
        deadline = time.monotonic() + timeout_sec
        while True:
            result = self.run(ws, args)
            if "Node not found" not in result.stderr + result.stdout or time.monotonic() > deadline:
                return result
            time.sleep(1.0)

    def popen(self, ws: Path | None, args: list[str]) -> subprocess.Popen[str]:
        """A new process group (a terminal's foreground job): signals go to the group, as Ctrl-C does."""
        return subprocess.Popen(self.command(ws, args), env=self.env, cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _timed(timings: dict[str, float], name: str, cmd: list[str], **kwargs: object
           ) -> subprocess.CompletedProcess[str]:
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    timings[name] = round(time.monotonic() - start, 1)
    return result


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    tail = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{tail}"


def _tools_env(venv: Path, prefix: Path) -> dict[str, str]:
    project = Path(sys.prefix)  # the project's .venv: rclpy and the ros-* wheels
    site = Path(sysconfig.get_paths()["purelib"])
    # What the ros-* wheels' bootstrapper computes from sys.prefix, which is the scratch venv here.
    libs = [str(project / "lib"), str(prefix / "lib"), *sorted(str(p) for p in site.glob("ros_*.libs"))]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ROS_", "RMW_", "AMENT_", "COLCON_", "PYTEST_")) and k not in (
               "PYTHONPATH", "VIRTUAL_ENV", "CMAKE_PREFIX_PATH", "LD_LIBRARY_PATH")}
    env.update(
        PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        AMENT_PREFIX_PATH=f"{prefix}:{venv}:{project}",
        PYTHONPATH=str(prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"),
        LD_LIBRARY_PATH=":".join(libs),
        _ROS_WHEELS_BOOTSTRAP_COMPLETE="1",
        ROS_DOMAIN_ID=str(DOMAIN_ID),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        RCUTILS_COLORIZED_OUTPUT="0",
        PYTHONUNBUFFERED="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ros2Tools]:
    start = time.monotonic()
    root = tmp_path_factory.mktemp("ros2tools")
    venv, prefix = root / "venv", root / "prefix"
    env = _tools_env(venv, prefix)
    timings: dict[str, float] = {}
    # 1. scratch venv that sees the project's .venv (site.addsitedir also runs that dir's .pth files).
    _check(_timed(timings, "venv", [sys.executable, "-m", "venv", "--without-pip", str(venv)], env=env), "venv")
    site = Path(sysconfig.get_paths()["purelib"])
    scratch_site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (scratch_site / "zzz_multidnn_project_venv.pth").write_text(f"import site; site.addsitedir({str(site)!r})\n")
    python = str(venv / "bin" / "python")
    # 2. install.sh VENV PREFIX: pip into VENV, cmake (composition_interfaces) against VENV's share/ and lib/.
    #    VENV is a view: bin/python runs the scratch interpreter (pip installs there), share/ lib/ include/ are
    #    the project's, so cmake finds the ros-* wheels' packages; nothing is written into the project's .venv.
    view = root / "view"
    (view / "bin").mkdir(parents=True)
    (view / "bin" / "python").write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
    (view / "bin" / "python").chmod(0o755)
    for sub in ("share", "lib", "include"):
        (view / sub).symlink_to(Path(sys.prefix) / sub)
    _check(_timed(timings, "install.sh", ["bash", str(TOOLS / "install.sh"), str(view), str(prefix)], env=env,
                  timeout=600), "ros2-tools install.sh")
    # 3. colcon and Ubuntu's setuptools, into the scratch venv only (--ignore-installed: never touch the
    #    project's setuptools that the scratch venv sees).
    _check(_timed(timings, "pip colcon", [python, "-m", "pip", "install", "--quiet", "--ignore-installed",
                                          SETUPTOOLS], env=env, timeout=300), "pip setuptools")
    _check(_timed(timings, "pip colcon", [python, "-m", "pip", "install", "--quiet", *COLCON], env=env,
                  timeout=300), "pip colcon")
    result = Ros2Tools(root=root, venv=venv, env=env, timings_sec=timings)
    # 4. two workspaces with a copy of this package, built as on a robot.
    for name, extra in (("ws", []), ("ws_symlink", ["--symlink-install"])):
        ws = root / name
        shutil.copytree(ROOT, ws / "src" / "multidnn_sched", ignore=COPY_IGNORE, symlinks=True)
        result.builds[name] = _timed(timings, f"colcon build {name}", ["colcon", "build", *extra], cwd=ws, env=env,
                                     timeout=300)
    timings["fixture total"] = round(time.monotonic() - start, 1)
    print(f"\nros2-tools fixture timings (s): {timings}")
    try:
        yield result
    finally:
        result.run(None, ["ros2", "daemon", "stop"], timeout=30)


# ----------------------------------------------------------------------------------------------- rosdep


def _ubuntu_rule(entry: object) -> object:
    """rosdep rule of one key for Ubuntu noble (None where the key has none)."""
    if not isinstance(entry, dict) or "ubuntu" not in entry:
        return None
    ubuntu = entry["ubuntu"]
    if isinstance(ubuntu, dict) and not ({"pip", "apt", "source"} & ubuntu.keys()):
        return ubuntu.get(UBUNTU, ubuntu.get("*"))  # per-release table
    return ubuntu


def test_package_xml_keys_all_resolve_in_rosdep_databases_for_ubuntu() -> None:
    databases: dict[str, object] = {}
    for name in ("base.yaml", "python.yaml"):
        databases.update(yaml.safe_load((TOOLS / "rosdep" / name).read_text()))
    package = parse_package(str(ROOT / "package.xml"))
    assert package.get_build_type() == "ament_python"
    keys = {d.name for group in (package.buildtool_depends, package.build_depends, package.build_export_depends,
                                  package.exec_depends, package.test_depends, package.doc_depends) for d in group}
    assert "ament_python" not in keys, "ament_python is a build type (<export>), not a rosdep key"
    unresolved = sorted(k for k in keys - ROS_PACKAGE_KEYS if not _ubuntu_rule(databases.get(k)))
    assert not unresolved, f"rosdep has no Ubuntu {UBUNTU} rule for {unresolved}"
    # The ROS package keys really are ROS packages: in the ros-* wheels' ament index or the tools' sources.
    index = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages"
    released = {re.sub(r"-[0-9.]+\.tar\.gz$", "", p.name) for p in TOOLS.glob("*.tar.gz")}
    known = {p.name for p in index.iterdir()} | released | {"ros2bag"}  # ros2bag: rosbag2 (no wheel)
    assert keys & ROS_PACKAGE_KEYS <= known
    assert {"python3-torch", "python3-torchvision", "rclpy", "vision_msgs", "python3-pytest"} <= keys


# ------------------------------------------------------------------------------------------------ colcon


def test_colcon_build_installs_share_files_and_executables(tools: Ros2Tools) -> None:
    _check(tools.builds["ws"], "colcon build")
    install = tools.ws("ws") / "install" / "multidnn_sched"
    share = install / "share" / "multidnn_sched"
    assert (share / "package.xml").read_text() == (ROOT / "package.xml").read_text()
    assert (share / "launch" / "perception.launch.py").is_file()
    assert (share / "config" / "perception.yaml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "multidnn_sched").is_file()
    profiles = list(install.glob("lib/python3*/site-packages/multidnn_sched/ros/fastdds_large_shm.xml"))
    assert len(profiles) == 1, "the Fast DDS profile (package data) is not installed"
    for exe in ("perception_container", "detector", "tracker", "classifier"):
        assert os.access(install / "lib" / "multidnn_sched" / exe, os.X_OK), exe
    out = tools.run(tools.ws("ws"), ["ros2", "pkg", "executables", "multidnn_sched"])
    _check(out, "ros2 pkg executables")
    assert "multidnn_sched perception_container" in out.stdout


def test_colcon_symlink_install_works_with_ubuntu_setuptools(tools: Ros2Tools) -> None:
    version = subprocess.run(
        [str(tools.venv / "bin" / "python"), "-c", "import setuptools; print(setuptools.__version__)"],
        env=tools.env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert version == SETUPTOOLS.split("==")[1]
    build = tools.builds["ws_symlink"]
    _check(build, "colcon build --symlink-install")
    assert "FileNotFoundError" not in build.stdout + build.stderr
    ws = tools.ws("ws_symlink")
    launch = ws / "install" / "multidnn_sched" / "share" / "multidnn_sched" / "launch" / "perception.launch.py"
    assert launch.is_symlink() and launch.resolve() == (ws / "src" / "multidnn_sched" / "launch" /
                                                         "perception.launch.py").resolve()
    where = tools.run(ws, ["python3", "-c", "import multidnn_sched; print(multidnn_sched.__file__)"], cwd=ws)
    _check(where, "import from the symlink workspace")
    assert Path(where.stdout.strip()).resolve().is_relative_to((ws / "src" / "multidnn_sched").resolve())


def test_colcon_test_runs_pytest_and_fails_on_a_failing_test(tools: Ros2Tools) -> None:
    # The full suite is `colcon test` without --pytest-args (README); here test/test_package.py only (budget):
    # its pip-install and ruff tests are the ones that failed in a sourced workspace.
    ws = tools.ws("ws")
    ok = tools.run(ws, ["colcon", "test", "--packages-select", "multidnn_sched", "--return-code-on-test-failure",
                        "--pytest-args", "test/test_package.py"], timeout=400, cwd=ws)
    summary = tools.run(ws, ["colcon", "test-result", "--all", "--verbose"], cwd=ws)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:] + summary.stdout
    counts = re.search(r"(\d+) tests?, (\d+) errors?, (\d+) failures?, (\d+) skipped", summary.stdout)
    assert counts, summary.stdout
    tests, errors, failures, _ = map(int, counts.groups())
    expected = len(re.findall(r"^def test_", (ROOT / "test" / "test_package.py").read_text(), re.M))
    assert (tests, errors, failures) == (expected, 0, 0), summary.stdout
    # A failing test must fail `colcon test` (and show in test-result).
    canary = ws / "src" / "multidnn_sched" / "test" / "test_zz_canary.py"
    canary.write_text("def test_canary_fails() -> None:\n    assert 1 == 2\n")
    try:
        bad = tools.run(ws, ["colcon", "test", "--packages-select", "multidnn_sched", "--return-code-on-test-failure",
                             "--pytest-args", str(canary)], timeout=300, cwd=ws)
        result = tools.run(ws, ["colcon", "test-result", "--verbose"], cwd=ws)
    finally:
        canary.unlink()
    assert bad.returncode != 0, bad.stdout[-2000:]
    assert result.returncode != 0 and "test_canary_fails" in result.stdout, result.stdout


# -------------------------------------------------------------------------------------- ros2 run / launch


def test_ros2_run_help_prints_usage_without_starting(tools: Ros2Tools) -> None:
    for exe in ("perception_container", "detector"):
        out = tools.run(tools.ws("ws"), ["ros2", "run", "multidnn_sched", exe, "--help"], timeout=120)
        _check(out, f"{exe} --help")
        assert out.stdout.startswith(f"usage: {exe}"), out.stdout
        assert "--baseline" in out.stdout and "running nodes" not in out.stdout + out.stderr


class Output:
    """Collects a process's output in a thread; :meth:`wait_for` waits for a pattern."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text):
                return True
            if self.proc.poll() is not None:
                self.thread.join(timeout=5)
                return bool(re.search(pattern, self.text))
            time.sleep(0.2)
        return False


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals, count: int) -> float:
    """``count`` signals ~1 ms apart to the process group (a terminal's Ctrl-C plus launch's own); seconds to exit."""
    sent = time.monotonic()
    for i in range(count):
        os.killpg(proc.pid, sig)
        if i + 1 < count:
            time.sleep(0.001)
    proc.wait(timeout=30)
    return time.monotonic() - sent


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _assert_clean_exit(out: Output, elapsed: float, what: str) -> None:
    out.thread.join(timeout=5)
    text = out.text
    assert elapsed < SHUTDOWN_LIMIT_SEC, f"{what}: exit took {elapsed:.1f} s\n{text[-3000:]}"
    for bad in ("Traceback", "KeyboardInterrupt", "process has died", "terminate called"):
        assert bad not in text, f"{what}: {bad!r} in the output:\n{text[-4000:]}"


PUBLISHER = '''
import sys, time
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from multidnn_sched.scenes.generator import SceneGenerator
rclpy.init()
node = rclpy.create_node("test_camera")
pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
frames = list(SceneGenerator(seed=7).frames(20))
end = time.monotonic() + float(sys.argv[1])
i = 0
while time.monotonic() < end:
    f = frames[i % len(frames)]
    msg = Image(height=f.image.shape[0], width=f.image.shape[1], encoding="rgb8", step=f.image.shape[1] * 3,
                data=f.image.tobytes())
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = "camera"
    pub.publish(msg)
    i += 1
    time.sleep(0.25)
'''


def _echo_once(tools: Ros2Tools, ws: Path, topic: str, timeout: float = 60.0) -> dict:
    out = tools.run(ws, ["ros2", "topic", "echo", "--once", topic, "vision_msgs/msg/Detection2DArray"],
                    timeout=timeout)
    _check(out, f"ros2 topic echo --once {topic}")
    return yaml.safe_load(out.stdout.split("\n---")[0])


def _scores(message: dict) -> list[float]:
    return [float(r["hypothesis"]["score"]) for d in message["detections"] for r in d["results"][:1]]


def test_ros2_launch_node_names_params_file_live_params_topics_and_double_ctrl_c(
    tools: Ros2Tools, tmp_path: Path
) -> None:
    ws = tools.ws("ws")
    params = tmp_path / "params.yaml"
    params.write_text("detector:\n  ros__parameters:\n    score_threshold: 0.85\n"
                      "tracker:\n  ros__parameters:\n    min_hits: 1\n")
    launch = tools.popen(ws, ["ros2", "launch", "multidnn_sched", "perception.launch.py",
                              f"params_file:={params}"])
    camera: subprocess.Popen[str] | None = None
    record: dict[str, str] = {}
    try:
        out = Output(launch)
        started = time.monotonic()
        # blocks mode names the shared executor's pool (the partitioned CPU pool by default)
        assert out.wait_for(r"running nodes .*blocks, \d+ runtime worker\(s\) x \d+ intra-op",
                            START_TIMEOUT_SEC), out.text[-4000:]
        record["start_sec"] = f"{time.monotonic() - started:.1f}"

        # The first `ros2` call starts the ros2 daemon, whose discovery takes a few seconds: poll.
        wanted = ("/classifier", "/detector", "/perception_container", "/tracker")
        deadline = time.monotonic() + 30.0
        while True:
            nodes = tools.run(ws, ["ros2", "node", "list"])
            _check(nodes, "ros2 node list")
            if set(wanted) <= set(nodes.stdout.split()) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        record["ros2 node list"] = nodes.stdout
        names = nodes.stdout.split()
        for name in wanted:
            assert names.count(name) == 1, nodes.stdout  # once each: no four /perception_container

        got = tools.run_discovered(ws, ["ros2", "param", "get", "/detector", "score_threshold"])
        _check(got, "ros2 param get")
        record["ros2 param get /detector score_threshold"] = got.stdout
        assert re.search(r"Double value is: 0\.85\b", got.stdout), got.stdout  # from the params file

        camera = tools.popen(ws, ["python3", "-c", PUBLISHER, "240"])
        try:
            first = _echo_once(tools, ws, "/detections", timeout=90.0)
        except subprocess.TimeoutExpired as error:  # say why: the container's log names every drop cause
            raise AssertionError(f"no /detections in 90 s; the launch output:\n{out.text[-6000:]}") from error
        assert all(s >= 0.85 for s in _scores(first)), first  # the file's threshold is in force

        ok = tools.run_discovered(ws, ["ros2", "param", "set", "/detector", "score_threshold", "0.5"])
        record["ros2 param set /detector score_threshold 0.5"] = ok.stdout + ok.stderr
        assert ok.returncode == 0 and "Set parameter successful" in ok.stdout, ok.stdout + ok.stderr
        bad = tools.run_discovered(ws, ["ros2", "param", "set", "/detector", "score_threshold", "2.0"])
        record["ros2 param set /detector score_threshold 2.0"] = bad.stdout + bad.stderr
        rejected = bad.stdout + bad.stderr
        assert "Setting parameter failed" in rejected and "out of range" in rejected, rejected
        assert "score_threshold" in rejected and "Max: 1.0" in rejected, rejected  # names the range
        after = tools.run_discovered(ws, ["ros2", "param", "get", "/detector", "score_threshold"])
        assert "0.5" in after.stdout, after.stdout

        mode = tools.run_discovered(ws, ["ros2", "param", "set", "/perception_container", "force_mode",
                              "detector/stem=sequential"])  # the docs/ros.md example
        record["ros2 param set /perception_container force_mode detector/stem=sequential"] = mode.stdout + mode.stderr
        assert "Set parameter successful" in mode.stdout, mode.stdout + mode.stderr

        for topic in ("/detections", "/tracks", "/classified"):
            deadline = time.monotonic() + 60.0
            message = _echo_once(tools, ws, topic)
            while not message["detections"] and time.monotonic() < deadline:
                message = _echo_once(tools, ws, topic)
            assert message["detections"], f"{topic}: only empty arrays"
            record[f"{topic} detections"] = str(len(message["detections"]))

        camera.terminate()
        camera.wait(timeout=10)
        elapsed = _signal_group(launch, signal.SIGINT, 2)
        record["double SIGINT -> launch exit sec"] = f"{elapsed:.2f}"
        _assert_clean_exit(out, elapsed, "ros2 launch, 2 x SIGINT")
        assert "process has finished cleanly" in out.text, out.text[-3000:]
        assert launch.returncode == 0, launch.returncode
    finally:
        if camera is not None:
            _stop(camera)
        _stop(launch)
        print("\n" + "\n".join(f"== {k}:\n{v.rstrip()}" for k, v in record.items()))


def test_sigterm_under_launch_leaves_no_process_and_the_container_exits_0(tools: Ros2Tools) -> None:
    import psutil

    ws = tools.ws("ws")
    # 1. SIGTERM to the launch's process group (baseline:=true: the launch file's other branch). Upstream launch
    #    does not wait for its processes on SIGTERM, so what is checked is that the container is gone in time.
    launch = tools.popen(ws, ["ros2", "launch", "multidnn_sched", "perception.launch.py", "baseline:=true"])
    try:
        out = Output(launch)
        assert out.wait_for(r"running nodes .*baseline", START_TIMEOUT_SEC), out.text[-4000:]
        pid = int(re.search(r"perception_container-1\]: process started with pid \[(\d+)\]", out.text).group(1))
        container = psutil.Process(pid)
        sent = time.monotonic()
        os.killpg(launch.pid, signal.SIGTERM)
        time.sleep(0.001)
        os.killpg(launch.pid, signal.SIGTERM)
        gone, alive = psutil.wait_procs([container], timeout=SHUTDOWN_LIMIT_SEC)
        elapsed = time.monotonic() - sent
        print(f"\n== ros2 launch, SIGTERM x2 -> container gone after {elapsed:.2f} s")
        assert not alive, f"the container outlived SIGTERM by {SHUTDOWN_LIMIT_SEC} s"
        launch.wait(timeout=10)
        assert "Traceback" not in out.text, out.text[-3000:]
    finally:
        _stop(launch)
    # 2. SIGTERM twice to the installed executable itself (what systemd / docker stop send): status 0.
    exe = ws / "install" / "multidnn_sched" / "lib" / "multidnn_sched" / "perception_container"
    proc = tools.popen(ws, [str(exe), "--baseline", "--ros-args", "-p", "nodes:=detector"])
    try:
        out = Output(proc)
        assert out.wait_for(r"running nodes \['detector'\]", START_TIMEOUT_SEC), out.text[-4000:]
        elapsed = _signal_group(proc, signal.SIGTERM, 2)
        print(f"== perception_container, SIGTERM x2 -> exit {proc.returncode} after {elapsed:.2f} s")
        _assert_clean_exit(out, elapsed, "perception_container, 2 x SIGTERM")
        assert proc.returncode == 0, proc.returncode
    finally:
        _stop(proc)


def test_ros2_run_double_ctrl_c_exits_cleanly_with_status_0(tools: Ros2Tools) -> None:
    run = tools.popen(tools.ws("ws"), ["ros2", "run", "multidnn_sched", "perception_container", "--baseline",
                                       "--ros-args", "-p", "nodes:=detector"])
    try:
        out = Output(run)
        assert out.wait_for(r"running nodes \['detector'\]", START_TIMEOUT_SEC), out.text[-4000:]
        elapsed = _signal_group(run, signal.SIGINT, 2)
        print(f"\n== ros2 run, SIGINT x2 -> exit sec: {elapsed:.2f}")
        _assert_clean_exit(out, elapsed, "ros2 run, 2 x SIGINT")
        assert run.returncode == 0, run.returncode
    finally:
        _stop(run)


def test_standalone_editable_install_is_found_by_ros2_launch_and_run(tools: Ros2Tools, tmp_path: Path) -> None:
    # What `make setup` does for .venv (scripts/ament_share.py), into a prefix of its own here so the other
    # tests' workspaces stay the only multidnn_sched they see.
    assert 'scripts/ament_share.py "$VENV"' in (ROOT / "scripts" / "setup_env.sh").read_text()
    prefix = tmp_path / "standalone"
    python = str(tools.venv / "bin" / "python")
    _check(subprocess.run([python, str(ROOT / "scripts" / "ament_share.py"), str(prefix)], env=tools.env,
                          capture_output=True, text=True, timeout=60, check=False), "ament_share.py")
    # PYTHONPATH: the code under test is this checkout (the editable install may point at another one).
    env = {**tools.env, "AMENT_PREFIX_PATH": f"{prefix}:{tools.env['AMENT_PREFIX_PATH']}",
           "PYTHONPATH": f"{ROOT}:{tools.env['PYTHONPATH']}"}
    standalone = Ros2Tools(root=tools.root, venv=tools.venv, env=env)
    where = standalone.run(None, ["ros2", "pkg", "prefix", "multidnn_sched"])
    _check(where, "ros2 pkg prefix")
    assert Path(where.stdout.strip()) == prefix
    shown = standalone.run(None, ["ros2", "launch", "multidnn_sched", "perception.launch.py", "--show-args"])
    _check(shown, "ros2 launch --show-args")
    assert "'container_name'" in shown.stdout and "'params_file'" in shown.stdout, shown.stdout
    helped = standalone.run(None, ["ros2", "run", "multidnn_sched", "perception_container", "--help"], timeout=120)
    _check(helped, "ros2 run (standalone) --help")
    assert helped.stdout.startswith("usage: perception_container"), helped.stdout
