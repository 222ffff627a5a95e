"""The node's default DDS transport for large frames (chosen before ROS starts)."""

from reclip_ros.ros.transport import (LARGE_DATA_ENV, apply_large_frame_default,
                                      large_frames_profile)


def test_the_shipped_profile_is_loaded_unless_the_user_chose_a_transport():
    env = {}
    note = apply_large_frame_default(env)
    assert env == {'FASTDDS_DEFAULT_PROFILES_FILE': str(large_frames_profile())}
    assert 'large-frames profile' in note
    for user in ({'FASTDDS_DEFAULT_PROFILES_FILE': '/my/profile.xml'},
                 {'FASTRTPS_DEFAULT_PROFILES_FILE': '/my/old_profile.xml'},
                 dict(LARGE_DATA_ENV)):
        env = dict(user)
        note = apply_large_frame_default(env)
        assert env == user and 'chosen by the user' in note
    env = {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}
    assert 'left as configured' in apply_large_frame_default(env)
    assert env == {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}
