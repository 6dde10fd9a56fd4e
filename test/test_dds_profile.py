"""The Fast DDS shared-memory profile the replay uses for raw frames (``multidnn_sched.ros.dds_profile``)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from multidnn_sched.evaluation.replay import main as replay_main
from multidnn_sched.evaluation.replay import parse_options
from multidnn_sched.ros.dds_profile import FASTDDS_LARGE_SHM_PROFILE, PROFILE_ENV, use_profile

NS = {"d": "http://www.eprosima.com"}


def test_profile_is_shipped_and_declares_large_shm_segments_plus_udp() -> None:
    root = ET.parse(FASTDDS_LARGE_SHM_PROFILE).getroot()
    transports = {
        t.findtext("d:transport_id", namespaces=NS): t for t in root.iterfind(".//d:transport_descriptor", NS)
    }
    kinds = {t.findtext("d:type", namespaces=NS) for t in transports.values()}
    assert kinds == {"SHM", "UDPv4"}
    shm = next(t for t in transports.values() if t.findtext("d:type", namespaces=NS) == "SHM")
    assert int(shm.findtext("d:segment_size", namespaces=NS)) >= 1920 * 1080 * 3  # a 1080p rgb8 frame
    participant = root.find(".//d:participant", NS)
    assert participant is not None and participant.get("is_default_profile") == "true"
    used = [e.text for e in participant.iterfind(".//d:userTransports/d:transport_id", NS)]
    assert sorted(used) == sorted(transports)
    # setup.py's package_data pattern ships it (pip and colcon installs)
    setup_py = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert '"ros/*.xml"' in setup_py and FASTDDS_LARGE_SHM_PROFILE.parent.name == "ros"


def test_use_profile_sets_the_variable_unless_the_user_did(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    monkeypatch.delenv("RMW_IMPLEMENTATION", raising=False)
    assert use_profile(None) == "rmw default"
    assert PROFILE_ENV not in os.environ
    assert use_profile(FASTDDS_LARGE_SHM_PROFILE) == str(FASTDDS_LARGE_SHM_PROFILE)
    assert os.environ[PROFILE_ENV] == str(FASTDDS_LARGE_SHM_PROFILE)
    assert use_profile(FASTDDS_LARGE_SHM_PROFILE) == str(FASTDDS_LARGE_SHM_PROFILE)  # again: still ours
    mine = tmp_path / "mine.xml"
    mine.write_text("<dds/>")
    monkeypatch.setenv(PROFILE_ENV, str(mine))
    assert use_profile(FASTDDS_LARGE_SHM_PROFILE) == f"user: {mine}"
    assert os.environ[PROFILE_ENV] == str(mine)
    monkeypatch.delenv(PROFILE_ENV)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        use_profile(tmp_path / "missing.xml")
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp")
    assert use_profile(FASTDDS_LARGE_SHM_PROFILE) == "not fast dds (rmw_cyclonedds_cpp)"
    assert PROFILE_ENV not in os.environ


def test_replay_dds_profile_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_options([str(tmp_path)]).dds_profile == FASTDDS_LARGE_SHM_PROFILE
    assert parse_options([str(tmp_path), "--dds-profile", "none"]).dds_profile is None
    assert replay_main([str(tmp_path), "--dds-profile", str(tmp_path / "nope.xml")]) == 2
    assert "--dds-profile: expected a Fast DDS profile XML file or 'none'" in capsys.readouterr().err
