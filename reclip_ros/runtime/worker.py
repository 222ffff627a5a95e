"""The node's worker thread: takes jobs off the queue and grounds them (ROS-free).

The node's callbacks only store frames and enqueue jobs; everything slow (decoding,
proposals, CLIP, the resolver, drawing) runs here, so the executor stays responsive.
Every job ends in exactly one :class:`JobOutcome` handed to the ``publish`` callback.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Mapping, Optional

import numpy as np

from reclip_ros.runtime.jobs import (SOURCE_CONTINUOUS, SOURCE_TOPIC, CommandQueue,
                                      GroundingJob, JobOutcome)
from reclip_ros.core.grounder import expression_problem
from reclip_ros.core.protocols import CacheReporting
from reclip_ros.core.types import GroundingResult, Status
from reclip_ros.runtime.frame_buffer import Frame, FrameHistory, LatestSlot, StampedHistory
from reclip_ros.runtime.frame_sync import SyncSettings, choose_frame, missing_depth_note
from reclip_ros.runtime.heap import HeapTrimmer

#: Statuses of results about a frame: they carry that frame's header. Every other status
#: (NO_IMAGE, INVALID_COMMAND, DROPPED, ERROR) used no image: its header has the command's
#: receipt stamp and an empty frame_id, and its message no frame remarks.
FRAME_STATUSES = frozenset({Status.OK, Status.NO_PROPOSALS, Status.BAD_IMAGE})

# How many recent inputs are kept: colour frames to fall back on when the newest one's
# depth is lost or late, depth images and proposals matched to them by stamp.
FRAME_HISTORY = 3
DEPTH_HISTORY = 6
#: The settings the node changes while running (applied to the next job).
DYNAMIC_SETTINGS = ('max_image_age', 'continuous', 'continuous_rate', 'proposals_max_skew',
                    'depth_max_skew', 'sync_wait', 'precompute', 'precompute_rate')
PROPOSALS_HISTORY = 30


@dataclass
class WorkerSettings:
    """Run-time settings the node updates from its parameters (read on every job).

    Attributes:
        max_image_age: seconds; older frames give NO_IMAGE (0 disables the check).
        max_expression_chars: longer expressions give INVALID_COMMAND.
        continuous: re-ground the last topic command on every new frame.
        continuous_rate: the most re-groundings per second in continuous mode.
        proposals_max_skew: seconds between a frame and the Proposals matched to it.
        depth_max_skew: seconds between a frame and the depth image matched to it.
        sync_wait: seconds a command waits for the depth image (and proposals) of the
            newest frame before using an earlier frame that has them.
        has_detector: proposals can come from a detector when none are given.
        precompute: while no command waits, propose and encode the newest frame ahead of
            the next command (text-independent work), yielding to commands between batches.
        precompute_rate: the most precompute passes per second.
    """

    max_image_age: float = 1.0
    max_expression_chars: int = 1000
    continuous: bool = False
    continuous_rate: float = 2.0
    proposals_max_skew: float = 0.05
    depth_max_skew: float = 0.05
    sync_wait: float = 0.1
    has_detector: bool = False
    precompute: bool = False
    precompute_rate: float = 2.0

    def sync(self) -> SyncSettings:
        """The tolerances of the frame choice (:mod:`reclip_ros.runtime.frame_sync`)."""
        return SyncSettings(depth_max_skew=self.depth_max_skew,
                            proposals_max_skew=self.proposals_max_skew,
                            sync_wait=self.sync_wait, max_image_age=self.max_image_age)


class PrecomputeStats:
    """Precompute passes: how many, how often, and the time they used (for diagnostics)."""

    WINDOW_S = 10.0

    def __init__(self) -> None:
        self.passes = 0          # frames encoded ahead of a command
        self.interrupted = 0     # passes given up for a waiting command (or nothing to do)
        self.wall_s = 0.0        # time the worker (and its device) spent on passes
        self.cpu_s = 0.0         # process CPU time during passes (all threads)
        self._done: Deque[float] = collections.deque(maxlen=1024)

    def record(self, done: bool, wall_s: float, cpu_s: float) -> None:
        """Count one pass (*done*: the frame was encoded)."""
        self.wall_s += wall_s
        self.cpu_s += cpu_s
        if done:
            self.passes += 1
            self._done.append(time.monotonic())
        else:
            self.interrupted += 1

    def values(self) -> Dict[str, float]:
        """Diagnostics: rate over the last WINDOW_S seconds, counts and time used."""
        cutoff = time.monotonic() - self.WINDOW_S
        recent = sum(1 for t in self._done if t >= cutoff)
        return {'precompute_rate_hz': round(recent / self.WINDOW_S, 3),
                'precompute_passes': self.passes,
                'precompute_given_up': self.interrupted,
                'precompute_wall_s': round(self.wall_s, 3),
                'precompute_cpu_s': round(self.cpu_s, 3)}


class LatencyStats:
    """Latency of the last *window* groundings and counts of results per status."""

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self._total_ms: Deque[float] = collections.deque(maxlen=window)
        self._wait_ms: Deque[float] = collections.deque(maxlen=window)
        self.by_status: Dict[str, int] = {s.name: 0 for s in Status}

    def record(self, outcome: JobOutcome) -> None:
        """Count one outcome (latency is recorded for grounded or attempted jobs)."""
        with self._lock:
            self.by_status[outcome.result.status.name] += 1
            if outcome.result.status not in (Status.DROPPED, Status.INVALID_COMMAND):
                self._total_ms.append(float(outcome.result.timings.total))
                self._wait_ms.append(float(outcome.queue_wait_ms))

    def summary(self) -> Dict[str, float]:
        """Return count, mean, p50, p95 and max of total latency and queue wait (ms)."""
        with self._lock:
            totals = np.array(self._total_ms, dtype=np.float64)
            waits = np.array(self._wait_ms, dtype=np.float64)
        out: Dict[str, float] = {'latency_window': float(totals.size)}
        for name, values in (('latency_total_ms', totals), ('queue_wait_ms', waits)):
            if values.size:
                out[f'{name}_mean'] = float(values.mean())
                out[f'{name}_p50'] = float(np.percentile(values, 50))
                out[f'{name}_p95'] = float(np.percentile(values, 95))
                out[f'{name}_max'] = float(values.max())
        return out


class GroundingWorker:
    """Ground queued jobs on a background thread and hand each outcome to *publish*.

    Args:
        grounder: a :class:`reclip_ros.core.grounder.Grounder` (``ground`` never raises
            on bad input; an exception anyway becomes an ERROR result).
        queue: the bounded job queue the node fills.
        publish: called with (job, outcome) exactly once per job, on the worker thread.
        now_ns: the node's clock in nanoseconds (frame age, receipt stamps).
        settings: run-time settings (the node mutates the fields).
        options: returns the per-call ``GroundingOptions`` (or None for defaults).
        log_error: reports unexpected failures (e.g. of *publish*).
    """

    def __init__(self, grounder: Any, queue: CommandQueue,
                 publish: Callable[[GroundingJob, JobOutcome], None],
                 now_ns: Callable[[], int], settings: Optional[WorkerSettings] = None,
                 options: Optional[Callable[[], Any]] = None,
                 log_error: Optional[Callable[[str], None]] = None) -> None:
        self.grounder = grounder
        self.queue = queue
        self.publish = publish
        self.now_ns = now_ns
        self.settings = settings or WorkerSettings()
        self.options = options or (lambda: None)
        self.log_error = log_error or (lambda message: None)
        self.frames = FrameHistory(FRAME_HISTORY)  # recent colour Frames; get() = newest
        self.depth = StampedHistory(DEPTH_HISTORY)  # depth Frames (decode -> metres)
        self.proposals = StampedHistory(PROPOSALS_HISTORY)  # list[Box] per frame stamp
        self.intrinsics = LatestSlot()           # (CameraIntrinsics, width, height)
        self.stats = LatencyStats()
        self.busy = False
        self._current: Optional[GroundingJob] = None
        self._last_command: Optional[str] = None
        self._last_continuous_key: Any = None
        self._last_continuous_time = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._heap = HeapTrimmer()  # freed frame buffers back to the system, between jobs
        self.precompute_stats = PrecomputeStats()
        self._precomputed_key: Any = None
        self._last_precompute_time = 0.0

    def status_values(self, now_ns: int) -> Dict[str, Any]:
        """Queue, input and latency figures for the node's diagnostics."""
        frame = self.frames.get()
        values: Dict[str, Any] = {
            'state': 'active' if self.running else 'inactive',
            'queue_length': len(self.queue), 'queue_capacity': self.queue.capacity,
            'commands_accepted': self.queue.accepted, 'commands_dropped': self.queue.refused,
            'busy': self.busy, 'frames_received': self.frames.count,
            'depth_received': self.depth.count, 'proposals_received': self.proposals.count,
            'last_image_age_s': frame.age_s(now_ns) if frame else 'never',
        }
        values.update({f'results_{k}': v for k, v in self.stats.by_status.items()})
        values.update(self.stats.summary())
        if self.settings.precompute or self.precompute_stats.passes:
            values.update(self.precompute_stats.values())
        if isinstance(self.grounder, CacheReporting):
            values.update(self.grounder.cache_sizes())
        return values

    # -- inputs (any thread) -------------------------------------------------------------

    def feed_image(self, frame: Frame) -> None:
        """Store a colour frame (decoded only when a command uses it)."""
        self.frames.put(frame)
        self.notify_frame()

    def feed_depth(self, frame: Frame) -> None:
        """Store a depth frame, matched to colour frames by stamp."""
        self.depth.put(frame.stamp_ns, frame)

    def feed_camera_info(self, intrinsics: Any, width: int, height: int) -> None:
        """Store the newest camera intrinsics and the image size they are for."""
        self.intrinsics.put((intrinsics, int(width), int(height)))

    def feed_proposals(self, stamp_ns: int, boxes: Any) -> None:
        """Store the proposal boxes of the frame stamped *stamp_ns*."""
        self.proposals.put(stamp_ns, boxes)
        if self.settings.precompute:
            self.queue.wake()

    def submit(self, job: GroundingJob) -> None:
        """Queue *job*; a bad expression gets INVALID_COMMAND and a full queue DROPPED, at once.

        The expression is checked first, so a malformed command says what is wrong with it
        even when the node is too busy to take it.
        """
        problem = self._check_expression(job.expression)
        if problem:
            self.reject(job, Status.INVALID_COMMAND, problem)
            return
        if not self.queue.put(job):
            self.reject(job, Status.DROPPED,
                        f'command queue full ({self.queue.capacity} waiting; queue_size)')

    def reject(self, job: GroundingJob, status: Status, message: str) -> None:
        """Answer *job* with *status* and *message* now (once; a completed job is left)."""
        self.finish(job, JobOutcome(self.failure(job, status, message)))

    def update_settings(self, values: Mapping[str, Any]) -> None:
        """Apply the run-time settings among *values* (name -> value) to the next job."""
        for name in DYNAMIC_SETTINGS:
            if name in values:
                setattr(self.settings, name, values[name])

    def is_running(self) -> bool:
        """True while the worker thread is alive."""
        return self.running

    def newest_frame(self) -> Optional[Frame]:
        """The newest colour frame, or None."""
        return self.frames.get()

    def queue_full(self) -> bool:
        """True when a new command would be DROPPED."""
        return len(self.queue) >= self.queue.capacity

    # -- thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (no-op when running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name='reclip-worker', daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0, reason: str = 'the node was deactivated',
             in_flight_timeout: Optional[float] = None) -> None:
        """Stop the thread and answer every waiting job DROPPED.

        Waiting jobs are answered at once, before the job in progress ends. The job in
        progress gets its own result when it finishes within *in_flight_timeout* seconds
        (None: *timeout*); otherwise it is answered DROPPED now and its late result is
        discarded (a job is completed once).
        """
        self._stop.set()
        self.queue.wake()
        for job in self.queue.drain():
            self.finish(job, JobOutcome(self.failure(job, Status.DROPPED,
                                                     f'not grounded: {reason}')))
        thread = self._thread
        if thread is not None:
            thread.join(timeout if in_flight_timeout is None else in_flight_timeout)
            current = self._current
            if thread.is_alive() and current is not None:
                self.finish(current, JobOutcome(self.failure(
                    current, Status.DROPPED, f'not grounded: {reason} (grounding was still '
                    'in progress)')))
            self._thread = None
        for job in self.queue.drain():  # anything that slipped in meanwhile
            self.finish(job, JobOutcome(self.failure(job, Status.DROPPED,
                                                     f'not grounded: {reason}')))
        self._last_command = None

    @property
    def running(self) -> bool:
        """True while the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def notify_frame(self) -> None:
        """Tell the worker a new frame arrived (wakes it in continuous and precompute mode)."""
        if (self.settings.continuous and self._last_command is not None) or \
                self.settings.precompute:
            self.queue.wake()

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self.queue.get(timeout=self._idle_timeout())
            if self._stop.is_set():
                if job is not None:
                    self.finish(job, JobOutcome(self.failure(
                        job, Status.DROPPED, 'not grounded: the node was deactivated')))
                break
            if job is None:
                job = self._continuous_job()
            if job is not None:
                self.handle(job)
            elif self.settings.precompute:
                self.precompute()
            self._heap.maybe_trim()

    def _idle_timeout(self) -> float:
        timeout = 0.5
        now = time.monotonic()
        if self.settings.continuous and self._last_command is not None:
            period = 1.0 / max(self.settings.continuous_rate, 1e-3)
            timeout = min(timeout, period - (now - self._last_continuous_time))
        if self.settings.precompute:
            period = 1.0 / max(self.settings.precompute_rate, 1e-3)
            timeout = min(timeout, period - (now - self._last_precompute_time))
        return max(timeout, 0.01)

    def _yield_to_commands(self, key: Any) -> Callable[[], bool]:
        """The precompute pass's interrupt: True when a waiting command needs other work.

        A topic command that will ground on the very frame being encoded (the newest, with
        its proposals) needs exactly this work, so the pass goes on and the command finds
        it cached; any other waiting command (a service request with its own frame or
        boxes, or a newer frame) makes the pass give up before its next batch.
        """
        def interrupt() -> bool:
            if self._stop.is_set():
                return True
            job = self.queue.peek()
            if job is None:
                return False
            newest = self.frames.get()
            same_work = (job.source == SOURCE_TOPIC and job.frame is None and job.boxes is None
                         and newest is not None and newest.key == key)
            return not same_work
        return interrupt

    def precompute(self) -> bool:
        """One precompute pass over the newest frame, when one is due; True when encoded.

        The frame is the one a command arriving now would use by default (the newest, with
        its proposals when a proposals topic is in use), keyed as the command keys it, so
        the command finds its region embeddings (and detector boxes) in the caches. The
        pass gives up between batches when a waiting command needs other work
        (:meth:`_yield_to_commands`). Passes start at most ``precompute_rate`` times a
        second (measured from start to start, so a rate equal to the camera's keeps up).
        """
        settings = self.settings
        started = time.monotonic()
        if started - self._last_precompute_time < 1.0 / max(settings.precompute_rate, 1e-3):
            return False
        frame = self.frames.get()
        if frame is None or frame.key == self._precomputed_key:
            return False
        if settings.max_image_age > 0 and frame.age_s(self.now_ns()) > settings.max_image_age:
            return False
        boxes = None
        if self.proposals.count > 0:
            boxes = self.proposals.match(frame.stamp_ns, settings.proposals_max_skew)
            if boxes is None:
                return False  # its proposals have not arrived yet: tried again on the next wake
        elif not settings.has_detector:
            return False
        try:
            image = frame.decode()
        except ValueError:
            self._precomputed_key = frame.key  # a command on it will get BAD_IMAGE
            return False
        wall, cpu = time.perf_counter(), time.process_time()
        self._last_precompute_time = started
        done = bool(self.grounder.precompute(image, boxes, frame_key=frame.key,
                                             interrupt=self._yield_to_commands(frame.key)))
        self.precompute_stats.record(done, time.perf_counter() - wall,
                                     time.process_time() - cpu)
        if done:
            self._precomputed_key = frame.key
        return done

    def _continuous_job(self) -> Optional[GroundingJob]:
        settings = self.settings
        if not settings.continuous or self._last_command is None:
            return None
        frame = self.frames.get()
        if frame is None or frame.key == self._last_continuous_key:
            return None
        if time.monotonic() - self._last_continuous_time < 1.0 / max(settings.continuous_rate,
                                                                        1e-3):
            return None
        return GroundingJob(self._last_command, source=SOURCE_CONTINUOUS,
                            received_ns=self.now_ns(), frame=frame)

    # -- one job -----------------------------------------------------------------------

    def handle(self, job: GroundingJob) -> JobOutcome:
        """Ground *job* and publish its outcome; never raises."""
        self.busy = True
        self._current = job
        try:
            try:
                outcome = self.process(job)
            except Exception as exc:  # noqa: BLE001 - every job gets a result
                outcome = JobOutcome(self.failure(job, Status.ERROR,
                                                  f'{type(exc).__name__}: {exc}'))
            if job.source == SOURCE_CONTINUOUS and outcome.frame is not None:
                self._last_continuous_key = outcome.frame.key
                self._last_continuous_time = time.monotonic()
            self.finish(job, outcome)
            return outcome
        finally:
            self.busy = False
            self._current = None

    def finish(self, job: GroundingJob, outcome: JobOutcome) -> None:
        """Complete *job* with *outcome* and publish it, unless it was already completed."""
        if not job.complete(outcome):
            return
        self.stats.record(outcome)
        try:
            self.publish(job, outcome)
        except Exception as exc:  # noqa: BLE001 - keep the worker alive
            self.log_error(f'publishing the result of {job.expression[:80]!r} failed: '
                           f'{type(exc).__name__}: {exc}')

    def failure(self, job: GroundingJob, status: Status, message: str) -> GroundingResult:
        """A result carrying only *status* and *message* for *job*."""
        return GroundingResult.failure(job.expression, status, message)

    def process(self, job: GroundingJob) -> JobOutcome:
        """Ground *job* against its own frame or the newest one; return the outcome.

        The steps: check the expression, choose the frame (with its depth), take its
        proposals, decode the depth, ground, then put the frame remarks on the result.
        """
        wait_ms = job.queue_wait_ms()
        problem = self._check_expression(job.expression)
        if problem:
            return JobOutcome(self.failure(job, Status.INVALID_COMMAND, problem),
                              queue_wait_ms=wait_ms)
        if job.source == SOURCE_TOPIC:
            self._last_command = job.expression
            self._last_continuous_key = None
        chosen = self._choose_frame(job)
        if isinstance(chosen, str):
            return JobOutcome(self.failure(job, Status.NO_IMAGE, chosen), queue_wait_ms=wait_ms)
        if isinstance(chosen, Frame):
            return JobOutcome(self.failure(job, Status.BAD_IMAGE,
                                           f'the newest image was refused: {chosen.refused}'),
                              chosen, wait_ms)
        frame, depth_frame, depth_expected, notes = chosen
        try:
            image = frame.decode()
        except ValueError as exc:
            return JobOutcome(self.failure(job, Status.BAD_IMAGE, str(exc)), frame, wait_ms)
        boxes = self._boxes_for(job, frame)
        if isinstance(boxes, str):
            return JobOutcome(self.failure(job, Status.NO_PROPOSALS, boxes), frame, wait_ms)
        if depth_frame is None and depth_expected:
            notes.append(missing_depth_note(frame, self.depth, self.settings.sync()))
        depth_m, intrinsics, depth_note = self._depth_for(depth_frame, image.shape[1],
                                                          image.shape[0])
        result = self.grounder.ground(image, job.expression, boxes=boxes, depth_m=depth_m,
                                      intrinsics=intrinsics, frame_key=frame.key,
                                      options=self.options())
        return self._with_remarks(result, frame, notes, depth_note, wait_ms)

    def _choose_frame(self, job: GroundingJob):
        """(frame, depth frame, depth expected, notes) for *job*, or why there is no frame.

        Why is a string (NO_IMAGE), or the newest frame itself when it was refused on
        receipt (BAD_IMAGE).

        A frame sent with a service request is used as given; otherwise (topic commands
        and continuous re-groundings) the node's own frames, synchronised with side data.
        """
        settings = self.settings
        own_frame = job.frame is not None and job.source != SOURCE_CONTINUOUS
        frame: Optional[Frame] = job.frame if job.frame is not None else self.frames.get()
        if frame is None:
            return 'no image has been received yet'
        if job.frame is None and frame.refused:
            return frame  # the newest frame was refused on receipt: BAD_IMAGE says why
        # the age is judged when the command was received, not after its wait in the queue
        if job.frame is None and settings.max_image_age > 0:
            age = frame.age_s(job.received_ns)
            if age > settings.max_image_age:
                return (f'the newest image is {age:.2f} s old when the command arrived '
                        f'(max_image_age {settings.max_image_age:g} s)')
        sync = settings.sync()
        if own_frame:
            depth_frame = self.depth.match(frame.stamp_ns, sync.depth_max_skew)
            depth_expected, notes = self.depth.count > 0, []
        else:
            choice = choose_frame(frame, self.frames.recent(), self.depth, self.proposals,
                                  sync, job.received_ns, need_proposals=job.boxes is None)
            frame, depth_frame, depth_expected = choice.frame, choice.depth, choice.depth_expected
            notes = [choice.note] if choice.note else []
        if job.source == SOURCE_CONTINUOUS:
            notes.insert(0, 'continuous: re-grounding of the last command')
        return frame, depth_frame, depth_expected, notes

    def _boxes_for(self, job: GroundingJob, frame: Frame):
        """The job's own boxes, the frame's Proposals, None (the detector), or why none."""
        if job.boxes is not None:
            return job.boxes
        settings = self.settings
        boxes = self.proposals.match(frame.stamp_ns, settings.proposals_max_skew)
        if boxes is None and not settings.has_detector:
            return (f'no Proposals message within proposals_max_skew='
                    f'{settings.proposals_max_skew:g} s of the image stamp '
                    f'({len(self.proposals)} recent) and no detector is configured')
        return boxes

    @staticmethod
    def _with_remarks(result: GroundingResult, frame: Frame, notes: list, depth_note: str,
                      wait_ms: float) -> JobOutcome:
        """The outcome of a grounding, with the frame's remarks on an OK result."""
        if result.status != Status.OK:
            # remarks about the frame go on OK results only; a failure says what failed,
            # and only failures about a frame keep the frame (and its header)
            continuous = [n for n in notes[:1] if n.startswith('continuous:')]
            if continuous:
                result = dataclasses.replace(result,
                                             message='; '.join(continuous + [result.message]))
            return JobOutcome(result, frame if result.status in FRAME_STATUSES else None,
                              wait_ms)
        notes = notes + [n for n in (result.message, depth_note) if n]
        if notes:
            result = dataclasses.replace(result, message='; '.join(notes))
        return JobOutcome(result, frame, wait_ms)

    def _check_expression(self, expression: str) -> Optional[str]:
        """The core's expression check, naming the node parameter of the length limit."""
        return expression_problem(expression, self.settings.max_expression_chars,
                                  'max_expression_chars')

    def _depth_for(self, depth_frame: Optional[Frame], width: int, height: int):
        """Return (depth_m, intrinsics, note) for a colour image of *width* x *height*."""
        if depth_frame is None:
            return None, None, ''
        try:
            depth_m = depth_frame.decode()
        except ValueError as exc:
            return None, None, f'depth image ignored: {exc}'
        if depth_m.shape != (height, width):
            return None, None, (f'depth image ignored: its size {depth_m.shape[1]}x'
                                f'{depth_m.shape[0]} differs from the colour image '
                                f'{width}x{height}')
        info = self.intrinsics.get()
        if info is None:
            return depth_m, None, 'no camera_info received: no 3D position'
        intrinsics, info_width, info_height = info
        if (info_width, info_height) != (width, height):
            return depth_m, None, (f'camera_info is for {info_width}x{info_height}, the image '
                                   f'is {width}x{height}: no 3D position')
        return depth_m, intrinsics, ''
