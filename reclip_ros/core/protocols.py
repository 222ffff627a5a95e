"""What the grounder needs from its parts: the scorer and the proposal source, as Protocols.

:class:`reclip_ros.core.region_scorer.RegionScorer` and
:class:`reclip_ros.core.proposals.DetectorProposals` / ``GivenBoxes`` are the
implementations; a small deterministic one (e.g. in a unit test) works when it has the
members below. Lifecycle parts are optional and named by their own Protocols:
:class:`Closable`, :class:`Offloadable` and :class:`CacheReporting`.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from reclip_ros.core.types import Box


@runtime_checkable
class ProposalSource(Protocol):
    """Anything that proposes candidate boxes for an RGB image."""

    name: str

    def propose(self, image_rgb: np.ndarray) -> List[Box]:
        """Return candidate boxes (pixels, original image coordinates) for *image_rgb*."""
        ...


class EncodedFrame(Protocol):
    """A frame's region embeddings as a scorer returns them."""

    boxes: Sequence[Box]
    isolation_ms: float
    image_encoding_ms: float
    from_cache: bool


@runtime_checkable
class Scorer(Protocol):
    """Scores proposal regions against text (ReCLIP's region scoring).

    Attributes:
        models: the CLIP-family models (each with ``name`` and ``device``); may be empty.
        text_encoding_ms_total: milliseconds spent encoding text so far (a running sum).
    """

    models: Sequence[Any]
    text_encoding_ms_total: float

    def encode_frame(self, image: np.ndarray, boxes: Sequence[Box],
                     frame_key: Optional[Hashable] = None) -> EncodedFrame:
        """Isolate and encode every box of *image* (cached per frame)."""
        ...

    def logits(self, frame: EncodedFrame, text: str,
               methods: Optional[Sequence[str]] = None) -> np.ndarray:
        """One logit per box of *frame* for *text* (isolation methods summed)."""
        ...


@runtime_checkable
class Closable(Protocol):
    """A part holding models: ``close`` releases them."""

    def close(self) -> None:
        """Release the models (and their memory)."""
        ...


@runtime_checkable
class Offloadable(Protocol):
    """A part whose CUDA weights can move to host memory while the node is inactive."""

    def offload(self) -> bool:
        """Move to host memory; True when something moved."""
        ...

    def restore(self) -> bool:
        """Move back to the device; True when something moved."""
        ...


@runtime_checkable
class CacheReporting(Protocol):
    """A part that reports the fill of its caches (for diagnostics)."""

    def cache_sizes(self) -> Dict[str, int]:
        """Entries and capacities of the caches, by name."""
        ...
