"""nvdiffrec's two passes, adapted to six calibrated views with depth (see guides/nvdiffrec.md §11).

Pass 1 (topology and appearance): a DMTet surface whose signed distance starts from
meshforge's depth hull (the fusion field) in a narrow band of tets, a spatial colour field,
and per iteration all six views rendered at ``train_res``: L1 on colour composited over a
random background (so coverage must be explained by geometry), L1 on anti-aliased
coverage, a robust depth loss against the calibrated depth, nvdiffrec's SDF regulariser
(0.2 → 0.01 over the first quarter) and a small colour-smoothness term.

Pass 2 (the mesh's connectivity fixed): the extracted surface is welded, cleaned of floaters
and decimated; where the depth is metric, its vertices are moved onto the exact depth hull
(fusion's Newton refinement) and then optimised, as the paper's second pass does, against
the views' silhouettes and depth with a Laplacian on the displacement (:func:`fit_vertices`).
Its UV layout is either meshforge's view atlas (charts = the faces' projections into the view
that sees them best, texture initialised with the views' own pixels, no resampling) or an
xatlas unwrap (child process, time limit, view-atlas fallback) initialised by baking the
views; the texture is then optimised directly at ``render_res`` against all six views, on
the pixels inside their silhouettes (edge pixels mix in the background), each weighted by
how squarely its view sees the surface (:func:`_facing`). The mesh no longer moves then, so
the views are rasterised once (:class:`.gbuffer.GBuffer`) and each iteration shades only
their covered pixels. Optionally (``iterations_joint``) vertices and texture then move
together under the colour loss, as in the paper (:func:`fit_jointly`). Pass 2's learning
rates decay to 2 %.

Failures: NaN/inf, or a pass-1 loss 100× above its start → MODEL_DID_NOT_CONVERGE with the loss
curve; a pass-1 result that covers less than half of the views' silhouettes →
MODEL_DID_NOT_CONVERGE; out of memory (GPU or host) → one retry at half resolution, then
MODEL_OOM; the time budget → the best result so far, with a warning.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from meshforge.capture import Capture
from meshforge.errors import ModelDidNotConverge
from meshforge.mesh import TexturedMesh

from .backends import make_backend, projection
from .dmtet import TetGrid, laplacian_energy, marching_tets, sdf_regularizer, unique_edges
from .fields import ColourGrid
from .gbuffer import GBuffer, texture_at
from .materials import BakedColour, PbrMaterial


@dataclass
class Views:
    """Targets of all views at one resolution, on the device."""

    clip: torch.Tensor        # (B, 4, 4) world -> clip
    w2c_z: torch.Tensor       # (B, 4) row that gives −planar depth
    images: torch.Tensor      # (B, R, R, 3) in [0, 1]
    masks: torch.Tensor       # (B, R, R, 1) coverage in [0, 1]
    depths: torch.Tensor      # (B, R, R, 1) planar depth, 0 = unknown
    res: int
    eyes: torch.Tensor        # (B, 3) camera centres, world frame


@dataclass
class Run:
    """What the optimisation recorded."""

    curve: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # extra files for the model's folder


def _resize(images: torch.Tensor, res: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, res, res, C): area average (box filter), on the device."""
    if images.shape[1] == res:
        return images
    return torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), size=(res, res), mode="area",
                                           antialias=False).permute(0, 2, 3, 1).contiguous()


