"""Asking a lifecycle node for its state, from a client node that spins on another thread.

Commands sent to ``reclip`` before it is active are answered DROPPED ("the node is
configuring"); a client that wants them grounded waits for the active state first, through
the node's standard ``<node>/get_state`` service (lifecycle_msgs/srv/GetState).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from lifecycle_msgs.msg import State
from lifecycle_msgs.srv import GetState


def wait_active(node: Any, target: str = '/reclip', timeout: float = 60.0,
                check: Optional[Callable[[], None]] = None, period: float = 0.1) -> bool:
    """Wait until the lifecycle node *target* (its fully qualified name) is active.

    Args:
        node: a client node, spun by an executor on another thread.
        target: e.g. ``'/reclip'`` or ``'/robot/reclip'``.
        timeout: seconds.
        check: called every *period* seconds (it may raise to give up early).

    Returns:
        True once ``get_state`` answers ``active``; False at the timeout.
    """
    client = node.create_client(GetState, f'{target.rstrip("/")}/get_state')
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if check is not None:
                check()
            if client.service_is_ready():
                future = client.call_async(GetState.Request())
                answer_by = min(deadline, time.monotonic() + 2.0)
                while not future.done() and time.monotonic() < answer_by:
                    time.sleep(0.01)
                result = future.result() if future.done() else None
                if result is not None and result.current_state.id == State.PRIMARY_STATE_ACTIVE:
                    return True
            time.sleep(period)
        return False
    finally:
        node.destroy_client(client)
