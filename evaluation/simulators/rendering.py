"""Headless MuJoCo rendering: GL back-end selection, fast settings, RGB and depth in one pass.

``select_gl_backend()`` must run before ``mujoco`` is first imported (MuJoCo and PyOpenGL read
``MUJOCO_GL`` / ``PYOPENGL_PLATFORM`` at import time). It keeps an explicit ``MUJOCO_GL``; otherwise it
picks EGL when ``libEGL`` loads, OSMesa when ``libOSMesa`` loads, and raises ``GLBackendError`` naming
the Debian packages to install when neither does.

``FastRenderer`` owns one ``MjrContext`` per MuJoCo model, with the settings that make software
rendering about 10x faster than the defaults: no shadows, reflections, skybox or MSAA.
Each camera is one ``mjr_render`` + one ``mjr_readPixels`` returning RGB and depth together.

Camera conventions (``evaluation.simulators.sim``): intrinsics ``K`` with ``f = (H/2) / tan(fovy/2)``; extrinsics
camera-to-world 4x4 in OpenCV axes: ``R = cam_xmat @ diag(1, -1, -1)``, ``t = cam_xpos``; depth planar.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import os
import weakref
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field, model_serializer, model_validator

from evaluation.simulators.sim import CameraFrame
from policies.config import FrozenModel

GL_BACKENDS = ("egl", "osmesa")
_GL_PACKAGES = {
    "egl": "libegl1 libegl-mesa0 libgl1-mesa-dri",
    "osmesa": "libosmesa6",
}
_GL_LIBRARIES = {"egl": ("EGL",), "osmesa": ("OSMesa",)}


class GLBackendError(RuntimeError):
    """No headless OpenGL back-end (EGL or OSMesa) could be loaded or started."""


def _library_loads(name: str) -> bool:
    path = ctypes.util.find_library(name)
    if path is None:
        return False
    try:
        ctypes.CDLL(path)
    except OSError:
        return False
    return True


def select_gl_backend(
    environ: MutableMapping[str, str] | None = None,
    library_loads: Callable[[str], bool] = _library_loads,
) -> str:
    """Choose the headless GL back-end and export it in ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``).

    An explicit ``MUJOCO_GL`` of ``egl`` or ``osmesa`` is kept (its library must load). Otherwise EGL is
    preferred and OSMesa is the fallback. Raises ``GLBackendError`` naming the missing libraries.
    """
    env = os.environ if environ is None else environ
    requested = env.get("MUJOCO_GL", "").strip().lower()
    if requested and requested not in GL_BACKENDS:
        raise GLBackendError(
            f"MUJOCO_GL={requested!r} cannot render headless here; use MUJOCO_GL=egl "
            f"(apt-get install {_GL_PACKAGES['egl']}) or MUJOCO_GL=osmesa (apt-get install {_GL_PACKAGES['osmesa']})"
        )
    candidates = (requested,) if requested else GL_BACKENDS
    for backend in candidates:
        if all(library_loads(lib) for lib in _GL_LIBRARIES[backend]):
            env["MUJOCO_GL"] = backend
            env.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    tried = ", ".join(
        f"{b} (lib{_GL_LIBRARIES[b][0]}; apt-get install {_GL_PACKAGES[b]})" for b in candidates
    )
    raise GLBackendError(
        f"no headless OpenGL library could be loaded; tried {tried}. Install one of them "
        f"(or set MUJOCO_GL to a back-end whose library is present)."
    )


def make_gl_context(width: int, height: int) -> Any:
    """Create and make current a headless GL context (selects the back-end first)."""
    backend = select_gl_backend()
    try:
        import mujoco

        context = mujoco.GLContext(width, height)
        context.make_current()
    except Exception as err:  # noqa: BLE001 - re-raised typed, with the fix
        other = "osmesa" if backend == "egl" else "egl"
        raise GLBackendError(
            f"could not create a {backend} GL context ({type(err).__name__}: {err}); "
            f"install {_GL_PACKAGES[backend]} or run with MUJOCO_GL={other} ({_GL_PACKAGES[other]})"
        ) from err
    # Free the context before mujoco's own exit hook terminates the EGL display (hooks run last-in first-out);
    # otherwise the context's __del__ runs after it and prints an EGL_NOT_INITIALIZED traceback at exit.
    atexit.register(_free_at_exit, weakref.ref(context))
    return context


def _free_at_exit(ref: weakref.ReferenceType) -> None:
    context = ref()
    if context is not None:
        with contextlib.suppress(Exception):
            context.free()


def release_freed_memory() -> None:
    """Give the heap freed so far back to the OS (glibc ``malloc_trim``; a no-op on other C libraries).

    glibc keeps freed chunks in its arenas: freeing 5 Meta-World render contexts lowered RSS from 1073 to
    721 MB, ``malloc_trim`` then to 545 MB. Called after evicting tasks, so an actor's RSS follows what it keeps.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's own symbols: glibc's when it is the C library
    except (OSError, AttributeError):
        return None


