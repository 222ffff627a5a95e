"""The DDS transport the node uses for camera frames, chosen before ROS starts (ROS-free).

Fast DDS (the default RMW) moves messages between processes on one machine through 512 KB
shared-memory segments; a 640x480 rgb8 frame (0.9 MB) goes in fragments, and a best-effort
reader that falls behind loses whole frames. Unless the user already chose a Fast DDS
transport or profile, ``reclip node`` (and so the launch files, which run it) loads the
shipped profile ``config/fastdds_large_frames.xml`` (8 MB shared-memory segments, large
socket buffers) before the DDS participant exists.

Why not Fast DDS's own ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``, which this Fast DDS (3.2)
supports: measured with ``reclip delivery`` (docs/node.md), a LARGE_DATA reader receives
nothing at all from a camera left at Fast DDS's defaults (0 of 250 frames), whereas the
profile keeps the default transports, so it never breaks a peer: it delivers everything
when the camera uses it too, and as much as the defaults when the camera does not. With
both sides set to LARGE_DATA delivery is complete as well; that stays the user's choice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, MutableMapping, Optional

#: Fast DDS's built-in large-data transports (UDP discovery, TCP and shared memory data).
LARGE_DATA_ENV: Dict[str, str] = {'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA'}
#: Environment variables by which a user chooses Fast DDS transports themselves.
USER_SETTINGS = ('FASTDDS_BUILTIN_TRANSPORTS', 'FASTDDS_DEFAULT_PROFILES_FILE',
                 'FASTRTPS_DEFAULT_PROFILES_FILE')
PROFILE_NAME = Path('config') / 'fastdds_large_frames.xml'


def large_frames_profile() -> Optional[Path]:
    """The shipped Fast DDS profile for large frames (source tree or install), if present."""
    import sys
    for base in (Path(__file__).resolve().parents[1], Path(sys.prefix) / 'share' / 'reclip_ros'):
        if (base / PROFILE_NAME).is_file():
            return base / PROFILE_NAME
    return None


def transport_env(name: str) -> Dict[str, str]:
    """The environment of a transport setting: 'default', 'large_data' or 'profile'."""
    if name == 'default':
        return {}
    if name == 'large_data':
        return dict(LARGE_DATA_ENV)
    if name == 'profile':
        profile = large_frames_profile()
        if profile is None:
            raise FileNotFoundError(f'{PROFILE_NAME} is not installed')
        return {'FASTDDS_DEFAULT_PROFILES_FILE': str(profile)}
    raise ValueError(f'unknown transport {name!r}')


def apply_large_frame_default(environ: Optional[MutableMapping[str, str]] = None) -> str:
    """Load the shipped large-frames profile unless the user chose a transport; say which.

    Must run before the first DDS participant of the process is created (``rclpy.init``
    and the first node). Returns a one-line description for the log and the diagnostics.
    """
    env = os.environ if environ is None else environ
    rmw = env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    if rmw != 'rmw_fastrtps_cpp':
        return f'{rmw}: transport left as configured'
    chosen = [name for name in USER_SETTINGS if env.get(name)]
    if chosen:
        return 'Fast DDS transport chosen by the user (' + ', '.join(
            f'{name}={env[name]}' for name in chosen) + ')'
    profile = large_frames_profile()
    if profile is None:
        return f'Fast DDS defaults ({PROFILE_NAME} is not installed)'
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    return f'Fast DDS large-frames profile (FASTDDS_DEFAULT_PROFILES_FILE={profile})'
