"""A seeded PyBullet tabletop rendered on the CPU: RGB, metric depth, segmentation, truth.

``TabletopScene(seed)`` builds a table with 3-8 catalog objects (see
:mod:`reclip_ros.sim.catalog`) placed without overlap in front of a camera whose pose has
seeded randomness; ``render()`` returns a :class:`SimFrame` with the image, a registered
depth image in metres, the segmentation mask, the true pinhole intrinsics and the ground
truth of every visible object (2D box from the segmentation mask, 3D centre in the camera
optical frame: x right, y down, z forward). The same seed gives the same scene, bit for bit.

World frame: z up, the table top is the plane z = 0 centred on the origin; the camera
looks at the table from the -y side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from reclip_ros.core.geometry import CameraIntrinsics
from reclip_ros.core.types import Box
from reclip_ros.sim.catalog import (CATALOG, COLOURS, SIZES, ObjectKind, cone_mesh,
                                    kind_extents, mesh_bounds, pybullet_data_path)

__all__ = ['CATALOG', 'COLOURS', 'SIZES', 'SimObject', 'SimFrame', 'TabletopScene',
           'ObjectSpec', 'CameraPose']

NEAR_M = 0.05
FAR_M = 5.0
TABLE_HALF = 0.6
TABLE_RGB = (0.55, 0.42, 0.30)
MIN_OBJECTS, MAX_OBJECTS = 3, 8
MIN_VISIBLE_PIXELS = 30
# placement: gap between footprints (m), image margin (px), tolerated occlusion fraction
PLACEMENT_GAP_M = 0.015
IMAGE_MARGIN_FRAC = 0.02
MAX_OCCLUSION = 0.15


@dataclass(frozen=True)
class SimObject:
    """Ground truth of one visible object.

    ``name`` is the catalog kind (e.g. 'cube'), ``colour`` a key of ``COLOURS``, ``size``
    'small' or 'big'; ``box`` the 2D box in pixels of its visible segmentation pixels;
    ``center`` the 3D centre of its bounding box in metres in the camera optical frame
    (x right, y down, z forward); ``body_id`` its pybullet body (= segmentation value).
    """

    name: str
    colour: str
    size: str
    box: Box
    center: Tuple[float, float, float]
    body_id: int
    pixels: int = 0

    @property
    def description(self) -> str:
        """Return e.g. 'big red cube'."""
        return f'{self.size} {self.colour} {self.name}'

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (box as [x, y, width, height], centre in metres)."""
        return {'name': self.name, 'colour': self.colour, 'size': self.size,
                'box': self.box.to_list(), 'center': list(self.center),
                'body_id': self.body_id, 'pixels': self.pixels}


@dataclass(frozen=True)
class CameraPose:
    """Camera placement: eye and target in world coordinates, vertical field of view."""

    eye: Tuple[float, float, float]
    target: Tuple[float, float, float]
    fov_deg: float


@dataclass(frozen=True)
class ObjectSpec:
    """An object before rendering: kind, colour, size, centre (world) and yaw (rad)."""

    kind: ObjectKind
    colour: str
    size: str
    position: Tuple[float, float, float]
    yaw: float
    extents: Tuple[float, float, float]


@dataclass(frozen=True)
class SimFrame:
    """One rendered frame with its ground truth.

    ``rgb`` (H, W, 3) uint8; ``depth`` (H, W) float32 metres along the optical axis
    (registered to ``rgb``); ``segmentation`` (H, W) int32 body ids (-1 = nothing);
    ``intrinsics`` the true pinhole intrinsics; ``objects`` the visible objects;
    ``camera_to_world`` the 4x4 pose of the optical frame in the world frame.
    """

    rgb: np.ndarray
    depth: np.ndarray
    segmentation: np.ndarray
    intrinsics: CameraIntrinsics
    objects: List[SimObject]
    camera_to_world: np.ndarray = field(repr=False)
    seed: int = 0

    @property
    def boxes(self) -> List[Box]:
        """Ground-truth boxes of the visible objects (the paper's GT-proposal setting)."""
        return [o.box for o in self.objects]


