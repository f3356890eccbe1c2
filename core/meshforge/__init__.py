"""meshforge: turn a multi-view capture (RGB + depth) into a validated, textured 3D mesh.

The public API is what ``__all__`` lists; everything else may move. A plugin needs one
import: ``from meshforge import hookimpl``.

    import meshforge
    capture = meshforge.load_capture("capture.zip")
    result = meshforge.reconstruct(capture, model="fusion")
    meshforge.write_mesh_files(result.mesh, "out/fusion")

Names are imported on first use, so that importing meshforge (as every plugin does at
discovery) does not pull in numba, SciPy or the rasteriser.
"""

from importlib import import_module as _import_module
from importlib import metadata as _metadata

from .hookspecs import hookimpl, hookspec

__version__ = _metadata.version("meshforge")

_LAZY = {
    "Limits": "archive",
    "VIEW_NAMES": "camera", "Camera": "camera", "orbit": "camera", "rig": "camera",
    "Capture": "capture", "CaptureManifest": "capture", "View": "capture", "inspect_capture": "capture",
    "load_capture": "capture",
    "Availability": "components", "ComponentSpec": "components", "Needs": "components", "Option": "components",
    "Previewer": "components", "QualityReport": "components", "QualityScorer": "components",
    "ReconstructionResult": "components", "Reconstructor": "components",
    "MeshforgeError": "errors",
    "write_mesh_files": "export",
    "PluginManager": "manager", "get_manager": "manager",
    "TexturedMesh": "mesh", "load_mesh": "mesh", "load_parts": "mesh",
    "reconstruct": "pipeline", "run": "pipeline", "run_model": "pipeline", "validate_request": "pipeline",
    "Progress": "progress",
    "Rendering": "render", "render": "render",
    "demo_parts": "synthetic", "render_capture": "synthetic",
}

__all__ = sorted([*_LAZY, "__version__", "hookimpl", "hookspec"])


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meshforge' has no attribute {name!r}")
    value = getattr(_import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