def prepare_views(capture: Capture, res: int, device, near: float, far: float) -> Views:
    """The views' cameras and targets at ``res`` × ``res`` (images and masks box-filtered on the
    device, depth sampled at the nearest texel: averaging across a silhouette would invent depths)."""
    clips, rows, depths, eyes = [], [], [], []
    for view in capture.views.values():
        cam = view.camera.scaled(res)
        clips.append(projection(cam, near, far))
        eyes.append(cam.camera_to_world[:3, 3])
        rows.append(cam.world_to_camera[2])
        if view.depth is not None:
            idx = ((np.arange(res) + 0.5) * view.depth.shape[0] / res).astype(int)
            depths.append(view.depth[np.ix_(idx, idx)][..., None])
        else:
            depths.append(np.zeros((res, res, 1), np.float32))

    def t(x):
        return torch.as_tensor(np.stack(x), dtype=torch.float32, device=device)

    # uint8 travels to the device (a quarter of the bytes), converts there
    images = torch.as_tensor(np.stack([v.image[..., :3] for v in capture.views.values()]), device=device)
    masks = torch.as_tensor(np.stack([v.mask for v in capture.views.values()]), device=device)
    images = _resize(images.float() / 255.0, res)
    masks = _resize(masks.float().unsqueeze(-1) / float(masks.max().clamp(min=1)), res)
    return Views(t(clips), t(rows), images, masks, t(depths), res, t(eyes))


def _clip(points: torch.Tensor, views: Views) -> torch.Tensor:
    homo = torch.cat([points, torch.ones_like(points[:, :1])], dim=1)
    return torch.einsum("bij,vj->bvi", views.clip, homo).contiguous()


def _planar_depth(points: torch.Tensor, views: Views) -> torch.Tensor:
    homo = torch.cat([points, torch.ones_like(points[:, :1])], dim=1)
    return (-(views.w2c_z @ homo.T)).unsqueeze(-1).contiguous()  # (B, V, 1)


def _check(loss: torch.Tensor, run: Run, where: str) -> None:
    if not torch.isfinite(loss):
        raise ModelDidNotConverge(model="nvdiffrec", reason=f"the loss became {loss.item()} in {where}",
                                  loss_curve=run.curve[-50:])


#: a pass-1 loss this many times its first value has diverged (a healthy run only goes down from there)
DIVERGED_RISE = 100.0


def _check_rise(run: Run, it: int) -> None:
    """Divergence without NaN: the loss far above where it started (e.g. learning rates near their
    maxima fling the SDF to ±1e6; the loss stays finite, reaching 1e9, while the surface is garbage).
    Checked where the curve is recorded, so it costs no extra device synchronisation."""
    first, last = run.curve[0]["loss"], run.curve[-1]["loss"]
    if len(run.curve) > 1 and last > DIVERGED_RISE * max(first, 1e-6):
        raise ModelDidNotConverge(model="nvdiffrec", reason=f"the pass-1 loss rose from {first:.4g} to {last:.4g} by "
                                                            f"iteration {it} (more than {DIVERGED_RISE:g}× its start); "
                                                            f"lower lr_geometry / lr_texture", loss_curve=run.curve[-50:])


def _out_of_time(run: Run, progress, stage: str, it: int, iterations: int, deadline: float, where: str,
                 unit: str) -> bool:
    """Every 10 iterations of an optimisation loop: report progress, stop on cancel (raises
    Cancelled), and say whether the time budget is spent (with a warning naming where)."""
    if it % 10:
        return False
    progress.update(it / iterations, stage)
    progress.check_cancelled()
    if time.monotonic() > deadline:
        run.warnings.append(f"time budget reached in {where} after {it} of {iterations} {unit}")
        return True
    return False


def render_views(backend, verts, faces, views: Views, colour_fn, background):
    """Composite colour, coverage and depth of a mesh in every view, anti-aliased."""
    clip = _clip(verts, views)
    rast = backend.rasterize(clip, faces, (views.res, views.res))
    covered = (rast[..., 3:4] > 0).float()
    colour = colour_fn(rast, clip) * covered
    depth = backend.interpolate(_planar_depth(verts, views), rast, faces)
    image = colour + background * (1 - covered)
    stack = backend.antialias(torch.cat([image, covered], dim=-1), rast, clip, faces)
    return stack[..., :3], stack[..., 3:4], depth * covered, covered


def _no_colour(rast, clip) -> torch.Tensor:
    """Black: for renders that only need coverage and depth."""
    return torch.zeros(*rast.shape[:3], 3, dtype=rast.dtype, device=rast.device)


