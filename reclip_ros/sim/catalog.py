"""The objects of the simulated tabletop: kinds, colours and sizes.

Every object in a scene is one *kind* (a primitive or a ``pybullet_data`` mesh) drawn in
one *colour* at one of two *sizes*. Primitives are drawn in the plain colour; the duck
mesh carries a texture, and its colour is a tint multiplied onto that texture (a "red
duck" is red with a dark eye and beak shading).

Kinds (name, geometry, synonyms the expressions may use):

========  ===============================  =========================
name      geometry                         synonyms
========  ===============================  =========================
cube      box                              block
sphere    sphere                           ball
cylinder  cylinder                         can
cone      cone (a mesh built here)         -
capsule   capsule (a rounded cylinder)     pill
duck      pybullet_data ``duck.obj``       rubber duck
teddy     pybullet_data ``teddy2_*.obj``   teddy bear
bunny     pybullet_data ``bunny.obj``      rabbit
========  ===============================  =========================

Sizes: ``small`` objects are 5 cm across at their largest, ``big`` ones 8 cm (1.6 x
the linear size, 2.6 x the image area at the same distance).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

SIZES = ('small', 'big')
# largest extent (metres) of an object of each size
SIZE_EXTENT = {'small': 0.05, 'big': 0.08}

COLOURS: Dict[str, Tuple[float, float, float]] = {
    'red': (0.85, 0.10, 0.10),
    'green': (0.10, 0.70, 0.15),
    'blue': (0.10, 0.25, 0.90),
    'yellow': (0.95, 0.85, 0.10),
    'purple': (0.55, 0.15, 0.75),
    'white': (0.95, 0.95, 0.95),
}


@dataclass(frozen=True)
class ObjectKind:
    """One kind of object: its name, how it is built and its unit-size proportions.

    ``shape`` is one of ``box, sphere, cylinder, cone, capsule, mesh``; ``proportions``
    are the (x, y, z) extents of the object at largest extent 1 (for meshes they are
    measured from the file); ``mesh_file`` is relative to ``pybullet_data``;
    ``mesh_euler`` rotates a mesh so that its up axis is +z.
    """

    name: str
    shape: str
    proportions: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    mesh_file: Optional[str] = None
    mesh_euler: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    synonyms: Tuple[str, ...] = ()
    textured: bool = False


CATALOG: Tuple[ObjectKind, ...] = (
    ObjectKind('cube', 'box', (1.0, 1.0, 1.0), synonyms=('block',)),
    ObjectKind('sphere', 'sphere', (1.0, 1.0, 1.0), synonyms=('ball',)),
    ObjectKind('cylinder', 'cylinder', (0.8, 0.8, 1.0), synonyms=('can',)),
    ObjectKind('cone', 'cone', (0.8, 0.8, 1.0)),
    ObjectKind('capsule', 'capsule', (0.5, 0.5, 1.0), synonyms=('pill',)),
    ObjectKind('duck', 'mesh', mesh_file='duck.obj', mesh_euler=(np.pi / 2, 0.0, 0.0),
               synonyms=('rubber duck',), textured=True),
    ObjectKind('teddy', 'mesh', mesh_file='teddy2_VHACD_CHs.obj',
               mesh_euler=(np.pi / 2, 0.0, 0.0), synonyms=('teddy bear',)),
    ObjectKind('bunny', 'mesh', mesh_file='bunny.obj', synonyms=('rabbit',)),
)
KINDS: Dict[str, ObjectKind] = {k.name: k for k in CATALOG}


def pybullet_data_path() -> str:
    """Directory of the ``pybullet_data`` package (meshes)."""
    import pybullet_data

    return pybullet_data.getDataPath()


@functools.cache
def mesh_bounds(mesh_file: str, euler: Tuple[float, float, float]) -> Tuple[np.ndarray,
                                                                              np.ndarray]:
    """Return (min, max) of a mesh's vertices after rotating it by *euler* (unit scale)."""
    path = os.path.join(pybullet_data_path(), mesh_file)
    with open(path, encoding='utf-8', errors='replace') as f:
        verts = np.array([[float(t) for t in line.split()[1:4]]
                          for line in f if line.startswith('v ')], dtype=np.float64)
    rot = _euler_matrix(euler)
    verts = verts @ rot.T
    return verts.min(axis=0), verts.max(axis=0)


def _euler_matrix(euler: Tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix of roll-pitch-yaw angles (pybullet's convention: R = Rz Ry Rx)."""
    r, p, y = euler
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def kind_extents(kind: ObjectKind, size: str) -> np.ndarray:
    """Return the (x, y, z) extents in metres of *kind* at *size*."""
    if size not in SIZE_EXTENT:
        raise ValueError(f'unknown size {size!r}; use one of {SIZES}')
    extent = SIZE_EXTENT[size]
    if kind.shape == 'mesh':
        lo, hi = mesh_bounds(kind.mesh_file, kind.mesh_euler)
        dims = hi - lo
        return dims * (extent / float(dims.max()))
    return np.asarray(kind.proportions, dtype=np.float64) * extent


def cone_mesh(radius: float, height: float, segments: int = 24):
    """Vertices, indices and normals of a cone centred on its mid-height, apex up (+z)."""
    angles = np.linspace(0.0, 2.0 * np.pi, segments, endpoint=False)
    verts, normals, indices = [], [], []
    apex = np.array([0.0, 0.0, height / 2.0])
    base_centre = np.array([0.0, 0.0, -height / 2.0])
    for a0, a1 in zip(angles, np.roll(angles, -1)):
        p0 = np.array([radius * np.cos(a0), radius * np.sin(a0), -height / 2.0])
        p1 = np.array([radius * np.cos(a1), radius * np.sin(a1), -height / 2.0])
        side = np.cross(p1 - p0, apex - p0)
        side /= np.linalg.norm(side)
        for tri, nrm in (((p0, p1, apex), side), ((p1, p0, base_centre), (0.0, 0.0, -1.0))):
            start = len(verts)
            verts.extend(v.tolist() for v in tri)
            normals.extend([list(nrm)] * 3)
            indices.extend([start, start + 1, start + 2])
    return verts, indices, normals
