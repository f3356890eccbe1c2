"""The paper's split-sum environment light for PBR materials, in plain PyTorch.

A learnable HDR cube map lights a base colour, roughness and metallic (nvdiffrec's
render/light.py as the paper and guides/nvdiffrec.md §5 describe it): mips of the cube by 2×2
averaging; each mip but the last prefiltered with a GGX lobe for a roughness from 0.08 to
0.5, the last for 1.0; diffuse irradiance from the coarsest mip; the specular BRDF's scale
and bias for F0 (Karis's split sum) from a table. Dielectric F0 is 0.04, blended to the base
colour by metallic. What differs here is size and how the filters run: six views cannot
resolve a 512² light, so the cube is small (32² per face by default) and each prefilter is
one dense, precomputed matrix over the mip's texels; the BRDF table is integrated with numpy
at first use rather than shipped; and the surface points' lookups into the cube maps are
computed once for pass 2's fixed mesh, as sparse matrices (:class:`CubeLookup`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

MIN_ROUGHNESS, MAX_ROUGHNESS = 0.08, 0.5
DIELECTRIC_F0 = 0.04


def cube_directions(res: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions (6, res, res, 3) of every texel centre of a cube map (faces +X −X +Y −Y
    +Z −Z, OpenGL's layout) and their solid angles (6, res, res)."""
    c = (np.arange(res) + 0.5) / res * 2 - 1
    tc, sc = np.meshgrid(c, c, indexing="ij")  # rows: t, columns: s
    one = np.ones_like(sc)
    faces = [(one, -tc, -sc), (-one, -tc, sc), (sc, one, tc), (sc, -one, -tc), (sc, -tc, one), (-sc, -tc, -one)]
    d = np.stack([np.stack(f, axis=-1) for f in faces])
    norm = np.linalg.norm(d, axis=-1)
    solid_angle = (2.0 / res) ** 2 / norm ** 3
    return d / norm[..., None], solid_angle


