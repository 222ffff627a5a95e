"""The vision_msgs types this node publishes have vision_msgs' documented layout.

Where ROS is installed normally this checks the real package; in the development venv it
checks the messages ``make setup`` built from ``interfaces/vision_msgs``. The expected
layout is written out here from vision_msgs' documentation (ROS 2 vision_msgs 4.x,
docs.ros.org/en/rolling/p/vision_msgs): every field, in order, with its type, so that a
subscriber built against the real package receives the same type.
"""

import vision_msgs.msg as vision

DOCUMENTED = {
    'Point2D': [('x', 'double'), ('y', 'double')],
    'Pose2D': [('position', 'vision_msgs/Point2D'), ('theta', 'double')],
    'BoundingBox2D': [('center', 'vision_msgs/Pose2D'), ('size_x', 'double'),
                      ('size_y', 'double')],
    'BoundingBox3D': [('center', 'geometry_msgs/Pose'), ('size', 'geometry_msgs/Vector3')],
    'ObjectHypothesis': [('class_id', 'string'), ('score', 'double')],
    'ObjectHypothesisWithPose': [('hypothesis', 'vision_msgs/ObjectHypothesis'),
                                 ('pose', 'geometry_msgs/PoseWithCovariance')],
    'Detection2D': [('header', 'std_msgs/Header'),
                    ('results', 'sequence<vision_msgs/ObjectHypothesisWithPose>'),
                    ('bbox', 'vision_msgs/BoundingBox2D'), ('id', 'string')],
    'Detection2DArray': [('header', 'std_msgs/Header'),
                         ('detections', 'sequence<vision_msgs/Detection2D>')],
    'Detection3D': [('header', 'std_msgs/Header'),
                    ('results', 'sequence<vision_msgs/ObjectHypothesisWithPose>'),
                    ('bbox', 'vision_msgs/BoundingBox3D'), ('id', 'string')],
    'Detection3DArray': [('header', 'std_msgs/Header'),
                         ('detections', 'sequence<vision_msgs/Detection3D>')],
}


def test_every_message_the_node_uses_has_the_documented_fields_in_order():
    for name, fields in DOCUMENTED.items():
        cls = getattr(vision, name)
        assert list(cls.get_fields_and_field_types().items()) == fields, name


def test_the_types_have_the_package_and_message_names_of_vision_msgs():
    import rclpy.type_support
    for name in DOCUMENTED:
        cls = getattr(vision, name)
        rclpy.type_support.check_is_valid_msg_type(cls)  # the generated C type support loads
        assert cls.__module__.startswith('vision_msgs.msg'), cls.__module__
        assert cls.__name__ == name
