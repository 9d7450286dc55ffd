// The screening page: loads model.tflite + model.json, finds the face (BlazeFace, or a box
// dragged by hand), runs the contract loop of export/MOBILE.md and shows the 68 points and the
// FAS ratios with their uncertainties and verdicts. Everything runs in the page, offline.

import {loadAndCompile, loadLiteRt} from '@litertjs/core';
import {detectFaces} from './blazeface.js';
import {cutSquare, detectorSquare, drawnSquare} from './geometry.js';
import {Landmarker, sha256Hex} from './landmarker.js';
import {measure} from './measure.js';

const DETECTOR_URL = './detector/face_detection_short_range.tflite';
const PICKED = 'fas-tf-picked-model';  // Cache Storage of model files picked in the page
const MODELS = 'fas-tf-models';  // and of model files loaded from a URL
const $ = (id) => document.getElementById(id);
const meta = () => state.landmarker.meta;
const detectorConstants = (m) => m.crop.from_face_detector.constants_by_detector[m.crop.web_detector.detector];

const state = {detector: null, detectorSha: null, landmarker: null, image: null, result: null,
  options: {}};

function status(text, kind = '') {
  $('status').textContent = text;
  $('status').className = kind;
}

// ------------------------------------------------------------------ loading

async function init() {
  await loadLiteRt('./wasm/');
  const bytes = new Uint8Array(await (await fetch(DETECTOR_URL)).arrayBuffer());
  state.detectorSha = await sha256Hex(bytes);
  state.detector = await loadAndCompile(bytes, {accelerator: 'wasm'});
}

async function loadModelFromUrl(jsonUrl) {
  const jsonAt = new URL(jsonUrl, location.href);
  const metaResponse = await fetch(jsonAt);
  if (!metaResponse.ok) throw new Error(`${jsonAt.pathname}: ${metaResponse.status}`);
  const meta = await metaResponse.clone().json();
  const tflite = new URL(meta.model_file || 'model.tflite', jsonAt);
  const response = await fetch(tflite);
  if (!response.ok) throw new Error(`${tflite.pathname}: ${response.status}`);
  const bytes = await response.clone().arrayBuffer();
  await useModel(bytes, meta);
  const cache = await caches.open(MODELS);  // the service worker answers from here offline
  await cache.put(jsonAt, metaResponse);
  await cache.put(tflite, response);
  return meta;
}

async function useModel(bytes, meta) {
  const landmarker = await Landmarker.load(bytes, meta);
  const expected = meta.crop.web_detector.model_sha256;
  if (expected !== state.detectorSha) {
    throw new Error(`the page's face detector (${state.detectorSha.slice(0, 12)}...) is not the one ` +
      `model.json was calibrated for (${expected.slice(0, 12)}...)`);
  }
  state.landmarker?.model.delete();
  state.landmarker = landmarker;
  landmarker.setFlip($('flip').checked);
  $('flip').disabled = !landmarker.canFlip;
  const q = meta.quantization + (meta.flip ? ', flip in the model' : '');
  $('model-status').textContent = `${meta.model_file} (${q}, ${landmarker.size} px input, ` +
    `sha256 ${meta.model_sha256.slice(0, 12)}..., fas_tf ${meta.package?.version ?? '?'})`;
  return meta;
}

async function loadPickedFiles(files) {
  const tflite = files.find((f) => f.name.endsWith('.tflite'));
  const json = files.find((f) => f.name.endsWith('.json'));
  if (!tflite || !json) throw new Error('pick both files: model.tflite and model.json');
  const meta = JSON.parse(await json.text());
  const bytes = await tflite.arrayBuffer();
  await useModel(bytes, meta);
  const cache = await caches.open(PICKED);  // remembered for the next (offline) visit
  await cache.put('./picked/model.json', new Response(JSON.stringify(meta)));
  await cache.put('./picked/model.tflite', new Response(bytes));
}

async function loadDefaultModel() {
  const param = new URLSearchParams(location.search).get('model');
  if (param) return loadModelFromUrl(param);
  const cache = await caches.open(PICKED);
  const json = await cache.match('./picked/model.json');
  const bytes = await cache.match('./picked/model.tflite');
  if (json && bytes) return useModel(await bytes.arrayBuffer(), await json.json());
  const built = await fetch('./model/model.json');
  if (built.ok) return loadModelFromUrl('./model/model.json');
  $('model-status').textContent = 'no model yet: pick model.tflite and model.json (python -m export)';
  return null;
}

