"""The Fast DDS profile for large frames (config/fastdds_large_frames.xml) takes effect.

Why it exists (docs/node.md, "Image QoS and lost frames"): Fast DDS's default shared-memory
segment is 512 KB per participant, smaller than one 640x480 frame, so best-effort readers
lose frames between processes. The tests read the size of the segment a real rclpy
participant maps, with and without the profile.
"""

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / '.venv' / 'bin' / 'python'
PROFILE = REPO / 'config' / 'fastdds_large_frames.xml'
NS = {'dds': 'http://www.eprosima.com'}
FRAME_BYTES = 640 * 480 * 4  # one 640x480 32FC1 depth image

# prints the sizes of the Fast DDS data segments this process has mapped
PROBE = '''
import os, re, rclpy
rclpy.init()
node = rclpy.create_node('segment_probe')
paths = set()
for line in open('/proc/self/maps'):
    match = re.search(r'(/dev/shm/fastdds_[0-9a-f]{16})$', line.strip())
    if match:
        paths.add(match.group(1))
print(' '.join(str(os.path.getsize(p)) for p in sorted(paths)))
node.destroy_node()
rclpy.shutdown()
'''


def _segment_sizes(profile=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), ROS_DOMAIN_ID=str(150 + os.getpid() % 50))
    env.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
    env.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)
    if profile is not None:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    out = subprocess.run([str(PYTHON), '-c', PROBE], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    sizes = [int(v) for v in out.stdout.split()]
    assert sizes, f'no shared-memory segment mapped; stderr: {out.stderr[-1000:]}'
    return sizes


def test_profile_is_valid_xml_with_room_for_several_frames():
    root = ET.parse(PROFILE).getroot()
    segment = int(root.find('.//dds:transport_descriptor[dds:type="SHM"]/dds:segment_size',
                            NS).text)
    assert segment >= 4 * FRAME_BYTES
    participant = root.find('.//dds:participant', NS)
    assert participant.get('is_default_profile') == 'true'
    transports = [t.text for t in participant.findall('.//dds:transport_id', NS)]
    declared = [t.text for t in root.findall('.//dds:transport_descriptor/dds:transport_id',
                                             NS)]
    assert transports and set(transports) == set(declared)


def test_default_segment_is_smaller_than_one_frame_and_the_profile_enlarges_it():
    default = max(_segment_sizes())
    enlarged = max(_segment_sizes(PROFILE))
    print(f'\nFast DDS shared-memory segment: default {default} B, profile {enlarged} B')
    assert default < FRAME_BYTES, 'the finding in docs/node.md no longer holds'
    assert enlarged >= 4 * FRAME_BYTES


def test_sim_stack_children_use_the_profile_unless_one_is_chosen(monkeypatch):
    from reclip_ros.sim.demo import SimStack
    monkeypatch.delenv('FASTDDS_DEFAULT_PROFILES_FILE', raising=False)
    monkeypatch.delenv('FASTRTPS_DEFAULT_PROFILES_FILE', raising=False)
    env = SimStack(0, domain_id=1).environment()
    assert Path(env['FASTDDS_DEFAULT_PROFILES_FILE']).resolve() == PROFILE.resolve()
    monkeypatch.setenv('FASTRTPS_DEFAULT_PROFILES_FILE', '/elsewhere/profile.xml')
    env = SimStack(0, domain_id=1).environment()
    assert 'FASTDDS_DEFAULT_PROFILES_FILE' not in env
