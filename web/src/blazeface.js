// MediaPipe BlazeFace short-range face detector (face_detection_short_range.tflite), run with
// LiteRT.js: letterboxed 128 x 128 RGB input in [-1, 1], SSD anchors, box decoding and weighted
// non-maximum suppression as in MediaPipe's face_detection_short_range graph
// (SsdAnchorsCalculator, TensorsToDetectionsCalculator, NonMaxSuppressionCalculator), step for
// step as fas_tf.detection.blazeface (tests/test_web.py compares the boxes).

import {Tensor} from '@litertjs/core';
import {warpAffine} from './geometry.js';

export const INPUT = 128;
const STRIDES = [8, 16, 16, 16];  // anchor layers; 2 anchors per layer and cell, fixed size 1
const SCALE = 128;  // x/y/w/h_scale of the box regressors
const SCORE_CLIP = 100;
export const MIN_SCORE = 0.5;  // MediaPipe's min_score_thresh
const IOU = 0.3;  // min_suppression_threshold

/** SSD anchor centres (x, y) in [0, 1] of the 896 anchors, in the regressors' order. */
export function anchors() {
  const out = [];
  let layer = 0;
  while (layer < STRIDES.length) {
    let last = layer;
    while (last < STRIDES.length && STRIDES[last] === STRIDES[layer]) last++;
    const perCell = 2 * (last - layer);
    const grid = Math.ceil(INPUT / STRIDES[layer]);
    for (let y = 0; y < grid; y++) {
      for (let x = 0; x < grid; x++) {
        for (let a = 0; a < perCell; a++) out.push([(x + 0.5) / grid, (y + 0.5) / grid]);
      }
    }
    layer = last;
  }
  return out;
}

const ANCHORS = anchors();

function iou(a, b) {
  const x0 = Math.max(a.x, b.x), y0 = Math.max(a.y, b.y);
  const x1 = Math.min(a.x + a.w, b.x + b.w), y1 = Math.min(a.y + a.h, b.y + b.h);
  const inter = Math.max(0, x1 - x0) * Math.max(0, y1 - y0);
  const union = a.w * a.h + b.w * b.h - inter;
  return union > 0 ? inter / union : 0;
}

/** Decoded detections {x, y, w, h, score, keypoints} (input-relative units) above minScore. */
export function decode(regressors, scores, minScore = MIN_SCORE) {
  const found = [];
  for (let i = 0; i < ANCHORS.length; i++) {
    const raw = Math.max(-SCORE_CLIP, Math.min(SCORE_CLIP, scores[i]));
    const score = 1 / (1 + Math.exp(-raw));
    if (score < minScore) continue;
    const r = regressors.subarray(i * 16, i * 16 + 16);
    const [ax, ay] = ANCHORS[i];
    const xc = r[0] / SCALE + ax, yc = r[1] / SCALE + ay;
    const w = r[2] / SCALE, h = r[3] / SCALE;
    const keypoints = [];
    for (let k = 0; k < 6; k++) keypoints.push([r[4 + 2 * k] / SCALE + ax, r[5 + 2 * k] / SCALE + ay]);
    found.push({x: xc - w / 2, y: yc - h / 2, w, h, score, keypoints});
  }
  return found;
}

/** Weighted non-maximum suppression: each cluster becomes its score-weighted mean box. */
export function weightedNms(detections) {
  let rest = [...detections].sort((a, b) => b.score - a.score);
  const kept = [];
  while (rest.length) {
    const top = rest[0];
    const cluster = rest.filter((d) => iou(top, d) > IOU);
    rest = rest.filter((d) => iou(top, d) <= IOU);
    const total = cluster.reduce((s, d) => s + d.score, 0);
    const mean = (f) => cluster.reduce((s, d) => s + f(d) * d.score, 0) / total;
    const x0 = mean((d) => d.x), y0 = mean((d) => d.y);
    const x1 = mean((d) => d.x + d.w), y1 = mean((d) => d.y + d.h);
    const keypoints = top.keypoints.map((_, k) => [mean((d) => d.keypoints[k][0]), mean((d) => d.keypoints[k][1])]);
    kept.push({x: x0, y: y0, w: x1 - x0, h: y1 - y0, score: top.score, keypoints});
  }
  return kept;
}

/**
 * Faces in an image: [{x, y, w, h, score, keypoints}] in image pixels, best first.
 * img: the decoded RGBA image {data, width, height}; letterboxed (centred in a black square)
 * exactly as fas_tf.detection.blazeface does, so its box -> crop constants apply.
 */
export async function detectFaces(model, img, minScore = MIN_SCORE) {
  const {width, height} = img;
  const side = Math.max(width, height);
  const padX = (side - width) / 2, padY = (side - height) / 2, s = INPUT / side;
  const square = warpAffine(img, [[s, 0, padX * s], [0, s, padY * s]], INPUT, INPUT);
  const input = Float32Array.from(square, (v) => Math.fround(v / 127.5) - 1);
  const tensor = new Tensor(input, [1, INPUT, INPUT, 3]);
  const outputs = await model.run([tensor]);
  tensor.delete();
  const named = {};
  model.getOutputDetails().forEach((d, i) => { named[d.name] = outputs[i].toTypedArray(); });
  outputs.forEach((t) => t.delete());
  const faces = weightedNms(decode(named.regressors, named.classificators, minScore));
  const back = (x, y) => [x * side - padX, y * side - padY];
  return faces.map((f) => {
    const [x, y] = back(f.x, f.y);
    return {x, y, w: f.w * side, h: f.h * side, score: f.score,
      keypoints: f.keypoints.map(([kx, ky]) => back(kx, ky))};
  });
}
