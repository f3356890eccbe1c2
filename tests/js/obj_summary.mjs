// node obj_summary.mjs FILE.obj [--dump DIR] -> what three.js's OBJLoader (with MTLLoader for its
// mtllib, textures read from disk) makes of the file, as JSON.
import { makeFileImageLoader, parseArgs, print, summarise } from './common.mjs'; // first: the shims
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Box3, LoadingManager, REVISION, Texture } from 'three';
import { MTLLoader } from 'three/addons/loaders/MTLLoader.js';
import { OBJLoader } from 'three/addons/loaders/OBJLoader.js';

const { file, dump } = parseArgs('node obj_summary.mjs FILE.obj [--dump DIR]');
const text = readFileSync(file, 'utf8');
const folder = dirname(file) + '/';
const manager = new LoadingManager();
manager.addHandler(/\.(png|jpe?g|webp)$/i, makeFileImageLoader(Texture));

// the first pass finds the material libraries, the second one uses them
const libraries = new OBJLoader(manager).parse(text).materialLibraries;
const objLoader = new OBJLoader(manager);
const mtl = [];
for (const name of libraries) {
	const mtlLoader = new MTLLoader(manager);
	mtlLoader.setResourcePath(folder);
	const creator = mtlLoader.parse(readFileSync(join(folder, name), 'utf8'), folder);
	creator.preload();
	mtl.push({ name, materials: Object.keys(creator.materialsInfo) });
	objLoader.setMaterials(creator);
}
const group = objLoader.parse(text);
const summary = summarise(group, Box3, dump);
summary.three = REVISION;
summary.materialLibraries = mtl;
print(summary);
