"""Choose the camera frame a command is grounded on, with its depth and proposals (ROS-free).

Colour, depth and proposals arrive as separate messages; any of them can be late or lost
(best-effort transport, a busy machine). A command is grounded on the newest colour frame
whose side data is complete:

1. the newest frame, when its depth image (and, if the proposals topic is in use, its
   Proposals) have arrived;
2. otherwise the newest frame after waiting up to ``sync_wait`` seconds for them;
3. otherwise the newest earlier frame (of the few kept, not older than ``max_image_age``)
   whose depth and proposals have arrived;
4. otherwise, when the newest frame lacks its proposals, the newest earlier frame that has
   them (without depth: proposals are required, depth is not);
5. otherwise the newest frame as it is; the caller reports the missing depth.

Depth is expected once a depth image has ever arrived; proposals once a Proposals message
has ever arrived and the command brings no boxes of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from reclip_ros.runtime.frame_buffer import Frame, StampedHistory


@dataclass(frozen=True)
class SyncSettings:
    """Tolerances of the frame choice.

    Attributes:
        depth_max_skew: seconds between a frame stamp and the depth stamp matched to it.
        proposals_max_skew: seconds between a frame stamp and the Proposals stamp.
        sync_wait: seconds to wait for the newest frame's depth (and proposals).
        max_image_age: seconds; earlier frames older than this are not used (0: no limit).
    """

    depth_max_skew: float = 0.05
    proposals_max_skew: float = 0.05
    sync_wait: float = 0.1
    max_image_age: float = 1.0


@dataclass(frozen=True)
class FrameChoice:
    """The frame to ground on and what was found for it.

    Attributes:
        frame: the chosen colour frame.
        depth: the depth frame matched to it (None: none matched or none expected).
        depth_expected: a depth image has arrived before, so one was expected here.
        note: a human-readable remark for the result's status message ('' when none).
    """

    frame: Frame
    depth: Any = None
    depth_expected: bool = False
    note: str = ''


def choose_frame(newest: Frame, recent: Sequence[Frame], depth: StampedHistory,
                 proposals: StampedHistory, settings: SyncSettings, now_ns: int,
                 need_proposals: bool = True) -> FrameChoice:
    """Pick the frame to ground on (see the module docstring for the order).

    Args:
        newest: the newest colour frame (the command's default frame).
        recent: the kept colour frames, newest first (may include *newest*).
        depth: depth frames by stamp.
        proposals: proposal boxes by stamp.
        settings: tolerances.
        now_ns: the current time on the frames' clock, nanoseconds.
        need_proposals: False when the command brings its own boxes.
    """
    want_depth = depth.count > 0
    want_boxes = need_proposals and proposals.count > 0
    if not want_depth and not want_boxes:
        return FrameChoice(newest)

    def complete(frame: Frame, wait_s: float):
        deadline = time.monotonic() + wait_s  # one wait for depth and proposals together
        found = None
        if want_depth:
            found = depth.wait_match(frame.stamp_ns, settings.depth_max_skew, wait_s)
            if found is None:
                return None, False
        if want_boxes and proposals.wait_match(frame.stamp_ns, settings.proposals_max_skew,
                                               deadline - time.monotonic()) is None:
            return found, False
        return found, True

    found, ok = complete(newest, settings.sync_wait)
    if ok:
        return FrameChoice(newest, found, want_depth)
    newest_has_boxes = not want_boxes or proposals.match(
        newest.stamp_ns, settings.proposals_max_skew) is not None
    missing = 'depth image' if newest_has_boxes else 'proposals'
    earlier_frames = [f for f in recent if f is not newest and f.sequence < newest.sequence
                      and not (settings.max_image_age > 0
                               and f.age_s(now_ns) > settings.max_image_age)]
    for earlier in earlier_frames:
        earlier_depth, ok = complete(earlier, 0.0)
        if ok:
            return FrameChoice(earlier, earlier_depth, want_depth,
                               _fallback_note(newest, earlier, missing, settings))
    if not newest_has_boxes:
        # no frame has everything: proposals are required, depth is not
        for earlier in earlier_frames:
            if proposals.match(earlier.stamp_ns, settings.proposals_max_skew) is not None:
                return FrameChoice(earlier, None, want_depth,
                                   _fallback_note(newest, earlier, missing, settings))
    return FrameChoice(newest, found, want_depth)


def _fallback_note(newest: Frame, earlier: Frame, missing: str,
                   settings: SyncSettings) -> str:
    gap = (newest.stamp_ns - earlier.stamp_ns) / 1e9
    return (f'grounded on the frame {gap:.3f} s before the newest, whose {missing} did not '
            f'arrive within sync_wait={settings.sync_wait:g} s')


def missing_depth_note(frame: Frame, depth: StampedHistory,
                       settings: SyncSettings) -> str:
    """Say that an expected depth image did not match *frame* (status message text)."""
    skew = depth.nearest_skew_s(frame.stamp_ns)
    nearest = ('none kept' if skew is None else f'the nearest of {len(depth)} recent is '
               f'{skew:.3f} s away')
    return (f'no depth image within depth_max_skew={settings.depth_max_skew:g} s of the '
            f'image stamp ({nearest}; waited sync_wait={settings.sync_wait:g} s): no 3D '
            'position, and closest/behind use 2D proxies instead of depth')