// ------------------------------------------------------------------ images

async function decodeImage(blob) {
  const bitmap = await createImageBitmap(blob, {imageOrientation: 'from-image',
    colorSpaceConversion: 'none', premultiplyAlpha: 'none'});
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  ctx.fillStyle = '#000';  // transparent pixels become black, as in fas_tf.data.load_image
  ctx.fillRect(0, 0, bitmap.width, bitmap.height);
  ctx.drawImage(bitmap, 0, 0);
  const data = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  return {bitmap, data, width: bitmap.width, height: bitmap.height};
}

async function fetchImage(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return decodeImage(await response.blob());
}

// ------------------------------------------------------------------ analysis

/** Detector (or a given box / square), contract loop, measurements. */
async function analyze(img, {box = null, square = null, minScore} = {}) {
  const meta = state.landmarker.meta;
  const t0 = performance.now();
  let faces = [], source = 'square';
  if (!square && !box) {
    faces = await detectFaces(state.detector, img, minScore);
    if (!faces.length) return {faces, found: false, ms: {detector: performance.now() - t0}};
    square = detectorSquare(faces[0], detectorConstants(meta), meta.crop.scale);
    source = 'detector';
  } else if (!square) {
    square = drawnSquare(box, meta.crop.scale);
    source = 'drawn box';
  }
  const t1 = performance.now();
  const loop = await state.landmarker.contractLoop(img, square);
  const t2 = performance.now();
  const m = measure(meta.measurements, loop.second.points, loop.second.confidence);
  const strip = ({crop, ...rest}) => rest;  // eslint-disable-line no-unused-vars
  return {found: true, source, faces, box: box ?? faces[0] ?? null, first: strip(loop.first),
    second: strip(loop.second), measurement: m, flip: state.landmarker.flipped,
    ms: {detector: t1 - t0, landmarks: t2 - t1}};
}

// ------------------------------------------------------------------ drawing

const view = {scale: 1, drag: null};

function drawSquare(ctx, sq, k) {
  const h = sq.side / 2, c = Math.cos(sq.angle), s = Math.sin(sq.angle);
  ctx.beginPath();
  [[-h, -h], [h, -h], [h, h], [-h, h]].forEach(([x, y], i) => {
    const px = (sq.cx + c * x - s * y) * k, py = (sq.cy + s * x + c * y) * k;
    if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py);
  });
  ctx.closePath();
  ctx.stroke();
}

function draw() {
  const canvas = $('canvas');
  const img = state.image;
  if (!img) return;
  const k = view.scale = Math.min(2, 900 / img.width, 700 / img.height);
  canvas.width = Math.round(img.width * k);
  canvas.height = Math.round(img.height * k);
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img.bitmap, 0, 0, canvas.width, canvas.height);
  const r = state.result;
  ctx.lineWidth = 2;
  if (r?.box) {
    ctx.strokeStyle = '#ffb000';
    ctx.setLineDash([6, 4]);
    ctx.strokeRect(r.box.x * k, r.box.y * k, r.box.w * k, r.box.h * k);
    ctx.setLineDash([]);
  }
  if (r?.found) {
    ctx.strokeStyle = 'rgba(80, 200, 255, 0.8)';
    drawSquare(ctx, r.second.square, k);
    const dot = Math.max(2, Math.min(4, r.second.square.side * k / 80));
    r.second.points.forEach(([x, y], i) => {
      const c = r.second.confidence[i];
      ctx.fillStyle = c >= r.measurement.thresholds.min_confidence ? '#00e676' : '#ff1744';
      ctx.beginPath();
      ctx.arc(x * k, y * k, dot, 0, 2 * Math.PI);
      ctx.fill();
    });
  }
  if (view.drag) {
    const {x0, y0, x1, y1} = view.drag;
    ctx.strokeStyle = '#ffffff';
    ctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
  }
}

const NAMES = {
  pfl_right_to_icd: 'PFL right / ICD', pfl_left_to_icd: 'PFL left / ICD', pfl_mean_to_icd: 'PFL mean / ICD',
  pfl_right_to_ocd: 'PFL right / OCD', pfl_left_to_ocd: 'PFL left / OCD', pfl_mean_to_ocd: 'PFL mean / OCD',
  icd_to_ocd: 'ICD / OCD', philtrum_to_face_height: 'philtrum / face height',
  upper_lip_to_face_height: 'upper lip / face height', upper_lip_to_mouth_width: 'upper lip / mouth width',
  philtrum_to_mouth_width: 'philtrum / mouth width',
};

