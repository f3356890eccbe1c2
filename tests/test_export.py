"""GLB and OBJ+MTL+PNG exports, checked by readers that are not ours.

- the Khronos glTF-Validator (npm ``gltf-validator``) must find nothing at all in our GLBs;
- three.js's own GLTFLoader, and its OBJLoader with MTLLoader, run in Node (tests/js), must get
  our geometry, UVs, material and texture back, in our world frame, winding outwards;
- trimesh and meshforge's own ``load_mesh`` must read the same back;
- and the GLB container itself is checked byte by byte.

The Node readers are pinned in tests/js/package-lock.json; install them once with
``npm ci --prefix tests/js`` (from the repository root). Without them these tests fail, they
do not skip: CI installs them.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meshforge.export import srgb_to_linear, write_mesh_files
from meshforge.mesh import TexturedMesh, load_mesh
from meshforge.synthetic import demo_parts

JS = Path(__file__).resolve().parent / "js"
INSTALL = "npm ci --prefix tests/js"
THREE_FRONT_SIDE = 0
OBJ_DECIMALS = 1e-6  # OBJ text has 6 decimals: rounding (5e-7) plus float32 of values below 1


# ── the meshes ────────────────────────────────────────────────────────────────────────────

def _textured() -> TexturedMesh:
    return demo_parts()[0]


def _coloured() -> TexturedMesh:
    body = demo_parts()[0]
    colours = np.random.default_rng(7).integers(0, 256, (len(body.vertices), 3), dtype=np.uint8)
    colours[:2] = [[0, 0, 0], [255, 255, 255]]  # both ends of the range
    return TexturedMesh(body.vertices, body.faces, vertex_colors=colours)


def _inward() -> TexturedMesh:
    handle = demo_parts()[1]
    mesh = TexturedMesh(handle.vertices, handle.faces[:, ::-1], uv=handle.uv, texture=handle.texture)
    assert mesh.signed_volume() < 0
    return mesh


MAKERS = {"textured": _textured, "coloured": _coloured, "inward": _inward}


class Written:
    """A mesh as given to write_mesh_files, as expected back (outward), and the written paths."""

    def __init__(self, kind: str, folder: Path):
        self.given = MAKERS[kind]()
        self.paths = write_mesh_files(self.given, folder)
        self.folder = folder
        flip = self.given.signed_volume() < 0
        self.faces = self.given.faces[:, ::-1] if flip else self.given.faces  # what the files must hold
        self.mesh = TexturedMesh(self.given.vertices, self.faces, uv=self.given.uv, texture=self.given.texture,
                                 vertex_colors=self.given.vertex_colors)
        self._cache: dict = {}

    def js(self, script: str) -> dict:
        """The JSON summary of a tests/js script on this mesh's file (with raw arrays dumped), once."""
        if script not in self._cache:
            target = self.paths["obj"] if script == "obj_summary.mjs" else self.paths["glb"]
            args = [] if script == "validate.mjs" else ["--dump", self.folder / f"dump-{script.split('_')[0]}"]
            self._cache[script] = run_node(script, target, *args)
        return self._cache[script]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Written]:
    return {kind: Written(kind, tmp_path_factory.mktemp(f"export-{kind}")) for kind in MAKERS}


# ── running the Node readers ─────────────────────────────────────────────────────────────

def _node_readers_missing() -> str | None:
    """Why tests/js cannot run here, or None."""
    node = shutil.which("node")
    if node is None:
        return "Node.js (>= 20) is not on PATH"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        return f"Node.js >= 20 is needed (Blob, fetch of blob: URLs), found {version}"
    wanted = json.loads((JS / "package.json").read_text())["dependencies"]
    for name, pinned in wanted.items():
        manifest = JS / "node_modules" / name / "package.json"
        if not manifest.exists():
            return f"{name} is not installed in tests/js/node_modules"
        found = json.loads(manifest.read_text())["version"]
        if found != pinned:
            return f"tests/js/node_modules has {name} {found}, package.json pins {pinned}"
    return None


