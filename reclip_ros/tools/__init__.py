"""Tooling around the grounding code, never imported by the core.

Benchmarks (``reclip bench``, ``reclip bench node``), random-weight test models, the soak
run, rosbag2 replay and the frame-delivery measurement.
"""
