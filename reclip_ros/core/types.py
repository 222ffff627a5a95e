"""Value types shared by the ROS-free core: boxes, statuses, timings and results."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np


class Status(enum.IntEnum):
    """Outcome of one grounding request (same codes as ``GroundingResult.msg``)."""

    OK = 0
    NO_IMAGE = 1
    NO_PROPOSALS = 2
    INVALID_COMMAND = 3
    BAD_IMAGE = 4
    DROPPED = 5
    ERROR = 6


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixels: top-left corner (x, y), width and height."""

    x: float
    y: float
    width: float
    height: float

    @classmethod
    def from_xyxy(cls, x1: float, y1: float, x2: float, y2: float) -> Box:
        """Build a box from its corners."""
        return cls(float(x1), float(y1), float(x2) - float(x1), float(y2) - float(y1))

    @classmethod
    def from_list(cls, values: Sequence[float]) -> Box:
        """Build a box from ``[x, y, width, height]``; raise ValueError when malformed."""
        if len(values) != 4:
            raise ValueError(f'a box needs 4 numbers [x, y, width, height], got {values!r}')
        x, y, w, h = (float(v) for v in values)
        if not all(np.isfinite([x, y, w, h])):
            raise ValueError(f'box has non-finite values: {values!r}')
        if w <= 0 or h <= 0:
            raise ValueError(f'box must have positive width and height: {values!r}')
        return cls(x, y, w, h)

    @property
    def x2(self) -> float:
        """Right edge (exclusive)."""
        return self.x + self.width

    @property
    def y2(self) -> float:
        """Bottom edge (exclusive)."""
        return self.y + self.height

    @property
    def area(self) -> float:
        """Area in square pixels."""
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> Tuple[float, float]:
        """Centre (x, y) in pixels."""
        return (self.x + self.width / 2.0, self.y + self.height / 2.0)

    def to_list(self) -> list:
        """Return ``[x, y, width, height]``."""
        return [self.x, self.y, self.width, self.height]

    def to_xyxy(self) -> Tuple[float, float, float, float]:
        """Return the corners ``(x1, y1, x2, y2)``."""
        return (self.x, self.y, self.x2, self.y2)

    def clipped(self, image_width: int, image_height: int) -> Box:
        """Return the box clipped to the image (may become empty)."""
        x1 = min(max(self.x, 0.0), float(image_width))
        y1 = min(max(self.y, 0.0), float(image_height))
        x2 = min(max(self.x2, 0.0), float(image_width))
        y2 = min(max(self.y2, 0.0), float(image_height))
        return Box(x1, y1, x2 - x1, y2 - y1)

    def pixel_bounds(self, image_width: int, image_height: int) -> Tuple[int, int, int, int]:
        """Integer ``(x1, y1, x2, y2)`` inside the image, at least one pixel wide and high."""
        x1 = int(np.floor(min(max(self.x, 0.0), image_width - 1)))
        y1 = int(np.floor(min(max(self.y, 0.0), image_height - 1)))
        x2 = int(np.ceil(min(max(self.x2, 0.0), image_width)))
        y2 = int(np.ceil(min(max(self.y2, 0.0), image_height)))
        return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)

    def iou(self, other: Box) -> float:
        """Intersection over union with another box."""
        ix = max(0.0, min(self.x2, other.x2) - max(self.x, other.x))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Candidate:
    """One proposal with its probability of being the referent."""

    box: Box
    score: float


@dataclass(frozen=True)
class Timings:
    """Per-stage wall-clock time of one grounding, in milliseconds."""

    proposals: float = 0.0
    isolation: float = 0.0
    image_encoding: float = 0.0
    text_encoding: float = 0.0
    resolve: float = 0.0
    total: float = 0.0

    def as_dict(self) -> dict:
        """Return the timings keyed by stage name."""
        return asdict(self)


@dataclass(frozen=True)
class GroundingResult:
    """The answer to one referring expression on one image.

    ``box`` and ``confidence`` are the chosen candidate (None / 0 unless status is OK);
    ``candidates`` holds every proposal sorted best first; ``position`` is the 3D centre
    of the chosen object in metres in the camera's optical frame, when depth was given.
    """

    expression: str
    status: Status
    message: str = ''
    box: Optional[Box] = None
    confidence: float = 0.0
    candidates: Tuple[Candidate, ...] = field(default_factory=tuple)
    parse: str = ''
    timings: Timings = field(default_factory=Timings)
    position: Optional[Tuple[float, float, float]] = None

    @property
    def ok(self) -> bool:
        """True when the expression was grounded."""
        return self.status == Status.OK

    def to_json_dict(self) -> dict:
        """Return a JSON-ready dict.

        Keys: expression, box, confidence, candidates (box, score), status, message,
        parse, timings_ms, position.
        """
        return {
            'expression': self.expression,
            'box': self.box.to_list() if self.box is not None else None,
            'confidence': float(self.confidence),
            'candidates': [{'box': c.box.to_list(), 'score': float(c.score)}
                           for c in self.candidates],
            'status': self.status.name,
            'message': self.message,
            'parse': self.parse,
            'timings_ms': self.timings.as_dict(),
            'position': list(self.position) if self.position is not None else None,
        }

    @classmethod
    def failure(cls, expression: str, status: Status, message: str,
                timings: Optional[Timings] = None, parse: str = '') -> GroundingResult:
        """Build a result that carries only a status and its explanation."""
        return cls(expression=expression, status=status, message=message,
                   timings=timings or Timings(), parse=parse)


class ReclipError(Exception):
    """Base class of errors raised by the core with a message meant for users."""


class ModelLoadError(ReclipError):
    """A model could not be loaded (not cached and not downloadable, bad directory...)."""


class DeviceError(ReclipError):
    """The requested device is not available."""


class Interrupted(ReclipError):
    """Work given up between batches because something more urgent is waiting."""
