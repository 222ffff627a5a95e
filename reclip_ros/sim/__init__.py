"""Simulation: a PyBullet tabletop world, referring expressions with ground truth, evaluation.

Modules: :mod:`catalog` (object kinds, colours, sizes), :mod:`world` (the seeded scene and
its renderer), :mod:`expressions` (unambiguous expressions per scene), :mod:`sim_eval`
(``reclip eval sim``), :mod:`camera_node` (the ROS camera) and :mod:`demo`.
"""
