"""Mitsuba 3 rendering of a scene specification into RGB, metric depth, normals, segmentation, instances.

Two passes per scene (docs/design.md §4): a path-traced RGB image (optionally supersampled, then
area-downsampled) and a geometry pass with the ``aov`` integrator at one sample in the pixel centre
and a box filter, so that depth, normals and shape indices are exact per pixel (never blended
across an object boundary). Mitsuba's ``cylinder`` has no caps: it is closed with two ``disk`` shapes.
Cones and tori are triangle meshes built here.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RenderResult", "render_scene", "init_mitsuba"]

_MI = None


def init_mitsuba(threads: int = 1):
    """Import Mitsuba once per process with the CPU ``scalar_rgb`` variant (the LLVM one fails here)."""
    global _MI
    if _MI is None:
        import drjit as dr
        import mitsuba as mi

        mi.set_variant("scalar_rgb")
        mi.set_log_level(mi.LogLevel.Warn)
        dr.set_thread_count(max(1, threads))
        _MI = mi
    return _MI


class RenderResult(dict):
    """rgb (H,W,3) uint8, depth (H,W) float32 metres (0 = no hit), normal (H,W,3) float32 camera-space unit
    vectors (0 = no hit), seg (H,W) uint8 class ids, instance (H,W) uint8 (0 background, 1 floor, 2+ objects)."""


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _mesh(mi, name: str, v_N3: np.ndarray, f_F3: np.ndarray, uv_N2: np.ndarray, bsdf):
    mesh = mi.Mesh(name, vertex_count=len(v_N3), face_count=len(f_F3), has_vertex_texcoords=True)
    params = mi.traverse(mesh)
    params["vertex_positions"] = v_N3.astype(np.float32).ravel()
    params["faces"] = f_F3.astype(np.uint32).ravel()
    params["vertex_texcoords"] = uv_N2.astype(np.float32).ravel()
    params.update()
    mesh.set_bsdf(bsdf)
    return mesh


def _cone(n: int = 24):
    """Unit cone: base radius 1 at y=0, apex at y=1, with a base cap."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.stack([np.cos(a), np.zeros(n), np.sin(a)], 1)
    v = np.concatenate([ring, [[0, 1, 0], [0, 0, 0]]])
    uv = np.concatenate([np.stack([a / (2 * np.pi), np.zeros(n)], 1), [[0.5, 1.0], [0.5, 0.0]]])
    side = [[i, n, (i + 1) % n] for i in range(n)]
    cap = [[(i + 1) % n, n + 1, i] for i in range(n)]
    return v, np.array(side + cap), uv


def _torus(major: float, minor: float, n: int = 32, m: int = 12):
    """Torus lying flat around the y axis, resting on y=0."""
    u, w = np.meshgrid(np.linspace(0, 2 * np.pi, n, endpoint=False), np.linspace(0, 2 * np.pi, m, endpoint=False))
    u, w = u.ravel(), w.ravel()  # (n*m,)
    r = major + minor * np.cos(w)
    v = np.stack([r * np.cos(u), minor + minor * np.sin(w), r * np.sin(u)], 1)
    uv = np.stack([u / (2 * np.pi), w / (2 * np.pi)], 1)
    faces = []
    for j in range(m):
        for i in range(n):
            a, b = j * n + i, j * n + (i + 1) % n
            c, d = ((j + 1) % m) * n + i, ((j + 1) % m) * n + (i + 1) % n
            faces += [[a, c, b], [b, c, d]]
    return v, np.array(faces), uv


def _bsdf(mi, colour: list[float], material: str, roughness: float, texture: dict | None):
    T = mi.ScalarTransform4f
    base = {"type": "rgb", "value": colour}
    if texture is not None:
        base = {
            "type": "checkerboard",
            "color0": base,
            "color1": {"type": "rgb", "value": texture["color1"]},
            "to_uv": T().scale([texture["scale"], texture["scale"], 1]),
        }
    if material == "diffuse":
        return {"type": "diffuse", "reflectance": base}
    if material == "plastic":
        return {"type": "roughplastic", "diffuse_reflectance": base, "alpha": roughness}
    return {"type": "roughconductor", "specular_reflectance": base, "alpha": roughness}


def _shapes(mi, spec: dict) -> dict:
    """Mitsuba shape dicts keyed ``floor`` or ``objNN_part``; the key prefix gives the instance."""
    T = mi.ScalarTransform4f
    floor = spec["floor"]
    shapes = {
        "floor": {
            "type": "rectangle",
            "to_world": T().rotate([1, 0, 0], -90).scale(12),
            "bsdf": _bsdf(mi, floor["color"], "diffuse", 0.0, floor["texture"]),
        }
    }
    for i, o in enumerate(spec["objects"]):
        key = f"obj{i:02d}"
        bsdf = mi.load_dict(_bsdf(mi, o["color"], o["material"], o["roughness"], o["texture"]))
        x, z = o["position"]
        r = o["size"]
        kind = o["kind"]
        if kind == "sphere":
            shapes[f"{key}_body"] = {"type": "sphere", "center": [x, r, z], "radius": r, "bsdf": bsdf}
        elif kind == "cube":
            a = r / math.sqrt(2)  # half-extent so that the footprint's circumradius is r
            shapes[f"{key}_body"] = {
                "type": "cube",
                "to_world": T().translate([x, a, z]).rotate([0, 1, 0], o["rotation_deg"]).scale(a),
                "bsdf": bsdf,
            }
        elif kind == "cylinder":
            rad, h = 0.8 * r, 1.6 * r
            shapes[f"{key}_body"] = {"type": "cylinder", "p0": [x, 0, z], "p1": [x, h, z], "radius": rad, "bsdf": bsdf}
            for cap, (y, ang) in enumerate(((h, -90), (0.0, 90))):  # the disk's normal is +z; turn it to ±y
                shapes[f"{key}_cap{cap}"] = {
                    "type": "disk",
                    "to_world": T().translate([x, y, z]).rotate([1, 0, 0], ang).scale(rad),
                    "bsdf": bsdf,
                }
        elif kind in ("cone", "torus"):
            v, f, uv = _cone() if kind == "cone" else _torus(0.68 * r, 0.32 * r)
            if kind == "cone":
                v = v * np.array([0.9 * r, 2.0 * r, 0.9 * r])
            v = v @ _rot_y(o["rotation_deg"]).T + np.array([x, 0.0, z])
            shapes[f"{key}_body"] = _mesh(mi, f"{key}_body", v, f, uv, bsdf)
        else:
            raise ValueError(f"scene object {i}: unknown shape kind {kind!r}")
    return shapes


