"""``reclip replay``: ground commands on a rosbag2 recording (mcap or sqlite3), without ROS.

The bag is read with the pure-Python ``rosbags`` library. Its colour images (raw or
compressed), depth, camera_info and proposals are fed, in recording order and with their
original stamps, to the node's own worker (:class:`reclip_ros.runtime.worker.
GroundingWorker`): the same frame choice, depth and proposal matching, limits and statuses as
the live node. Commands come from a file (``--commands``: one per line, ``<seconds from the
start of the bag> <text>``) or from a ``std_msgs/String`` topic of the bag
(``--command-topic``). A command at time T is grounded once everything recorded up to T has
arrived, plus the depth, proposals and camera_info recorded up to T + ``--sync-wait`` (the
node's ``sync_wait``).

Output: ``<out>/results.jsonl``, one line per command: its time, the expression, status,
message, box, confidence, candidates, 3D position and the header of the grounded frame (the
node's header rule). With ``--output-bag`` also a bag holding ``/reclip/grounding``
(reclip_ros/msg/GroundingResult), ``/reclip/target_point`` (geometry_msgs/msg/PointStamped)
and ``/reclip/debug_image`` (annotated sensor_msgs/msg/Image), each at its command's time, so
Foxglove can play the recording with the answers overlaid.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from reclip_ros.cli.options import add_config_arguments, config_values

MSG_DIR = Path(__file__).resolve().parent.parent / 'msg'
CUSTOM_TYPES = ('GroundingResult', 'Candidate', 'Proposals')
RESULT_TOPIC = '/reclip/grounding'
POINT_TOPIC = '/reclip/target_point'
DEBUG_TOPIC = '/reclip/debug_image'

#: The grounding settings ``reclip replay`` offers (flags generated from ``core/config.py``).
SETTINGS = ('models', 'allow_download', 'detector', 'device', 'relations', 'max_proposals',
            'max_image_pixels')


def msg_definitions() -> Dict[str, str]:
    """reclip_ros message definitions (type name -> .msg text), from the source or install."""
    import sys as _sys
    for base in (MSG_DIR, Path(_sys.prefix) / 'share' / 'reclip_ros' / 'msg'):
        if all((base / f'{name}.msg').is_file() for name in CUSTOM_TYPES):
            return {f'reclip_ros/msg/{name}': (base / f'{name}.msg').read_text()
                    for name in CUSTOM_TYPES}
    raise FileNotFoundError('the reclip_ros .msg files are not installed')


def typestore():
    """A rosbags typestore with ROS 2 Kilted's types and reclip_ros's messages."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for name, text in msg_definitions().items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``reclip replay`` arguments."""
    parser.add_argument('bag', help='rosbag2 directory (mcap or sqlite3)')
    parser.add_argument('--image-topic', default='/camera/color/image_raw',
                        help='colour images: sensor_msgs/Image or CompressedImage')
    parser.add_argument('--depth-topic', default='', help='registered depth (16UC1 / 32FC1)')
    parser.add_argument('--camera-info-topic', default='', help='sensor_msgs/CameraInfo')
    parser.add_argument('--proposals-topic', default='', help='reclip_ros/Proposals')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--commands', metavar='FILE',
                        help='one command per line: <seconds from the bag start> <text>')
    source.add_argument('--command-topic', metavar='TOPIC', help='std_msgs/String commands')
    add_config_arguments(parser, SETTINGS, extra={'detector': {
        'help': 'detector for frames without proposals (default: none)'}})
    parser.add_argument('--max-image-age', type=float, default=1.0,
                        help='seconds (as the node parameter; 0 disables)')
    parser.add_argument('--sync-wait', type=float, default=0.1,
                        help='seconds of depth/proposals after a command still used (0.1)')
    parser.add_argument('--out', default='replay_output', help='directory for results.jsonl')
    parser.add_argument('--output-bag', default='', metavar='DIR',
                        help='also write the answers as a bag here')
    parser.add_argument('--output-storage', choices=('mcap', 'sqlite3'), default='mcap')
    parser.add_argument('--no-progress', action='store_true')


