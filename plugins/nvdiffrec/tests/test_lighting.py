"""The split-sum environment light (appearance "pbr"): lookups, filters, BRDF table, file format.

Each check compares with something computed another way: texel values, a uniform light's
closed form, Karis/Lazarov's published analytic fit of the same BRDF integral, and the
Radiance format decoded by its specification.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshforge_nvdiffrec import lighting


def test_cube_lookup_returns_texels_at_their_centres_and_varies_smoothly_between():
    d, omega = lighting.cube_directions(8)
    assert abs(omega.sum() - 4 * math.pi) < 0.1  # the texels cover the sphere
    cube = torch.rand(6, 8, 8, 3)
    got = lighting.sample_cube(cube, torch.as_tensor(d.reshape(-1, 3), dtype=torch.float32))
    assert torch.allclose(got, cube.reshape(-1, 3), atol=1e-5)

    # a light that is linear in the direction is reproduced between texel centres too
    a = np.array([0.3, -0.5, 0.8])
    linear = torch.as_tensor(d @ a, dtype=torch.float32)[..., None]
    rays = torch.nn.functional.normalize(torch.randn(5000, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    error = (lighting.sample_cube(linear, rays)[:, 0] - rays @ torch.as_tensor(a, dtype=torch.float32)).abs()
    assert error.mean() < 0.01 and error.max() < 0.1  # largest along the faces' clamped edges


def test_the_sparse_cube_lookup_gives_the_gathers_values_and_gradients():
    """CubeLookup (pass 2's fixed directions, a sparse product each way) against sample_cube
    (indexing, autograd's own gradient)."""
    rays = torch.nn.functional.normalize(torch.randn(3000, 3, generator=torch.Generator().manual_seed(5)), dim=1)
    weights = torch.rand(3000, 3, generator=torch.Generator().manual_seed(6))
    cube_a = torch.rand(6, 8, 8, 3, generator=torch.Generator().manual_seed(7)).requires_grad_()
    cube_b = cube_a.detach().clone().requires_grad_()
    sparse, gathered = lighting.CubeLookup(8, rays)(cube_a), lighting.sample_cube(cube_b, rays)
    assert torch.allclose(sparse, gathered, atol=1e-6)
    (sparse * weights).sum().backward()
    (gathered * weights).sum().backward()
    assert torch.allclose(cube_a.grad, cube_b.grad, atol=1e-5)
    assert cube_a.grad.abs().sum() > 0


def test_a_uniform_light_gives_the_closed_form_radiance():
    """Uniform parameters of any scale are a uniform light of radiance 1 (its mean is held at 1)."""
    light = lighting.EnvironmentLight(8)
    with torch.no_grad():
        light.base.fill_(2.0)
    assert torch.allclose(light.radiance(), torch.ones(6, 8, 8, 3))
    n = torch.nn.functional.normalize(torch.randn(500, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    to_eye = torch.nn.functional.normalize(n + 0.5 * torch.randn(500, 3, generator=torch.Generator().manual_seed(2)),
                                           dim=1)
    to_eye = torch.where(((n * to_eye).sum(1, keepdim=True) > 0.05), to_eye, n)
    kd = torch.rand(500, 3, generator=torch.Generator().manual_seed(3))
    rough = torch.rand(500, 1, generator=torch.Generator().manual_seed(4)) * 0.9 + 0.08
    for metal in (0.0, 1.0):
        m = torch.full((500, 1), metal)
        got = light.shade(light.points(n, to_eye), kd, rough, m)
        # every filter is normalised: diffuse irradiance/π and each specular mip equal the light
        nv = (n * to_eye).sum(1).clamp(1e-4, 1)
        table = torch.as_tensor(lighting.brdf_table())
        ab = lighting._bilinear(table, (rough[:, 0] * 32 - 0.5).clamp(0, 31), (nv * 32 - 0.5).clamp(0, 31))
        f0 = lighting.DIELECTRIC_F0 * (1 - m) + kd * m
        expected = kd * (1 - m) + f0 * ab[:, :1] + ab[:, 1:]
        assert torch.allclose(got, expected, atol=1e-4), metal


def test_the_specular_filter_widens_with_roughness():
    share_kept = [float(lighting.ggx_filter(8, r).diagonal().mean()) for r in (0.08, 0.3, 0.6, 1.0)]
    assert share_kept[0] > 0.9 and all(a > b for a, b in zip(share_kept, share_kept[1:])), share_kept
    assert share_kept[-1] < 0.05


def test_the_brdf_table_matches_a_brute_force_integral():
    """The table's importance-sampled integral against plain uniform sampling of the hemisphere:
    A = ∫ (1 − Fc) D G / (4 n·v) dω and B = ∫ Fc D G / (4 n·v) dω (Fc = (1 − v·h)^5, GGX D with
    α = roughness², Smith G with k = α/2, as in Karis 2013)."""
    table = lighting.brdf_table()
    size = table.shape[0]
    rng = np.random.default_rng(0)
    light = rng.normal(size=(400_000, 3))
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    light[:, 2] = np.abs(light[:, 2])  # uniform on the upper hemisphere, pdf 1 / 2π
    for r_index, nv_index in ((9, 16), (19, 25), (30, 30), (16, 6)):
        rough, nv = (r_index + 0.5) / size, (nv_index + 0.5) / size
        alpha, k = rough ** 2, rough ** 2 / 2
        view = np.array([math.sqrt(1 - nv * nv), 0.0, nv])
        half = light + view
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        nh, nl, vh = half[:, 2], light[:, 2], half @ view
        d = alpha ** 2 / (math.pi * (nh ** 2 * (alpha ** 2 - 1) + 1) ** 2)
        g = nv / (nv * (1 - k) + k) * nl / (nl * (1 - k) + k)
        common = d * g / (4 * nv) * 2 * math.pi
        fc = (1 - vh) ** 5
        a, b = ((1 - fc) * common).mean(), (fc * common).mean()
        assert abs(table[r_index, nv_index, 0] - a) < 0.02 and abs(table[r_index, nv_index, 1] - b) < 0.01, \
            (rough, nv, table[r_index, nv_index], a, b)
    assert table[0, -1, 0] > 0.99 and table[0, -1, 1] < 0.01  # smooth and frontal: all of F0
    assert (table.sum(axis=2) <= 1.0 + 1e-3).all() and (table >= 0).all()


def test_the_environment_is_written_as_radiance_hdr():
    light = lighting.EnvironmentLight(8)
    with torch.no_grad():
        light.base.copy_(torch.rand(6, 8, 8, 3, generator=torch.Generator().manual_seed(5)) * 5)
    image = light.equirect(32)
    assert abs(image.mean() - 1.0) < 0.1  # the mean radiance is held at 1
    data = lighting.radiance_hdr(image)
    # decode by the format's description: text header, blank line, resolution line, RGBE pixels
    header, _, rest = data.partition(b"\n\n")
    assert header.startswith(b"#?RADIANCE") and b"FORMAT=32-bit_rle_rgbe" in header
    size_line, _, pixels = rest.partition(b"\n")
    assert size_line == b"-Y 16 +X 32"
    rgbe = np.frombuffer(pixels, np.uint8).reshape(16, 32, 4).astype(np.float64)
    decoded = (rgbe[..., :3] + 0.5) * np.ldexp(1.0, rgbe[..., 3:].astype(int) - 136)
    # RGBE keeps 8 bits relative to each pixel's brightest channel
    assert (np.abs(decoded - image) <= image.max(axis=2, keepdims=True) / 128).all()


def test_light_resolution_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        lighting.EnvironmentLight(12)
