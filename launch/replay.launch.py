"""Replay a recorded bag into the perception container on a robot (sim time from the bag's /clock).

    ros2 launch multidnn_sched replay.launch.py bag:=/path/to/bag rate:=1.0 \
        params_file:=/path/to/perception.yaml

Runs ``ros2 bag play --clock`` and the container with ``use_sim_time: true``; the container is started first
so no frame is missed. Without ROS tooling (standalone / CI), ``multidnn-replay BAG`` does the same in one
process and writes a report.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, TimerAction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("multidnn_sched")
    bag = LaunchConfiguration("bag")
    rate = LaunchConfiguration("rate")
    params_file = LaunchConfiguration("params_file")
    image_topic = LaunchConfiguration("image_topic")
    perception = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "perception.launch.py")),
        launch_arguments={
            "params_file": params_file,
            "use_sim_time": "true",
            "image_topic": image_topic,
        }.items(),
    )
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", bag, "--clock", "--rate", rate],
        output="screen",
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="rosbag2 directory or file to replay"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback rate factor"),
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "perception.yaml"),
                description="container and node parameters",
            ),
            DeclareLaunchArgument(
                "image_topic", default_value="/camera/image_raw", description="image topic in the bag"
            ),
            perception,
            # Give the container time to load the networks and profile its blocks before frames arrive.
            TimerAction(period=10.0, actions=[play]),
        ]
    )