def cube_taps(res: int, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four texels (N, 4) of a res² cube map (flattened (6, R, R)) that a bilinear lookup in
    directions (N, 3) reads, and their weights (N, 4); clamped at the face edges (a seam of half
    a texel, invisible at the roughness of a light this small)."""
    a = dirs.abs()
    x_major = (a[:, 0] >= a[:, 1]) & (a[:, 0] >= a[:, 2])
    y_major = ~x_major & (a[:, 1] >= a[:, 2])
    x, y, z = dirs.unbind(1)
    face = torch.where(x_major, torch.where(x > 0, 0, 1), torch.where(y_major, torch.where(y > 0, 2, 3),
                                                                        torch.where(z > 0, 4, 5)))
    major = torch.where(x_major, a[:, 0], torch.where(y_major, a[:, 1], a[:, 2])).clamp(min=1e-12)
    sc = torch.stack([-z, z, x, x, x, -x], dim=1).gather(1, face[:, None])[:, 0] / major
    tc = torch.stack([-y, -y, z, -z, -y, -y], dim=1).gather(1, face[:, None])[:, 0] / major
    fx = ((sc + 1) * 0.5 * res - 0.5).clamp(0, res - 1)
    fy = ((tc + 1) * 0.5 * res - 0.5).clamp(0, res - 1)
    last = max(res - 2, 0)  # x0 ≤ R − 2 so that x1 = x0 + 1 exists; the weight reaches 1 at the edge
    x0, y0 = fx.floor().long().clamp(max=last), fy.floor().long().clamp(max=last)
    wx, wy = fx - x0, fy - y0
    x1, y1 = (x0 + 1).clamp(max=res - 1), (y0 + 1).clamp(max=res - 1)
    base = face * res * res
    index = torch.stack([base + y0 * res + x0, base + y0 * res + x1, base + y1 * res + x0, base + y1 * res + x1], 1)
    weight = torch.stack([(1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy], dim=1)
    return index, weight


def sample_cube(cube: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of (6, R, R, C) ``cube`` in directions (N, 3) -> (N, C)."""
    index, weight = cube_taps(cube.shape[1], dirs)
    return (cube.reshape(-1, cube.shape[-1])[index] * weight[..., None]).sum(dim=1)


class CubeLookup:
    """Bilinear lookups of a res² cube map in fixed directions (N, 3), as a sparse (N, 6R²) matrix.

    Pass 2 shades the same pixels in the same directions every iteration. As a gather, the
    backward pass adds millions of pixel gradients into a few hundred texels with atomic
    additions; as a sparse product it is a second sparse product, with the transposed matrix
    held beside the first, that sums each texel's row."""

    def __init__(self, res: int, dirs: torch.Tensor):
        index, weight = cube_taps(res, dirs)
        n, texels = len(dirs), 6 * res * res
        columns, values = index.reshape(-1), weight.reshape(-1)
        rows = torch.arange(n, device=dirs.device).repeat_interleave(4)
        order = torch.argsort(columns, stable=True)
        self.matrix = _csr(torch.arange(0, 4 * n + 1, 4, device=dirs.device), columns, values, (n, texels))
        per_texel = torch.bincount(columns, minlength=texels)
        starts = torch.cat([per_texel.new_zeros(1), per_texel.cumsum(0)])
        self.transposed = _csr(starts, rows[order], values[order], (texels, n))

    def __call__(self, cube: torch.Tensor) -> torch.Tensor:
        """(6, R, R, C) -> (N, C)."""
        return _SparseProduct.apply(self.matrix, self.transposed, cube.reshape(-1, cube.shape[-1]))


def _csr(starts, columns, values, size) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(starts.int(), columns.int(), values.detach(), size=size,
                                       check_invariants=False)


class _SparseProduct(torch.autograd.Function):
    """matrix @ dense, its gradient transposed @ grad (the matrix is a constant)."""

    @staticmethod
    def forward(ctx, matrix, transposed, dense):
        ctx.transposed = transposed
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.transposed @ grad.contiguous()


def ggx_filter(res: int, roughness: float, device="cpu") -> torch.Tensor:
    """(6R², 6R²) row-normalised weights that prefilter a res² cube for ``roughness``: a GGX
    lobe (α = roughness²) around each texel's direction, taken as normal, view and reflection
    at once as in the split sum, times n·l and the source texel's solid angle."""
    d, omega = _texels(res, device)
    cos = (d @ d.T).clamp(-1.0, 1.0)
    alpha2 = roughness ** 4
    cos_h2 = (1 + cos) / 2  # cos² of the half angle between target and source
    w = alpha2 / (math.pi * (cos_h2 * (alpha2 - 1) + 1) ** 2) * cos.clamp(min=0) * omega[None]
    return w / w.sum(dim=1, keepdim=True)


def cosine_filter(res: int, device="cpu") -> torch.Tensor:
    """(6R², 6R²) row-normalised cosine weights: irradiance / π, so a uniform light L gives L."""
    d, omega = _texels(res, device)
    w = (d @ d.T).clamp(min=0) * omega[None]
    return w / w.sum(dim=1, keepdim=True)


def _texels(res: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    d, omega = cube_directions(res)
    return (torch.as_tensor(d.reshape(-1, 3), dtype=torch.float32, device=device),
            torch.as_tensor(omega.reshape(-1), dtype=torch.float32, device=device))


@lru_cache(maxsize=1)
def brdf_table(size: int = 32, samples: int = 512) -> np.ndarray:
    """(size, size, 2) split-sum scale A and bias B of F0 for (n·v along columns, roughness along
    rows), both from 1/(2·size) to 1 − 1/(2·size): Karis, "Real Shading in Unreal Engine 4"
    (2013), GGX importance sampling with Smith's G (k = α/2), integrated here with numpy."""
    nv = (np.arange(size) + 0.5) / size
    rough = (np.arange(size) + 0.5) / size
    i = np.arange(samples)
    u1 = i / samples
    u2 = np.array([int(f"{k:032b}"[::-1], 2) for k in i]) / 2.0 ** 32  # Hammersley (radical inverse)
    table = np.zeros((size, size, 2))
    for r_index, r in enumerate(rough):
        alpha = r * r
        phi = 2 * math.pi * u1
        cos_t = np.sqrt((1 - u2) / (1 + (alpha * alpha - 1) * u2))
        sin_t = np.sqrt(1 - cos_t ** 2)
        h = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)  # (S, 3)
        v = np.stack([np.sqrt(1 - nv ** 2), np.zeros_like(nv), nv], axis=1)  # (size, 3)
        vh = v @ h.T  # (size, S)
        light_z = 2 * vh * h[None, :, 2] - v[:, None, 2]
        nl, nh = np.clip(light_z, 0, None), h[None, :, 2]
        k = alpha / 2
        g = (nv[:, None] / (nv[:, None] * (1 - k) + k)) * (nl / (nl * (1 - k) + k))
        g_vis = np.where(light_z > 0, g * np.clip(vh, 0, None) / (nh * nv[:, None]), 0.0)
        fc = (1 - np.clip(vh, 0, 1)) ** 5
        table[r_index, :, 0] = ((1 - fc) * g_vis).mean(axis=1)
        table[r_index, :, 1] = (fc * g_vis).mean(axis=1)
    return table.astype(np.float32)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(min=0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


class EnvironmentLight(torch.nn.Module):
    """A learnable HDR cube map of ``res``² per face and its split-sum lookups.

    Its mean radiance over the sphere is held at 1 (:meth:`radiance`), where the paper leaves it
    free from a start of 0.5: base colour times light has a free scale, and fixing it on the
    light keeps the base colour at the photographs' exposure, which is what meshforge's scorer
    and previews show of a PBR result. The base colour starts from the photographs' pixels, so
    a uniform light reproduces them from the first iteration."""

    def __init__(self, res: int = 32, device="cpu"):
        super().__init__()
        if res < 4 or res & (res - 1):
            raise ValueError(f"light resolution {res}: a power of two from 4")
        self.base = torch.nn.Parameter(torch.ones(6, res, res, 3, device=device))
        sizes = [res]  # three mips, as 512 → 16 is six in the paper (the coarsest lights the diffuse)
        while sizes[-1] // 2 >= max(2, res // 4):
            sizes.append(sizes[-1] // 2)
        n = len(sizes)
        self.sizes = sizes
        self.roughness = [MIN_ROUGHNESS + (MAX_ROUGHNESS - MIN_ROUGHNESS) * i / max(n - 2, 1) for i in range(n - 1)]
        self.roughness.append(1.0)
        self.filters = [ggx_filter(s, r, device) for s, r in zip(sizes, self.roughness)]
        self.diffuse_filter = cosine_filter(sizes[-1], device)
        self.table = torch.as_tensor(brdf_table(), device=device)
        omega = torch.as_tensor(cube_directions(res)[1], dtype=torch.float32, device=device)
        self.sphere_weights = (omega / omega.sum())[..., None] / 3  # mean over texels and channels

    def radiance(self) -> torch.Tensor:
        """The light (6, R, R, 3): the parameters scaled to a mean radiance of 1."""
        return self.base / (self.base * self.sphere_weights).sum().clamp(min=1e-6)

    def mips(self) -> list[torch.Tensor]:
        levels = [self.radiance()]
        for _ in self.filters[1:]:
            b = levels[-1]
            levels.append(b.reshape(6, b.shape[1] // 2, 2, b.shape[2] // 2, 2, 3).mean(dim=(2, 4)))
        return levels

    def points(self, normal: torch.Tensor, to_eye: torch.Tensor) -> "ShadingPoints":
        """What shading surface points with unit ``normal`` and ``to_eye`` (N, 3) needs of their
        geometry: n·v and the cube lookups, in the reflected direction for each specular mip and
        along the normal for the diffuse one. Fixed for a fixed mesh and views."""
        nv = (normal * to_eye).sum(dim=1, keepdim=True).clamp(1e-4, 1.0)
        reflected = 2 * nv * normal - to_eye
        return ShadingPoints(nv, [CubeLookup(s, reflected) for s in self.sizes], CubeLookup(self.sizes[-1], normal))

    def shade(self, points: "ShadingPoints", base_colour: torch.Tensor, roughness: torch.Tensor,
              metallic: torch.Tensor, specular: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Linear radiance (N, 3) of ``points`` with linear ``base_colour`` (N, 3), ``roughness``
        and ``metallic`` (N, 1), and the share of the specular term they reflect (N, 1; the
        paper's 1 − occlusion)."""
        levels = self.mips()
        prefiltered = [(f @ m.reshape(-1, 3)).reshape(m.shape) for f, m in zip(self.filters, levels)]
        diffuse = (self.diffuse_filter @ levels[-1].reshape(-1, 3)).reshape(levels[-1].shape)
        # the mip for a roughness: linear in roughness up to MAX_ROUGHNESS, then to the last mip at 1
        n = len(levels)
        r = roughness.clamp(MIN_ROUGHNESS, 1.0)
        level = torch.where(r < MAX_ROUGHNESS, (r - MIN_ROUGHNESS) / (MAX_ROUGHNESS - MIN_ROUGHNESS) * (n - 2),
                            (n - 2) + (r - MAX_ROUGHNESS) / (1 - MAX_ROUGHNESS)).clamp(0, n - 1)
        env = 0
        for i, (cube, lookup) in enumerate(zip(prefiltered, points.specular)):
            env = env + lookup(cube) * (1 - (level - i).abs()).clamp(min=0)
        size = self.table.shape[0]
        u = (points.nv * size - 0.5).clamp(0, size - 1)
        v = (r * size - 0.5).clamp(0, size - 1)
        scale_bias = _bilinear(self.table, v[:, 0], u[:, 0])
        f0 = DIELECTRIC_F0 * (1 - metallic) + base_colour * metallic
        return (base_colour * (1 - metallic) * points.diffuse(diffuse)
                + specular * env * (f0 * scale_bias[:, :1] + scale_bias[:, 1:]))

    def white_balance(self) -> torch.Tensor:
        """Mean |rgb − grey| of the cube: the paper's prior towards white light."""
        light = self.radiance()
        return (light - light.mean(dim=-1, keepdim=True)).abs().mean()

    def equirect(self, width: int = 128) -> np.ndarray:
        """(width/2, width, 3) float32 latitude-longitude image of the light (+Y up, −Z at the centre)."""
        h = width // 2
        theta = (np.arange(h) + 0.5) / h * math.pi
        phi = (np.arange(width) + 0.5) / width * 2 * math.pi - math.pi
        t, p = np.meshgrid(theta, phi, indexing="ij")
        d = np.stack([np.sin(t) * np.sin(p), np.cos(t), -np.sin(t) * np.cos(p)], axis=-1).reshape(-1, 3)
        with torch.no_grad():
            img = sample_cube(self.radiance(), torch.as_tensor(d, dtype=torch.float32, device=self.base.device))
        return img.reshape(h, width, 3).cpu().numpy()


@dataclass
class ShadingPoints:
    """Surface points' geometry for :meth:`EnvironmentLight.shade` (:meth:`EnvironmentLight.points`)."""

    nv: torch.Tensor              # (N, 1) cosine between normal and view
    specular: list[CubeLookup]    # per mip, in the reflected direction
    diffuse: CubeLookup           # the last mip, along the normal


def _bilinear(table: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of (H, W, C) ``table`` at fractional rows ``fy`` and columns ``fx`` (N,)."""
    h, w = table.shape[:2]
    y0, x0 = fy.floor().long().clamp(0, h - 1), fx.floor().long().clamp(0, w - 1)
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    wy, wx = (fy - y0)[:, None], (fx - x0)[:, None]
    return ((table[y0, x0] * (1 - wx) + table[y0, x1] * wx) * (1 - wy)
            + (table[y1, x0] * (1 - wx) + table[y1, x1] * wx) * wy)


def radiance_hdr(image: np.ndarray) -> bytes:
    """Radiance RGBE (.hdr) bytes of an (H, W, 3) float image, flat scanlines (no run-length
    coding), as Greg Ward's format allows and Blender, GIMP and stb_image read."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0, None)
    brightest = image.max(axis=2)
    mantissa, exponent = np.frexp(brightest)
    scale = np.where(brightest > 1e-32, mantissa * 256.0 / np.maximum(brightest, 1e-32), 0.0)
    rgbe = np.zeros((*image.shape[:2], 4), np.uint8)
    rgbe[..., :3] = np.clip(image * scale[..., None], 0, 255).astype(np.uint8)
    rgbe[..., 3] = np.where(brightest > 1e-32, exponent + 128, 0).astype(np.uint8)
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {image.shape[0]} +X {image.shape[1]}\n".encode()
    return header + rgbe.tobytes()