class CameraSpec(FrozenModel):
    """A fixed camera looking from ``eye`` at ``target`` (world frame, metres), vertical FOV in degrees."""

    name: str
    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    fovy: float = Field(45.0, gt=1.0, lt=170.0)

    @model_validator(mode="after")
    def _check(self) -> CameraSpec:
        if np.linalg.norm(np.subtract(self.target, self.eye)) < 1e-6:
            raise ValueError(f"camera {self.name!r}: eye and target coincide")
        return self


# RLBench-like rig around the Sawyer's table (robot base near y = 0, table top z = 0, centre y = 0.6):
# two shoulders behind the robot, a front camera facing it, and an overhead view.
DEFAULT_CAMERAS: tuple[CameraSpec, ...] = (
    CameraSpec(name="left_shoulder", eye=(-0.65, 0.05, 0.85), target=(0.0, 0.65, 0.05), fovy=50.0),
    CameraSpec(name="right_shoulder", eye=(0.65, 0.05, 0.85), target=(0.0, 0.65, 0.05), fovy=50.0),
    CameraSpec(name="front", eye=(0.0, 1.55, 0.75), target=(0.0, 0.6, 0.1), fovy=50.0),
    CameraSpec(name="overhead", eye=(0.0, 0.6, 1.4), target=(0.0, 0.62, 0.0), fovy=45.0),
)