def _sensor(mi, camera: dict, res: int, spp: int, geometry: bool) -> dict:
    T = mi.ScalarTransform4f
    sampler = {"type": "stratified", "sample_count": 1, "jitter": False} if geometry else {
        "type": "independent", "sample_count": spp}
    return {
        "type": "perspective",
        "fov": camera["fov_deg"],
        "to_world": T().look_at(origin=camera["origin"], target=camera["target"], up=[0, 1, 0]),
        "film": {"type": "hdrfilm", "width": res, "height": res,
                 "rfilter": {"type": "box" if geometry else "gaussian"}},
        "sampler": sampler,
    }


def _to_srgb_u8(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0.0, 1.0)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
    return np.round(srgb * 255.0).astype(np.uint8)


def _camera_basis(camera: dict) -> np.ndarray:
    """Rows: image-right, image-up, towards-the-viewer (OpenGL camera convention)."""
    o, t = np.asarray(camera["origin"]), np.asarray(camera["target"])
    fwd = (t - o) / np.linalg.norm(t - o)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    return np.stack([right, up, -fwd])


def _block_size(film: int) -> int:
    """The image-block size of the path tracer, fixed: Mitsuba seeds its sampler per block and by default sizes
    the blocks by Dr.Jit's thread count, so the RGB noise changed with the thread count (measured: 80 % of the
    smoke pixels). This is the size Mitsuba picks for one thread (≥ 2 blocks, a power of two ≤ 32), so datasets
    rendered before keep their bytes."""
    block = 32
    while block > 1 and math.ceil(film / block) ** 2 < 2:
        block //= 2
    return block


def render_scene(spec: dict, shape_kinds: list[str], size: int, spp: int, supersample: int, seed: int) -> RenderResult:
    """Render one scene; deterministic in (spec, size, spp, supersample, seed)."""
    mi = init_mitsuba()
    shapes = _shapes(mi, spec)
    light = spec["light"]
    lights = {
        "light": {"type": "point", "position": light["position"],
                  "intensity": {"type": "rgb", "value": light["intensity"]}},
        "ambient": {"type": "constant", "radiance": {"type": "rgb", "value": spec["ambient"]}},
    }
    # 1. path-traced RGB
    film = size * supersample
    scene = mi.load_dict({"type": "scene", "integrator": {"type": "path", "max_depth": 5,
                                                          "block_size": _block_size(film)},
                          "sensor": _sensor(mi, spec["camera"], film, spp, False), **shapes, **lights})
    lin = np.asarray(mi.render(scene, seed=seed), dtype=np.float64)  # (H*ss, W*ss, 3)
    if supersample > 1:
        lin = lin.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    rgb = _to_srgb_u8(lin)
    # 2. geometry: one sample in the pixel centre, box filter
    aovs = {"type": "aov", "aovs": "dd.y:depth,nn:sh_normal,si:shape_index"}
    scene = mi.load_dict({"type": "scene", "integrator": aovs, "sensor": _sensor(mi, spec["camera"], size, 1, True),
                          **shapes})
    aov = np.asarray(mi.render(scene, seed=seed), dtype=np.float32)  # (H, W, 5)
    depth = aov[..., 0]
    hit = depth > 0
    n_world = aov[..., 1:4]
    normal = (n_world @ _camera_basis(spec["camera"]).T.astype(np.float32)) * hit[..., None]
    # shape index -> instance / class through the shapes' ids (the dict keys above)
    ids = [s.id() for s in scene.shapes()]
    inst_of = np.array([1 if k == "floor" else int(k[3:5]) + 2 for k in ids], dtype=np.uint8)
    kinds = [o["kind"] for o in spec["objects"]]
    cls_of = np.array([1 if k == "floor" else 2 + shape_kinds.index(kinds[int(k[3:5])]) for k in ids], dtype=np.uint8)
    # Mitsuba's shape_index AOV is 1 + the position in scene.shapes(); 0 where the ray hits nothing
    sidx = np.clip(np.rint(aov[..., 4]).astype(np.int64) - 1, 0, len(ids) - 1)
    instance = np.where(hit, inst_of[sidx], 0).astype(np.uint8)
    seg = np.where(hit, cls_of[sidx], 0).astype(np.uint8)
    return RenderResult(rgb=rgb, depth=depth.astype(np.float32), normal=normal.astype(np.float32), seg=seg,
                        instance=instance)
