// What three.js's loaders need from a browser, in plain Node, plus helpers to summarise what they load.
//
// Import this module before three.js. It provides, and nothing more:
// - `self` (GLTFLoader reads `self.URL` to turn an embedded image's bufferView into a blob: URL;
//   Node's own URL.createObjectURL, Blob and fetch handle those URLs);
// - `createImageBitmap`, so that GLTFLoader takes its ImageBitmapLoader path (the one Chrome, Edge,
//   Safari >= 17 and Firefox >= 98 take). It decodes PNG with pngjs and returns a stand-in
//   ImageBitmap that also records what the image really was (MIME type sniffed from its bytes,
//   byte length, size, a hash of its RGB pixels);
// - a texture loader for the OBJ/MTL path that reads image files from disk the same way.
// What three.js prints (logs, warnings, errors) is collected so that the summaries can report them.

import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PNG } from 'pngjs';

globalThis.self ??= globalThis;

export const messages = [];
for (const level of ['log', 'info', 'warn', 'error']) {
	console[level] = (...args) => {
		const text = args.map((a) => (a instanceof Error ? a.message : String(a))).join(' ');
		messages.push({ level, text });
		process.stderr.write(`${level}: ${text}\n`); // stdout carries the JSON summary only
	};
}

function sniff(bytes) {
	const b = bytes;
	if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return 'image/png';
	if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
	if (b.length >= 12 && String.fromCharCode(...b.subarray(8, 12)) === 'WEBP') return 'image/webp';
	return 'application/octet-stream';
}

/** A stand-in for an ImageBitmap (or an <img>) made from an encoded image's bytes. */
export function decodeImage(bytes, declaredType = '') {
	bytes = new Uint8Array(bytes);
	const image = { declaredType, sniffedType: sniff(bytes), byteLength: bytes.length, width: 0, height: 0,
		rgbSha256: null, decoded: false, close() {} };
	if (image.sniffedType === 'image/png') {
		const png = PNG.sync.read(Buffer.from(bytes)); // always 8-bit RGBA out
		const rgb = Buffer.alloc(png.width * png.height * 3);
		for (let i = 0, j = 0; i < png.data.length; i += 4, j += 3) {
			rgb[j] = png.data[i]; rgb[j + 1] = png.data[i + 1]; rgb[j + 2] = png.data[i + 2];
		}
		Object.assign(image, { width: png.width, height: png.height, decoded: true,
			rgbSha256: createHash('sha256').update(rgb).digest('hex') });
	}
	return image;
}

globalThis.createImageBitmap ??= async (blob) => decodeImage(await blob.arrayBuffer(), blob.type);

/** A three.js loader (for LoadingManager.addHandler) that reads images from local paths. */
export function makeFileImageLoader(Texture) {
	return {
		load(url, onLoad) {
			const texture = new Texture();
			texture.image = decodeImage(readFileSync(url));
			texture.image.url = url;
			texture.needsUpdate = true;
			if (onLoad) onLoad(texture);
			return texture;
		},
	};
}

function arrayStats(array, itemSize) {
	const min = new Array(itemSize).fill(Infinity), max = new Array(itemSize).fill(-Infinity);
	let finite = true;
	for (let i = 0; i < array.length; i++) {
		const v = array[i], k = i % itemSize;
		if (!Number.isFinite(v)) finite = false;
		if (v < min[k]) min[k] = v;
		if (v > max[k]) max[k] = v;
	}
	return { min, max, finite };
}

/** Volume enclosed by triangles (positive when they wind counter-clockwise seen from outside). */
function signedVolume(position, index) {
	const p = position.array, s = position.itemSize;
	const count = index ? index.count : position.count;
	let v = 0;
	for (let t = 0; t + 2 < count; t += 3) {
		const [a, b, c] = [0, 1, 2].map((k) => (index ? index.array[t + k] : t + k) * s);
		v += p[a] * (p[b + 1] * p[c + 2] - p[b + 2] * p[c + 1])
			- p[a + 1] * (p[b] * p[c + 2] - p[b + 2] * p[c])
			+ p[a + 2] * (p[b] * p[c + 1] - p[b + 1] * p[c]);
	}
	return v / 6;
}