def _field_colour(colours: ColourGrid, backend, verts, rast, faces) -> torch.Tensor:
    """The colour field at the surface point of every pixel.

    All pixels go through the field (selecting the covered ones would synchronise the device
    every iteration), but the uncovered ones are sent outside the field's box: interpolation
    puts them all at one point, and the backward pass of trilinear sampling would then
    serialise millions of atomic additions on that one cell (83 % of the GPU time of an
    iteration, measured on spot, until this)."""
    points = backend.interpolate(verts, rast, faces)
    points = torch.where(rast[..., 3:4] > 0, points, colours.outside)
    return colours(points.reshape(-1, 3)).reshape(points.shape)


def pass1(capture: Capture, hull, options: dict, device, backend, box, progress, run: Run, deadline: float):
    from meshforge.plugins.fusion.volume import depth_hull_sdf

    setup_start = time.monotonic()
    lo, hi = box
    extent = float((hi - lo).max())
    cell = extent / options["grid_resolution"]
    lo = lo - 3 * cell
    dims = tuple(int(math.ceil(x)) + 1 for x in (hi + 3 * cell - lo) / cell)  # lattice points
    band = options["band_cells"] * cell
    field, _, _ = depth_hull_sdf(hull, lo, cell, dims, 4 * band)
    grid = TetGrid(lo, cell, field, band)
    sdf0 = grid.values / cell  # in cells: the regulariser reads the SDF as logits
    sdf0[sdf0 == 0] = 1e-3  # an exact zero would put a mesh vertex on a lattice point (degenerate faces)
    run.stats["pass1"] = {"cell": cell, "tets": len(grid), "tet_vertices": len(grid.vertices)}
    positions = torch.as_tensor(grid.vertices, device=device)
    tets = torch.as_tensor(grid.tets, device=device)
    edges = unique_edges(tets)
    sdf = torch.nn.Parameter(torch.as_tensor(np.clip(sdf0, -3, 3), dtype=torch.float32, device=device))
    deform = torch.nn.Parameter(torch.zeros_like(positions))
    colours = ColourGrid(lo, lo + (np.asarray(dims) - 1) * cell, options["colour_grid"], device=device)
    geo_opt = torch.optim.Adam([sdf, deform], lr=options["lr_geometry"])
    tex_opt = torch.optim.Adam(colours.parameters(), lr=options["lr_texture"])
    views = prepare_views(capture, options["train_res"], device, *_near_far(capture, extent))
    gen = torch.Generator(device="cpu").manual_seed(options["seed"])
    iterations = options["iterations_pass1"]
    loop_start = time.monotonic()
    run.stats["pass1"]["setup_s"] = round(loop_start - setup_start, 3)
    done = 0
    for it in range(iterations):
        if _out_of_time(run, progress, "pass 1: geometry and appearance", it, iterations, deadline,
                        "pass 1", "iterations"):
            break
        verts_all = positions + 0.5 * cell * torch.tanh(deform)
        verts, faces = marching_tets(verts_all, sdf, tets)
        faces = faces.int()
        bg = torch.rand((len(views.images), 1, 1, 3), generator=gen).to(device)
        image, cover, depth, covered = render_views(backend, verts, faces, views,
                                                    lambda rast, clip: _field_colour(colours, backend, verts, rast,
                                                                                     faces), bg)
        target = views.images * views.masks + bg * (1 - views.masks)
        loss_colour = (image - target).abs().mean()
        loss_mask = (cover - views.masks).abs().mean()
        loss_depth = depth_loss(depth, covered, views, 0.01 * extent, extent)  # tolerant: the grid is coarse
        t = it / max(iterations - 1, 1)
        w_sdf = 0.2 - (0.2 - 0.01) * min(t / 0.25, 1.0)
        loss = (loss_colour + options["mask_weight"] * loss_mask + options["depth_weight"] * loss_depth
                + w_sdf * sdf_regularizer(sdf, edges) + 0.03 * colours.smoothness()
                + options["laplacian_weight"] * laplacian_energy(verts, faces) / cell ** 2)
        if it % 10 == 0 or it == iterations - 1:  # checking every iteration would synchronise the device
            _check(loss, run, f"pass 1, iteration {it}")
        geo_opt.zero_grad(set_to_none=True)
        tex_opt.zero_grad(set_to_none=True)
        loss.backward()
        geo_opt.step()
        tex_opt.step()
        done = it + 1
        if it % 10 == 0 or it == iterations - 1:
            run.curve.append({"pass": 1, "it": it, "loss": round(loss.item(), 6), "colour": round(loss_colour.item(), 6),
                              "mask": round(loss_mask.item(), 6), "depth": round(loss_depth.item(), 6)})
            _check_rise(run, it)
    run.stats["pass1"]["iterations"] = done
    run.stats["pass1"]["ms_per_iteration"] = round(1000 * (time.monotonic() - loop_start) / max(done, 1), 1)
    with torch.no_grad():
        verts, faces = marching_tets(positions + 0.5 * cell * torch.tanh(deform), sdf, tets)
        _, cover, _, _ = render_views(backend, verts, faces.int(), views, _no_colour, 0.0)
        inter = ((cover > 0.5) & (views.masks > 0.5)).float().sum()
        union = ((cover > 0.5) | (views.masks > 0.5)).float().sum()
        iou = float(inter / union.clamp(min=1))
    run.stats["pass1"]["silhouette_iou"] = round(iou, 4)
    if iou < 0.5:
        raise ModelDidNotConverge(model="nvdiffrec", reason=f"after pass 1 the surface covers the views' silhouettes "
                                                            f"with IoU {iou:.2f} (expected > 0.9)",
                                  loss_curve=run.curve[-50:])
    return verts.detach().cpu().numpy(), faces.cpu().numpy().astype(np.int32)


