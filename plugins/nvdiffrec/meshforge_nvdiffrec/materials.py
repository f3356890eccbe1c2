"""What pass 2 optimises as appearance, on the mesh's texture layout.

- :class:`BakedColour` (``appearance="baked"``, the default): one sRGB texture, the colour the
  cameras saw with the lighting included; exported as an unlit material.
- :class:`PbrMaterial` (``appearance="pbr"``): the paper's material and light, a linear base
  colour, roughness and metallic per texel, lit by a learnable environment light through the
  split sum (:mod:`.lighting`), and the share of the specular term each texel reflects (the
  paper's occlusion channel, as 1 − occlusion); exported as a glTF PBR material plus the light
  as ``environment.hdr``. With six views and lighting baked into the photographs the split
  between material and light is weakly determined: the white-light prior and the start (the
  base colour from the photographs, a uniform light of 1, no specular) keep it near "the
  photograph is the colour", which is what the baked mode assumes outright.

Both work on pass 2's :class:`.gbuffer.GBuffer` (the mesh is fixed) and give ``colour()``, the
sRGB colour (N, 3) of its covered pixels, ``regulariser()``, ``clamp_()`` after each step, and
``finish(mesh)``, which writes the maps into the mesh and returns extra files for the model's
folder.
"""

from __future__ import annotations

import numpy as np
import torch

from .gbuffer import GBuffer
from .lighting import EnvironmentLight, linear_to_srgb, radiance_hdr, srgb_to_linear

#: the paper's weight of its white-light prior (guides/nvdiffrec.md §6)
WHITE_BALANCE_WEIGHT = 0.005
#: roughness and metallic where pass 2 starts: a rough dielectric, close to the baked look
START_ROUGHNESS, START_METALLIC = 0.8, 0.0
#: share of the split sum's specular reflected where pass 2 starts (the paper's 1 − occlusion).
#: None: then the start renders the photographs exactly under the uniform light, and specular
#: grows where they ask for it. All of it (the paper's occlusion 0) adds ~0.05 of linear
#: radiance everywhere, which dark base colours cannot give back (they are clamped at 0). On
#: ycb_banana at CPU test size (150 iterations) the fit under the learned light ended at
#: 28.5 dB without this channel (the light tinted yellow), 31.8 dB starting from all of it,
#: 52.3 dB starting from none (baked: 55.0). The paper's regulariser towards full specular is
#: left out for the same reason.
START_SPECULAR = 0.0


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.detach()[0].clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()


class BakedColour(torch.nn.Module):
    """An sRGB texture (1, H, W, 3) in [0, 1]: colour with the lighting baked in."""

    def __init__(self, texture: torch.Tensor, gbuffer: GBuffer):
        super().__init__()
        self.texture = torch.nn.Parameter(texture)
        self.gbuffer = gbuffer

    def colour(self) -> torch.Tensor:
        return self.gbuffer.lookup(self.texture)

    def regulariser(self) -> torch.Tensor | float:
        return 0.0

    @torch.no_grad()
    def clamp_(self) -> None:
        self.texture.clamp_(0.0, 1.0)

    def finish(self, mesh) -> tuple[dict, dict]:
        mesh.texture = _to_uint8(self.texture)
        return {}, {}


class PbrMaterial(torch.nn.Module):
    """Linear base colour (1, H, W, 3), roughness and metallic (1, H, W, 2), specular share
    (1, H, W, 1) and an environment light; shaded per covered pixel with smooth vertex normals.
    Each pixel's normal, view direction and light lookups are computed once
    (:meth:`.lighting.EnvironmentLight.points`)."""

    def __init__(self, texture: torch.Tensor, gbuffer: GBuffer, eyes: torch.Tensor, light_resolution: int):
        super().__init__()
        self.base_colour = torch.nn.Parameter(srgb_to_linear(texture))
        start = torch.tensor([START_ROUGHNESS, START_METALLIC], device=texture.device)
        self.roughness_metallic = torch.nn.Parameter(start.expand(*texture.shape[:3], 2).clone())
        self.specular = torch.nn.Parameter(torch.full((*texture.shape[:3], 1), START_SPECULAR,
                                                      device=texture.device))
        self.light = EnvironmentLight(light_resolution, device=texture.device)
        self.gbuffer = gbuffer
        normals = _welded_normals(gbuffer.vertices, gbuffer.faces)
        normal = torch.nn.functional.normalize(gbuffer.attribute(normals), dim=-1)
        to_eye = torch.nn.functional.normalize(eyes[gbuffer.view] - gbuffer.attribute(gbuffer.vertices), dim=-1)
        self.points = self.light.points(normal, to_eye)

    def colour(self) -> torch.Tensor:
        base = self.gbuffer.lookup(self.base_colour)
        rm = self.gbuffer.lookup(self.roughness_metallic)
        specular = self.gbuffer.lookup(self.specular)
        return linear_to_srgb(self.light.shade(self.points, base, rm[:, :1], rm[:, 1:], specular))

    def regulariser(self) -> torch.Tensor:
        return WHITE_BALANCE_WEIGHT * self.light.white_balance()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.base_colour.clamp_(0.0, 1.0)
        self.roughness_metallic[..., 0].clamp_(0.08, 1.0)  # the paper's lower bound of roughness
        self.roughness_metallic[..., 1].clamp_(0.0, 1.0)
        self.specular.clamp_(0.0, 1.0)
        self.light.base.clamp_(min=0.0)

    def finish(self, mesh) -> tuple[dict, dict]:
        mesh.texture = _to_uint8(linear_to_srgb(self.base_colour))
        mesh.metallic_roughness = _to_uint8(self.roughness_metallic)
        mesh.specular = _to_uint8(self.specular)[..., 0]
        environment = self.light.equirect(128)
        rm = self.roughness_metallic.detach()
        stats = {"light_mean_rgb": [round(float(x), 4) for x in environment.reshape(-1, 3).mean(axis=0)],
                 "roughness_mean": round(float(rm[..., 0].mean()), 4),
                 "metallic_mean": round(float(rm[..., 1].mean()), 4),
                 "specular_mean": round(float(self.specular.detach().mean()), 4)}
        return {"environment.hdr": radiance_hdr(environment)}, stats


def _welded_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals with the atlas's seam copies of a vertex summed together, so
    that shading does not crease along chart borders."""
    from meshforge.mesh import TexturedMesh

    unique, inverse = np.unique(vertices.detach().cpu().numpy(), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    normals = TexturedMesh(unique, inverse[faces.long().cpu().numpy()]).vertex_normals()[inverse]
    return torch.as_tensor(normals, device=vertices.device)
