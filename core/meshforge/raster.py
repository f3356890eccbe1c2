"""A small CPU triangle rasteriser: three ops, modelled on nvdiffrast's.

- :func:`rasterize` draws triangle ids, perspective-correct barycentrics and planar depth
  for one camera (a G-buffer, no shading).
- :func:`interpolate` turns per-vertex attributes into per-pixel values through it.
- :func:`sample_texture` looks a texture up bilinearly at per-pixel UVs.

Everything that draws a mesh on the CPU goes through these: synthetic captures, texture
baking, quality scoring and previews. Pixel centres sit at half-integers (camera.py), so a
render and a capture of the same mesh agree pixel for pixel. No anti-aliasing: a pixel
shows the surface its centre ray hits, like a ray caster; callers that want smooth edges
render larger and downsample.

The kernels are compiled by numba on first use and cached on disk (``NUMBA_CACHE_DIR``
moves the cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .camera import Camera


@dataclass
class Fragments:
    """What :func:`rasterize` returns for an image of H × W pixels.

    Attributes:
        face: (H, W) int32, index of the visible face, −1 where no face covers the pixel centre.
        bary: (H, W, 3) float32, perspective-correct barycentric weights of the face's three
            vertices at the pixel centre (0 where ``face`` is −1).
        depth: (H, W) float32, planar z of the visible surface in world units, 0 for background.
    """

    face: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, True where a face covers the pixel centre."""
        return self.face >= 0


@numba.njit(cache=True, nogil=True)
def _raster_rows(u, v, z, faces, width, row0, row1, cull, face_buf, depth_buf, bary_buf):
    """Draw every face into the rows [row0, row1) of the buffers (z-buffer test on planar depth)."""
    n_faces = faces.shape[0]
    for f in range(n_faces):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        z0, z1, z2 = z[i0], z[i1], z[i2]
        if z0 <= 0.0 or z1 <= 0.0 or z2 <= 0.0:
            continue  # behind the near plane: our cameras look at objects well in front of them
        x0, y0, x1, y1, x2, y2 = u[i0], v[i0], u[i1], v[i1], u[i2], v[i2]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0.0:
            continue
        if cull and area > 0.0:
            continue  # v grows downwards, so front faces wind clockwise on screen: negative area
        ymin = max(row0, int(np.floor(min(y0, y1, y2) - 0.5)))
        ymax = min(row1 - 1, int(np.ceil(max(y0, y1, y2) - 0.5)))
        xmin = max(0, int(np.floor(min(x0, x1, x2) - 0.5)))
        xmax = min(width - 1, int(np.ceil(max(x0, x1, x2) - 0.5)))
        if ymin > ymax or xmin > xmax:
            continue
        inv_area = 1.0 / area
        iz0, iz1, iz2 = 1.0 / z0, 1.0 / z1, 1.0 / z2
        for py in range(ymin, ymax + 1):
            cy = py + 0.5
            for px in range(xmin, xmax + 1):
                cx = px + 0.5
                # screen-space barycentrics from edge functions, sign-normalised by the area
                w0 = ((x1 - cx) * (y2 - cy) - (x2 - cx) * (y1 - cy)) * inv_area
                w1 = ((x2 - cx) * (y0 - cy) - (x0 - cx) * (y2 - cy)) * inv_area
                w2 = 1.0 - w0 - w1
                if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                    continue
                inv_z = w0 * iz0 + w1 * iz1 + w2 * iz2
                depth = 1.0 / inv_z
                r = py - row0
                if face_buf[r, px] >= 0 and depth >= depth_buf[r, px]:
                    continue
                face_buf[r, px] = f
                depth_buf[r, px] = depth
                # perspective correction: weights are linear in 1/z on screen
                bary_buf[r, px, 0] = w0 * iz0 * depth
                bary_buf[r, px, 1] = w1 * iz1 * depth
                bary_buf[r, px, 2] = w2 * iz2 * depth


@numba.njit(cache=True, parallel=True)
def _raster_bands(u, v, z, faces, width, height, band_rows, face_ids_per_band, band_offsets, cull,
                  face_buf, depth_buf, bary_buf):
    n_bands = band_offsets.shape[0] - 1
    for b in numba.prange(n_bands):
        row0 = b * band_rows
        row1 = min(height, row0 + band_rows)
        ids = face_ids_per_band[band_offsets[b]:band_offsets[b + 1]]
        sub = faces[ids]
        fb = np.full((row1 - row0, width), -1, np.int32)
        _raster_rows(u, v, z, sub, width, row0, row1, cull, fb,
                     depth_buf[row0:row1], bary_buf[row0:row1])
        # map band-local face numbers back to global ids
        for r in range(row1 - row0):
            for c in range(width):
                if fb[r, c] >= 0:
                    face_buf[row0 + r, c] = ids[fb[r, c]]


