"""multidnn_sched.scenes: deterministic synthetic camera (generator) and its rosbag2 I/O (bag, cli)."""

from multidnn_sched.scenes.generator import (
    ATTRIBUTES,
    CLASSES,
    GroundTruthObject,
    SceneConfig,
    SceneFrame,
    SceneGenerator,
)

__all__ = ["ATTRIBUTES", "CLASSES", "GroundTruthObject", "SceneConfig", "SceneFrame", "SceneGenerator"]