def _near_far(capture: Capture, extent: float) -> tuple[float, float]:
    d = [float(np.linalg.norm(v.camera.position)) for v in capture.views.values()]
    return max(0.01, min(d) - 2 * extent), max(d) + 2 * extent


#: learning rates of pass 2 decay exponentially to this fraction of their start: Adam's steps
#: stay near the learning rate however small the error (an L1 gradient keeps its size), so a
#: constant rate leaves texels and vertices jittering by about that much at the end
LR_FINAL_FRACTION = 0.02


def _decay(optimizer, it: int, iterations: int) -> None:
    """Each parameter group's learning rate, from the one it was created with down to 2 %."""
    for group in optimizer.param_groups:
        group.setdefault("start_lr", group["lr"])
        group["lr"] = group["start_lr"] * LR_FINAL_FRACTION ** (it / max(iterations - 1, 1))


def depth_loss(depth, covered, views: Views, beta, unit: float, outlier: float = math.inf) -> torch.Tensor:
    """Huber difference of rendered and captured planar depth (quadratic below ``beta``, a float or
    a (B, 1, 1, 1) tensor of one per view), in units of ``unit``, over the pixels where both exist
    and differ by less than ``outlier``."""
    err = (depth - views.depths).abs()
    # weights, not a selection: no synchronisation
    valid = ((views.depths > 0) & (covered > 0) & (err < outlier)).float()
    huber = torch.where(err < beta, 0.5 * err ** 2 / beta, err - 0.5 * beta)
    return (huber * valid).sum() / (unit * valid.sum().clamp(min=1))


def _depth_beta(capture: Capture, cell: float, device) -> torch.Tensor:
    """Per view (B, 1, 1, 1), where the depth loss turns from quadratic to linear: a tenth of a
    cell or one depth level, whichever is larger."""
    steps = [max(0.1 * cell, float(v.depth_step)) for v in capture.views.values()]
    return torch.as_tensor(steps, dtype=torch.float32, device=device).view(-1, 1, 1, 1)


