// node validate.mjs FILE.glb|FILE.gltf -> the Khronos glTF-Validator's report as JSON on stdout.
// External resources (a .gltf's .bin and images) are read from beside the file.
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import validator from 'gltf-validator';

const file = process.argv[2];
if (!file || process.argv.length !== 3) {
	console.error('usage: node validate.mjs FILE.glb|FILE.gltf');
	process.exit(2);
}
const report = await validator.validateBytes(new Uint8Array(readFileSync(file)), {
	uri: basename(file),
	maxIssues: 0, // all of them
	writeTimestamp: false,
	externalResourceFunction: async (uri) => new Uint8Array(readFileSync(resolve(dirname(file), decodeURIComponent(uri)))),
});
report.validatorVersion = validator.version();
process.stdout.write(JSON.stringify(report) + '\n');
