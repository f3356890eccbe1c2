// node gltf_summary.mjs FILE.glb [--dump DIR] -> what three.js's GLTFLoader makes of the file, as JSON.
import { parseArgs, print, summarise } from './common.mjs'; // first: the browser shims
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Box3, REVISION } from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';

const { file, dump } = parseArgs('node gltf_summary.mjs FILE.glb [--dump DIR]');
const bytes = readFileSync(file);
const loader = new GLTFLoader();
const gltf = await loader.parseAsync(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
	dirname(file) + '/');
const summary = summarise(gltf.scene, Box3, dump);
summary.three = REVISION;
summary.imageLoader = gltf.parser.textureLoader.constructor.name;
summary.extensionsUsed = gltf.parser.json.extensionsUsed ?? [];
summary.asset = gltf.asset;
summary.sceneCount = gltf.scenes.length;
print(summary);
