"""Writing meshes: binary glTF (GLB, texture embedded) and OBJ + MTL + PNG.

Both are in the capture's world frame unchanged: glTF is +Y up, metres-agnostic, which is
our frame. The material is unlit (``KHR_materials_unlit``, with a PBR fallback of
roughness 1, metallic 0) because textures hold the colour the cameras saw, lighting
included; viewers that ignore the extension show the same texture under their lights. A mesh
with ``metallic_roughness`` maps gets a lit PBR material instead (glTF packs roughness in the
green and metallic in the blue channel; the OBJ's MTL names single-channel ``roughness.png``
and ``metallic.png`` with the PBR extension's ``map_Pr`` / ``map_Pm``), and a ``specular``
map goes into glTF's ``KHR_materials_specular`` (alpha channel) and the MTL's ``map_Ks``.
UVs are stored with glTF's v-down convention (v_gltf = 1 − v) and OBJ's v-up one. Vertex
colours are sRGB in OBJ ('v x y z r g b', as Blender and three.js read them) and linear in
glTF (COLOR_0 is linear by the specification).
"""

from __future__ import annotations

import io
import json
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from .bundle import PBR_MAP_FILES
from .mesh import TexturedMesh


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of an (H, W, 3) or (H, W) uint8 image. Level 1: textures are photos, which
    deflate barely compresses further, so speed wins."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def srgb_to_linear(colors: np.ndarray) -> np.ndarray:
    """Linear float64 values in [0, 1] of uint8 sRGB colours (the sRGB transfer function, IEC 61966-2-1)."""
    c = np.asarray(colors, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _pad4(data: bytes, fill: bytes = b"\x00") -> bytes:
    return data + fill * (-len(data) % 4)


def glb_bytes(mesh: TexturedMesh, texture_png: bytes | None = None, name: str = "meshforge") -> bytes:
    """A GLB file's bytes for ``mesh`` (one node, one primitive, one material)."""
    positions = np.ascontiguousarray(mesh.vertices, np.float32)
    indices = np.ascontiguousarray(mesh.faces, np.uint32)
    normals = np.ascontiguousarray(mesh.vertex_normals(), np.float32)
    # vertices in no triangle of non-zero area (poles of a UV sphere, unused ones) have no normal,
    # but glTF requires unit length everywhere; they draw nothing, so any unit vector does
    normals[np.einsum("ij,ij->i", normals, normals) < 0.5] = (0.0, 1.0, 0.0)
    chunks: list[bytes] = []
    views, accessors = [], []

    def add_view(data: bytes, target: int | None = None) -> int:
        offset = sum(len(c) for c in chunks)
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target:
            view["target"] = target
        views.append(view)
        chunks.append(_pad4(data))
        return len(views) - 1

    def add_accessor(array: np.ndarray, component: int, kind: str, target: int, with_bounds: bool = False) -> int:
        acc = {"bufferView": add_view(array.tobytes(), target), "componentType": component,
               "count": int(array.shape[0]), "type": kind}
        if with_bounds:
            acc["min"] = array.min(axis=0).tolist() if len(array) else [0, 0, 0]
            acc["max"] = array.max(axis=0).tolist() if len(array) else [0, 0, 0]
        accessors.append(acc)
        return len(accessors) - 1

    ARRAY, ELEMENT, FLOAT, UINT = 34962, 34963, 5126, 5125
    attributes = {"POSITION": add_accessor(positions, FLOAT, "VEC3", ARRAY, with_bounds=True),
                  "NORMAL": add_accessor(normals, FLOAT, "VEC3", ARRAY)}
    material = {"name": "meshforge", "doubleSided": False,
                "pbrMetallicRoughness": {"baseColorFactor": [*map(float, mesh.base_color), 1.0],
                                         "metallicFactor": 0.0, "roughnessFactor": 1.0},
                "extensions": {"KHR_materials_unlit": {}}}
    asset = {"version": "2.0", "generator": "meshforge", **({"extras": mesh.metadata} if mesh.metadata else {})}
    doc: dict = {"asset": asset, "scene": 0,
                 "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": name}],
                 "extensionsUsed": ["KHR_materials_unlit"]}
    if mesh.is_textured:
        uv = np.ascontiguousarray(np.stack([mesh.uv[:, 0], 1.0 - mesh.uv[:, 1]], axis=1), np.float32)
        attributes["TEXCOORD_0"] = add_accessor(uv, FLOAT, "VEC2", ARRAY)
        png = texture_png if texture_png is not None else encode_png(mesh.texture)
        image_view = add_view(png)
        doc["images"] = [{"bufferView": image_view, "mimeType": "image/png", "name": "texture"}]
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
        doc["textures"] = [{"sampler": 0, "source": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0, "texCoord": 0}
        if mesh.metallic_roughness is not None:
            packed = np.zeros((*mesh.metallic_roughness.shape[:2], 3), np.uint8)
            packed[..., 1:] = mesh.metallic_roughness  # G: roughness, B: metallic
            doc["images"].append({"bufferView": add_view(encode_png(packed)), "mimeType": "image/png",
                                  "name": "metallic_roughness"})
            doc["textures"].append({"sampler": 0, "source": 1})
            material["pbrMetallicRoughness"].update(
                {"metallicFactor": 1.0, "roughnessFactor": 1.0,
                 "metallicRoughnessTexture": {"index": 1, "texCoord": 0}})
            del material["extensions"], doc["extensionsUsed"]
            if mesh.specular is not None:
                rgba = np.full((*mesh.specular.shape, 4), 255, np.uint8)
                rgba[..., 3] = mesh.specular  # the extension reads the strength from alpha
                doc["images"].append({"bufferView": add_view(encode_png(rgba)), "mimeType": "image/png",
                                      "name": "specular"})
                doc["textures"].append({"sampler": 0, "source": 2})
                material["extensions"] = {"KHR_materials_specular": {"specularFactor": 1.0,
                                                                     "specularTexture": {"index": 2, "texCoord": 0}}}
                doc["extensionsUsed"] = ["KHR_materials_specular"]
    elif mesh.vertex_colors is not None:
        colours = np.ascontiguousarray(srgb_to_linear(mesh.vertex_colors), np.float32)  # glTF: COLOR_0 is linear
        attributes["COLOR_0"] = add_accessor(colours, FLOAT, "VEC3", ARRAY)
    index_acc = add_accessor(indices.reshape(-1), UINT, "SCALAR", ELEMENT)
    doc["meshes"] = [{"name": name, "primitives": [{"attributes": attributes, "indices": index_acc,
                                                     "material": 0, "mode": 4}]}]
    doc["materials"] = [material]
    doc["accessors"] = accessors
    doc["bufferViews"] = views
    binary = b"".join(chunks)
    doc["buffers"] = [{"byteLength": len(binary)}]
    json_chunk = _pad4(json.dumps(doc, separators=(",", ":")).encode("utf-8"), b" ")
    total = 12 + 8 + len(json_chunk) + 8 + len(binary)
    return b"".join([struct.pack("<4sII", b"glTF", 2, total),
                     struct.pack("<I4s", len(json_chunk), b"JSON"), json_chunk,
                     struct.pack("<I4s", len(binary), b"BIN\x00"), binary])


def _format_rows(row: str, array: np.ndarray) -> str:
    """``row`` (a printf format ending in a newline) applied to every row of ``array``."""
    if len(array) == 0:
        return ""
    return (row * len(array)) % tuple(array.ravel().tolist())


def obj_text(mesh: TexturedMesh, mtl_name: str = "mesh.mtl") -> str:
    """OBJ text: positions (with vertex colours as the common 'v x y z r g b' extension when the
    mesh has no texture), UVs, and faces indexing both with the same number."""
    parts = ["# written by meshforge; capture world frame, +Y up\n"]
    parts += [f"# {key}: {json.dumps(value)}\n" for key, value in mesh.metadata.items()]
    if mesh.is_textured:
        parts.append(f"mtllib {mtl_name}\nusemtl meshforge\n")
    if mesh.vertex_colors is not None and not mesh.is_textured:
        rows = np.concatenate([mesh.vertices.astype(np.float64), mesh.vertex_colors / 255.0], axis=1)
        parts.append(_format_rows("v %.6f %.6f %.6f %.4f %.4f %.4f\n", rows))
    else:
        parts.append(_format_rows("v %.6f %.6f %.6f\n", mesh.vertices.astype(np.float64)))
    f = mesh.faces.astype(np.int64) + 1
    if mesh.is_textured:
        parts.append(_format_rows("vt %.6f %.6f\n", mesh.uv.astype(np.float64)))
        parts.append(_format_rows("f %d/%d %d/%d %d/%d\n", np.repeat(f, 2, axis=1)))
    else:
        parts.append(_format_rows("f %d %d %d\n", f))
    return "".join(parts)


def mtl_text(texture_name: str = "texture.png", pbr: bool = False, specular: bool = False) -> str:
    roughness, metallic, specular_map = PBR_MAP_FILES
    ks = ("Ks 1.000 1.000 1.000\nd 1.0\nillum 2\n" f"map_Ks {specular_map}\n" if specular
          else "Ks 0.000 0.000 0.000\nd 1.0\nillum 1\n")
    text = ("# written by meshforge\nnewmtl meshforge\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\n"
            f"{ks}map_Kd {texture_name}\n")
    return text + (f"Pr 1.0\nPm 1.0\nmap_Pr {roughness}\nmap_Pm {metallic}\n" if pbr else "")


def write_mesh_files(mesh: TexturedMesh, folder: str | Path, stem: str = "mesh") -> dict[str, Path]:
    """Write ``stem``.glb, ``stem``.obj, ``stem``.mtl and texture.png into ``folder`` (and
    roughness.png, metallic.png and, with a specular map, specular.png for a mesh with PBR maps).

    A mesh with vertex colours and no texture gets a 1×1 white texture.png so the bundle's
    layout never changes. Returns the written paths by kind.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if mesh.signed_volume() < 0:
        # outward winding: single-sided viewers cull faces that point inwards
        mesh = replace(mesh, faces=np.ascontiguousarray(mesh.faces[:, ::-1]))
    texture = mesh.texture if mesh.is_textured else np.full((1, 1, 3), 255, np.uint8)
    paths = {"glb": folder / f"{stem}.glb", "obj": folder / f"{stem}.obj", "mtl": folder / f"{stem}.mtl",
             "texture": folder / "texture.png"}
    with ThreadPoolExecutor(max_workers=1) as pool:
        png_job = pool.submit(encode_png, texture)  # zlib releases the GIL: overlap with the OBJ text
        paths["obj"].write_text(obj_text(mesh, f"{stem}.mtl"))
        pbr = mesh.metallic_roughness is not None
        paths["mtl"].write_text(mtl_text("texture.png", pbr=pbr, specular=mesh.specular is not None))
        png = png_job.result()
    paths["texture"].write_bytes(png)
    if pbr:
        maps = [mesh.metallic_roughness[..., 0], mesh.metallic_roughness[..., 1], mesh.specular]
        for name, image in zip(PBR_MAP_FILES, maps):
            if image is not None:
                kind = Path(name).stem
                paths[kind] = folder / name
                paths[kind].write_bytes(encode_png(np.ascontiguousarray(image)))
    paths["glb"].write_bytes(glb_bytes(mesh, png if mesh.is_textured else None))
    return paths
