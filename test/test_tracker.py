"""Tests of the DeepSORT-style tracker on synthetic trajectories (no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from multidnn_sched.models.tracker import (
    KalmanBoxFilter,
    Tracker,
    TrackerConfig,
    iou_matrix,
    xyah_to_xyxy,
    xyxy_to_xyah,
)


def _box(cx: float, cy: float, w: float = 40.0, h: float = 40.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _onehot(i: int, dim: int = 8) -> np.ndarray:
    v = np.zeros(dim)
    v[i] = 1.0
    return v


def test_box_conversions_round_trip() -> None:
    box = np.array([10.0, 20.0, 50.0, 100.0])
    assert np.allclose(xyah_to_xyxy(xyxy_to_xyah(box)), box, atol=1e-4)


def test_iou_matrix_values() -> None:
    iou = iou_matrix(np.array([_box(0, 0), _box(100, 100)]), np.array([_box(0, 0), _box(20, 0)]))
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(20 * 40 / (2 * 1600 - 20 * 40))
    assert iou[1, 0] == 0.0


def test_kalman_learns_constant_velocity() -> None:
    kf = KalmanBoxFilter(1 / 20, 1 / 160)
    mean, cov = kf.initiate(xyxy_to_xyah(np.array(_box(0, 100))))
    for t in range(1, 20):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, xyxy_to_xyah(np.array(_box(5.0 * t, 100))))
    assert mean[4] == pytest.approx(5.0, abs=0.3)
    predicted, _ = kf.predict(mean, cov)
    assert predicted[0] == pytest.approx(100.0, abs=1.0)


def test_birth_after_n_init_and_stable_ids() -> None:
    tracker = Tracker(TrackerConfig(n_init=3))
    outputs_per_frame = []
    for t in range(10):
        boxes = np.array([_box(50 + 4 * t, 50), _box(300 - 3 * t, 200)])
        out = tracker.update(
            boxes, np.array([0.9, 0.8]), np.array([1, 2]), np.stack([_onehot(0), _onehot(1)])
        )
        outputs_per_frame.append(out)
    assert outputs_per_frame[0] == [] and outputs_per_frame[1] == []  # tentative until 3 hits
    assert [o.track_id for o in outputs_per_frame[2]] == [1, 2]
    for out in outputs_per_frame[2:]:
        assert {o.track_id: o.label for o in out} == {1: 1, 2: 2}
    last = {o.track_id: o.box_xyxy for o in outputs_per_frame[-1]}
    assert np.allclose(last[1], _box(50 + 36, 50), atol=2.0)


def test_death_after_max_age_and_new_id_on_return() -> None:
    tracker = Tracker(TrackerConfig(n_init=1, max_age=3))
    for t in range(5):
        tracker.update(np.array([_box(100 + t, 100)]), np.array([0.9]), np.array([0]))
    for _ in range(4):  # missing for more than max_age frames
        assert tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)) == []
    assert tracker.tracks == []
    out = tracker.update(np.array([_box(105, 100)]), np.array([0.9]), np.array([0]))
    assert [o.track_id for o in out] == [2]


def test_track_survives_short_gap_with_same_id() -> None:
    tracker = Tracker(TrackerConfig(n_init=2, max_age=10))
    emb = np.stack([_onehot(3)])
    for t in range(8):
        out = tracker.update(np.array([_box(100 + 5 * t, 100)]), np.array([0.9]), np.array([0]), emb)
    assert [o.track_id for o in out] == [1]
    for _ in range(3):
        tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros((0, 8)))
    out = tracker.update(np.array([_box(100 + 5 * 11, 100)]), np.array([0.9]), np.array([0]), emb)
    assert [o.track_id for o in out] == [1]


def test_crossing_objects_keep_ids() -> None:
    """Two objects cross (overlapping mid-way); appearance + motion keep the ids."""
    tracker = Tracker()
    history: dict[int, list[float]] = {}
    for t in range(40):
        a = _box(50 + 10 * t, 200)  # moving right
        b = _box(450 - 10 * t, 205)  # moving left
        boxes = np.array([b, a]) if t % 2 else np.array([a, b])  # detection order must not matter
        embs = np.stack([_onehot(1), _onehot(0)]) if t % 2 else np.stack([_onehot(0), _onehot(1)])
        for o in tracker.update(boxes, np.array([0.9, 0.9]), np.array([0, 0]), embs):
            history.setdefault(o.track_id, []).append(float((o.box_xyxy[0] + o.box_xyxy[2]) / 2))
    assert sorted(history) == [1, 2]
    assert np.all(np.diff(history[1]) > 0), "track 1 (moving right) switched identity"
    assert np.all(np.diff(history[2]) < 0), "track 2 (moving left) switched identity"


def test_crossing_identical_appearance_uses_motion() -> None:
    tracker = Tracker()
    history: dict[int, list[float]] = {}
    same = np.stack([_onehot(0), _onehot(0)])
    for t in range(40):
        boxes = np.array([_box(50 + 10 * t, 200), _box(450 - 10 * t, 200)])
        for o in tracker.update(boxes, np.array([0.9, 0.9]), np.array([0, 0]), same):
            history.setdefault(o.track_id, []).append(float((o.box_xyxy[0] + o.box_xyxy[2]) / 2))
    assert sorted(history) == [1, 2]
    assert np.all(np.diff(history[1]) > 0) and np.all(np.diff(history[2]) < 0)


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="as many boxes"):
        Tracker().update(np.zeros((2, 4)), np.zeros(1), np.zeros(2, dtype=np.int64))


def test_reset_restarts_ids() -> None:
    tracker = Tracker(TrackerConfig(n_init=1))
    tracker.update(np.array([_box(10, 10)]), np.array([1.0]), np.array([0]))
    tracker.reset()
    out = tracker.update(np.array([_box(10, 10)]), np.array([1.0]), np.array([0]))
    assert [o.track_id for o in out] == [1]


def test_kalman_gating_and_update_match_a_cholesky_reference() -> None:
    import scipy.linalg

    kf = KalmanBoxFilter(1.0 / 20.0, 1.0 / 160.0)
    rng = np.random.default_rng(3)
    mean, cov = kf.initiate(np.array([120.0, 80.0, 0.8, 60.0]))
    for _ in range(3):
        mean, cov = kf.predict(mean, cov)
    measurements = np.array([120.0, 80.0, 0.8, 60.0]) + rng.normal(0.0, 5.0, (7, 4))
    proj_mean, proj_cov = kf.project(mean, cov)
    chol = np.linalg.cholesky(proj_cov)
    z = scipy.linalg.solve_triangular(chol, (measurements - proj_mean).T, lower=True)
    np.testing.assert_allclose(kf.gating_distance(mean, cov, measurements), np.sum(z * z, axis=0), rtol=1e-9)
    gain = scipy.linalg.cho_solve(scipy.linalg.cho_factor(proj_cov, lower=True), (cov @ kf._update.T).T).T
    new_mean, new_cov = kf.update(mean, cov, measurements[0])
    np.testing.assert_allclose(new_mean, mean + (measurements[0] - proj_mean) @ gain.T, rtol=1e-9)
    np.testing.assert_allclose(new_cov, cov - gain @ proj_cov @ gain.T, rtol=1e-9, atol=1e-9)
