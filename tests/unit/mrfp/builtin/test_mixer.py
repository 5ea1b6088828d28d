"""The mixer: N-1 sums per conference, mute, deaf, saturation, talk detection hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from app.mrfp.builtin.mixer import ConferenceLayout, TalkDetector, frame_rms, mix_minus


def const_frames(values: list[int], width: int = 4) -> np.ndarray:
    return np.repeat(np.array(values, dtype=np.int16)[:, None], width, axis=1)


def all_true(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.bool_)


def test_each_member_gets_the_others_of_its_own_conference() -> None:
    layout = ConferenceLayout.from_sizes([3, 2])
    frames = const_frames([1, 10, 100, 1000, 5000])
    mixed = mix_minus(frames, layout, all_true(5), all_true(5))
    assert mixed[:, 0].tolist() == [110, 101, 11, 5000, 1000]
    assert mixed.dtype == np.int16 and mixed.shape == frames.shape


def test_lone_member_hears_silence() -> None:
    mixed = mix_minus(
        const_frames([1234]), ConferenceLayout.from_sizes([1]), all_true(1), all_true(1)
    )
    assert not mixed.any()


def test_muted_member_is_left_out_and_deaf_member_hears_nothing() -> None:
    layout = ConferenceLayout.from_sizes([3])
    frames = const_frames([1, 10, 100])
    speaking = np.array([True, False, True])
    hearing = np.array([True, True, False])
    mixed = mix_minus(frames, layout, speaking, hearing)
    assert mixed[:, 0].tolist() == [100, 101, 0]


def test_saturation() -> None:
    layout = ConferenceLayout.from_sizes([4])
    frames = const_frames([30000, 30000, 30000, -32768])
    mixed = mix_minus(frames, layout, all_true(4), all_true(4))
    assert mixed[:, 0].tolist() == [27232, 27232, 27232, 32767]
    frames = const_frames([-30000, -30000, -30000, 0])
    assert mix_minus(frames, layout, all_true(4), all_true(4))[3, 0] == -32768


def test_layout_and_shape_checks() -> None:
    layout = ConferenceLayout.from_sizes([2, 1])
    assert layout.starts.tolist() == [0, 2] and layout.group.tolist() == [0, 0, 1]
    with pytest.raises(ValueError):
        ConferenceLayout.from_sizes([2, 0])
    with pytest.raises(ValueError):
        mix_minus(const_frames([1, 2]), layout, all_true(2), all_true(2))


def test_rms() -> None:
    frames = np.array([[3, -3, 3, -3], [0, 0, 0, 0]], dtype=np.int16)
    assert frame_rms(frames).tolist() == [3.0, 0.0]


def test_talk_detection_has_hysteresis() -> None:
    det = TalkDetector(2, start_level=500, stop_level=250, start_frames=2, stop_frames=3)
    eligible = all_true(2)

    def step(levels: list[float]) -> tuple[list[int], list[int]]:
        started, stopped = det.update(np.array(levels, dtype=np.float32), eligible)
        return started.tolist(), stopped.tolist()

    assert step([600, 600]) == ([], [])  # one loud frame is a click
    assert step([600, 100]) == ([0], [])  # two in a row start row 0; row 1 fell silent
    assert step([400, 100]) == ([], [])  # between the levels: still talking
    assert step([100, 100]) == ([], [])
    assert step([100, 100]) == ([], [])
    assert step([100, 100]) == ([], [0])  # three quiet frames end the talkspurt
    assert det.talking.tolist() == [False, False]


def test_ineligible_member_stops_at_once_and_reorder_keeps_state() -> None:
    det = TalkDetector(2, start_frames=1, stop_frames=50)
    det.update(np.array([1000, 1000], dtype=np.float32), all_true(2))
    assert det.talking.tolist() == [True, True]
    moved = det.reordered([1, -1, 0])  # row 1 moved first, a new member, row 0 last
    assert moved.talking.tolist() == [True, False, True]
    started, stopped = moved.update(
        np.array([1000, 0, 1000], dtype=np.float32), np.array([False, True, True])
    )
    assert stopped.tolist() == [0] and started.tolist() == []
