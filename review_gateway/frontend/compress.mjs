// After `vite build`: writes FILE.br (brotli, quality 11) and FILE.gz (gzip -9) beside each
// compressible file of ../static/app, which the gateway serves by Accept-Encoding
// (review_gateway/web/assets.py). Node's zlib has both codings: no extra dependency.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const OUT = new URL('../static/app/', import.meta.url).pathname;
const COMPRESSIBLE = /\.(js|mjs|css|html|wasm|json|svg|map|txt)$/;
const MIN_BYTES = 1024;

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else yield path;
  }
}

let raw = 0, br = 0, gz = 0;
for (const path of files(OUT)) {
  if (!COMPRESSIBLE.test(path)) continue;
  const data = readFileSync(path);
  if (data.length < MIN_BYTES) continue;
  const brotli = brotliCompressSync(data, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 11,
      [constants.BROTLI_PARAM_SIZE_HINT]: data.length,
    },
  });
  const gzip = gzipSync(data, { level: 9 });
  // A variant no smaller than the file is of no use to anyone.
  if (brotli.length < data.length) writeFileSync(`${path}.br`, brotli);
  if (gzip.length < data.length) writeFileSync(`${path}.gz`, gzip);
  raw += data.length; br += Math.min(brotli.length, data.length); gz += Math.min(gzip.length, data.length);
}
const kb = (n) => `${(n / 1024).toFixed(0)} KiB`;
console.log(`precompressed ${OUT}: ${kb(raw)} → brotli ${kb(br)}, gzip ${kb(gz)}`);