function row(cells, cls = '') {
  const tr = document.createElement('tr');
  if (cls) tr.className = cls;
  cells.forEach((c) => { const td = document.createElement('td'); td.textContent = c; tr.appendChild(td); });
  return tr;
}

function showResults() {
  const r = state.result;
  const body = $('ratios');
  body.replaceChildren();
  $('face').textContent = '';
  $('results').hidden = !r?.found;
  if (!r?.found) return;
  const m = r.measurement, f = m.face;
  const pm = (v, s, d) => (v === null ? '-' : `${v.toFixed(d)} ± ${s.toFixed(d)}`);
  const faceReasons = new Set(f.reasons);
  const verdict = (e) => {
    if (e.verdict === 'ok') return 'ok';
    if (e.verdict === 'imprecise') return `imprecise: ${e.reasons.join('; ')}`;
    const own = e.reasons.filter((r) => !faceReasons.has(r));
    return `not measurable: ${[...(faceReasons.size ? ['face (above)'] : []), ...own].join('; ')}`;
  };
  const ordered = [...Object.keys(NAMES).filter((n) => n in m.ratios),
    ...Object.keys(m.ratios).filter((n) => !(n in NAMES))];
  for (const name of ordered) {
    const e = m.ratios[name];
    const cls = {ok: 'ok', imprecise: 'imprecise'}[e.verdict] ?? 'no';
    body.appendChild(row([NAMES[name] ?? name, pm(e.value, e.sigma, 3), verdict(e)], cls));
  }
  for (const name of meta().measurements.distances) {
    const e = m.distances[name];
    body.appendChild(row([`${name} (px)`, pm(e.value_px, e.sigma_px, 1), verdict(e)],
      `distance ${e.verdict === 'ok' ? 'ok' : 'no'}`));
  }
  const ang = (a, s) => (a === null ? '?' : `${a.toFixed(0)} ± ${s.toFixed(0)}°`);
  $('face').textContent = `Face: ${f.verdict}${f.reasons.length ? ` (${f.reasons.join('; ')})` : ''}. ` +
    `Yaw ${ang(f.yaw_deg, f.yaw_sigma_deg)}, pitch ${ang(f.pitch_deg, f.pitch_sigma_deg)}, ` +
    `roll ${ang(f.roll_deg, f.roll_sigma_deg)}; inter-ocular ${f.interocular_px.toFixed(0)} px.`;
}

async function run(options = {}) {
  if (!state.image) return;
  state.options = options;  // a re-run (the flip box) measures the same face again
  if (!state.landmarker) { status('load a model first (model.tflite + model.json)', 'warn'); return; }
  status('measuring...');
  try {
    state.result = await analyze(state.image, options);
  } catch (err) {
    status(String(err.message || err), 'error');
    return;
  }
  const r = state.result;
  if (!r.found) {
    status('No face found automatically: drag a box around the face (forehead to chin).', 'warn');
  } else {
    const how = r.source === 'detector' ? `face found (detector score ${r.faces[0].score.toFixed(2)})` : 'face from your box';
    const passes = r.flip ? 'two passes, each with its mirror image' : 'two passes';
    status(`${how}; landmarks ${r.ms.landmarks.toFixed(0)} ms (${passes}). ` +
      'Wrong face? Drag a box around the right one.', 'ok');
  }
  draw();
  showResults();
}

// ------------------------------------------------------------------ events

function canvasPoint(e) {
  const rect = $('canvas').getBoundingClientRect();
  return [(e.clientX - rect.left) * $('canvas').width / rect.width, (e.clientY - rect.top) * $('canvas').height / rect.height];
}