def _held(cover, depth, covered, offset, faces, views: Views, beta, cell: float, options: dict):
    """What holds pass 2's moving vertices: coverage against the silhouettes, depth (outliers
    beyond two cells left out, see :func:`fit_vertices`) and the Laplacian of the offsets.
    Returns the weighted sum, and the coverage and depth terms for the loss curve."""
    loss_mask = (cover - views.masks).abs().mean()
    loss_depth = depth_loss(depth, covered, views, beta, cell, outlier=2 * cell)
    total = (options["mask_weight"] * loss_mask + options["depth_weight"] * loss_depth
             + options["laplacian_weight_vertices"] * laplacian_energy(offset, faces))
    return total, loss_mask, loss_depth


def _move_vertices(opt, iterations: int, step, label: str, stage: str, kind: str, progress, run: Run,
                   deadline: float, after_step=None) -> int:
    """The loop of pass 2's stages that move vertices (the vertex stage, the joint stage).
    ``step()`` renders and returns the loss and its terms to record; every 10 iterations the
    loss is checked (messages name the ``kind`` of iteration) and recorded in the curve under
    ``stage``; ``label`` is the progress text. Returns the iterations done."""
    done = 0
    for it in range(iterations):
        if _out_of_time(run, progress, label, it, iterations, deadline, "pass 2", f"{kind} iterations"):
            break
        _decay(opt, it, iterations)
        loss, terms = step()
        if it % 10 == 0 or it == iterations - 1:
            _check(loss, run, f"pass 2, {kind} iteration {it}")
            run.curve.append({"pass": 2, "stage": stage, "it": it, "loss": round(loss.item(), 6),
                              **{name: round(term.item(), 6) for name, term in terms.items()}})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        done = it + 1
    return done


def _moves(offset: torch.Tensor) -> dict:
    moved = offset.detach().norm(dim=1).cpu().numpy()  # in cells
    return {"mean_move_cells": round(float(moved.mean()), 4), "max_move_cells": round(float(moved.max(initial=0)), 4)}


def fit_vertices(vertices: np.ndarray, faces: np.ndarray, cell: float, capture: Capture, views: Views,
                 options: dict, device, backend, progress, run: Run, deadline: float) -> np.ndarray:
    """The paper's second pass moves the mesh's vertices too: here against the views' silhouettes
    (anti-aliased coverage) and calibrated depth, with an umbrella Laplacian on the displacement
    (the surface keeps its shape, noise does not enter). Depth errors are measured in cells,
    quadratic below a tenth of a cell or one depth level, whichever is larger, so that 8-bit
    depth pulls the surface onto its levels no harder than the Laplacian holds it smooth.
    Pixels whose depths differ by more than two cells are left out: after pass 1 and the
    refinement the surface is within a fraction of a cell, so such a pixel straddles an
    occluding contour (the render sees the front, the capture the back), and its gradient
    would push the front surface away along the ray."""
    iterations = options["iterations_vertices"]
    start = torch.as_tensor(vertices, device=device)
    tri = torch.as_tensor(faces, dtype=torch.int32, device=device)
    beta = _depth_beta(capture, cell, device)
    offset = torch.nn.Parameter(torch.zeros_like(start))  # in cells
    opt = torch.optim.Adam([offset], lr=options["lr_vertices"])

    def step():
        _, cover, depth, covered = render_views(backend, start + cell * offset, tri, views, _no_colour, 0.0)
        loss, loss_mask, loss_depth = _held(cover, depth, covered, offset, tri, views, beta, cell, options)
        return loss, {"mask": loss_mask, "depth": loss_depth}

    done = _move_vertices(opt, iterations, step, "pass 2: vertices", "vertices", "vertex", progress, run, deadline)
    run.stats.setdefault("pass2", {})["vertices"] = {"iterations": done, **_moves(offset)}
    return (start + cell * offset).detach().cpu().numpy()


def vertex_pass_wanted(capture: Capture, options: dict) -> bool:
    """``vertex_pass`` "auto" moves vertices onto the depth only when it is metric: estimated depth
    is neither precise to a fraction of a cell nor registered with the photographs that well (on
    the real sneaker, refinement onto its depth hull cost 1.9 dB of fit-view PSNR at full size)."""
    if options["vertex_pass"] == "auto":
        return capture.has_depth and not capture.depth_estimated
    return options["vertex_pass"] == "on"


