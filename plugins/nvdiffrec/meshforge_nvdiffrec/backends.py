"""Differentiable rasterisation: nvdiffrast on CUDA, and a pure-PyTorch stand-in for tests.

Both expose the same four ops, shaped like nvdiffrast's:

- ``rasterize(pos_clip (B, V, 4), faces (F, 3) int32, (H, W))`` -> ``rast`` (B, H, W, 4): barycentric
  weights of vertices 0 and 1 (vertex 2 gets 1 − b0 − b1), z/w, and face id + 1 (0: empty).
  Row 0 is the image top (meshforge's convention; the projection matrix flips y for it).
- ``interpolate(attr (V, C) or (B, V, C), rast, faces)`` -> (B, H, W, C)
- ``texture(tex (B, Ht, Wt, C), uv (B, H, W, 2))`` -> bilinear lookup, uv (0, 0) = the first row of
  ``tex`` in memory (callers flip meshforge's v-up UVs).
- ``antialias(color, rast, pos_clip, faces)`` -> colour with silhouette edges blended, which is what
  gives silhouettes gradients with respect to vertex positions.

:class:`TorchBackend` finds the visible face of each pixel with meshforge's own CPU
rasteriser (no gradient needed for that) and then computes barycentrics from the clip
positions with PyTorch, so interior pixels get the same gradients as with nvdiffrast;
``antialias`` is the identity (no silhouette gradients). It exists so that CI runs the
whole plugin on a CPU at small sizes; it is not the product path.
"""

from __future__ import annotations

import numpy as np
import torch


def projection(camera, near: float, far: float) -> np.ndarray:
    """(4, 4) world -> clip matrix of a meshforge camera, OpenGL depth range, image row 0 at NDC y = −1
    (nvdiffrast's first output row), pixel centres at half-integers."""
    w, h = camera.width, camera.height
    p = np.zeros((4, 4))
    p[0, 0] = 2 * camera.fx / w
    p[0, 2] = 1 - 2 * camera.cx / w
    p[1, 1] = -2 * camera.fy / h
    p[1, 2] = 1 - 2 * camera.cy / h
    p[2, 2] = -(far + near) / (far - near)
    p[2, 3] = -2 * far * near / (far - near)
    p[3, 2] = -1.0
    return p @ camera.world_to_camera


def load_nvdiffrast():
    """Import nvdiffrast and make sure its CUDA plugin is built (just in time, ~35 s the first time).

    After a fresh build, torch's extension directory is sometimes not on ``sys.path`` when
    nvdiffrast imports the plugin; it is added and the import retried.
    """
    import sys

    import nvdiffrast.torch as dr
    from nvdiffrast.torch import ops

    try:
        ops._get_plugin(gl=False)
    except ModuleNotFoundError:
        from pathlib import Path

        import torch.utils.cpp_extension as ext

        root = Path(ext._get_build_directory("probe", False)).parent
        for folder in root.glob("nvdiffrast_plugin*"):
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
        ops._get_plugin(gl=False)
    return dr


class NvdiffrastBackend:
    """nvdiffrast's CUDA rasteriser (PyPI ``diffrp-nvdiffrast``, compiled on first use)."""

    name = "nvdiffrast"

    def __init__(self, device: torch.device):
        self.dr = load_nvdiffrast()
        self.ctx = self.dr.RasterizeCudaContext(device=device)

    def rasterize(self, pos_clip, faces, resolution):
        rast, _ = self.dr.rasterize(self.ctx, pos_clip.contiguous(), faces.contiguous(), resolution=list(resolution))
        return rast

    def interpolate(self, attr, rast, faces):
        out, _ = self.dr.interpolate(attr.contiguous(), rast, faces.contiguous())
        return out

    def texture(self, tex, uv):
        return self.dr.texture(tex.contiguous(), uv.contiguous(), filter_mode="linear", boundary_mode="clamp")

    def antialias(self, color, rast, pos_clip, faces):
        return self.dr.antialias(color.contiguous(), rast, pos_clip.contiguous(), faces.contiguous())


