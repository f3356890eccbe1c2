"""The two rasterisation backends agree: nvdiffrast (when a CUDA GPU is here) and the PyTorch test path,
and the PyTorch path agrees with meshforge's own rasteriser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import meshforge
from meshforge.mesh import load_parts, normalization
from meshforge.raster import rasterize
from meshforge_nvdiffrec.backends import TorchBackend, projection


@pytest.fixture(scope="module")
def spot(spot_mesh):
    parts = load_parts(spot_mesh)
    return parts[0].transformed(normalization(parts))


def _clip(mesh, cams, device):
    v = torch.as_tensor(mesh.vertices, device=device)
    homo = torch.cat([v, torch.ones(len(v), 1, device=device)], 1)
    return torch.stack([homo @ torch.as_tensor(projection(c, 0.5, 5.0), dtype=torch.float32, device=device).T
                        for c in cams])


def test_torch_backend_matches_the_core_rasteriser(spot):
    cams = [meshforge.rig(2.5, 40, 160)[v] for v in ("front", "left", "top")]
    be = TorchBackend(torch.device("cpu"))
    faces = torch.as_tensor(spot.faces, dtype=torch.int32)
    rast = be.rasterize(_clip(spot, cams, "cpu"), faces, (160, 160))
    pos = be.interpolate(torch.as_tensor(spot.vertices), rast, faces)
    for i, cam in enumerate(cams):
        ref = rasterize(cam, spot.vertices, spot.faces)
        assert ((rast[i, ..., 3] > 0).numpy() == ref.mask).all()
        z = -(pos[i].numpy() @ cam.world_to_camera[2, :3] + cam.world_to_camera[2, 3])
        assert np.abs(z[ref.mask] - ref.depth[ref.mask]).max() < 1e-4


def test_torch_backend_gradients_reach_vertices(spot):
    cam = meshforge.rig(2.5, 40, 96)["front"]
    be = TorchBackend(torch.device("cpu"))
    v = torch.as_tensor(spot.vertices).requires_grad_()
    homo = torch.cat([v, torch.ones(len(v), 1)], 1)
    clip = (homo @ torch.as_tensor(projection(cam, 0.5, 5.0), dtype=torch.float32).T)[None]
    faces = torch.as_tensor(spot.faces, dtype=torch.int32)
    rast = be.rasterize(clip, faces, (96, 96))
    be.interpolate(v, rast, faces).sum().backward()
    assert v.grad.abs().sum() > 0


def test_the_gbuffer_gives_what_full_frame_rendering_gives(spot):
    """Pass 2's covered-pixel lookups, scattered back, are the full-frame texture lookup of those
    pixels; off the object the images are 0; attributes interpolate as the backend does."""
    from meshforge_nvdiffrec.gbuffer import GBuffer

    cams = [meshforge.rig(2.5, 40, 96)[v] for v in ("front", "left", "top")]
    be = TorchBackend(torch.device("cpu"))
    faces = torch.as_tensor(spot.faces, dtype=torch.int32)
    vertices = torch.as_tensor(spot.vertices)
    uv = torch.as_tensor(np.stack([spot.uv[:, 0], 1.0 - spot.uv[:, 1]], 1))
    clip = _clip(spot, cams, "cpu")
    gbuffer = GBuffer(be, vertices, faces, uv, clip, 96)
    rast = be.rasterize(clip, faces, (96, 96))
    covered = (rast[..., 3:4] > 0).float()
    assert torch.equal(gbuffer.covered, covered) and len(gbuffer) == int(covered.sum())
    texture = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    full = be.texture(texture.expand(3, -1, -1, -1), be.interpolate(uv, rast, faces)) * covered
    assert torch.allclose(gbuffer.image(gbuffer.lookup(texture)), full, atol=1e-6)
    points = be.interpolate(vertices, rast, faces).reshape(-1, 3)[covered.reshape(-1) > 0]
    assert torch.allclose(gbuffer.attribute(vertices), points)
    assert torch.equal(gbuffer.view, torch.nonzero(covered[..., 0], as_tuple=True)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_nvdiffrast_and_torch_backends_agree(spot):
    from meshforge_nvdiffrec.backends import NvdiffrastBackend

    cams = [meshforge.rig(2.5, 40, 256)[v] for v in ("front", "left", "top", "bottom")]
    dev = torch.device("cuda")
    faces = torch.as_tensor(spot.faces, dtype=torch.int32, device=dev)
    a, b = NvdiffrastBackend(dev), TorchBackend(dev)
    clip = _clip(spot, cams, dev)
    ra, rb = a.rasterize(clip, faces, (256, 256)), b.rasterize(clip, faces, (256, 256))
    ma, mb = ra[..., 3] > 0, rb[..., 3] > 0
    assert (ma == mb).float().mean() > 0.999  # edge pixels may differ by the tie rule
    both = ma & mb
    va = torch.as_tensor(spot.vertices, device=dev)
    pa, pb = a.interpolate(va, ra, faces), b.interpolate(va, rb, faces)
    # a few occlusion-boundary pixels may pick another face on a tie; the rest must agree
    agree = ((pa - pb)[both].abs().max(dim=-1).values < 1e-3).float().mean()
    assert agree > 0.999, float(agree)
    tex = torch.rand(1, 64, 64, 3, device=dev).expand(4, -1, -1, -1).contiguous()
    uv = torch.rand(4, 256, 256, 2, device=dev) * 0.9 + 0.05
    assert (a.texture(tex, uv) - b.texture(tex, uv)).abs().max() < 1e-4


def _pbr_colour(backend, spot, cams, device):
    """spot shaded by nvdiffrec's PBR material (half metallic) under a fixed random light."""
    from meshforge_nvdiffrec.gbuffer import GBuffer
    from meshforge_nvdiffrec.materials import PbrMaterial

    texture = torch.as_tensor(spot.texture, dtype=torch.float32, device=device)[None] / 255.0
    uv = torch.as_tensor(np.stack([spot.uv[:, 0], 1.0 - spot.uv[:, 1]], 1), device=device)
    eyes = torch.as_tensor(np.stack([c.camera_to_world[:3, 3] for c in cams]), dtype=torch.float32, device=device)
    faces = torch.as_tensor(spot.faces, dtype=torch.int32, device=device)
    vertices = torch.as_tensor(spot.vertices, device=device)
    gbuffer = GBuffer(backend, vertices, faces, uv, _clip(spot, cams, device), 256)
    material = PbrMaterial(texture, gbuffer, eyes, 8)
    with torch.no_grad():
        material.light.base.copy_(torch.rand(6, 8, 8, 3, generator=torch.Generator().manual_seed(0)).to(device))
        material.roughness_metallic[..., 1] = 0.5
        return gbuffer.image(material.colour()), gbuffer.covered[..., 0] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_the_pbr_material_shades_alike_on_both_backends(spot):
    """appearance "pbr" on nvdiffrast is the code the CPU tests check on the PyTorch backend."""
    from meshforge_nvdiffrec.backends import NvdiffrastBackend

    cams = [meshforge.rig(2.5, 40, 256)[v] for v in ("front", "left", "top", "bottom")]
    dev = torch.device("cuda")
    (ca, ma), (cb, mb) = (_pbr_colour(b, spot, cams, dev) for b in (NvdiffrastBackend(dev), TorchBackend(dev)))
    assert (ma == mb).float().mean() > 0.999
    both = ma & mb
    agree = ((ca - cb)[both].abs().max(dim=-1).values < 2e-3).float().mean()
    assert agree > 0.99, float(agree)
