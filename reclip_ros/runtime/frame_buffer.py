"""Thread-safe holders for the newest camera frames and for stamped side data (ROS-free).

Frames are stored undecoded (the message and a decode function): the executor thread only
appends a reference, and decoding happens on the worker thread, once per frame, when a
command needs it. A few recent frames are kept so that a command can fall back to the
newest frame whose depth image (and proposals) arrived, when those of the very newest
frame were lost or are late.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, List, Optional, Tuple

import numpy as np

_SEQUENCE = itertools.count(1)


@dataclass
class Frame:
    """One received image, decoded lazily and at most once.

    Attributes:
        stamp_ns: the image's header stamp in nanoseconds (0 when unset).
        received_ns: receipt time on the node's clock, nanoseconds.
        header: the message header (opaque here; copied into results).
        decoder: returns the pixels as an array; may raise (bad image).
        received_monotonic: receipt time on ``time.monotonic()``.
        refused: why the frame was refused on receipt ('' when it was not), e.g. larger
            than ``max_image_pixels``; a refused frame holds no pixels and is never decoded.
    """

    stamp_ns: int
    received_ns: int
    header: Any
    decoder: Callable[[], np.ndarray]
    received_monotonic: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _decoded: Optional[np.ndarray] = field(default=None, repr=False)
    _error: Optional[Exception] = field(default=None, repr=False)
    sequence: int = field(default_factory=lambda: next(_SEQUENCE))
    refused: str = ''

    def decode(self) -> np.ndarray:
        """Return the decoded pixels (cached); re-raise the decoder's error every call."""
        if self.refused:
            raise ValueError(self.refused)
        with self._lock:
            if self._decoded is None and self._error is None:
                try:
                    self._decoded = self.decoder()
                except Exception as exc:  # noqa: BLE001 - re-raised to every caller
                    self._error = exc
                self.decoder = _spent_decoder  # drop the message reference
            if self._error is not None:
                raise self._error
            return self._decoded

    def age_s(self, now_ns: int) -> float:
        """Seconds between the frame's stamp (receipt time when unstamped) and *now_ns*."""
        reference = self.stamp_ns if self.stamp_ns > 0 else self.received_ns
        return (now_ns - reference) / 1e9

    @property
    def key(self) -> Tuple[int, int]:
        """A key identifying this frame for embedding caches (unique per received frame)."""
        return (self.stamp_ns, self.sequence)


def _spent_decoder() -> np.ndarray:  # pragma: no cover - never called after decode()
    raise RuntimeError('frame already decoded')


class LatestSlot:
    """Holds only the newest item (a depth-1 buffer: stale frames are worse than dropped)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: Any = None
        self.count = 0

    def put(self, item: Any) -> None:
        """Replace the held item."""
        with self._lock:
            self._item = item
            self.count += 1

    def get(self) -> Any:
        """Return the newest item (None before the first)."""
        with self._lock:
            return self._item

    def clear(self) -> None:
        """Forget the held item."""
        with self._lock:
            self._item = None


class FrameHistory(LatestSlot):
    """The newest few colour frames; :meth:`get` returns the newest.

    Args:
        maxlen: how many frames to keep (older ones are dropped with their pixels).
    """

    def __init__(self, maxlen: int = 3) -> None:
        super().__init__()
        self._items: Deque[Any] = collections.deque(maxlen=max(int(maxlen), 1))

    def put(self, item: Any) -> None:
        """Append *item* as the newest frame."""
        with self._lock:
            self._items.append(item)
            self._item = item
            self.count += 1

    def recent(self) -> List[Any]:
        """The kept frames, newest first."""
        with self._lock:
            return list(reversed(self._items))

    def clear(self) -> None:
        """Forget every frame."""
        with self._lock:
            self._items.clear()
            self._item = None


class StampedHistory:
    """The last few stamped items, looked up by the stamp nearest to a frame's.

    Args:
        maxlen: how many items to keep (oldest dropped first).

    Attributes:
        count: items received since creation (0: this input never arrived).
    """

    def __init__(self, maxlen: int = 30) -> None:
        self._cond = threading.Condition()
        self._items: Deque[Tuple[int, Any]] = collections.deque(maxlen=maxlen)
        self.count = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, stamp_ns: int, item: Any) -> None:
        """Remember *item* stamped *stamp_ns* (wakes :meth:`wait_match`)."""
        with self._cond:
            self._items.append((int(stamp_ns), item))
            self.count += 1
            self._cond.notify_all()

    def _nearest(self, stamp_ns: int) -> Tuple[Any, Optional[int]]:
        best, best_skew = None, None
        for item_stamp, item in self._items:
            skew = abs(item_stamp - int(stamp_ns))
            if best_skew is None or skew < best_skew:
                best, best_skew = item, skew
        return best, best_skew

    def match(self, stamp_ns: int, max_skew_s: float) -> Any:
        """Return the item whose stamp is nearest *stamp_ns*, within *max_skew_s*; else None."""
        with self._cond:
            best, best_skew = self._nearest(stamp_ns)
        if best_skew is None or best_skew > max_skew_s * 1e9:
            return None
        return best

    def wait_match(self, stamp_ns: int, max_skew_s: float, timeout_s: float) -> Any:
        """Like :meth:`match`, but wait up to *timeout_s* seconds for a matching item."""
        deadline = time.monotonic() + max(float(timeout_s), 0.0)
        with self._cond:
            while True:
                best, best_skew = self._nearest(stamp_ns)
                if best_skew is not None and best_skew <= max_skew_s * 1e9:
                    return best
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def nearest_skew_s(self, stamp_ns: int) -> Optional[float]:
        """Seconds between *stamp_ns* and the nearest kept stamp (None when empty)."""
        with self._cond:
            _, best_skew = self._nearest(stamp_ns)
        return None if best_skew is None else best_skew / 1e9

    def clear(self) -> None:
        """Forget everything."""
        with self._cond:
            self._items.clear()