@dataclass(order=True)
class _Command:
    time_ns: int
    text: str = field(compare=False)


def read_commands(path: str, start_ns: int) -> List[_Command]:
    """Commands of a file: ``<seconds> <text>`` per line (blank lines and # comments skipped).

    Raises:
        ValueError: a line whose first word is not a number of seconds.
    """
    out = []
    for number, line in enumerate(Path(path).read_text(encoding='utf-8').splitlines(), 1):
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        offset, _, text = line.strip().partition(' ')
        try:
            seconds = float(offset)
        except ValueError:
            raise ValueError(f'{path}:{number}: expected "<seconds> <text>", '
                             f'got {line!r}') from None
        out.append(_Command(start_ns + int(round(seconds * 1e9)), text))
    return sorted(out)


class Replay:
    """Feeds a bag's messages to a GroundingWorker and grounds commands at their times."""

    def __init__(self, grounder: Any, args: argparse.Namespace):
        from reclip_ros.runtime.jobs import CommandQueue
        from reclip_ros.runtime.worker import GroundingWorker, WorkerSettings
        self.args = args
        self.now_ns = 0
        self.outcomes: List[Tuple[Any, Any]] = []
        settings = WorkerSettings(max_image_age=args.max_image_age, sync_wait=0.0,
                                  has_detector=bool(args.detector))
        self.worker = GroundingWorker(grounder, CommandQueue(1), self._collect,
                                      lambda: self.now_ns, settings)

    def _collect(self, job, outcome) -> None:
        self.outcomes.append((job, outcome))

    def feed(self, kind: str, msg: Any, log_ns: int) -> None:
        """Hand one bag message to the worker, as the node's callbacks do."""
        import functools

        from reclip_ros.ros import conversions as conv
        from reclip_ros.runtime.frame_buffer import Frame
        stamp = conv.stamp_to_ns(msg.header.stamp) if hasattr(msg, 'header') else log_ns
        limit = self.args.max_image_pixels
        if kind in ('image', 'compressed'):
            decoder = conv.image_to_rgb if kind == 'image' else _compressed_to_rgb
            self.worker.feed_image(Frame(stamp, log_ns, msg.header,
                                         functools.partial(decoder, msg, max_pixels=limit)))
        elif kind == 'depth':
            self.worker.feed_depth(Frame(stamp, log_ns, msg.header, functools.partial(
                conv.depth_image_to_meters, msg, max_pixels=limit)))
        elif kind == 'camera_info':
            try:
                intrinsics = conv.camera_info_to_intrinsics(msg)
            except ValueError:
                return
            self.worker.feed_camera_info(intrinsics, int(msg.width), int(msg.height))
        elif kind == 'proposals':
            self.worker.feed_proposals(stamp, conv.proposals_to_boxes(msg))

    def ground(self, command: _Command):
        """Ground *command* now (its time); return (job, outcome)."""
        from reclip_ros.runtime.jobs import SOURCE_TOPIC, GroundingJob
        self.now_ns = command.time_ns
        job = GroundingJob(command.text, SOURCE_TOPIC, command.time_ns)
        self.worker.handle(job)
        return self.outcomes[-1]


def _compressed_to_rgb(msg, max_pixels=None):
    from reclip_ros.ros import conversions as conv
    return conv.compressed_to_rgb(msg, max_pixels=max_pixels)


def result_record(job, outcome) -> dict:
    """One line of results.jsonl (the node's header rule: frame header for frame statuses)."""
    from reclip_ros.ros import conversions as conv
    from reclip_ros.runtime.worker import FRAME_STATUSES
    record = outcome.result.to_json_dict()
    frame = outcome.frame if outcome.result.status in FRAME_STATUSES else None
    if frame is not None:
        record['stamp_ns'] = conv.stamp_to_ns(frame.header.stamp)
        record['frame_id'] = str(frame.header.frame_id)
    else:
        record['stamp_ns'] = int(job.received_ns)
        record['frame_id'] = ''
    record['command_time_ns'] = int(job.received_ns)
    record.pop('parse', None)
    return record


