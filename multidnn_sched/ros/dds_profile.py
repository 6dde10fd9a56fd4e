"""Fast DDS transport profile for large images between processes of one machine.

Fast DDS's built-in shared-memory transport uses 512 KiB segments: a 640x480 rgb8 frame (900 KiB) does not fit
and goes over UDP loopback in 64 KiB fragments. :data:`FASTDDS_LARGE_SHM_PROFILE` (shipped with the package)
declares 16 MiB shared-memory segments plus UDPv4. Fast DDS reads ``FASTDDS_DEFAULT_PROFILES_FILE`` when a
process creates its first participant, so :func:`use_profile` must run before ``rclpy.init`` and is inherited
by child processes (``multidnn-replay``'s player).
"""

from __future__ import annotations

import os
from pathlib import Path

FASTDDS_LARGE_SHM_PROFILE = Path(__file__).with_name("fastdds_large_shm.xml")
"""Participant profile: 16 MiB shared-memory segments (frames up to 1080p rgb8) and UDPv4."""

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
"""The variable Fast DDS (rmw_fastrtps_cpp, Kilted's default RMW) reads its default profiles from."""


def fastdds_in_use() -> bool:
    """Whether the RMW is Fast DDS (``RMW_IMPLEMENTATION`` unset: Kilted's default, rmw_fastrtps_cpp)."""
    return os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps")


def use_profile(profile: Path | None) -> str:
    """Point Fast DDS at ``profile`` for this process and its children; returns what the run uses.

    ``None`` leaves the environment alone. A profile the user already set (``FASTDDS_DEFAULT_PROFILES_FILE``)
    wins, and another RMW ignores profiles. Returns ``"<path>"``, ``"user: <path>"``, ``"rmw default"`` or
    ``"not fast dds (<rmw>)"`` for the report.

    Raises:
        FileNotFoundError: ``profile`` does not exist.
    """
    if not fastdds_in_use():
        return f"not fast dds ({os.environ.get('RMW_IMPLEMENTATION')})"
    current = os.environ.get(PROFILE_ENV)
    if current and (profile is None or current != str(profile)):
        return f"user: {current}"
    if profile is None:
        return "rmw default"
    if not profile.is_file():
        raise FileNotFoundError(f"Fast DDS profile {profile} does not exist")
    os.environ[PROFILE_ENV] = str(profile)
    return str(profile)