function textureSummary(texture) {
	if (!texture) return null;
	const image = texture.image ?? {};
	return {
		name: texture.name, mimeType: texture.userData?.mimeType ?? null, flipY: texture.flipY,
		colorSpace: texture.colorSpace, wrapS: texture.wrapS, wrapT: texture.wrapT,
		magFilter: texture.magFilter, minFilter: texture.minFilter,
		image: { declaredType: image.declaredType ?? null, sniffedType: image.sniffedType ?? null,
			byteLength: image.byteLength ?? null, width: image.width ?? null, height: image.height ?? null,
			decoded: image.decoded ?? false, rgbSha256: image.rgbSha256 ?? null, url: image.url ?? null },
	};
}

function materialSummary(material) {
	return {
		type: material.type, name: material.name, side: material.side, vertexColors: material.vertexColors,
		transparent: material.transparent, opacity: material.opacity,
		color: material.color ? material.color.toArray() : null, map: textureSummary(material.map),
		specularIntensity: material.specularIntensity ?? null,
		specularIntensityMap: textureSummary(material.specularIntensityMap),
	};
}

/**
 * A JSON-ready summary of every mesh under `root` (after its world matrices are updated); with
 * `dumpDir`, each attribute's array is also written there raw (mesh<k>_<name>.bin, little-endian).
 */
export function summarise(root, Box3, dumpDir = null) {
	root.updateMatrixWorld(true);
	if (dumpDir) mkdirSync(dumpDir, { recursive: true });
	const meshes = [];
	root.traverse((object) => {
		if (!object.isMesh) return;
		const k = meshes.length, geometry = object.geometry;
		geometry.computeBoundingBox();
		const attributes = {};
		for (const [name, attribute] of Object.entries(geometry.attributes)) {
			attributes[name] = { count: attribute.count, itemSize: attribute.itemSize, normalized: attribute.normalized,
				arrayType: attribute.array.constructor.name, ...arrayStats(attribute.array, attribute.itemSize) };
			if (dumpDir) {
				const file = join(dumpDir, `mesh${k}_${name}.bin`);
				writeFileSync(file, Buffer.from(attribute.array.buffer, attribute.array.byteOffset, attribute.array.byteLength));
				attributes[name].dump = file;
			}
		}
		let index = null;
		if (geometry.index) {
			const a = geometry.index.array;
			index = { count: geometry.index.count, arrayType: a.constructor.name, ...arrayStats(a, 1) };
			if (dumpDir) {
				index.dump = join(dumpDir, `mesh${k}_index.bin`);
				writeFileSync(index.dump, Buffer.from(a.buffer, a.byteOffset, a.byteLength));
			}
		}
		const materials = Array.isArray(object.material) ? object.material : [object.material];
		meshes.push({
			name: object.name, matrixWorld: object.matrixWorld.toArray(), attributes, index,
			groups: geometry.groups.map((g) => ({ ...g })),
			boundingBox: { min: geometry.boundingBox.min.toArray(), max: geometry.boundingBox.max.toArray() },
			signedVolume: signedVolume(geometry.attributes.position, geometry.index),
			materials: materials.map(materialSummary),
		});
	});
	const box = new Box3().setFromObject(root);
	return { meshes, worldBox: { min: box.min.toArray(), max: box.max.toArray() }, messages };
}

/** `node script.mjs FILE [--dump DIR]` -> { file, dump } */
export function parseArgs(usage) {
	const args = process.argv.slice(2);
	const at = args.indexOf('--dump');
	const dump = at >= 0 ? args.splice(at, 2)[1] : null;
	if (args.length !== 1) {
		console.error(`usage: ${usage}`);
		process.exit(2);
	}
	return { file: args[0], dump };
}

export function print(summary) {
	process.stdout.write(JSON.stringify(summary) + '\n');
}
