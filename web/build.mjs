// npm run build [-- --model=path/to/model.tflite]: the static page in dist/ (no server code).
// --model copies an export (model.tflite + its model.json) into dist/model/, loaded at start.
import {build} from 'esbuild';
import {copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync} from 'node:fs';
import {basename, join, relative} from 'node:path';

const out = 'dist';
rmSync(out, {recursive: true, force: true});
mkdirSync(join(out, 'wasm'), {recursive: true});
mkdirSync(join(out, 'detector'), {recursive: true});

await build({entryPoints: ['src/main.js'], bundle: true, format: 'esm', target: 'es2022',
  outfile: join(out, 'app.js'), sourcemap: true, logLevel: 'warning'});
for (const f of ['index.html', 'style.css', 'sw.js']) copyFileSync(f, join(out, f));
// the two single-thread LiteRT.js builds (relaxed SIMD, and the compatible one)
const wasm = 'node_modules/@litertjs/core/wasm';
for (const f of ['litert_wasm_internal', 'litert_wasm_compat_internal']) {
  for (const ext of ['.js', '.wasm']) copyFileSync(join(wasm, f + ext), join(out, 'wasm', f + ext));
}
copyFileSync('node_modules/@mediapipe/face_detection/face_detection_short_range.tflite',
  join(out, 'detector', 'face_detection_short_range.tflite'));

const model = process.argv.find((a) => a.startsWith('--model='))?.slice('--model='.length);
if (model) {
  const json = model.replace(/\.tflite$/, '.json');
  if (!model.endsWith('.tflite') || !existsSync(model) || !existsSync(json)) {
    console.error(`${model}: need an existing .tflite with its .json beside it (python -m export)`);
    process.exit(1);
  }
  mkdirSync(join(out, 'model'));
  copyFileSync(model, join(out, 'model', basename(model)));
  copyFileSync(json, join(out, 'model', 'model.json'));
}

const files = [];
const walk = (dir) => readdirSync(dir).forEach((f) => {
  const p = join(dir, f);
  if (statSync(p).isDirectory()) walk(p); else if (!p.endsWith('.map')) files.push('./' + relative(out, p));
});
walk(out);
writeFileSync(join(out, 'files.json'), JSON.stringify(['./', ...files.filter((f) => f !== './sw.js')], null, 1));
console.log(`built ${out}/: ${files.length} files${model ? `, model ${model}` : ''}`);
