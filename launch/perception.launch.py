"""Launch the perception container: detector, tracker and classifier in ONE process on ONE BlockExecutor.

    ros2 launch multidnn_sched perception.launch.py params_file:=/path/to/perception.yaml use_sim_time:=true \
        image_topic:=/camera/image_raw baseline:=false container_name:=perception_container device:=cuda

Outputs: ``detections``, ``tracks``, ``classified`` (vision_msgs/Detection2DArray) and ``/diagnostics``.

The ``Node`` action has no ``name``: launch_ros turns ``name`` into a ``__node`` remap, which renames EVERY
node of the process (four ``/perception_container``, ``ros2 param set /detector ...`` "Node not found", the
params file's ``detector:`` section ignored). Only the container is renamed, by a remap rule scoped to it
(``perception_container:__node:=<container_name>``); the nodes keep their names ``detector``, ``tracker``,
``classifier``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

CONTAINER_NODE = "perception_container"
"""The container node's name in the code (``multidnn_sched.ros.container``)."""


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("multidnn_sched"), "config", "perception.yaml")
    params_file = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    image_topic = LaunchConfiguration("image_topic")
    baseline = LaunchConfiguration("baseline")
    container_name = LaunchConfiguration("container_name")
    device = LaunchConfiguration("device")

    def container(extra_args: list[str], condition: object) -> Node:
        return Node(
            package="multidnn_sched",
            executable="perception_container",
            output="screen",
            emulate_tty=True,
            arguments=extra_args,
            parameters=[params_file, {"use_sim_time": use_sim_time, "device": device}],
            remappings=[("image", image_topic), (f"{CONTAINER_NODE}:__node", container_name)],
            condition=condition,
        )

    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=default_params,
                description="YAML file with the container's and the nodes' parameters",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                description="use /clock (true when replaying a bag with --clock)",
            ),
            DeclareLaunchArgument(
                "image_topic",
                default_value="/camera/image_raw",
                description="sensor_msgs/Image input of every node",
            ),
            DeclareLaunchArgument(
                "container_name",
                default_value=CONTAINER_NODE,
                description="name of the container node (its params-file section); the other nodes keep theirs",
            ),
            DeclareLaunchArgument(
                "baseline",
                default_value="false",
                description="true: each model whole in its node callback (comparison)",
            ),
            DeclareLaunchArgument(
                "device",
                default_value="cpu",
                description="torch device of every model: cpu, cuda or cuda:N (overrides the params file; "
                "cuda without a GPU stops the container at start-up)",
            ),
            container([], UnlessCondition(baseline)),
            container(["--baseline"], IfCondition(baseline)),
        ]
    )