class RenderConfig(FrozenModel):
    """Image size and camera rig. Small images by default: the point cloud is voxelized at 1 cm anyway."""

    width: int = Field(128, ge=16, le=2048)
    height: int = Field(128, ge=16, le=2048)
    cameras: tuple[CameraSpec, ...] = DEFAULT_CAMERAS
    # The cameras do not see the robot's links above its gripper (``PointCloudConfig.hide_arm``; the simulator
    # names the geoms). Dumped only when on, so that settings recorded before the option stay equal.
    hide_arm: bool = False

    @model_serializer(mode="wrap")
    def _dump(self, handler: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        data = handler(self)
        if not self.hide_arm:
            data.pop("hide_arm", None)
        return data

    @model_validator(mode="after")
    def _check(self) -> RenderConfig:
        names = [c.name for c in self.cameras]
        if not names:
            raise ValueError("RenderConfig.cameras must name at least one camera")
        if len(set(names)) != len(names):
            raise ValueError(f"RenderConfig.cameras has duplicate names: {names}")
        return self


def look_at_quat(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """MuJoCo camera quaternion (w, x, y, z): the camera looks along its -z axis, +y up, world z up."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    up_hint = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.99 else np.array([0.0, 1.0, 0.0])
    x_axis = np.cross(forward, up_hint)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(x_axis, forward)
    rot = np.stack([x_axis, y_axis, -forward], axis=1)  # (3, 3) columns = camera axes in world
    import mujoco

    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rot.reshape(-1))
    return quat


def intrinsics_matrix(width: int, height: int, fovy_deg: float) -> np.ndarray:
    """Pinhole K (3, 3) of a MuJoCo camera: square pixels, principal point at the image centre."""
    f = (height / 2.0) / np.tan(np.deg2rad(fovy_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


_OPENCV_FROM_GL = np.diag([1.0, -1.0, -1.0])


# The geom group hidden geoms are moved to: MuJoCo's default ``MjvOption.geomgroup`` draws groups 0-2 only, and
# Meta-World's models use 0, 1 and 4. A geom's group matters to visualisation alone (not to contacts).
HIDDEN_GEOM_GROUP = 5


class FastRenderer:
    """Renders a fixed camera rig of one MuJoCo model with the fast settings (one GL context per process).

    The rig is written into the model's world-fixed camera slots (``cam_pos / cam_quat / cam_fovy``).
    ``hidden_geoms``: geom ids the cameras do not see (moved to ``HIDDEN_GEOM_GROUP``, which is not drawn).
    """

    def __init__(
        self, model: Any, cfg: RenderConfig, gl_context: Any | None = None, hidden_geoms: Sequence[int] = ()
    ) -> None:
        import mujoco

        self._mj = mujoco
        self.model, self.cfg = model, cfg
        model.geom_group[list(hidden_geoms)] = HIDDEN_GEOM_GROUP
        self._owns_context = gl_context is None
        self.gl = gl_context if gl_context is not None else make_gl_context(cfg.width, cfg.height)
        self.cam_ids = self._install_cameras()
        model.vis.quality.offsamples = 0  # no MSAA: must be set before the MjrContext is made
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), cfg.width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), cfg.height)
        self.gl.make_current()
        self.context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.context)
        self.scene = mujoco.MjvScene(model, maxgeom=2000)
        for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX", "mjRND_FOG", "mjRND_HAZE"):
            self.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
        self.option = mujoco.MjvOption()
        self.option.geomgroup[HIDDEN_GEOM_GROUP] = 0
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self.viewport = mujoco.MjrRect(0, 0, cfg.width, cfg.height)
        self._rgb = np.empty((cfg.height, cfg.width, 3), np.uint8)
        self._zbuf = np.empty((cfg.height, cfg.width), np.float32)
        extent = float(model.stat.extent)
        self.near = float(model.vis.map.znear) * extent
        self.far = float(model.vis.map.zfar) * extent
        self.intrinsics = {c.name: intrinsics_matrix(cfg.width, cfg.height, c.fovy) for c in cfg.cameras}

    def _install_cameras(self) -> list[int]:
        mj = self._mj
        slots = [i for i in range(self.model.ncam) if self.model.cam_bodyid[i] == 0]
        if len(slots) < len(self.cfg.cameras):
            raise ValueError(
                f"the model has {len(slots)} world-fixed camera slots; RenderConfig asks for "
                f"{len(self.cfg.cameras)} cameras: use at most {len(slots)}"
            )
        for slot, spec in zip(slots, self.cfg.cameras, strict=False):
            self.model.cam_pos[slot] = spec.eye
            self.model.cam_quat[slot] = look_at_quat(np.array(spec.eye), np.array(spec.target))
            self.model.cam_fovy[slot] = spec.fovy
            self.model.cam_mode[slot] = mj.mjtCamLight.mjCAMLIGHT_FIXED
        return slots[: len(self.cfg.cameras)]

    def extrinsics(self, data: Any, cam_id: int) -> np.ndarray:
        """Camera-to-world (4, 4), OpenCV axes, from the current ``data`` (after ``mj_forward``)."""
        pose = np.eye(4)
        pose[:3, :3] = data.cam_xmat[cam_id].reshape(3, 3) @ _OPENCV_FROM_GL
        pose[:3, 3] = data.cam_xpos[cam_id]
        return pose

    def render(self, data: Any) -> list[CameraFrame]:
        """All cameras of the rig for the current state of ``data`` (call ``mj_forward`` first)."""
        mj = self._mj
        self.gl.make_current()
        # several renderers (one per task model) share the GL context: bind this one's framebuffer
        mj.mjr_setBuffer(mj.mjtFramebuffer.mjFB_OFFSCREEN, self.context)
        mj.mj_camlight(self.model, data)  # camera poses follow the installed rig (derived data only)
        frames = []
        for spec, cam_id in zip(self.cfg.cameras, self.cam_ids, strict=True):
            self.camera.fixedcamid = cam_id
            mj.mjv_updateScene(
                self.model, data, self.option, None, self.camera, mj.mjtCatBit.mjCAT_ALL, self.scene
            )
            mj.mjr_render(self.viewport, self.scene, self.context)
            mj.mjr_readPixels(self._rgb, self._zbuf, self.viewport, self.context)
            rgb = np.flipud(self._rgb).copy()  # rows come bottom-up: (H, W, 3)
            zbuf = np.flipud(self._zbuf)
            depth = (self.near / (1.0 - zbuf * (1.0 - self.near / self.far))).astype(np.float32)  # (H, W)
            frames.append(
                CameraFrame(
                    name=spec.name,
                    rgb=rgb,
                    depth=depth,
                    intrinsics=self.intrinsics[spec.name].copy(),
                    extrinsics=self.extrinsics(data, cam_id),
                )
            )
        return frames

    def close(self) -> None:
        """Free the MjrContext (its textures, meshes and framebuffers: 100-130 MB of a Meta-World task under
        llvmpipe). The GL context is made current first: MuJoCo frees GL objects of the current context."""
        if self.context is not None:
            if self.gl is not None:
                self.gl.make_current()
            self.context.free()
            self.context = None
        if self._owns_context and self.gl is not None:
            self.gl.free()
            self.gl = None