class TorchBackend:
    """Pure PyTorch (plus meshforge's numba rasteriser for visibility); see the module docstring."""

    name = "torch"

    def __init__(self, device: torch.device):
        self.device = device

    def rasterize(self, pos_clip, faces, resolution):
        from meshforge.raster import _rasterize_screen

        h, w = resolution
        b = pos_clip.shape[0]
        out = torch.zeros((b, h, w, 4), dtype=pos_clip.dtype, device=pos_clip.device)
        f64 = faces.long()
        for i in range(b):
            clip = pos_clip[i]
            with torch.no_grad():
                ndc = (clip[:, :3] / clip[:, 3:4]).cpu().numpy().astype(np.float64)
                wz = clip[:, 3].cpu().numpy().astype(np.float64)
                u = (ndc[:, 0] + 1) * 0.5 * w
                v = (ndc[:, 1] + 1) * 0.5 * h
                frags = _rasterize_screen(u, v, wz, f64.cpu().numpy(), w, h, False, 64)
                fid = torch.from_numpy(frags.face.astype(np.int64)).to(clip.device)
            covered = fid >= 0
            rows, cols = torch.nonzero(covered, as_tuple=True)
            tri = f64[fid[covered]]  # (P, 3)
            # pixel centre in NDC, and the face's vertices in clip space: barycentrics with gradients
            px = (cols.to(clip.dtype) + 0.5) / w * 2 - 1
            py = (rows.to(clip.dtype) + 0.5) / h * 2 - 1
            c = clip[tri]  # (P, 3, 4)
            ndc_xy = c[..., :2] / c[..., 3:4]
            a, bb, cc = ndc_xy[:, 0], ndc_xy[:, 1], ndc_xy[:, 2]
            area = (bb[:, 0] - a[:, 0]) * (cc[:, 1] - a[:, 1]) - (cc[:, 0] - a[:, 0]) * (bb[:, 1] - a[:, 1])
            area = torch.where(area.abs() < 1e-12, torch.full_like(area, 1e-12), area)
            l0 = ((bb[:, 0] - px) * (cc[:, 1] - py) - (cc[:, 0] - px) * (bb[:, 1] - py)) / area
            l1 = ((cc[:, 0] - px) * (a[:, 1] - py) - (a[:, 0] - px) * (cc[:, 1] - py)) / area
            l2 = 1 - l0 - l1
            iw = 1.0 / c[..., 3]  # perspective correction: screen weights are linear in 1/w
            denom = l0 * iw[:, 0] + l1 * iw[:, 1] + l2 * iw[:, 2]
            b0 = l0 * iw[:, 0] / denom
            b1 = l1 * iw[:, 1] / denom
            zw = l0 * c[:, 0, 2] * iw[:, 0] + l1 * c[:, 1, 2] * iw[:, 1] + l2 * c[:, 2, 2] * iw[:, 2]  # affine on screen
            values = torch.stack([b0, b1, zw, (fid[covered] + 1).to(clip.dtype)], dim=1)
            out[i] = out[i].index_put((rows, cols), values)
        return out

    def interpolate(self, attr, rast, faces):
        b, h, w, _ = rast.shape
        fid = rast[..., 3].long() - 1
        covered = fid >= 0
        attr = attr if attr.dim() == 3 else attr.unsqueeze(0).expand(b, -1, -1)
        out = torch.zeros((b, h, w, attr.shape[-1]), dtype=attr.dtype, device=attr.device)
        for i in range(b):
            m = covered[i]
            tri = faces.long()[fid[i][m]]
            w0 = rast[i][m][:, 0:1]
            w1 = rast[i][m][:, 1:2]
            vals = attr[i][tri[:, 0]] * w0 + attr[i][tri[:, 1]] * w1 + attr[i][tri[:, 2]] * (1 - w0 - w1)
            out[i] = out[i].index_put(torch.nonzero(m, as_tuple=True), vals)
        return out

    def texture(self, tex, uv):
        grid = uv * 2 - 1  # grid_sample: (-1, -1) is the first texel's outer corner, like uv (0, 0)
        img = tex.permute(0, 3, 1, 2)
        out = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.permute(0, 2, 3, 1)

    def antialias(self, color, rast, pos_clip, faces):
        return color


def make_backend(name: str, device: torch.device):
    """``"auto"``: nvdiffrast on CUDA, PyTorch otherwise; or ``"nvdiffrast"`` / ``"torch"`` explicitly."""
    if name == "auto":
        name = "nvdiffrast" if device.type == "cuda" else "torch"
    if name == "nvdiffrast":
        return NvdiffrastBackend(device)
    if name == "torch":
        return TorchBackend(device)
    raise ValueError(f"unknown backend {name!r}")