def _topics(args) -> Dict[str, str]:
    return {topic: kind for kind, topic in (
        ('image', args.image_topic), ('depth', args.depth_topic),
        ('camera_info', args.camera_info_topic), ('proposals', args.proposals_topic),
        ('command', args.command_topic or '')) if topic}


def run(args: argparse.Namespace) -> int:
    """Replay the bag; write results.jsonl (and the output bag); print a summary."""
    from rosbags.highlevel import AnyReader

    from reclip_ros.core.grounder import Grounder, GrounderConfig
    from reclip_ros.core.types import ReclipError
    from reclip_ros.evaluation.engine import ProgressBar
    store = typestore()
    try:
        reader = AnyReader([Path(args.bag)], default_typestore=store)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - any unreadable bag: one clear line
        print(f'error: cannot read bag {args.bag}: {exc}', file=sys.stderr)
        return 2
    try:
        topics = _topics(args)
        connections = [c for c in reader.connections if c.topic in topics]
        missing = sorted(set(topics) - {c.topic for c in connections})
        if missing:
            print(f'error: topics not in the bag: {", ".join(missing)}; it has: '
                  f'{", ".join(sorted({c.topic for c in reader.connections}))}', file=sys.stderr)
            return 2
        try:
            commands = (read_commands(args.commands, reader.start_time) if args.commands
                        else [])
        except (OSError, ValueError) as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 2
        try:
            config = GrounderConfig.from_values(config_values(args, SETTINGS))
            grounder = Grounder.from_config(config)
        except (ReclipError, ValueError) as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 2
        replay = Replay(grounder, args)
        records: List[dict] = []
        answers: List[Tuple[Any, Any]] = []
        bar = ProgressBar(sum(c.msgcount for c in connections), unit='msg',
                          enabled=not args.no_progress)
        sync_ns = int(args.sync_wait * 1e9)
        pending = list(commands)

        def ground_due(until_ns: int) -> None:
            while pending and pending[0].time_ns <= until_ns:
                command = pending.pop(0)
                job, outcome = replay.ground(command)
                records.append(result_record(job, outcome))
                answers.append((job, outcome))

        for connection, log_ns, raw in reader.messages(connections=connections):
            kind = topics[connection.topic]
            msg = reader.deserialize(raw, connection.msgtype)
            if kind == 'image' and 'CompressedImage' in connection.msgtype:
                kind = 'compressed'
            # commands whose sync window has passed are grounded before this message
            ground_due(log_ns - sync_ns - 1)
            if kind == 'command':
                pending.append(_Command(log_ns, str(msg.data)))
                pending.sort()
            elif kind in ('image', 'compressed'):
                ground_due(log_ns - 1)  # a newer frame is not the command's newest frame
                replay.feed(kind, msg, log_ns)
            else:
                replay.feed(kind, msg, log_ns)
            bar.update(1)
        ground_due(1 << 62)
        bar.close()
    finally:
        reader.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / 'results.jsonl', 'w', encoding='utf-8') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')
    if args.output_bag:
        write_output_bag(args.output_bag, args.output_storage, answers, store)
    grounder.close()
    statuses: Dict[str, int] = {}
    for record in records:
        statuses[record['status']] = statuses.get(record['status'], 0) + 1
    print(f'{len(records)} commands grounded: {statuses}; results in {out / "results.jsonl"}'
          + (f'; output bag {args.output_bag}' if args.output_bag else ''))
    return 0


