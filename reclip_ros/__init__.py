"""reclip_ros: ReCLIP language grounding for ROS 2.

The generated interfaces (``reclip_ros.msg``, ``reclip_ros.srv``) are installed next to
these hand-written modules. ``extend_path`` lets a source checkout on ``sys.path`` (for
example the repository root as the working directory) still find them.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
