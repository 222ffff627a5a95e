"""``reclip node``: the node as a process, stopped cleanly by SIGINT or SIGTERM.

Run it with ``reclip node [--ros-args ...]`` or ``ros2 run reclip_ros reclip_node``; the
node itself is :class:`reclip_ros.ros.node.ReclipNode`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from reclip_ros.ros.node import SUCCESS, ReclipNode


class _StopSignals:
    """SIGINT and SIGTERM ask the spin loop to stop (the process exits with code 0).

    rclpy's own handler would shut the context down at once, so the results of waiting
    commands could no longer be published ("publisher's context is invalid"); here the
    node first answers them, then shuts down (bounded: about a second). Further signals
    while stopping are ignored: Ctrl-C under launch delivers two (the terminal's to the
    process group, then launch's own), and the second must not cut the clean-up short.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous = {}

    def __enter__(self) -> _StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested.set()

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _answer_pending_commands(executor, node: ReclipNode, quiet_s: float = 0.05,
                             limit_s: float = 0.5) -> None:
    """Take the commands DDS has already delivered and answer them DROPPED.

    Spins until no new result was published for *quiet_s* seconds (at most *limit_s*): a
    command sent before the signal must not go unanswered because its callback had not run.
    """
    deadline = time.monotonic() + limit_s
    last_count, last_change = node.outputs.results_published, time.monotonic()
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
        if node.outputs.results_published != last_count:
            last_count, last_change = node.outputs.results_published, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            return


def _autostart(node: ReclipNode) -> None:
    """Configure and activate *node* (on its own thread, while the executor spins)."""
    if node.trigger_configure() == SUCCESS:
        if not node.closing:
            node.trigger_activate()
    elif not node.closing:
        node.get_logger().error('autostart: configure failed; the node stays unconfigured (fix '
                                'the parameters and configure again)')


def main(argv: Optional[Sequence[str]] = None, fast_exit: bool = True) -> int:
    """Run the node until SIGINT/SIGTERM; configure and activate it when ``autostart`` is true.

    With ``autostart`` the transitions run on a thread of their own while the executor
    spins, so commands, calls, parameters and diagnostics are answered while the models
    load (commands: DROPPED "the node is configuring"), and a signal during configure
    still stops the process at once.

    On a signal the node stops within about a second: waiting commands are answered
    DROPPED, the command in progress gets its result if it ends within a second (else
    DROPPED), the models are released, and the process exits with code 0. With
    *fast_exit* the process then ends at once (``os._exit`` after flushing): everything
    was released explicitly, and the interpreter's own teardown of torch and transformers
    takes seconds more, which launch would count against its SIGINT grace period.
    """
    from rclpy.signals import SignalHandlerOptions

    from reclip_ros.ros.transport import apply_large_frame_default
    transport = apply_large_frame_default()  # before the DDS participant exists
    args = ['reclip_node'] + list(sys.argv[1:] if argv is None else argv)
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # noqa: BLE001 - rcl reports malformed --ros-args this way
        print(f'error: invalid ROS arguments {args[1:]}: {exc} (an empty string parameter '
              "is written -p \"detector:=''\")", file=sys.stderr)
        return 2
    with _StopSignals() as stop:
        try:
            node = ReclipNode()
        except Exception as exc:  # noqa: BLE001 - e.g. a parameter override of the wrong type
            print(f'error: cannot start the node: {type(exc).__name__}: {exc}',
                  file=sys.stderr)
            rclpy.try_shutdown()
            return 2
        node.get_logger().info(f'transport: {transport}')
        node.transport = transport
        executor = MultiThreadedExecutor(num_threads=node.executor_threads())
        executor.add_node(node)
        code = 0
        try:
            if node.param('autostart') and not stop.requested.is_set():
                threading.Thread(target=_autostart, args=(node,), name='reclip-autostart',
                                 daemon=True).start()
            while not stop.requested.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            start = time.monotonic()
            try:
                node.begin_shutdown('the node is shutting down')
                _answer_pending_commands(executor, node)
                node.release(reason='the node is shutting down')
                # the last results (DROPPED answers) must reach their subscribers before
                # the process ends: DDS delivers a reliable sample until acknowledged
                node.wait_results_delivered(0.5)
            except Exception as exc:  # noqa: BLE001 - best effort at exit
                print(f'reclip_node: shutdown: {exc}', file=sys.stderr)
                code = 1
            executor.shutdown(timeout_sec=0.5)
            node.destroy_node()
            rclpy.try_shutdown()
            print(f'reclip_node: stopped in {time.monotonic() - start:.2f} s', file=sys.stderr)
    if fast_exit:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == '__main__':
    sys.exit(main())
