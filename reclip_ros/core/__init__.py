"""The ROS-free core of reclip_ros: nothing here imports rclpy or message types.

The public API, the way ``clip.load`` is CLIP's::

    from reclip_ros.core import Grounder, GrounderConfig
    grounder = Grounder.from_config(GrounderConfig())  # the default CLIP model
    result = grounder.ground(image_rgb, 'the red mug left of the laptop', boxes=boxes)
    if result.status == Status.OK:
        print(result.box, result.confidence)

:class:`Grounder`, :class:`GrounderConfig`, :class:`GroundingOptions`,
:class:`GroundingResult`, :class:`Box` and :class:`Status` are loaded on first use, so
importing one module of the core (e.g. :mod:`reclip_ros.core.config`) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    'Grounder': 'reclip_ros.core.grounder',
    'GrounderConfig': 'reclip_ros.core.config',
    'GroundingOptions': 'reclip_ros.core.config',
    'GroundingResult': 'reclip_ros.core.types',
    'Box': 'reclip_ros.core.types',
    'Status': 'reclip_ros.core.types',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load a public name of the core on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    """The public API and the module's own names."""
    return sorted(set(globals()) | set(__all__))