def _rotz(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """4x4 world -> optical-frame transform (x right, y down, z forward)."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])  # rows: optical axes in world coordinates
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = -rot @ eye
    return out


class TabletopScene:
    """A reproducible tabletop scene in a DIRECT-mode pybullet client owned by this object.

    Args:
        seed: any integer; the same seed gives the same objects, camera and image.
        width, height: image size in pixels.
        n_objects: number of objects (default: seeded, 3-8); 1-8 accepted.

    Raises:
        ValueError: on a bad size or object count.
    """

    def __init__(self, seed: int, width: int = 640, height: int = 480,
                 n_objects: Optional[int] = None):
        if int(width) < 32 or int(height) < 32:
            raise ValueError(f'image size must be at least 32x32, got {width}x{height}')
        if n_objects is not None and not 1 <= int(n_objects) <= MAX_OBJECTS:
            raise ValueError(f'n_objects must be between 1 and {MAX_OBJECTS}, got {n_objects}')
        self.seed = int(seed)
        self.width, self.height = int(width), int(height)
        rng = np.random.default_rng([self.seed, 7919])
        self.camera = self._sample_camera(rng)
        self._world_to_cam = _look_at(np.asarray(self.camera.eye, float),
                                      np.asarray(self.camera.target, float))
        fy = (self.height / 2.0) / math.tan(math.radians(self.camera.fov_deg) / 2.0)
        self.intrinsics = CameraIntrinsics(fx=fy, fy=fy, cx=self.width / 2.0,
                                           cy=self.height / 2.0)
        count = int(n_objects) if n_objects is not None else int(
            rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
        self.light_direction = (float(rng.uniform(-1.0, 1.0)), float(rng.uniform(-1.5, -0.5)),
                                2.0)
        self.specs: List[ObjectSpec] = self._place_objects(rng, count)
        self._frame: Optional[SimFrame] = None
        self._client: Optional[int] = None
        self._body_specs: dict = {}
        self._build()

    # ------------------------------------------------------------------ sampling
    def _sample_camera(self, rng: np.random.Generator) -> CameraPose:
        azimuth = math.radians(rng.uniform(-20.0, 20.0))
        elevation = math.radians(rng.uniform(40.0, 60.0))
        distance = rng.uniform(0.42, 0.58)
        target = np.array([rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02), 0.0])
        horizontal = distance * math.cos(elevation)
        eye = target + np.array([horizontal * math.sin(azimuth),
                                 -horizontal * math.cos(azimuth),
                                 distance * math.sin(elevation)])
        fov = float(rng.uniform(45.0, 55.0))
        return CameraPose(tuple(float(v) for v in eye), tuple(float(v) for v in target), fov)

    def _project(self, points_world: np.ndarray) -> np.ndarray:
        """Project world points (N, 3) to pixels (N, 2) and depths (N,) -> (N, 3)."""
        homo = np.c_[points_world, np.ones(len(points_world))]
        cam = (self._world_to_cam @ homo.T).T[:, :3]
        k = self.intrinsics
        z = np.maximum(cam[:, 2], 1e-6)
        return np.c_[k.fx * cam[:, 0] / z + k.cx, k.fy * cam[:, 1] / z + k.cy, cam[:, 2]]

    def _projected_box(self, position: np.ndarray, extents: np.ndarray, yaw: float):
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        corners = position + (signs * extents / 2.0) @ _rotz(yaw).T
        proj = self._project(corners)
        return (proj[:, 0].min(), proj[:, 1].min(), proj[:, 0].max(), proj[:, 1].max(),
                float(self._project(position[None])[0, 2]))

    def _place_objects(self, rng: np.random.Generator, count: int) -> List[ObjectSpec]:
        # a few kinds and colours per scene, so that relations have distractors of one kind
        n_kinds = int(rng.integers(2, 5))
        kinds = [CATALOG[i] for i in rng.choice(len(CATALOG), size=n_kinds, replace=False)]
        colour_names = sorted(COLOURS)
        n_colours = int(rng.integers(2, 5))
        colours = [colour_names[i] for i in rng.choice(len(colour_names), size=n_colours,
                                                       replace=False)]
        azimuth = math.atan2(self.camera.eye[0] - self.camera.target[0],
                             -(self.camera.eye[1] - self.camera.target[1]))
        rot = _rotz(azimuth)
        margin_x = IMAGE_MARGIN_FRAC * self.width
        margin_y = IMAGE_MARGIN_FRAC * self.height
        specs: List[ObjectSpec] = []
        placed = []  # (xy, radius, projected box)
        attempts = 0
        while len(specs) < count and attempts < 60 * count:
            attempts += 1
            kind = kinds[int(rng.integers(len(kinds)))]
            colour = colours[int(rng.integers(len(colours)))]
            size = SIZES[int(rng.integers(len(SIZES)))]
            extents = kind_extents(kind, size)
            yaw = float(rng.uniform(-math.pi, math.pi))
            local = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.12), 0.0])
            xy = np.asarray(self.camera.target) + rot @ local
            position = np.array([xy[0], xy[1], extents[2] / 2.0])
            radius = 0.5 * math.hypot(extents[0], extents[1])
            if any(np.linalg.norm(position[:2] - q[:2]) < radius + r + PLACEMENT_GAP_M
                   for q, r, _ in placed):
                continue
            box = self._projected_box(position, extents, yaw)
            if (box[0] < margin_x or box[1] < margin_y or box[2] > self.width - margin_x
                    or box[3] > self.height - margin_y):
                continue
            if any(_occlusion(box, other) > MAX_OCCLUSION for _, _, other in placed):
                continue
            placed.append((position, radius, box))
            specs.append(ObjectSpec(kind, colour, size, tuple(float(v) for v in position), yaw,
                                    tuple(float(v) for v in extents)))
        return specs

    # ------------------------------------------------------------------ pybullet
    def _build(self) -> None:
        import pybullet as p

        self._p = p
        self._client = p.connect(p.DIRECT)
        cid = self._client
        table = p.createVisualShape(p.GEOM_BOX, halfExtents=[TABLE_HALF, TABLE_HALF, 0.01],
                                    rgbaColor=[*TABLE_RGB, 1.0], physicsClientId=cid)
        p.createMultiBody(0, -1, table, [0.0, 0.0, -0.01], physicsClientId=cid)
        floor = p.createVisualShape(p.GEOM_BOX, halfExtents=[4.0, 4.0, 0.01],
                                    rgbaColor=[0.45, 0.45, 0.48, 1.0], physicsClientId=cid)
        p.createMultiBody(0, -1, floor, [0.0, 0.0, -0.75], physicsClientId=cid)
        self._table_ids = set()
        for spec in self.specs:
            visual = self._visual_shape(spec)
            body = p.createMultiBody(0, -1, visual, list(spec.position),
                                     p.getQuaternionFromEuler([0.0, 0.0, spec.yaw]),
                                     physicsClientId=cid)
            self._body_specs[body] = spec

    def _visual_shape(self, spec: ObjectSpec) -> int:
        p, cid = self._p, self._client
        rgba = [*COLOURS[spec.colour], 1.0]
        ex, ey, ez = spec.extents
        shape = spec.kind.shape
        if shape == 'box':
            return p.createVisualShape(p.GEOM_BOX, halfExtents=[ex / 2, ey / 2, ez / 2],
                                       rgbaColor=rgba, physicsClientId=cid)
        if shape == 'sphere':
            return p.createVisualShape(p.GEOM_SPHERE, radius=ez / 2, rgbaColor=rgba,
                                       physicsClientId=cid)
        if shape == 'cylinder':
            return p.createVisualShape(p.GEOM_CYLINDER, radius=ex / 2, length=ez,
                                       rgbaColor=rgba, physicsClientId=cid)
        if shape == 'capsule':
            radius = ex / 2
            return p.createVisualShape(p.GEOM_CAPSULE, radius=radius, length=ez - 2 * radius,
                                       rgbaColor=rgba, physicsClientId=cid)
        if shape == 'cone':
            verts, indices, normals = cone_mesh(ex / 2, ez)
            return p.createVisualShape(p.GEOM_MESH, vertices=verts, indices=indices,
                                       normals=normals, rgbaColor=rgba, physicsClientId=cid)
        if shape == 'mesh':
            lo, hi = mesh_bounds(spec.kind.mesh_file, spec.kind.mesh_euler)
            scale = float(max(spec.extents)) / float((hi - lo).max())
            offset = -(lo + hi) / 2.0 * scale
            path = f'{pybullet_data_path()}/{spec.kind.mesh_file}'
            return p.createVisualShape(
                p.GEOM_MESH, fileName=path, meshScale=[scale] * 3, rgbaColor=rgba,
                visualFramePosition=offset.tolist(),
                visualFrameOrientation=p.getQuaternionFromEuler(list(spec.kind.mesh_euler)),
                physicsClientId=cid)
        raise ValueError(f'unknown shape {shape!r}')

    def render(self) -> SimFrame:
        """Render the scene (cached: the scene is static) and return the frame with truth."""
        if self._frame is not None:
            return self._frame
        if self._client is None:
            raise RuntimeError('scene is closed')
        p = self._p
        eye, target = self.camera.eye, self.camera.target
        view = p.computeViewMatrix(list(eye), list(target), [0.0, 0.0, 1.0])
        proj = p.computeProjectionMatrixFOV(self.camera.fov_deg, self.width / self.height,
                                            NEAR_M, FAR_M)
        _, _, rgba, zbuf, seg = p.getCameraImage(
            self.width, self.height, view, proj, renderer=p.ER_TINY_RENDERER,
            lightDirection=list(self.light_direction), shadow=1,
            physicsClientId=self._client)
        rgb = np.ascontiguousarray(
            np.reshape(np.asarray(rgba, np.uint8), (self.height, self.width, 4))[:, :, :3])
        zbuf = np.reshape(np.asarray(zbuf, np.float64), (self.height, self.width))
        depth = (FAR_M * NEAR_M / (FAR_M - (FAR_M - NEAR_M) * zbuf)).astype(np.float32)
        depth[zbuf >= 1.0] = np.nan  # no surface hit: no depth return, as on a real sensor
        seg = np.reshape(np.asarray(seg, np.int64), (self.height, self.width))
        seg = np.where(seg >= 0, seg & ((1 << 24) - 1), -1).astype(np.int32)
        objects = []
        for body, spec in self._body_specs.items():
            ys, xs = np.nonzero(seg == body)
            if len(xs) < MIN_VISIBLE_PIXELS:
                continue
            box = Box.from_xyxy(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            centre = self._world_to_cam @ np.array([*spec.position, 1.0])
            objects.append(SimObject(spec.kind.name, spec.colour, spec.size, box,
                                     tuple(float(v) for v in centre[:3]), int(body),
                                     int(len(xs))))
        for arr in (rgb, depth, seg):
            arr.setflags(write=False)
        self._frame = SimFrame(rgb, depth, seg, self.intrinsics, objects,
                               np.linalg.inv(self._world_to_cam), self.seed)
        return self._frame

    def close(self) -> None:
        """Disconnect the pybullet client (idempotent)."""
        if self._client is not None:
            try:
                self._p.disconnect(physicsClientId=self._client)
            finally:
                self._client = None

    def __enter__(self) -> TabletopScene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _occlusion(a: Sequence[float], b: Sequence[float]) -> float:
    """Fraction of the farther of two projected boxes (x1, y1, x2, y2, depth) covered."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    far = a if a[4] > b[4] else b
    area = max((far[2] - far[0]) * (far[3] - far[1]), 1e-9)
    return ix * iy / area


def kind_names() -> List[str]:
    """Names of the catalog kinds."""
    return [k.name for k in CATALOG]

