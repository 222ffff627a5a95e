"""Static checks of the Gazebo path (gz sim cannot run here): world SDF, launch file, topics."""

import ast
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORLD = ROOT / 'worlds' / 'tabletop.sdf'
LAUNCH = ROOT / 'launch' / 'gazebo_demo.launch.py'
NODE = ROOT / 'reclip_ros' / 'ros' / 'node.py'
NODE_INPUTS = ROOT / 'reclip_ros' / 'ros' / 'inputs.py'  # the sensor subscriptions

# <topic>@<ROS type>[<gz type>   ('[' gz -> ROS, ']' ROS -> gz, '@' both ways)
BRIDGE_RE = re.compile(r'^(?P<topic>/[\w/]+)@(?P<ros>\w+/msg/\w+)(?P<dir>[\[\]@])'
                       r'(?P<gz>gz\.msgs\.\w+)$')
# ROS <-> gz message pairs that ros_gz_bridge supports, for the types used here.
BRIDGE_PAIRS = {
    'sensor_msgs/msg/Image': 'gz.msgs.Image',
    'sensor_msgs/msg/CameraInfo': 'gz.msgs.CameraInfo',
    'rosgraph_msgs/msg/Clock': 'gz.msgs.Clock',
}


class _Resolve(ast.NodeTransformer):
    """Replace names of already-known module constants by their values."""

    def __init__(self, constants):
        self.constants = constants

    def visit_Name(self, node):  # noqa: N802 - ast visitor naming
        if node.id in self.constants:
            return ast.copy_location(ast.Constant(self.constants[node.id]), node)
        return node


def module_constants(path: Path) -> dict:
    """Literal module-level assignments of *path*, names of earlier constants resolved."""
    constants = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(_Resolve(constants).visit(node.value))
            except ValueError:
                continue
            constants[node.targets[0].id] = value
    return constants


def _sdf():
    return ET.parse(WORLD).getroot()


def _rgbd_sensor():
    sensors = [s for s in _sdf().iter('sensor') if s.get('type') == 'rgbd_camera']
    assert len(sensors) == 1, 'the world needs exactly one rgbd_camera sensor'
    return sensors[0]


def _bridges():
    args = module_constants(LAUNCH)['BRIDGE_ARGUMENTS']
    parsed = {}
    for arg in args:
        match = BRIDGE_RE.match(arg)
        assert match, f'malformed parameter_bridge argument {arg!r}'
        parsed[match['topic']] = match.groupdict()
    return parsed


def test_world_parses_and_has_table_objects_and_camera():
    root = _sdf()
    assert root.tag == 'sdf'
    worlds = root.findall('world')
    assert len(worlds) == 1
    models = {m.get('name'): m for m in worlds[0].findall('model')}
    assert 'table' in models
    coloured = []
    for name, model in models.items():
        if model.findtext('static', '').strip() == 'true':
            continue
        diffuse = model.find('.//visual/material/diffuse')
        assert diffuse is not None, f'object {name} has no material colour'
        rgba = [float(v) for v in diffuse.text.split()]
        assert len(rgba) == 4 and all(0.0 <= v <= 1.0 for v in rgba)
        coloured.append(rgba[:3])
    assert len(coloured) >= 3, 'the table needs a few coloured objects'
    assert len({tuple(c) for c in coloured}) >= 3, 'objects need distinct colours'
    plugins = {p.get('name') for p in worlds[0].findall('plugin')}
    assert 'gz::sim::systems::Sensors' in plugins, 'rendering sensors need the Sensors system'


def test_rgbd_camera_sensor_is_complete():
    sensor = _rgbd_sensor()
    assert sensor.findtext('topic', '').strip()
    assert float(sensor.findtext('update_rate')) > 0
    image = sensor.find('camera/image')
    assert int(image.findtext('width')) >= 32 and int(image.findtext('height')) >= 32
    assert image.findtext('format') == 'R8G8B8', 'the node expects rgb8 images'
    assert sensor.find('camera/depth_camera') is not None
    assert 0 < float(sensor.findtext('camera/horizontal_fov')) < 3.14


