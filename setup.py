"""Python packaging metadata for the ROS-free parts of reclip_ros.

ROS 2 builds use CMakeLists.txt (colcon, ament_cmake: the messages are generated there).
This file serves machines without ROS: ``pip install .`` installs the core library and the
``reclip`` command line (``reclip ground``, ``reclip bench``, ``reclip eval``); the ROS node
and the simulated camera additionally need rclpy and the generated messages (``make setup``).
"""

from setuptools import find_packages, setup

setup(
    name='reclip_ros',
    version='0.1.0',
    description='ReCLIP zero-shot referring-expression grounding for ROS 2',
    license='Apache-2.0',
    packages=find_packages(include=['reclip_ros', 'reclip_ros.*']),
    python_requires='>=3.10',
    install_requires=[
        'numpy', 'opencv-python-headless', 'torch', 'transformers>=4.45', 'safetensors',
        'sentencepiece', 'protobuf',
        'spacy>=3.7,<4',
    ],
    extras_require={'sim': ['pybullet'], 'test': ['pytest', 'ruff']},
    entry_points={'console_scripts': ['reclip = reclip_ros.cli:main']},
)