function wire() {
  const pick = async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      state.image = await decodeImage(file);
    } catch (err) {
      status(`${file.name}: cannot decode this image`, 'error');
      return;
    }
    state.result = null;
    draw();
    await run();
  };
  $('photo').addEventListener('change', pick);
  $('camera').addEventListener('change', pick);
  $('flip').addEventListener('change', async () => {
    if (!state.landmarker) return;
    state.landmarker.setFlip($('flip').checked);
    await run(state.options);
  });
  $('model-files').addEventListener('change', async (e) => {
    try {
      await loadPickedFiles([...e.target.files]);
      status('model loaded', 'ok');
      await run();
    } catch (err) {
      status(String(err.message || err), 'error');
    }
  });
  const canvas = $('canvas');
  canvas.addEventListener('pointerdown', (e) => {
    if (!state.image) return;
    const [x, y] = canvasPoint(e);
    view.drag = {x0: x, y0: y, x1: x, y1: y};
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener('pointermove', (e) => {
    if (!view.drag) return;
    [view.drag.x1, view.drag.y1] = canvasPoint(e);
    draw();
  });
  canvas.addEventListener('pointerup', async () => {
    const d = view.drag;
    view.drag = null;
    if (!d || Math.abs(d.x1 - d.x0) < 8 || Math.abs(d.y1 - d.y0) < 8) { draw(); return; }
    const k = view.scale;
    await run({box: {x: Math.min(d.x0, d.x1) / k, y: Math.min(d.y0, d.y1) / k,
      w: Math.abs(d.x1 - d.x0) / k, h: Math.abs(d.y1 - d.y0) / k}});
  });
}

// ------------------------------------------------------------------ start, and the test hooks

const ready = (async () => {
  wire();
  if ('serviceWorker' in navigator) {
    try { await navigator.serviceWorker.register('./sw.js'); } catch (err) { console.warn('no offline cache:', err); }
  }
  status('loading the runtime and the face detector...');
  await init();
  try {
    await loadDefaultModel();
    status(state.landmarker ? 'ready: choose a photo' : 'ready: load a model, then choose a photo', 'ok');
  } catch (err) {
    status(String(err.message || err), 'error');
  }
})();

function base64(bytes) {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

/** Hooks for tests and benchmarks (tests/test_web.py, benchmarks/web_parity.py). */
window.fasTf = {
  ready,
  loadModel: async (jsonUrl) => { await ready; return loadModelFromUrl(jsonUrl); },
  /** Whole loop on a photo URL; options {box, square, minScore}; `show` draws it in the page. */
  analyzeUrl: async (url, options = {}, show = false) => {
    await ready;
    const img = await fetchImage(url);
    const r = await analyze(img, options);
    if (show) { state.image = img; state.result = r; draw(); showResults(); status('done', 'ok'); }
    return r;
  },
  /** The landmark model alone on square {cx, cy, side, angle} of a photo: crop pixels too. */
  inSquareUrl: async (url, square) => {
    await ready;
    const r = await state.landmarker.inSquare(await fetchImage(url), square);
    return {...r, crop: Array.from(r.crop)};
  },
  /** The decoded photo as the page sees it: {width, height, rgb: base64 of the RGB bytes}. */
  pixelsUrl: async (url) => {
    await ready;
    const {data, width, height} = await fetchImage(url);
    const rgb = new Uint8Array(width * height * 3);
    for (let i = 0; i < width * height; i++) rgb.set(data.subarray(4 * i, 4 * i + 3), 3 * i);
    return {width, height, rgb: base64(rgb)};
  },
  /** The crops the page cuts (no model run): base64 of S x S RGB bytes per square. */
  cropsUrl: async (url, squares, S) => {
    await ready;
    const img = await fetchImage(url);
    return squares.map((sq) => base64(cutSquare(img, sq, S)));
  },
  /** Faces the detector finds in a photo (image pixels). */
  detectUrl: async (url, minScore) => {
    await ready;
    const img = await fetchImage(url);
    return detectFaces(state.detector, img, minScore);
  },
  inputSize: async () => { await ready; return state.landmarker.size; },
  /** Test-time flip on or off (as the checkbox); returns whether answers are flip-averaged. */
  setFlip: async (on) => {
    await ready;
    $('flip').checked = on;
    return state.landmarker.setFlip(on);
  },
  measure: (points, confidence) => measure(state.landmarker.meta.measurements, points, confidence),
  /** Milliseconds per landmark-model run (one crop, after `warmup` runs), `runs` values. */
  benchmark: async (runs = 100, warmup = 10) => {
    await ready;
    const S = state.landmarker.size;
    const crop = new Uint8Array(S * S * 3).map((_, i) => (i * 37) % 256);
    for (let i = 0; i < warmup; i++) await state.landmarker.predict(crop);
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await state.landmarker.predict(crop);
      times.push(performance.now() - t);
    }
    return times;
  },
};