def run_node(script: str, *args) -> dict:
    why = _node_readers_missing()
    if why:
        pytest.fail(f"{why}. Install the pinned JS readers with `{INSTALL}` from the repository root "
                    "(needs Node.js >= 20 and npm).", pytrace=False)
    proc = subprocess.run([shutil.which("node"), str(JS / script), *map(str, args)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"node {script} {' '.join(map(str, args))} exited with {proc.returncode}:\n{proc.stderr}")
    return json.loads(proc.stdout)


def dumped(attribute: dict, width: int) -> np.ndarray:
    dtype = {"Float32Array": np.float32, "Uint32Array": np.uint32, "Uint16Array": np.uint16}[attribute["arrayType"]]
    return np.fromfile(attribute["dump"], dtype=dtype).reshape(-1, width)


def sha256_rgb(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image[..., :3], np.uint8).tobytes()).hexdigest()


def texel_rows_from_top(uv: np.ndarray, flip_y: bool) -> np.ndarray:
    """Where in the image (0 = first row of the PNG, 1 = last) three.js samples a v coordinate."""
    return 1.0 - uv[:, 1] if flip_y else uv[:, 1]


# ── the GLB container, read by us ─────────────────────────────────────────────────────────

def _glb_parts(data: bytes) -> tuple[dict, bytes, list[tuple[bytes, int, int]]]:
    """JSON, BIN and the (type, offset, length) of each chunk, checking the container on the way."""
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, total) == (b"glTF", 2, len(data))
    chunks, offset = [], 12
    while offset < len(data):
        length, kind = struct.unpack_from("<I4s", data, offset)
        assert length % 4 == 0 and offset % 4 == 0, "chunks must start and end 4-byte aligned"
        chunks.append((kind, offset + 8, length))
        offset += 8 + length
    assert offset == len(data), "the last chunk must end where the file ends"
    assert [c[0] for c in chunks] == [b"JSON", b"BIN\x00"]
    (_, j0, jn), (_, b0, bn) = chunks
    text = data[j0:j0 + jn]
    assert b"\x00" not in text and len(text) - len(text.rstrip(b" ")) < 4, "JSON is padded with 0-3 spaces"
    return json.loads(text.decode("utf-8")), data[b0:b0 + bn], chunks


def _accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = {5126: np.float32, 5125: np.uint32}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    start = view["byteOffset"] + acc.get("byteOffset", 0)
    return np.frombuffer(binary, dtype, acc["count"] * width, start).reshape(-1, width)


