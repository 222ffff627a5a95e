"""A bounded queue of grounding jobs, and the job type itself (ROS-free).

Every job is completed exactly once (:meth:`GroundingJob.complete` returns True only for
the first completion), which is how the node guarantees one result per command even when
a service call times out while the worker is still busy with it.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Deque, List, Optional, Sequence

from reclip_ros.core.types import GroundingResult

# where a job came from
SOURCE_TOPIC = 'topic'            # a message on the `command` topic
SOURCE_SERVICE = 'service'        # a `~/ground` service request
SOURCE_CONTINUOUS = 'continuous'  # re-grounding the last command on a new frame


@dataclass
class GroundingJob:
    """One expression to ground, with where it came from and when.

    Attributes:
        expression: the text exactly as received.
        source: SOURCE_TOPIC, SOURCE_SERVICE or SOURCE_CONTINUOUS.
        received_ns: receipt time on the node's clock (ROS time), nanoseconds.
        received_monotonic: receipt time on ``time.monotonic()`` (queue wait).
        frame: a frame given with the request (service) instead of the newest one.
        boxes: proposal boxes given with the request (None: the node's proposal source).
    """

    expression: str
    source: str = SOURCE_TOPIC
    received_ns: int = 0
    received_monotonic: float = field(default_factory=time.monotonic)
    frame: Any = None
    boxes: Optional[Sequence] = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _outcome: Any = field(default=None, repr=False)

    def complete(self, outcome: Any) -> bool:
        """Record the outcome; return False when the job was already completed."""
        with self._lock:
            if self._done.is_set():
                return False
            self._outcome = outcome
            self._done.set()
            return True

    @property
    def done(self) -> bool:
        """True once an outcome was recorded."""
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> Any:
        """Wait for the outcome; return it, or None after *timeout* seconds."""
        if self._done.wait(timeout):
            return self._outcome
        return None

    def queue_wait_ms(self, now_monotonic: Optional[float] = None) -> float:
        """Milliseconds since the job was received."""
        now = time.monotonic() if now_monotonic is None else now_monotonic
        return max(now - self.received_monotonic, 0.0) * 1000.0


@dataclass(frozen=True)
class JobOutcome:
    """A job's result with the frame it was grounded on (None when no frame was used)."""

    result: GroundingResult
    frame: Any = None
    queue_wait_ms: float = 0.0


def reject(job: GroundingJob, status: Any, message: str) -> Optional[JobOutcome]:
    """Complete *job* at once with a result carrying only *status* and *message*.

    Returns the outcome to publish, or None when the job already had one (every job has
    exactly one result).
    """
    outcome = JobOutcome(GroundingResult.failure(job.expression, status, message))
    return outcome if job.complete(outcome) else None


class CommandQueue:
    """A bounded FIFO of jobs; when full, new jobs are refused (the caller reports DROPPED).

    Args:
        capacity: the most jobs waiting at once (>= 1).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f'queue capacity must be >= 1, got {capacity}')
        self.capacity = int(capacity)
        self._items: Deque[GroundingJob] = collections.deque()
        self._cond = threading.Condition()
        self._woken = False
        self.accepted = 0
        self.refused = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, job: GroundingJob) -> bool:
        """Append *job*; return False (and keep nothing) when the queue is full."""
        with self._cond:
            if len(self._items) >= self.capacity:
                self.refused += 1
                return False
            self._items.append(job)
            self.accepted += 1
            self._cond.notify()
            return True

    def get(self, timeout: Optional[float] = None) -> Optional[GroundingJob]:
        """Pop the oldest job; None after *timeout* seconds or when :meth:`wake` was called."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._woken:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._woken = False
            return self._items.popleft() if self._items else None

    def peek(self) -> Optional[GroundingJob]:
        """The oldest waiting job without removing it (None when empty)."""
        with self._cond:
            return self._items[0] if self._items else None

    def wake(self) -> None:
        """Make a waiting :meth:`get` return (None when the queue is empty)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def drain(self) -> List[GroundingJob]:
        """Remove and return every waiting job."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items