def pass2(vertices: np.ndarray, faces: np.ndarray, cell: float, hull, capture: Capture, options: dict, device,
          backend, extent: float, progress, run: Run, deadline: float) -> TexturedMesh:
    from meshforge.plugins.fusion.surface import decimate, remove_floaters
    from meshforge.texturing import bake_uv_texture, bake_view_atlas
    from meshforge.unwrap import unwrap

    progress.update(0.0, "pass 2: mesh")
    vertices, faces = _clean(vertices, faces, 0.05 * cell)
    vertices, faces, floaters = remove_floaters(vertices, faces, 0.01)
    vertices, faces = decimate(vertices, faces, options["target_faces"])
    stats = run.stats.setdefault("pass2", {})
    stats.update({"floaters_removed": floaters, "layout": options["uv_layout"]})
    views = prepare_views(capture, options["render_res"], device, *_near_far(capture, extent))
    if vertex_pass_wanted(capture, options):
        # fusion's Newton steps onto the depth hull first: marching tets cuts corners by up to a cell
        vertices, stats["refine"] = hull.refine(vertices, cell)
        if options["iterations_vertices"]:
            vertices = fit_vertices(vertices, faces, cell, capture, views, options, device, backend,
                                    progress.slice(0.0, 0.3), run, deadline)
    else:
        stats["vertices"] = {"iterations": 0, "skipped": "the capture's depth is estimated or missing (vertex_pass "
                                                         "'auto' moves vertices on metric depth only)"}
    progress.update(0.3, "pass 2: unwrapping")
    size = options["texture_size"]
    mesh = None
    if options["uv_layout"] == "xatlas":
        mesh, unwrap_stats = unwrap(vertices, faces, time_limit_s=options["unwrap_time_limit_s"],
                                    texture_size=size, max_faces=options["unwrap_max_faces"])
        stats.update(unwrap_stats)
        if mesh is None:
            run.warnings.append(f"xatlas failed ({unwrap_stats.get('error')}); used the view atlas layout instead")
        else:
            mesh.texture, bake_stats = bake_uv_texture(mesh, capture, size=size)
            stats.update(bake_stats)
    if mesh is None:
        mesh, atlas_stats = bake_view_atlas(vertices, faces, capture, max_size=size)
        stats.update(atlas_stats)
    progress.update(0.4, "pass 2: texture")
    verts = torch.as_tensor(mesh.vertices, device=device)
    tri = torch.as_tensor(mesh.faces, dtype=torch.int32, device=device)
    uv = torch.as_tensor(np.stack([mesh.uv[:, 0], 1.0 - mesh.uv[:, 1]], 1), device=device)  # v down for sampling
    start = torch.as_tensor(mesh.texture, dtype=torch.float32, device=device)[None] / 255.0
    gbuffer = GBuffer(backend, verts, tri, uv, _clip(verts, views), views.res)
    if options["appearance"] == "pbr":
        material = PbrMaterial(start, gbuffer, views.eyes, options["light_resolution"])
    else:
        material = BakedColour(start, gbuffer)
    opt = torch.optim.Adam(material.parameters(), lr=options["lr_texture_pass2"])
    weight = _interior(views.masks, max(1, views.res // 512)) * gbuffer.image(
        _facing(gbuffer, views.eyes, options["texture_view_weight"]))
    iterations = options["iterations_pass2"]
    texture_progress = progress.slice(0.4, 0.9 if options["iterations_joint"] else 1.0)
    loop_start = time.monotonic()
    done = 0
    for it in range(iterations):
        if _out_of_time(run, texture_progress, "pass 2: texture", it, iterations, deadline, "pass 2", "iterations"):
            break
        _decay(opt, it, iterations)
        error = (gbuffer.composite(material.colour()) - views.images) * weight
        loss = error.abs().sum() / (3 * weight.sum()).clamp(min=1) + material.regulariser()
        if it % 10 == 0 or it == iterations - 1:
            _check(loss, run, f"pass 2, iteration {it}")
            # PSNR of the weighted pixels, before this step: for "pbr", the look under its own light
            mse = (error.detach() ** 2).sum() / (3 * (weight ** 2).sum()).clamp(min=1)
            stats["texture_fit_psnr"] = round(-10 * math.log10(max(mse.item(), 1e-12)), 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        material.clamp_()
        done = it + 1
        if it % 10 == 0 or it == iterations - 1:
            run.curve.append({"pass": 2, "stage": "texture", "it": it, "loss": round(loss.item(), 6)})
    stats["texture_iterations"] = done
    stats["texture_ms_per_iteration"] = round(1000 * (time.monotonic() - loop_start) / max(done, 1), 1)
    if options["iterations_joint"]:
        skipped = ("appearance pbr: its lookups are precomputed on the fixed mesh"
                   if not isinstance(material, BakedColour) else
                   None if vertex_pass_wanted(capture, options) else "the vertices stay put (vertex_pass)")
        if skipped:
            stats["joint"] = {"iterations": 0, "skipped": skipped}
        else:
            mesh.vertices = fit_jointly(mesh, material, uv, cell, capture, views, weight, options, device,
                                        backend, progress.slice(0.9, 1.0), run, deadline)
    run.files, material_stats = material.finish(mesh)
    stats["appearance"] = {"mode": options["appearance"], **material_stats}
    return mesh


def fit_jointly(mesh: TexturedMesh, material: BakedColour, uv: torch.Tensor, cell: float, capture: Capture,
                views: Views, weight: torch.Tensor, options: dict, device, backend, progress, run: Run,
                deadline: float) -> np.ndarray:
    """The paper's second pass proper: vertices and texture together under the colour loss.

    The vertex stage places the surface as well as coverage and depth can (0.02 % of the
    object's size at the 90th percentile on the H200), and the texture stage then fits each
    view's texels to that surface; what is left off shows as parallax: one view's texels seen
    from another land beside their place. Here colour moves the vertices too, through the
    rasteriser's barycentrics (and, on nvdiffrast, anti-aliased silhouettes), still held by
    coverage, depth and the Laplacian of the offsets, while the texture keeps learning. The
    view atlas splits vertices along its seams, so the offsets live on the welded vertices and
    the surface stays closed. Returns the mesh's (split) vertices."""
    iterations = options["iterations_joint"]
    welded, index = np.unique(mesh.vertices, axis=0, return_inverse=True)
    index = torch.as_tensor(index.reshape(-1), device=device)
    tri = torch.as_tensor(mesh.faces, dtype=torch.int32, device=device)
    welded_tri = index[tri.long()].int()
    start = torch.as_tensor(welded, dtype=torch.float32, device=device)
    beta = _depth_beta(capture, cell, device)
    offset = torch.nn.Parameter(torch.zeros_like(start))  # in cells
    opt = torch.optim.Adam([{"params": [offset], "lr": options["lr_joint"]},
                            {"params": [material.texture], "lr": options["lr_texture_pass2"]}])

    def colour(rast, clip):  # the texture at the covered pixels (see texture_at), black elsewhere
        pixels = torch.nonzero(rast[..., 3].reshape(-1) > 0, as_tuple=True)[0]
        coords = backend.interpolate(uv, rast, tri).reshape(-1, 2)[pixels]
        out = torch.zeros(math.prod(rast.shape[:3]), 3, device=rast.device)
        return out.index_put((pixels,), texture_at(backend, material.texture, coords)).reshape(*rast.shape[:3], 3)

    def step():
        image, cover, depth, covered = render_views(backend, (start + cell * offset)[index], tri, views, colour, 0.0)
        loss_colour = ((image - views.images) * weight).abs().sum() / (3 * weight.sum()).clamp(min=1)
        held, _, loss_depth = _held(cover, depth, covered, offset, welded_tri, views, beta, cell, options)
        return loss_colour + held, {"colour": loss_colour, "depth": loss_depth}

    done = _move_vertices(opt, iterations, step, "pass 2: vertices and texture", "joint", "joint", progress, run,
                          deadline, after_step=material.clamp_)
    run.stats.setdefault("pass2", {})["joint"] = {"iterations": done, **_moves(offset)}
    return (start + cell * offset)[index].detach().cpu().numpy()


def _facing(gbuffer: GBuffer, eyes: torch.Tensor, power: float) -> torch.Tensor:
    """Per covered pixel (N, 1), the cosine between its face's normal and the ray to its camera,
    raised to ``power`` (1.0 everywhere for power 0).

    A pixel that sees the surface at a grazing angle covers a long strip of it, and a sliver of
    a cell of depth error moves that strip along the surface by several texels: with uniform
    weights such pixels smear texels that a frontal view sees sharply (bob's held-out PSNR then
    swung by 3 dB with the seed of pass 1)."""
    if power == 0:
        return torch.ones(len(gbuffer), 1, device=eyes.device)
    tri = gbuffer.vertices[gbuffer.faces.long()[gbuffer.face]]  # (N, 3, 3)
    normal = torch.nn.functional.normalize(torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1), dim=1)
    to_eye = torch.nn.functional.normalize(eyes[gbuffer.view] - tri.mean(dim=1), dim=1)
    return (to_eye * normal).sum(dim=1, keepdim=True).clamp(min=0) ** power


def _interior(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Where the views' silhouettes are solid at least ``pixels`` from their edge, as 0/1.

    Pass 2 fits texels to these pixels only: silhouette pixels mix object and background
    and, with the mesh fixed, pull the texels behind them towards the background colour
    (speckles seen from other angles)."""
    outside = (masks < 0.5).float().permute(0, 3, 1, 2)
    grown = torch.nn.functional.max_pool2d(outside, 2 * pixels + 1, stride=1, padding=pixels)
    return (1.0 - grown).permute(0, 2, 3, 1).contiguous()


def _clean(vertices: np.ndarray, faces: np.ndarray, weld: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices closer than about ``weld`` and drop the faces that collapse.

    Marching tets puts several vertices within a hair of a lattice point whenever the SDF
    there is near zero, and the optimisation drives many there: the resulting slivers are
    invisible but stall quadric decimation (22 s instead of 0.1 s on spot at 5 % of a cell).
    """
    from meshforge.plugins.fusion.surface import compact

    key = np.round(vertices / weld).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    v, f, _ = compact(vertices[first], faces[keep].astype(np.int32))
    return v, f


def reconstruct(capture: Capture, options: dict, progress) -> tuple[TexturedMesh, Run]:
    """Both passes on ``capture`` with resolved ``options`` (see plugin.py for their meaning)."""
    from meshforge.plugins.fusion.fuse import object_box
    from meshforge.plugins.fusion.volume import HullField

    run = Run()
    torch.manual_seed(options["seed"])
    device = torch.device(options["device"])
    backend = make_backend(options["backend"], device)
    start = time.monotonic()
    deadline = start + options["time_budget_s"]
    lo, hi = object_box(capture)
    extent = float((hi - lo).max())
    hull = HullField.of_capture(capture)  # fusion's field: pass 1 starts from it, pass 2 refines onto it
    verts, faces = pass1(capture, hull, options, device, backend, (lo, hi), progress.slice(0.0, 0.6), run,
                         start + 0.6 * options["time_budget_s"])
    run.timings["pass1"] = round(time.monotonic() - start, 3)
    t = time.monotonic()
    mesh = pass2(verts, faces, run.stats["pass1"]["cell"], hull, capture, options, device, backend, extent,
                 progress.slice(0.6, 1.0), run, deadline)
    run.timings["pass2"] = round(time.monotonic() - t, 3)
    run.stats["backend"] = backend.name
    run.stats["device"] = str(device)
    return mesh, run