def _rasterize_screen(u: np.ndarray, v: np.ndarray, z: np.ndarray, faces: np.ndarray, width: int, height: int,
                      cull_backfaces: bool, band_rows: int) -> Fragments:
    """Rasterise faces given each vertex's pixel position (u, v) and planar depth z."""
    u = np.ascontiguousarray(u, dtype=np.float64)
    v = np.ascontiguousarray(v, dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    h, w = height, width
    face_buf = np.full((h, w), -1, np.int32)
    depth_buf = np.zeros((h, w), np.float32)
    bary_buf = np.zeros((h, w, 3), np.float32)
    if len(faces) == 0:
        return Fragments(face_buf, bary_buf, depth_buf)
    # bin faces into horizontal bands by their row span, so bands draw independently
    with np.errstate(invalid="ignore"):
        fv = np.nan_to_num(v[faces], nan=0.0, posinf=h, neginf=0.0)
    lo = np.clip(np.floor(fv.min(1) - 0.5), 0, h - 1).astype(np.int64) // band_rows
    hi = np.clip(np.ceil(fv.max(1) - 0.5), 0, h - 1).astype(np.int64) // band_rows
    n_bands = (h + band_rows - 1) // band_rows
    span = hi - lo + 1
    face_rep = np.repeat(np.arange(len(faces)), span)
    band_rep = np.repeat(lo, span) + (np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span))
    order = np.argsort(band_rep, kind="stable")
    ids = face_rep[order]
    offsets = np.searchsorted(band_rep[order], np.arange(n_bands + 1))
    _raster_bands(u, v, z, faces, w, h, band_rows, ids, offsets, cull_backfaces, face_buf, depth_buf, bary_buf)
    return Fragments(face_buf, bary_buf, depth_buf)


def rasterize_uv(uv: np.ndarray, faces: np.ndarray, size: int) -> Fragments:
    """Rasterise a mesh's UV layout into a ``size`` × ``size`` texture grid.

    ``uv`` (N, 2) follows the texture convention (v up, so row 0 is v = 1). The result's
    ``face`` tells which face covers each texel centre (−1: none) and ``bary`` where on it.
    """
    uv = np.asarray(uv, dtype=np.float64)
    return _rasterize_screen(uv[:, 0] * size, (1.0 - uv[:, 1]) * size, np.ones(len(uv)), faces, size, size,
                             False, 64)


def rasterize(camera: Camera, vertices: np.ndarray, faces: np.ndarray, *, cull_backfaces: bool = False,
              band_rows: int = 64) -> Fragments:
    """Rasterise a triangle mesh into a G-buffer for ``camera``.

    Parameters:
        camera: the camera; the output has its ``height`` × ``width`` pixels.
        vertices: (N, 3) float, world frame.
        faces: (M, 3) int, counter-clockwise seen from outside when ``cull_backfaces``.
        cull_backfaces: drop faces that face away from the camera.
        band_rows: rows per parallel work item (the image is split into horizontal bands).

    Faces with a vertex at or behind the camera plane are skipped (no near-plane clipping).
    """
    uv, z = camera.project(vertices)
    return _rasterize_screen(uv[:, 0], uv[:, 1], z, faces, camera.width, camera.height, cull_backfaces, band_rows)


