"""The ROS 2 package itself: package.xml, what `pip install .` installs (colcon's layout), launch files, lint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_parses_and_declares_runtime_dependencies() -> None:
    package = parse_package(str(ROOT / "package.xml"))
    package.validate()
    assert package.name == "multidnn_sched"
    assert package.package_format == 3
    assert package.get_build_type() == "ament_python"
    assert package.maintainers and "@" in package.maintainers[0].email
    assert package.licenses == ["Apache-2.0"]
    assert any(url.type == "repository" for url in package.urls)
    exec_deps = {d.name for d in package.exec_depends}
    for needed in ("rclpy", "sensor_msgs", "std_msgs", "vision_msgs", "diagnostic_msgs", "rcl_interfaces",
                   "python3-torch", "python3-torchvision", "python3-numpy", "python3-scipy"):
        assert needed in exec_deps, f"package.xml lacks exec_depend {needed}"


def test_vision_msgs_compat_package_is_hidden_from_colcon() -> None:
    compat = ROOT / "tools" / "vision_msgs_compat"
    assert (compat / "COLCON_IGNORE").exists(), "colcon would build a second vision_msgs on robots"
    assert sorted(p.name for p in (compat / "msg").glob("*.msg"))


@pytest.fixture(scope="module")
def installed_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install` of this package into a brand-new venv: the layout colcon's install/ has too.

    Built as a wheel first and installed with the new venv's own pip, so the development venv is untouched
    (``pip install --prefix`` from the development venv would uninstall its editable install).
    Under ``colcon test`` (a sourced workspace) PYTHONPATH holds the workspace's own install of this package:
    the new venv's pip must not see it as already installed, so PYTHONPATH is dropped for that venv.
    """
    tmp = tmp_path_factory.mktemp("install")
    run = dict(check=True, capture_output=True, text=True, timeout=300)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(tmp / "dist"), str(ROOT)], **run)
    wheel = next((tmp / "dist").glob("multidnn_sched-*.whl"))
    venv = tmp / "venv"
    isolated = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], env=isolated, **run)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel)], env=isolated, **run)
    return venv


def test_pip_install_places_ros_share_files(installed_prefix: Path) -> None:
    share = installed_prefix / "share"
    assert (share / "ament_index" / "resource_index" / "packages" / "multidnn_sched").is_file()
    assert (share / "multidnn_sched" / "package.xml").read_text() == (ROOT / "package.xml").read_text()
    assert (share / "multidnn_sched" / "launch" / "perception.launch.py").is_file()
    assert (share / "multidnn_sched" / "config" / "perception.yaml").is_file()
    for launch in (ROOT / "launch").glob("*.launch.py"):
        assert (share / "multidnn_sched" / "launch" / launch.name).is_file(), launch.name
    for workload in (ROOT / "config" / "workloads").glob("*.yaml"):
        assert (share / "multidnn_sched" / "config" / "workloads" / workload.name).is_file(), workload.name


def test_pip_install_places_console_scripts(installed_prefix: Path) -> None:
    bin_dir = installed_prefix / "bin"
    for script in ("multidnn-bench", "multidnn-compress", "multidnn-scenes", "perception_container"):
        assert (bin_dir / script).is_file(), f"{script} not installed"


def test_launch_files_compile() -> None:
    for launch in (ROOT / "launch").glob("*.launch.py"):
        source = launch.read_text()
        compile(source, str(launch), "exec")
        assert "def generate_launch_description" in source, launch.name


def test_ruff_is_clean() -> None:
    # `python -m ruff`, not <dir of sys.executable>/ruff: under `colcon test` the interpreter's bin/ need not
    # hold the ruff binary (rosdep's python3-ruff-pip installs it with pip; ruff's module finds it).
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "multidnn_sched", "compression_tools", "test", "launch", "setup.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
