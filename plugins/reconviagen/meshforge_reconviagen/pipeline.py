"""ReconViaGen on a capture, stage by stage (ReconViaGen's ``TrellisVGGTTo3DPipeline.run``, guide §1).

views → VGGT aggregator + DINOv2 → sparse-structure condition → sparse-structure flow (noise
from a CPU generator seeded once, as the reference) → occupancy decoder → voxels → SLat
condition (one per view) → SLat flow → de-normalised latents → mesh decoder → surface
extraction → registration into the capture's world frame → decimation, UV atlas, colour.

:class:`Models` holds the loaded networks. With ``offload`` (the low-memory retry) they wait
on the CPU and visit the GPU one stage at a time.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from meshforge.errors import ReconstructionError
from meshforge.mesh import TexturedMesh

from . import networks
from .extraction import drop_inner_shells, extract
from .frame import fit_to_box, register
from .manifest import Manifest
from .networks.sparse import SparseTensor
from .networks.vit import imagenet_normalise
from .sampler import SamplerSettings, sample
from .texture import texture_mesh
from .views import prepare_views
from .weights import load_network, provenance

RANDOM_WARNING = ("RANDOM WEIGHTS — NOT A RECONSTRUCTION: this mesh was made by networks with random weights "
                  "(a test or benchmark set-up, marked in the weights files); its shape and colours mean nothing")
TEST_ARCHITECTURE_WARNING = "TEST ARCHITECTURE: the networks are the tiny test configuration, not the published model"


@dataclass
class Models:
    """The loaded networks of one manifest.

    Attributes:
        manifest: what was loaded.
        nets: network name (``"ss_flow"``, …) -> module, in eval mode without gradients.
        device: where the computation runs.
        fp16: whether the torsos run in float16 (CUDA only).
        provenance: weights file -> ``"random"`` or ``"checkpoint"``.
        offload: networks live on the CPU and move to ``device`` for their stage.
    """

    manifest: Manifest
    nets: dict
    device: torch.device
    fp16: bool
    provenance: dict
    offload: bool = False

    @property
    def random(self) -> bool:
        return any(p == "random" for p in self.provenance.values())

    @contextlib.contextmanager
    def use(self, *names: str):
        """The named networks, on the compute device for the duration of the block."""
        if self.offload:
            for n in names:
                self.nets[n].to(self.device)
        try:
            yield [self.nets[n] for n in names]
        finally:
            if self.offload:
                for n in names:
                    self.nets[n].to("cpu")
                free_memory()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_models(manifest: Manifest, directory: str | Path, device: torch.device, offload: bool = False,
                fp16: bool | None = None) -> Models:
    """Every network of ``manifest`` from ``directory`` (checked beforehand), float16 torsos on CUDA.

    ``fp16`` overrides the choice (default: float16 torsos exactly when ``device`` is CUDA). The
    tests set it on the CPU to run the very conversion the CUDA path uses, so that a float32
    tensor meeting a float16 layer fails there and not first on the GPU.
    """
    fp16 = device.type == "cuda" if fp16 is None else bool(fp16)
    home = torch.device("cpu") if offload else device
    nets, origin = {}, {}
    for spec in manifest.files:
        path = Path(directory) / spec.file
        nets[spec.network] = load_network(lambda s=spec: networks.build(s.network, s.config, fp16), path, spec.prefix,
                                          home)
        origin[spec.file] = provenance(path)
    return Models(manifest, nets, device, fp16, origin, offload)


@dataclass
class Run:
    """What a run produced besides the mesh."""

    estimates: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


class _Clock:
    def __init__(self, device: torch.device, timings: dict):
        self.device, self.timings = device, timings

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - start, 3)


def sampler_settings(options: dict, stage: str, sigma_min: float) -> SamplerSettings:
    return SamplerSettings(steps=options[f"{stage}_steps"], cfg_strength=options[f"{stage}_cfg_strength"],
                           cfg_interval=(options["cfg_interval_start"], options["cfg_interval_end"]),
                           rescale_t=options[f"{stage}_rescale_t"], guidance=options["guidance"],
                           guidance_rescale=options["guidance_rescale"], sigma_min=sigma_min)


@torch.inference_mode()
def reconstruct(models: Models, capture, options: dict, progress, window_tokens: int = 1 << 20) -> tuple[TexturedMesh, Run]:
    """The textured mesh of ``capture`` in its world frame, and the run's estimates, timings and warnings.

    ``window_tokens`` bounds the padded rows of one windowed-attention batch in the mesh decoder (memory).
    """
    run = Run()
    clock = _Clock(models.device, run.timings)
    dev, manifest = models.device, models.manifest
    cfg = {f.network: f.config for f in manifest.files}
    if models.random:
        run.warnings.append(RANDOM_WARNING)
    if manifest.is_test_architecture:
        run.warnings.append(TEST_ARCHITECTURE_WARNING)
    if not capture.has_depth:
        raise ReconstructionError(model="reconviagen", reason="the capture has no depth maps, which place the result "
                                                              "in the capture's frame")
    sigma_min = manifest.pipeline.get("sigma_min", 1e-5)
    generator = torch.Generator().manual_seed(int(options["seed"]))  # CPU stream, as the reference's global seed

    # 1. conditioning: VGGT tokens and DINOv2 tokens of the cropped views
    progress.update(0.0, "preparing the views")
    with clock("views"):
        views = prepare_views(capture, cfg["dinov2"]["img_size"])
        images = views.images.to(dev)
    progress.check_cancelled()
    progress.update(0.02, "multi-view features (VGGT, DINOv2)")
    layers = sorted(set(cfg["ss_condition"]["intermediate_layer_idx"]) | set(cfg["slat_condition"]["intermediate_layer_idx"]))
    with clock("features"), models.use("vggt_aggregator", "dinov2") as (vggt, dino):
        aggregated = vggt(images, keep=layers)
        prenorm, _ = dino(imagenet_normalise(images))
        image_cond = F.layer_norm(prenorm, prenorm.shape[-1:])[None]  # (1, n, tokens, C)
    with clock("conditions"), models.use("ss_condition", "slat_condition") as (ss_condition, slat_condition):
        ss_cond = ss_condition(aggregated, image_cond[:, :, cfg["ss_condition"]["patch_start_idx"]:])
        slat_cond = slat_condition(aggregated, image_cond)
    del aggregated, image_cond, prenorm
    progress.check_cancelled()

    # 2. sparse structure: flow sampling, then occupancy
    progress.update(0.1, "sampling the sparse structure")
    res = cfg["ss_flow"]["resolution"]
    noise = torch.randn(1, cfg["ss_flow"]["in_channels"], res, res, res, generator=generator).to(dev)
    with clock("structure_sampling"), models.use("ss_flow") as (ss_flow,):
        def ss_velocity(x, t, cond):
            return ss_flow(x, torch.full((x.shape[0],), 1000 * t, device=dev, dtype=torch.float32), cond)

        latent = sample(ss_velocity, noise, ss_cond, torch.zeros_like(ss_cond),
                        sampler_settings(options, "ss", sigma_min), on_step=_stepper(progress, 0.1, 0.35))
    with clock("structure_decoding"), models.use("ss_decoder") as (ss_decoder,):
        logits = ss_decoder(latent)[0, 0]
    coords = _occupied(logits, int(options["max_voxels"]), run)
    del logits, latent, ss_cond
    progress.check_cancelled()

    # 3. structured latent: one 8-channel latent per voxel
    progress.update(0.4, f"sampling the structured latent ({len(coords)} voxels)")
    noise = torch.randn(len(coords), cfg["slat_flow"]["in_channels"], generator=generator).to(dev)
    voxels = SparseTensor(coords, noise)
    with clock("latent_sampling"), models.use("slat_flow") as (slat_flow,):
        def slat_velocity(feats, t, cond):
            return slat_flow(voxels.replace(feats), torch.full((1,), 1000 * t, device=dev, dtype=torch.float32),
                             cond).feats

        feats = sample(slat_velocity, noise, slat_cond, [torch.zeros_like(c) for c in slat_cond],
                       sampler_settings(options, "slat", sigma_min), on_step=_stepper(progress, 0.4, 0.65))
    norm = manifest.pipeline["slat_normalization"]
    feats = feats * torch.tensor(norm["std"], device=dev) + torch.tensor(norm["mean"], device=dev)
    del slat_cond
    progress.check_cancelled()

    # 4. surface in the normalised frame
    progress.update(0.68, "decoding the surface")
    with clock("mesh_decoding"), models.use("mesh_decoder") as (decoder,):
        cubes = decoder(SparseTensor(coords, feats), max_window_tokens=window_tokens)
    with clock("extraction"):
        surface = extract(cubes.coords[:, 1:], cubes.feats, decoder.output_resolution)
        vertices = surface.vertices.cpu().numpy().astype(np.float64)
        faces = surface.faces.cpu().numpy()
        colours = surface.colors.cpu().numpy()
        faces, shells = drop_inner_shells(vertices, faces)
    del cubes, surface
    free_memory()
    run.estimates.update({"voxels": int(len(coords)), "surface": shells,
                          "grid_resolution": decoder.output_resolution})
    if len(faces) == 0:
        raise ReconstructionError(model="reconviagen", reason="the generated structure has no outer surface")
    progress.check_cancelled()

    # 5. into the capture's world frame
    progress.update(0.75, "placing the result in the capture's frame")
    with clock("registration"):
        points = TexturedMesh(vertices, faces).sample_surface(6000, seed=int(options["seed"]))
        target = capture.surface_points(per_view=3000, seed=int(options["seed"]))
        fit = (register if options["frame"] == "register" else fit_to_box)(points, target, **(
            {"seed": int(options["seed"])} if options["frame"] == "register" else {}))
        world = fit.apply(vertices)
    run.estimates["frame"] = {"method": options["frame"], **fit.to_dict()}
    if fit.residual > 0.05:
        run.warnings.append(f"the generated shape fits the capture's depth poorly: mean distance "
                            f"{100 * fit.residual:.1f} % of the object's size")
    progress.check_cancelled()

    # 6. decimate, unwrap, colour
    progress.update(0.8, "texturing")
    with clock("texturing"):
        mesh, tex_stats, tex_warnings = texture_mesh(world, faces, colours, capture, source=options["texture"],
                                                     target_faces=int(options["target_faces"]),
                                                     texture_size=int(options["texture_size"]),
                                                     unwrap_time_limit_s=float(options["unwrap_time_limit_s"]))
    run.warnings += tex_warnings
    run.estimates["texture"] = tex_stats
    run.estimates["weights"] = {"manifest": manifest.name, "provenance": models.provenance, "fp16": models.fp16,
                                "device": str(dev), "offload": models.offload}
    run.estimates["views"] = {"order": views.names, "crops": views.crops}
    mesh.metadata = {"generator": "meshforge-reconviagen", "manifest": manifest.name,
                     "weights": "RANDOM (test/benchmark; not a reconstruction)" if models.random else "checkpoint"}
    if models.random or manifest.is_test_architecture:
        mesh.metadata["warning"] = " / ".join(w for w in run.warnings if w in (RANDOM_WARNING, TEST_ARCHITECTURE_WARNING))
    progress.update(1.0, "done")
    return mesh, run


def _stepper(progress, lo: float, hi: float):
    def on_step(i: int, steps: int) -> None:
        progress.update(lo + (hi - lo) * i / steps)
        progress.check_cancelled()

    return on_step


def _occupied(logits: torch.Tensor, max_voxels: int, run: Run) -> torch.Tensor:
    """(N, 4) int32 [0, x, y, z] where the occupancy logit is positive, in lexicographic order.

    TRELLIS was trained on at most 32768 voxels; above ``max_voxels`` the most confident are kept.
    """
    coords = torch.argwhere(logits > 0)
    if len(coords) == 0:
        raise ReconstructionError(model="reconviagen", reason="the sparse-structure decoder found no occupied voxel")
    if max_voxels and len(coords) > max_voxels:
        values = logits[coords[:, 0], coords[:, 1], coords[:, 2]].float()
        # most confident first; equal logits go to the voxel nearer the grid's centre (deterministic)
        centre = (logits.shape[0] - 1) / 2
        by_distance = torch.argsort(((coords.float() - centre) ** 2).sum(dim=1), stable=True)
        by_value = by_distance[torch.argsort(values[by_distance], descending=True, stable=True)]
        keep = torch.sort(by_value[:max_voxels]).values  # stay in lexicographic order
        run.warnings.append(f"the sparse structure had {len(coords)} voxels; kept the {max_voxels} most confident")
        coords = coords[keep]
    return torch.cat([torch.zeros_like(coords[:, :1]), coords], dim=1).int()
