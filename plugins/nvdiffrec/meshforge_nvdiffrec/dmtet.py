"""Deep marching tetrahedra (DMTet, Shen et al. 2021, as used by nvdiffrec): a differentiable surface.

The shape is a signed distance stored at the vertices of a tetrahedral grid (negative
inside) plus a small offset per vertex; every iteration the zero level set is extracted
as a triangle mesh whose vertices move smoothly with both, so image losses reach them.

- **Grid**: the Kuhn (Freudenthal) split of a cube lattice: each cube becomes the 6
  tetrahedra that follow monotone paths from corner (0,0,0) to (1,1,1); together they tile
  space without overlap. Half of them come out with negative orientation and get two
  indices swapped, so every tet is positively oriented (the winding of the extracted
  triangles depends on it). Only the cubes near the initial surface are split (a narrow
  band): the shape starts from the fusion result and refines, it does not need the whole box.
- **Marching tets**: the 16 corner-occupancy cases are enumerated in code: one or three
  inside corners give one triangle over the three edges that cross the surface; two give a
  quad over four edges, split in two triangles. Crossing edges are shared between tets
  (unique edge ids), so the mesh is welded; each vertex sits at the linear zero crossing
  of the SDF along its edge. Triangles are oriented by a geometric test (normal towards the
  outside corners), which needs no hand-written winding table.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

#: the six edges of a tetrahedron, by corner pairs
TET_EDGES = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])


def _kuhn_offsets() -> np.ndarray:
    """(6, 4, 3) corner offsets of the six Kuhn tets of the unit cube, each positively oriented
    (det[v1 − v0, v2 − v0, v3 − v0] > 0; odd permutations get two corners swapped)."""
    tets = []
    for perm in itertools.permutations(range(3)):
        corners = [np.zeros(3, np.int64)]
        for axis in perm:
            step = corners[-1].copy()
            step[axis] += 1
            corners.append(step)
        c = np.array(corners)
        if np.linalg.det((c[1:] - c[0]).astype(float)) < 0:
            c = c[[0, 2, 1, 3]]
        tets.append(c)
    return np.array(tets)


KUHN = _kuhn_offsets()


def kuhn_tets(cubes: np.ndarray, lattice: tuple[int, int, int]) -> np.ndarray:
    """The six positively oriented tets of each cube -> (6·C, 4) flat lattice-point indices.

    ``cubes``: (C, 3) lower-corner lattice coordinates; ``lattice``: lattice points along x, y, z
    (cubes + 1), flattened in C order.
    """
    corners = cubes[:, None, None, :] + KUHN[None]  # (C, 6, 4, 3)
    ny, nz = lattice[1], lattice[2]
    flat = (corners[..., 0] * ny + corners[..., 1]) * nz + corners[..., 2]
    return flat.reshape(-1, 4)


def _case_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each of the 16 occupancy codes: number of triangles, and the edges (indices into
    TET_EDGES) of up to two triangles, in an order that forms a proper quad for two."""
    counts = np.zeros(16, np.int64)
    table = np.full((16, 6), -1, np.int64)
    for code in range(16):
        inside = {i for i in range(4) if code >> i & 1}
        crossing = [e for e, (a, b) in enumerate(TET_EDGES) if (a in inside) != (b in inside)]
        if len(crossing) == 3:
            counts[code] = 1
            table[code, :3] = crossing
        elif len(crossing) == 4:
            # walk the quad: consecutive edges share a corner
            order = [crossing[0]]
            rest = crossing[1:]
            while rest:
                last = set(TET_EDGES[order[-1]])
                nxt = next(e for e in rest if set(TET_EDGES[e]) & last)
                order.append(nxt)
                rest.remove(nxt)
            counts[code] = 2
            table[code] = [order[0], order[1], order[2], order[0], order[2], order[3]]
    return counts, table


TRIANGLE_COUNT, TRIANGLE_TABLE = _case_tables()


class TetGrid:
    """The Kuhn tets of the cubes of a lattice near a surface, in world coordinates.

    Parameters:
        origin: (3,) world position of lattice point (0, 0, 0).
        cell: lattice spacing, world units.
        field: (nx, ny, nz) signed distance at the lattice points (world units, negative inside).
        band: keep the cubes with a corner closer than this to the surface.

    ``vertices`` (V, 3) float32 and ``values`` (V,) float32 (the field there) hold the lattice
    points the kept tets use; ``tets`` (T, 4) int64 index them.
    """

    def __init__(self, origin: np.ndarray, cell: float, field: np.ndarray, band: float):
        near = np.abs(field) < band
        # a cube is kept when any of its eight corners is near
        any_corner = np.zeros(tuple(n - 1 for n in field.shape), bool)
        for dx, dy, dz in itertools.product((0, 1), repeat=3):
            any_corner |= near[dx:dx + any_corner.shape[0], dy:dy + any_corner.shape[1], dz:dz + any_corner.shape[2]]
        tets = kuhn_tets(np.argwhere(any_corner), field.shape)
        used, inverse = np.unique(tets, return_inverse=True)
        lattice = np.stack(np.unravel_index(used, field.shape), axis=1)
        self.vertices = (np.asarray(origin, np.float64) + lattice * cell).astype(np.float32)
        self.values = field.reshape(-1)[used].astype(np.float32)
        self.tets = inverse.reshape(-1, 4).astype(np.int64)
        self.cell = float(cell)

    def __len__(self) -> int:
        return len(self.tets)


