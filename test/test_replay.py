"""``reclip replay`` on bags the test builds from the simulator with rosbags' writer.

Each bag holds a few simulated scenes: colour image, 32FC1 depth, camera_info and the
ground-truth proposals, stamped as a camera does, one scene per second; the commands are
the simulator's expressions with their ground truth. The replay's accuracy must be the
simulator benchmark's on the same scenes (the same grounder, frames and boxes), in both
storage formats, and its output bag must open with the expected topics and counts.
"""

import json
from pathlib import Path

import numpy as np
import pytest


from reclip_ros.tools import replay
from reclip_ros.evaluation.variants import is_correct

SEEDS = (100, 101, 102)
START_NS = 1_700_000_000 * 10**9


def _scenes():
    from reclip_ros.sim.expressions import generate_expressions
    from reclip_ros.sim.world import TabletopScene
    out = []
    for seed in SEEDS:
        with TabletopScene(seed) as scene:
            frame = scene.render()
        rng = np.random.default_rng([int(seed), 2024])
        out.append((frame, generate_expressions(frame.objects, rng, max_per_category=1)))
    return out


def _write_bag(path: Path, storage: str, scenes, commands_via_topic: bool,
               compressed: bool = False):
    from rosbags.rosbag2 import StoragePlugin, Writer
    store = replay.typestore()
    T = store.types
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    commands = []
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {name: writer.add_connection(topic, msgtype, typestore=store)
                 for name, topic, msgtype in (
                     ('image', '/camera/color/image_raw',
                      'sensor_msgs/msg/CompressedImage' if compressed
                      else 'sensor_msgs/msg/Image'),
                     ('depth', '/camera/depth', 'sensor_msgs/msg/Image'),
                     ('info', '/camera/camera_info', 'sensor_msgs/msg/CameraInfo'),
                     ('proposals', '/proposals', 'reclip_ros/msg/Proposals'),
                     ('command', '/command', 'std_msgs/msg/String'))}
        for k, (frame, expressions) in enumerate(scenes):
            t = START_NS + k * 10**9
            header = T['std_msgs/msg/Header'](
                stamp=T['builtin_interfaces/msg/Time'](sec=t // 10**9, nanosec=t % 10**9),
                frame_id='camera_optical')
            h, w = frame.rgb.shape[:2]
            image = T['sensor_msgs/msg/Image'](header=header, height=h, width=w,
                                               encoding='rgb8', is_bigendian=0, step=w * 3,
                                               data=frame.rgb.reshape(-1).copy())
            image_type = 'sensor_msgs/msg/Image'
            if compressed:
                import cv2
                ok, png = cv2.imencode('.png', cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
                image = T['sensor_msgs/msg/CompressedImage'](header=header, format='png',
                                                             data=png.reshape(-1))
                image_type = 'sensor_msgs/msg/CompressedImage'
            depth = T['sensor_msgs/msg/Image'](
                header=header, height=h, width=w, encoding='32FC1', is_bigendian=0,
                step=w * 4, data=frame.depth.astype(np.float32).reshape(-1).view(np.uint8))
            i = frame.intrinsics
            roi = T['sensor_msgs/msg/RegionOfInterest']
            info = T['sensor_msgs/msg/CameraInfo'](
                header=header, height=h, width=w, distortion_model='plumb_bob',
                d=np.zeros(5), k=np.array([i.fx, 0, i.cx, 0, i.fy, i.cy, 0, 0, 1.0]),
                r=np.eye(3).reshape(-1), p=np.zeros(12), binning_x=0, binning_y=0,
                roi=roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            boxes = [roi(x_offset=int(b.x), y_offset=int(b.y), width=int(np.ceil(b.width)),
                         height=int(np.ceil(b.height)), do_rectify=False)
                     for b in frame.boxes]
            proposals = T['reclip_ros/msg/Proposals'](header=header, boxes=boxes,
                                                      scores=np.zeros(0, np.float32),
                                                      labels=[])
            for name, msg, msgtype in (('info', info, 'sensor_msgs/msg/CameraInfo'),
                                       ('depth', depth, 'sensor_msgs/msg/Image'),
                                       ('proposals', proposals, 'reclip_ros/msg/Proposals'),
                                       ('image', image, image_type)):
                writer.write(conns[name], t, store.serialize_cdr(msg, msgtype))
            for j, expr in enumerate(expressions):
                at = t + 300_000_000 + j * 20_000_000   # 0.3 s after the frame
                commands.append((at, expr.text, frame.objects[expr.target_index].box))
                if commands_via_topic:
                    writer.write(conns['command'], at, store.serialize_cdr(
                        T['std_msgs/msg/String'](data=expr.text), 'std_msgs/msg/String'))
    return commands


def _args(bag, out, **extra):
    import argparse
    parser = argparse.ArgumentParser()
    replay.register(parser)
    argv = [str(bag), '--depth-topic', '/camera/depth', '--camera-info-topic',
            '/camera/camera_info', '--proposals-topic', '/proposals', '--model', 'sim',
            '--device', 'cpu', '--out', str(out), '--no-progress', '--max-image-age', '2.0']
    for key, value in extra.items():
        argv += [f'--{key.replace("_", "-")}', str(value)]
    return parser.parse_args(argv)


@pytest.fixture(scope='module')
def scenes():
    return _scenes()


@pytest.fixture(scope='module')
def simulator_accuracy(scenes):
    from reclip_ros.core.grounder import Grounder, GrounderConfig
    grounder = Grounder.from_config(GrounderConfig(models=('sim',), device='cpu'))
    correct = total = 0
    for frame, expressions in scenes:
        for expr in expressions:
            result = grounder.ground(frame.rgb, expr.text, boxes=frame.boxes,
                                     depth_m=frame.depth, intrinsics=frame.intrinsics)
            total += 1
            correct += is_correct(result.box, [frame.objects[expr.target_index].box])
    grounder.close()
    return correct / total


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_replay_reproduces_the_simulator_accuracy(tmp_path, scenes, simulator_accuracy,
                                                  storage):
    bag = tmp_path / f'sim_{storage}'
    commands = _write_bag(bag, storage, scenes, commands_via_topic=False)
    command_file = tmp_path / 'commands.txt'
    command_file.write_text(''.join(f'{(t - START_NS) / 1e9:.3f} {text}\n'
                                    for t, text, _ in commands))
    out_bag = tmp_path / f'answers_{storage}'
    args = _args(bag, tmp_path / 'out', commands=command_file, output_bag=out_bag,
                 output_storage=storage)
    assert replay.run(args) == 0
    lines = [json.loads(x) for x in (tmp_path / 'out' / 'results.jsonl').read_text()
             .splitlines()]
    assert len(lines) == len(commands)
    from reclip_ros.core.types import Box
    correct = sum(is_correct(Box(*line['box']) if line['box'] else None, [target])
                  for line, (_, _, target) in zip(lines, commands))
    assert all(line['status'] == 'OK' for line in lines), lines[:3]
    assert abs(correct / len(lines) - simulator_accuracy) <= 0.01
    # each answer is on its scene's frame (the newest at the command's time)
    for line, (t, _, _) in zip(lines, commands):
        assert line['frame_id'] == 'camera_optical'
        assert line['stamp_ns'] == START_NS + ((t - START_NS) // 10**9) * 10**9
        assert line['position'] is not None
    # the output bag opens with rosbags, with the expected topics and counts
    from rosbags.highlevel import AnyReader
    with AnyReader([out_bag], default_typestore=replay.typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == {replay.RESULT_TOPIC: len(commands),
                          replay.POINT_TOPIC: len(commands),
                          replay.DEBUG_TOPIC: len(commands)}
        result_conn = next(c for c in reader.connections if c.topic == replay.RESULT_TOPIC)
        first = next(reader.messages(connections=[result_conn]))
        msg = reader.deserialize(first[2], result_conn.msgtype)
        assert msg.expression == commands[0][1] and msg.status == 0
        assert first[1] == commands[0][0]


def test_commands_from_a_topic_in_the_bag_with_compressed_images(tmp_path, scenes):
    bag = tmp_path / 'sim_topic'
    commands = _write_bag(bag, 'mcap', scenes[:1], commands_via_topic=True, compressed=True)
    args = _args(bag, tmp_path / 'out', command_topic='/command')
    assert replay.run(args) == 0
    lines = [json.loads(x) for x in (tmp_path / 'out' / 'results.jsonl').read_text()
             .splitlines()]
    assert [line['expression'] for line in lines] == [text for _, text, _ in commands]
    assert [line['command_time_ns'] for line in lines] == [t for t, _, _ in commands]
    assert all(line['status'] == 'OK' and line['frame_id'] == 'camera_optical'
               for line in lines)


def test_missing_topic_and_bad_bag_are_clear(tmp_path, scenes, capsys):
    bag = tmp_path / 'sim_small'
    _write_bag(bag, 'mcap', scenes[:1], commands_via_topic=True)
    assert replay.run(_args(bag, tmp_path / 'o', command_topic='/nope')) == 2
    assert 'topics not in the bag: /nope' in capsys.readouterr().err
    assert replay.run(_args(tmp_path / 'no_such_bag', tmp_path / 'o',
                            command_topic='/command')) == 2
    assert 'cannot read bag' in capsys.readouterr().err