@pytest.mark.parametrize("kind", MAKERS)
def test_glb_container_and_json_are_well_formed(written, kind):
    w = written[kind]
    data = w.paths["glb"].read_bytes()
    doc, binary, _ = _glb_parts(data)
    assert doc["asset"]["version"] == "2.0"
    assert doc["buffers"] == [{"byteLength": len(binary)}]  # no uri: the GLB's own BIN chunk
    for view in doc["bufferViews"]:
        assert view["buffer"] == 0 and view["byteOffset"] % 4 == 0
        assert view["byteOffset"] + view["byteLength"] <= len(binary)
    assert "KHR_materials_unlit" in doc["extensionsUsed"]
    assert "extensionsRequired" not in doc  # viewers without it fall back to the PBR material
    (material,) = doc["materials"]
    assert "KHR_materials_unlit" in material["extensions"]
    assert material["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert doc["nodes"] == [{"mesh": 0, "name": "meshforge"}]  # no transform: the world frame unchanged
    (prim,) = doc["meshes"][0]["primitives"]
    attrs = prim["attributes"]
    pos_acc = doc["accessors"][attrs["POSITION"]]
    assert pos_acc["min"] == w.mesh.bounds[0].tolist() and pos_acc["max"] == w.mesh.bounds[1].tolist()
    np.testing.assert_array_equal(_accessor(doc, binary, attrs["POSITION"]), w.mesh.vertices)
    np.testing.assert_array_equal(_accessor(doc, binary, prim["indices"]).reshape(-1, 3), w.faces)
    normals = _accessor(doc, binary, attrs["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    if w.mesh.is_textured:
        uv = _accessor(doc, binary, attrs["TEXCOORD_0"])
        np.testing.assert_allclose(uv, np.stack([w.mesh.uv[:, 0], 1 - w.mesh.uv[:, 1]], 1), atol=1e-7)
        (image,) = doc["images"]
        view = doc["bufferViews"][image["bufferView"]]
        png = binary[view["byteOffset"]:view["byteOffset"] + view["byteLength"]]
        assert image["mimeType"] == "image/png" and png == w.paths["texture"].read_bytes()
        assert material["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0, "texCoord": 0}
    else:
        assert "TEXCOORD_0" not in attrs and "images" not in doc
        np.testing.assert_allclose(_accessor(doc, binary, attrs["COLOR_0"]),
                                   srgb_to_linear(w.mesh.vertex_colors), atol=1e-7)


# ── the Khronos glTF-Validator ───────────────────────────────────────────────────────────

@pytest.mark.parametrize("kind", MAKERS)
def test_khronos_validator_finds_nothing(written, kind):
    w = written[kind]
    report = w.js("validate.mjs")
    issues = report["issues"]
    assert issues["messages"] == [], json.dumps(issues, indent=1)  # no error, warning, info or hint
    assert issues["numErrors"] == issues["numWarnings"] == issues["numInfos"] == issues["numHints"] == 0
    info = report["info"]
    assert info["totalVertexCount"] == len(w.mesh.vertices)
    assert info["totalTriangleCount"] == len(w.mesh.faces)
    assert info["drawCallCount"] == 1 and info["materialCount"] == 1
    assert info["extensionsUsed"] == ["KHR_materials_unlit"]
    assert info["hasTextures"] is w.mesh.is_textured
    images = [r["image"] for r in info["resources"] if r["pointer"].startswith("/images/")]
    if w.mesh.is_textured:
        height, width = w.mesh.texture.shape[:2]
        assert images == [{"width": width, "height": height, "format": "rgb", "primaries": "srgb",
                           "transfer": "srgb", "bits": 8}]
    else:
        assert images == []


# ── three.js: GLTFLoader ─────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("kind", MAKERS)
def test_threejs_gltf_loader_gets_our_mesh_in_our_frame(written, kind):
    w = written[kind]
    s = w.js("gltf_summary.mjs")
    assert s["messages"] == [], s["messages"]  # three.js warned or failed about something
    (m,) = s["meshes"]
    assert m["matrixWorld"] == np.eye(4).ravel().tolist()
    n, f = len(w.mesh.vertices), len(w.mesh.faces)
    attrs = m["attributes"]
    assert attrs["position"]["count"] == n and attrs["normal"]["count"] == n
    assert m["index"]["count"] == 3 * f and m["index"]["max"] == [w.faces.max()]
    np.testing.assert_allclose([m["boundingBox"]["min"], m["boundingBox"]["max"]], w.mesh.bounds, rtol=0, atol=1e-7)
    np.testing.assert_allclose([s["worldBox"]["min"], s["worldBox"]["max"]], w.mesh.bounds, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(dumped(attrs["position"], 3), w.mesh.vertices)
    np.testing.assert_array_equal(dumped(m["index"], 3), w.faces)
    assert m["signedVolume"] > 0  # outward: three.js culls back faces of single-sided materials
    assert m["signedVolume"] == pytest.approx(abs(w.given.signed_volume()), rel=1e-5)
    (mat,) = m["materials"]
    assert mat["type"] == "MeshBasicMaterial"  # KHR_materials_unlit understood
    assert mat["side"] == THREE_FRONT_SIDE and mat["color"] == [1, 1, 1]
    if w.mesh.is_textured:
        assert attrs["uv"]["count"] == n and mat["vertexColors"] is False
        uv = dumped(attrs["uv"], 2)
        np.testing.assert_allclose(uv[:, 0], w.mesh.uv[:, 0], atol=1e-7)
        np.testing.assert_allclose(texel_rows_from_top(uv, mat["map"]["flipY"]), 1 - w.mesh.uv[:, 1], atol=1e-6)
        np.testing.assert_allclose([attrs["uv"]["min"], attrs["uv"]["max"]],
                                   [[w.mesh.uv[:, 0].min(), 1 - w.mesh.uv[:, 1].max()],
                                    [w.mesh.uv[:, 0].max(), 1 - w.mesh.uv[:, 1].min()]], atol=1e-7)
        tex = mat["map"]
        assert s["imageLoader"] == "ImageBitmapLoader"  # the path browsers take
        assert tex["mimeType"] == "image/png" and tex["colorSpace"] == "srgb"
        image = tex["image"]
        height, width = w.mesh.texture.shape[:2]
        assert image["declaredType"] == image["sniffedType"] == "image/png"
        assert image["byteLength"] == w.paths["texture"].stat().st_size
        assert image["decoded"] and (image["width"], image["height"]) == (width, height)
        assert image["rgbSha256"] == sha256_rgb(w.mesh.texture)
    else:
        assert "uv" not in attrs and mat["map"] is None and mat["vertexColors"] is True
        np.testing.assert_allclose(dumped(attrs["color"], 3), srgb_to_linear(w.mesh.vertex_colors), atol=1e-6)


# ── three.js: OBJLoader + MTLLoader ──────────────────────────────────────────────────────

@pytest.mark.parametrize("kind", MAKERS)
def test_threejs_obj_loader_gets_the_same_mesh(written, kind):
    w = written[kind]
    s = w.js("obj_summary.mjs")
    assert s["messages"] == [], s["messages"]
    (m,) = s["meshes"]
    assert m["matrixWorld"] == np.eye(4).ravel().tolist()
    attrs = m["attributes"]
    corners = 3 * len(w.faces)
    assert m["index"] is None and attrs["position"]["count"] == corners  # OBJLoader unrolls the faces
    np.testing.assert_allclose(dumped(attrs["position"], 3), w.mesh.vertices[w.faces].reshape(-1, 3),
                               rtol=0, atol=OBJ_DECIMALS)
    np.testing.assert_allclose([s["worldBox"]["min"], s["worldBox"]["max"]], w.mesh.bounds, rtol=0, atol=OBJ_DECIMALS)
    assert m["signedVolume"] > 0
    assert m["signedVolume"] == pytest.approx(abs(w.given.signed_volume()), rel=1e-4)
    (mat,) = m["materials"]
    assert mat["side"] == THREE_FRONT_SIDE
    if w.mesh.is_textured:
        assert s["materialLibraries"] == [{"name": "mesh.mtl", "materials": ["meshforge"]}]
        assert mat["type"] == "MeshPhongMaterial" and mat["name"] == "meshforge" and mat["color"] == [1, 1, 1]
        uv = dumped(attrs["uv"], 2)
        corner_uv = w.mesh.uv[w.faces].reshape(-1, 2)
        np.testing.assert_allclose(uv, corner_uv, rtol=0, atol=OBJ_DECIMALS)
        # the same texel as through the GLB: OBJ keeps v up and three.js flips the image instead
        np.testing.assert_allclose(texel_rows_from_top(uv, mat["map"]["flipY"]), 1 - corner_uv[:, 1], atol=OBJ_DECIMALS)
        image = mat["map"]["image"]
        assert Path(image["url"]) == w.paths["texture"] and image["sniffedType"] == "image/png"
        height, width = w.mesh.texture.shape[:2]
        assert (image["width"], image["height"]) == (width, height)
        assert image["rgbSha256"] == sha256_rgb(w.mesh.texture)
        assert mat["map"]["colorSpace"] == "srgb"
    else:
        assert s["materialLibraries"] == [] and "uv" not in attrs and mat["vertexColors"] is True
        # 'v x y z r g b' is read as sRGB, the GLB's COLOR_0 as linear: the same colour either way
        linear = srgb_to_linear(w.mesh.vertex_colors)[w.faces].reshape(-1, 3)
        np.testing.assert_allclose(dumped(attrs["color"], 3), linear, atol=2e-4)
        glb = w.js("gltf_summary.mjs")["meshes"][0]["attributes"]["color"]
        np.testing.assert_allclose(dumped(attrs["color"], 3), dumped(glb, 3)[w.faces].reshape(-1, 3), atol=2e-4)


# ── trimesh and meshforge's own loader ───────────────────────────────────────────────────

@pytest.mark.parametrize("kind", MAKERS)
def test_trimesh_reads_the_same_glb_and_obj(written, kind):
    import trimesh

    w = written[kind]
    for fmt in ("glb", "obj"):
        loaded = trimesh.load(str(w.paths[fmt]), process=False)
        (geom,) = loaded.dump() if isinstance(loaded, trimesh.Scene) else [loaded]
        atol = 0 if fmt == "glb" else OBJ_DECIMALS
        np.testing.assert_allclose(geom.vertices, w.mesh.vertices, rtol=0, atol=atol, err_msg=fmt)
        np.testing.assert_array_equal(geom.faces, w.faces, err_msg=fmt)
        assert trimesh.Trimesh(geom.vertices, geom.faces, process=False).volume > 0
        if w.mesh.is_textured:
            np.testing.assert_allclose(geom.visual.uv, w.mesh.uv, rtol=0, atol=OBJ_DECIMALS, err_msg=fmt)
            image = geom.visual.material.baseColorTexture if fmt == "glb" else geom.visual.material.image
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), w.mesh.texture, err_msg=fmt)
        elif fmt == "obj":
            np.testing.assert_array_equal(geom.visual.vertex_colors[:, :3], w.mesh.vertex_colors)


@pytest.mark.parametrize("kind", MAKERS)
def test_meshforge_load_mesh_round_trip(written, kind):
    w = written[kind]
    for fmt in ("glb", "obj"):
        back = load_mesh(w.paths[fmt])
        atol = 0 if fmt == "glb" else OBJ_DECIMALS
        np.testing.assert_allclose(back.vertices, w.mesh.vertices, rtol=0, atol=atol, err_msg=fmt)
        np.testing.assert_array_equal(back.faces, w.faces, err_msg=fmt)
        assert back.signed_volume() > 0
        assert back.signed_volume() == pytest.approx(-w.given.signed_volume() if kind == "inward"
                                                     else w.given.signed_volume(), rel=1e-5)
        assert back.is_textured is w.mesh.is_textured
        if w.mesh.is_textured:
            np.testing.assert_allclose(back.uv, w.mesh.uv, rtol=0, atol=OBJ_DECIMALS, err_msg=fmt)
            np.testing.assert_array_equal(back.texture, w.mesh.texture, err_msg=fmt)
            np.testing.assert_array_equal(back.base_color, [1, 1, 1])
        elif fmt == "obj":
            np.testing.assert_array_equal(back.vertex_colors, w.mesh.vertex_colors)


def test_untextured_mesh_still_gets_the_bundle_layout(written):
    w = written["coloured"]
    assert sorted(w.paths) == ["glb", "mtl", "obj", "texture"]
    assert np.asarray(Image.open(w.paths["texture"])).tolist() == [[[255, 255, 255]]]
    assert "mtllib" not in w.paths["obj"].read_text()  # colours come from the vertices, not a material


def test_pbr_maps_give_a_lit_material_that_readers_accept(tmp_path):
    """A mesh with metallic_roughness maps (nvdiffrec's appearance "pbr") gets glTF's PBR
    material with both textures and no unlit extension, and the OBJ's MTL the PBR extension's
    map_Pr / map_Pm; the Khronos validator, three.js and trimesh read them as meant. A specular
    map goes into KHR_materials_specular (alpha) and the MTL's map_Ks."""
    import trimesh

    body = demo_parts()[0]
    h, w = body.texture.shape[:2]
    maps = np.stack(np.meshgrid(np.linspace(20, 250, w), np.linspace(0, 255, h)), axis=-1).astype(np.uint8)
    mesh = TexturedMesh(body.vertices, body.faces, uv=body.uv, texture=body.texture, metallic_roughness=maps)
    paths = write_mesh_files(mesh, tmp_path)
    assert sorted(paths) == ["glb", "metallic", "mtl", "obj", "roughness", "texture"]

    doc, binary, _ = _glb_parts(paths["glb"].read_bytes())
    (material,) = doc["materials"]
    assert "extensions" not in material and "extensionsUsed" not in doc
    pbr = material["pbrMetallicRoughness"]
    assert pbr["metallicRoughnessTexture"] == {"index": 1, "texCoord": 0}
    assert pbr["metallicFactor"] == pbr["roughnessFactor"] == 1.0

    def image(doc, binary, texture):
        view = doc["bufferViews"][doc["images"][doc["textures"][texture]["source"]]["bufferView"]]
        return np.asarray(Image.open(io.BytesIO(binary[view["byteOffset"]:][:view["byteLength"]])))

    packed = image(doc, binary, 1)
    np.testing.assert_array_equal(packed[..., 1], maps[..., 0])  # glTF: roughness in green
    np.testing.assert_array_equal(packed[..., 2], maps[..., 1])  # metallic in blue

    report = run_node("validate.mjs", paths["glb"])
    assert report["issues"]["messages"] == [], json.dumps(report["issues"], indent=1)
    assert report["info"].get("extensionsUsed", []) == []
    summary = run_node("gltf_summary.mjs", paths["glb"], "--dump", tmp_path / "dump")
    assert summary["messages"] == [] and summary["meshes"][0]["materials"][0]["type"] == "MeshStandardMaterial"

    gltf_material = trimesh.load(str(paths["glb"]), process=False).dump()[0].visual.material
    np.testing.assert_array_equal(np.asarray(gltf_material.metallicRoughnessTexture.convert("RGB"))[..., 1:], maps)

    mtl = paths["mtl"].read_text()
    assert "map_Kd texture.png" in mtl and "map_Pr roughness.png" in mtl and "map_Pm metallic.png" in mtl
    assert "map_Ks" not in mtl and "Ks 0.000 0.000 0.000" in mtl
    np.testing.assert_array_equal(np.asarray(Image.open(paths["roughness"])), maps[..., 0])
    np.testing.assert_array_equal(np.asarray(Image.open(paths["metallic"])), maps[..., 1])

    # with the share of specular reflection
    specular = maps[..., 0][::-1].copy()
    shiny = TexturedMesh(body.vertices, body.faces, uv=body.uv, texture=body.texture, metallic_roughness=maps,
                         specular=specular)
    paths = write_mesh_files(shiny, tmp_path / "specular")
    assert sorted(paths) == ["glb", "metallic", "mtl", "obj", "roughness", "specular", "texture"]
    np.testing.assert_array_equal(np.asarray(Image.open(paths["specular"])), specular)
    mtl = paths["mtl"].read_text()
    assert "map_Ks specular.png" in mtl and "Ks 1.000 1.000 1.000" in mtl and "map_Pr roughness.png" in mtl
    doc, binary, _ = _glb_parts(paths["glb"].read_bytes())
    (material,) = doc["materials"]
    assert doc["extensionsUsed"] == ["KHR_materials_specular"]
    extension = material["extensions"]["KHR_materials_specular"]
    assert extension["specularFactor"] == 1.0
    np.testing.assert_array_equal(image(doc, binary, extension["specularTexture"]["index"])[..., 3], specular)
    report = run_node("validate.mjs", paths["glb"])
    assert report["issues"]["messages"] == [], json.dumps(report["issues"], indent=1)
    assert report["info"]["extensionsUsed"] == ["KHR_materials_specular"]
    summary = run_node("gltf_summary.mjs", paths["glb"])
    (read,) = summary["meshes"][0]["materials"]
    assert summary["messages"] == [] and read["type"] == "MeshPhysicalMaterial", read
    assert read["specularIntensity"] == 1.0 and read["specularIntensityMap"]["image"]["decoded"], read

    with pytest.raises(ValueError, match="metallic_roughness"):
        TexturedMesh(body.vertices, body.faces, uv=body.uv, texture=body.texture, metallic_roughness=maps[:-1])
    with pytest.raises(ValueError, match="specular"):
        TexturedMesh(body.vertices, body.faces, uv=body.uv, texture=body.texture, specular=specular)