def test_launch_file_compiles(tmp_path):
    py_compile.compile(str(LAUNCH), cfile=str(tmp_path / 'launch.pyc'), doraise=True)
    tree = ast.parse(LAUNCH.read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert 'generate_launch_description' in functions


def test_bridge_matches_the_sdf_sensor_topics():
    topic = _rgbd_sensor().findtext('topic').strip().strip('/')
    bridges = _bridges()
    for suffix in ('image', 'depth_image', 'camera_info'):
        name = f'/{topic}/{suffix}'
        assert name in bridges, f'{name} (published by the SDF sensor) is not bridged'
        assert bridges[name]['dir'] == '[', f'{name} should be bridged gz -> ROS only'
    for name, bridge in bridges.items():
        assert BRIDGE_PAIRS.get(bridge['ros']) == bridge['gz'], \
            f'{name}: {bridge["ros"]} cannot be bridged from {bridge["gz"]}'
    assert '/clock' in bridges, 'gz stamps are sim time: /clock must be bridged'


def test_node_inputs_are_remapped_to_bridged_topics():
    constants = module_constants(LAUNCH)
    remaps = dict(constants['RECLIP_REMAPPINGS'])
    bridges = _bridges()
    topic = _rgbd_sensor().findtext('topic').strip().strip('/')
    assert remaps == {'image': f'/{topic}/image', 'depth': f'/{topic}/depth_image',
                      'camera_info': f'/{topic}/camera_info'}
    for target in remaps.values():
        assert target in bridges
    assert bridges[remaps['image']]['ros'] == 'sensor_msgs/msg/Image'
    assert bridges[remaps['depth']]['ros'] == 'sensor_msgs/msg/Image'
    assert bridges[remaps['camera_info']]['ros'] == 'sensor_msgs/msg/CameraInfo'


def _is_create_subscription(func, aliases) -> bool:
    if isinstance(func, ast.Attribute) and func.attr == 'create_subscription':
        return True
    return isinstance(func, ast.Name) and func.id in aliases


def _subscribed_topics(path: Path) -> set:
    """Topic names given to create_subscription in *path* (literals or module constants).

    Also follows aliases such as ``sub = functools.partial(self.create_subscription, ...)``
    and small wrapper functions (``def sub(msg_type, topic, ...)`` that call
    create_subscription with their second argument as the topic).
    """
    constants = module_constants(path)
    tree = ast.parse(path.read_text())
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and getattr(node.value.func, 'attr', getattr(node.value.func, 'id', '')) \
                == 'partial' and node.value.args \
                and _is_create_subscription(node.value.args[0], set()):
            aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(n, ast.Call) and _is_create_subscription(n.func, set())
                for n in ast.walk(node)) and len(node.args.args) >= 2 \
                and node.args.args[0].arg != 'self':
            aliases.add(node.name)
    topics = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_create_subscription(node.func, aliases):
            args = list(node.args[1:2]) + [k.value for k in node.keywords if k.arg == 'topic']
            for arg in args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    topics.add(arg.value)
                elif isinstance(arg, ast.Name) and isinstance(constants.get(arg.id), str):
                    topics.add(constants[arg.id])
    return topics


def test_remapped_names_are_the_nodes_subscriptions():
    if not NODE.exists():
        pytest.fail('reclip_ros/ros/node.py is missing')
    subscribed = _subscribed_topics(NODE) | _subscribed_topics(NODE_INPUTS)
    remaps = dict(module_constants(LAUNCH)['RECLIP_REMAPPINGS'])
    missing = set(remaps) - subscribed
    assert not missing, f'the launch file remaps {missing}, the node subscribes {subscribed}'


def test_launch_starts_the_lifecycle_node_with_autostart_and_the_world():
    text = LAUNCH.read_text()
    assert re.search(r"LifecycleNode\(\s*package='reclip_ros',\s*executable='reclip_node',"
                     r"\s*name='reclip'", text)
    assert "'autostart': True" in text
    assert "'models':" in text
    assert "'tabletop.sdf'" in text and WORLD.exists()
    frame = _rgbd_sensor().findtext('gz_frame_id').strip()
    assert f"'--child-frame-id', '{frame}'" in text, 'the optical frame needs its transform'
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    assert re.search(r'install\(DIRECTORY[^)]*\blaunch\b[^)]*\bworlds\b', cmake)


def test_the_topic_checker_finds_literal_and_constant_topics(tmp_path):
    sample = tmp_path / 'sample.py'
    sample.write_text("DEPTH = 'depth'\n"
                      "class N:\n"
                      "    def f(self):\n"
                      "        self.create_subscription(Image, 'image', cb, 1)\n"
                      "        self.create_subscription(Image, DEPTH, cb, 1)\n"
                      "        sub = functools.partial(self.create_subscription, x=1)\n"
                      "        sub(CameraInfo, 'camera_info', cb, 1)\n"
                      "        self.create_publisher(Image, 'out', 1)\n")
    assert _subscribed_topics(sample) == {'image', 'depth', 'camera_info'}