def _rosbags_msg(store, typename: str, value: Any):
    """Build a rosbags message of *typename* from an rclpy-like or plain value, recursively."""
    cls = store.types[typename]
    kwargs = {}
    for name, kind in store.fielddefs[typename][1]:
        item = getattr(value, name)
        kwargs[name] = _rosbags_value(store, kind, item)
    return cls(**kwargs)


def _rosbags_value(store, kind, item):
    from rosbags.typesys.base import Nodetype
    node, detail = kind
    if node == Nodetype.NAME:
        return _rosbags_msg(store, detail, item)
    if node == Nodetype.BASE:
        return item
    sub = detail[0]
    if sub[0] == Nodetype.BASE:
        if sub[1][0] in ('string',):
            return list(item)
        if isinstance(item, (bytes, bytearray, memoryview)):
            return np.frombuffer(item, dtype=np.uint8).copy()
        return np.asarray(item, dtype=_numpy_dtype(sub[1][0]))
    return [_rosbags_value(store, sub, x) for x in item]


def _numpy_dtype(base: str):
    return {'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8, 'int8': np.int8,
            'uint8': np.uint8, 'int16': np.int16, 'uint16': np.uint16, 'int32': np.int32,
            'uint32': np.uint32, 'int64': np.int64, 'uint64': np.uint64,
            'float32': np.float32, 'float64': np.float64}[base]


def write_output_bag(path: str, storage: str, answers, store) -> None:
    """Write results, points and annotated images, each at its command's time."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from reclip_ros.ros import conversions as conv
    from reclip_ros.core.drawing import draw_result
    from reclip_ros.core.types import Status
    from reclip_ros.runtime.worker import FRAME_STATUSES
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(Path(path), version=9, storage_plugin=plugin) as writer:
        result_conn = writer.add_connection(RESULT_TOPIC, 'reclip_ros/msg/GroundingResult',
                                            typestore=store)
        point_conn = writer.add_connection(POINT_TOPIC, 'geometry_msgs/msg/PointStamped',
                                           typestore=store)
        image_conn = writer.add_connection(DEBUG_TOPIC, 'sensor_msgs/msg/Image',
                                           typestore=store)
        for job, outcome in answers:
            t = int(job.received_ns)
            frame = outcome.frame if outcome.result.status in FRAME_STATUSES else None
            header = _header(frame.header if frame is not None else None, t)
            width = height = 0
            if frame is not None and outcome.result.status == Status.OK:
                height, width = frame.decode().shape[:2]
            msg = conv.result_to_msg(outcome.result, header, width, height)
            writer.write(result_conn, t, store.serialize_cdr(
                _rosbags_msg(store, 'reclip_ros/msg/GroundingResult', msg),
                'reclip_ros/msg/GroundingResult'))
            if msg.has_position:
                point = conv.position_to_point(outcome.result.position, header)
                writer.write(point_conn, t, store.serialize_cdr(
                    _rosbags_msg(store, 'geometry_msgs/msg/PointStamped', point),
                    'geometry_msgs/msg/PointStamped'))
            if outcome.result.status == Status.OK:
                drawn = draw_result(frame.decode(), outcome.result, top_k=3)
                image = conv.array_to_image(drawn, 'rgb8', header)
                writer.write(image_conn, t, store.serialize_cdr(
                    _rosbags_msg(store, 'sensor_msgs/msg/Image', image),
                    'sensor_msgs/msg/Image'))


def _header(source, t_ns: int):
    """A std_msgs Header (rclpy type) copied from a rosbags header, or stamped *t_ns*."""
    from std_msgs.msg import Header

    from reclip_ros.ros import conversions as conv
    if source is None:
        return Header(stamp=conv.ns_to_stamp(t_ns))
    return Header(stamp=conv.ns_to_stamp(conv.stamp_to_ns(source.stamp)),
                  frame_id=str(source.frame_id))


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point for ``python -m reclip_ros.tools.replay``."""
    parser = argparse.ArgumentParser(prog='reclip replay', description=__doc__.splitlines()[0])
    register(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
