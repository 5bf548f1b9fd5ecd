// Prints the size of the built SDK: as committed, minified, and minified + gzipped.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { transformSync } from "esbuild";

const source = readFileSync(new URL("../dist/temppass.js", import.meta.url), "utf8");
const minified = transformSync(source, { minify: true, format: "esm", target: "es2020" }).code;
const gzipped = gzipSync(minified, { level: 9 });
console.log(`dist/temppass.js: ${Buffer.byteLength(source)} bytes`);
console.log(`minified: ${Buffer.byteLength(minified)} bytes`);
console.log(`minified + gzip: ${gzipped.length} bytes`);