@numba.njit(cache=True, parallel=True)
def _shade(face, bary, faces, face_offset, uv, texture, colors, factor, out):
    """Colour of every pixel whose face belongs to one part: texture (bilinear, repeat) if given,
    else vertex colours, else the flat ``factor``; values in [0, 1]."""
    h, w = face.shape
    n_faces = faces.shape[0]
    th, tw = texture.shape[0], texture.shape[1]
    textured = th > 1 or tw > 1
    coloured = colors.shape[0] > 1
    for i in numba.prange(h):
        for j in range(w):
            f = face[i, j] - face_offset
            if f < 0 or f >= n_faces:
                continue
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
            w0, w1, w2 = bary[i, j, 0], bary[i, j, 1], bary[i, j, 2]
            for ch in range(3):
                out[i, j, ch] = factor[ch]
            if textured:
                u = w0 * uv[a, 0] + w1 * uv[b, 0] + w2 * uv[c, 0]
                v = w0 * uv[a, 1] + w1 * uv[b, 1] + w2 * uv[c, 1]
                u -= np.floor(u)
                v -= np.floor(v)
                x = u * tw - 0.5
                y = (1.0 - v) * th - 0.5
                x0 = int(np.floor(x))
                y0 = int(np.floor(y))
                fx = x - x0
                fy = y - y0
                xa, xb = x0 % tw, (x0 + 1) % tw
                ya, yb = y0 % th, (y0 + 1) % th
                for ch in range(3):
                    top = texture[ya, xa, ch] * (1 - fx) + texture[ya, xb, ch] * fx
                    bottom = texture[yb, xa, ch] * (1 - fx) + texture[yb, xb, ch] * fx
                    out[i, j, ch] *= (top * (1 - fy) + bottom * fy) / 255.0
            elif coloured:
                for ch in range(3):
                    out[i, j, ch] *= (w0 * colors[a, ch] + w1 * colors[b, ch] + w2 * colors[c, ch]) / 255.0


def shade(fragments: Fragments, faces: np.ndarray, face_offset: int, *, uv: np.ndarray | None = None,
          texture: np.ndarray | None = None, vertex_colors: np.ndarray | None = None, factor=(1.0, 1.0, 1.0),
          out: np.ndarray | None = None) -> np.ndarray:
    """Colour the pixels of one mesh part in place -> (H, W, 3) float32 in [0, 1].

    Pixels whose face index is in [face_offset, face_offset + len(faces)) get the part's
    texture looked up through ``uv`` (the :func:`sample_texture` convention), else its
    vertex colours, times ``factor``; other pixels are left as they are.
    """
    h, w = fragments.face.shape
    out = np.zeros((h, w, 3), np.float32) if out is None else out
    tex = np.zeros((1, 1, 3), np.uint8) if texture is None or uv is None else np.ascontiguousarray(texture)
    uvs = np.zeros((1, 2), np.float32) if uv is None else np.ascontiguousarray(uv, np.float32)
    cols = np.zeros((1, 3), np.uint8) if vertex_colors is None else np.ascontiguousarray(vertex_colors, np.uint8)
    _shade(fragments.face, fragments.bary, np.ascontiguousarray(faces, np.int64), int(face_offset), uvs, tex, cols,
           np.asarray(factor, np.float32), out)
    return out


def interpolate(fragments: Fragments, attributes: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-vertex attributes (N, C) -> per-pixel (H, W, C) float32; 0 where no face is visible."""
    attributes = np.asarray(attributes)
    mask = fragments.mask
    out = np.zeros(fragments.face.shape + attributes.shape[1:], np.float32)
    f = faces[fragments.face[mask]]
    b = fragments.bary[mask]
    out[mask] = (attributes[f] * b[..., None]).sum(axis=1)
    return out


def sample_texture(texture: np.ndarray, uv: np.ndarray, wrap: bool = True) -> np.ndarray:
    """Bilinear lookup of ``texture`` (Ht, Wt, C) at ``uv`` (..., 2) -> (..., C) float32 in texture units.

    UVs follow glTF/OBJ: u right, v up (v = 0 is the bottom row of the image). Texel centres
    sit at half-integers. ``wrap`` repeats the texture outside [0, 1] (glTF's default REPEAT),
    otherwise edges are clamped.
    """
    h, w = texture.shape[:2]
    uv = np.asarray(uv, dtype=np.float64)
    s, t = uv[..., 0], uv[..., 1]
    if wrap:
        s, t = s % 1.0, t % 1.0
    x = s * w - 0.5
    y = (1.0 - t) * h - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0)[..., None].astype(np.float32)
    fy = (y - y0)[..., None].astype(np.float32)
    if wrap:
        xa, xb, ya, yb = x0 % w, (x0 + 1) % w, y0 % h, (y0 + 1) % h
    else:
        xa, xb = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
        ya, yb = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    tex = texture if texture.ndim == 3 else texture[..., None]
    tex = tex.astype(np.float32, copy=False)
    top = tex[ya, xa] * (1 - fx) + tex[ya, xb] * fx
    bottom = tex[yb, xa] * (1 - fx) + tex[yb, xb] * fx
    return top * (1 - fy) + bottom * fy