def marching_tets(positions: torch.Tensor, sdf: torch.Tensor, tets: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero level set of ``sdf`` (negative inside) on a tet mesh -> (vertices (N, 3), faces (M, 3) int64).

    Differentiable in ``positions`` (V, 3) and ``sdf`` (V,); faces wind counter-clockwise
    seen from outside.
    """
    device = positions.device
    with torch.no_grad():
        inside = sdf < 0
        corner_in = inside[tets]  # (T, 4)
        code = (corner_in.long() * torch.tensor([1, 2, 4, 8], device=device)).sum(1)
        active = (code > 0) & (code < 15)
        act_tets = tets[active]
        act_code = code[active]
        edges = act_tets[:, torch.as_tensor(TET_EDGES, device=device)]  # (A, 6, 2)
        edges = torch.sort(edges, dim=2).values
        crosses = inside[edges[..., 0]] != inside[edges[..., 1]]
        flat = edges[crosses]
        n = positions.shape[0]
        keys, inverse = torch.unique(flat[:, 0] * n + flat[:, 1], return_inverse=True)  # 1-D unique: fast
        crossing = torch.stack([keys // n, keys % n], dim=1)
        edge_id = torch.full(crosses.shape, -1, dtype=torch.long, device=device)
        edge_id[crosses] = inverse
        table = torch.as_tensor(TRIANGLE_TABLE, device=device)[act_code]  # (A, 6)
        counts = torch.as_tensor(TRIANGLE_COUNT, device=device)[act_code]
        first = torch.gather(edge_id, 1, table[:, :3].clamp(min=0))
        second = torch.gather(edge_id, 1, table[:, 3:].clamp(min=0))
        faces = torch.cat([first, second[counts == 2]], dim=0)
        owner = torch.cat([torch.arange(len(act_tets), device=device),
                           torch.arange(len(act_tets), device=device)[counts == 2]])
    a, b = crossing[:, 0], crossing[:, 1]
    sa, sb = sdf[a].unsqueeze(1), sdf[b].unsqueeze(1)
    t = sa / (sa - sb)  # where the linear interpolant crosses zero
    verts = positions[a] + t * (positions[b] - positions[a])
    # orient: the normal points away from the inside corners of the owning tet
    with torch.no_grad():
        tri = verts[faces]
        normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
        tet_pos = positions[act_tets[owner]]  # (F, 4, 3)
        w = corner_in[active][owner].float()
        inside_centre = (tet_pos * w.unsqueeze(2)).sum(1) / w.sum(1, keepdim=True)
        outside_centre = (tet_pos * (1 - w).unsqueeze(2)).sum(1) / (1 - w).sum(1, keepdim=True)
        flip = (normal * (outside_centre - inside_centre)).sum(1) < 0
        faces = torch.where(flip.unsqueeze(1), faces[:, [0, 2, 1]], faces)
    return verts, faces


def unique_edges(tets: torch.Tensor) -> torch.Tensor:
    """(E, 2) the distinct edges of a tet mesh (computed once: the grid does not change)."""
    edges = torch.sort(tets[:, torch.as_tensor(TET_EDGES, device=tets.device)].reshape(-1, 2), dim=1).values
    n = int(tets.max()) + 1
    keys = torch.unique(edges[:, 0] * n + edges[:, 1])
    return torch.stack([keys // n, keys % n], dim=1)


def sdf_regularizer(sdf: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """nvdiffrec's SDF regulariser: binary cross-entropy between the two SDFs of every tet edge
    (``edges`` from :func:`unique_edges`) whose signs differ, which discourages spurious sign
    changes (floaters, inner sheets)."""
    sa, sb = sdf[edges[:, 0]], sdf[edges[:, 1]]
    crossing = ((sa > 0) != (sb > 0)).float()  # a weight rather than a selection: no device synchronisation
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    per_edge = bce(sa, (sb > 0).float(), reduction="none") + bce(sb, (sa > 0).float(), reduction="none")
    return (per_edge * crossing).sum() / crossing.sum().clamp(min=1)


def laplacian_energy(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean squared umbrella Laplacian of a triangle mesh: each vertex against the mean of its
    neighbours (edge-adjacent through faces). Penalises the jagged, sliver-rich surfaces that
    image losses alone leave on a tet grid (nvdiffrec regularises its second pass this way)."""
    f = faces.long()
    total = torch.zeros_like(vertices)
    count = torch.zeros_like(vertices[:, :1])
    ones = torch.ones_like(f[:, :1], dtype=vertices.dtype)
    for a, b, c in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        total = total.index_add(0, f[:, a], vertices[f[:, b]] + vertices[f[:, c]])
        count = count.index_add(0, f[:, a], 2 * ones)
    lap = vertices - total / count.clamp(min=1)
    return (lap ** 2).sum(1).mean()
