"""multidnn_sched: ament_python package (colcon on robots) that is also pip-installable (standalone / CI)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "multidnn_sched"
# Paths are relative to this file, not to the working directory: `colcon build --symlink-install` runs
# `setup.py develop` from build/multidnn_sched/, where only setup.py, setup.cfg, the packages and the data files
# are linked (setuptools 68.1.2 on Ubuntu 24.04 failed there with FileNotFoundError: 'README.md').
HERE = os.path.dirname(os.path.realpath(__file__))


def _data(pattern: str) -> list[str]:
    """Files matching ``pattern`` under this directory, as paths relative to it (what colcon links)."""
    return sorted(os.path.relpath(path, HERE) for path in glob(os.path.join(HERE, pattern)))


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Run several DNNs in one ROS 2 process on one shared, LAG-scheduled block executor.",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    maintainer="multidnn_sched maintainers",
    maintainer_email="maintainers@multidnn-sched.org",
    url="https://github.com/multidnn-sched/multidnn_sched",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "compression_tools", "compression_tools.*"]),
    package_data={PACKAGE: ["models/weights/*.safetensors", "models/weights/*.json", "ros/*.xml"]},
    # Where colcon (ament_python) puts these; `pip install .` mirrors it under the environment's prefix.
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _data("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", _data("config/*.yaml")),
        (f"share/{PACKAGE}/config/workloads", _data("config/workloads/*.yaml")),
        (f"share/{PACKAGE}/config/examples", _data("config/examples/*.yaml")),
    ],
    # rclpy, torch, vision_msgs... come from the ROS distribution (rosdep keys in package.xml) on robots and
    # from requirements/lock.txt in the standalone environment, so nothing is pinned here.
    install_requires=["setuptools"],
    # `colcon test` runs pytest only for packages with a pytest test dependency (package.xml's test_depend
    # is not read for that).
    extras_require={"test": ["pytest"]},
    zip_safe=False,
    entry_points={
        "console_scripts": [
            # offline tools
            "multidnn-scenes = multidnn_sched.scenes.cli:main",
            "multidnn-train = multidnn_sched.models.train:main",
            "multidnn-evaluate = multidnn_sched.evaluation.cli:main",
            "multidnn-bench = multidnn_sched.bench.cli:main",
            "multidnn-compress = compression_tools.cli:main",
            "multidnn-replay = multidnn_sched.evaluation.replay:main",
            # ROS 2 executables (`ros2 run multidnn_sched <name>`)
            "perception_container = multidnn_sched.ros.launcher:main",
            "detector = multidnn_sched.ros.launcher:detector_main",
            "tracker = multidnn_sched.ros.launcher:tracker_main",
            "classifier = multidnn_sched.ros.launcher:classifier_main",
        ],
    },
)
