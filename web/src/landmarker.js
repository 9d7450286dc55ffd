// The exported landmark model (model.tflite + model.json of `python -m export`) run with
// LiteRT.js, and the app-side loop of export/MOBILE.md around it.

import {loadAndCompile, Tensor} from '@litertjs/core';
import {cutSquare, toImage, uprightSquare} from './geometry.js';

export async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** What the page needs from model.json; throws a one-line message naming what is missing. */
export function checkMetadata(meta) {
  if (meta.format !== 'fas_tf.landmarks.tflite') throw new Error('model.json: not a fas_tf landmark model description');
  const detector = meta.crop?.web_detector?.detector;
  const missing = [['crop.web_detector', detector],
    ['crop.from_face_detector.constants_by_detector', meta.crop?.from_face_detector?.constants_by_detector?.[detector]],
    ['measurements', meta.measurements],
    ['measurements.between_infant_sd', meta.measurements?.between_infant_sd]]
    .filter(([, v]) => !v).map(([k]) => k);
  if (missing.length) {
    throw new Error(`model.json (metadata_version ${meta.metadata_version}) has no ${missing.join(', ')}: ` +
      're-export the model with this version of python -m export');
  }
  if (!['uint8', 'float32'].includes(meta.input.dtype)) throw new Error(`model.json: input dtype ${meta.input.dtype} is not supported`);
}

/** The landmark permutation of a horizontal mirror: landmark k of a crop is landmark perm[k] of
 * its mirror image (model.json's landmarks.flip_pairs; fas_tf.inference.mirror_permutation). */
export function mirrorPermutation(count, pairs) {
  const perm = Array.from({length: count}, (_, k) => k);
  for (const [a, b] of pairs) { perm[a] = b; perm[b] = a; }
  return perm;
}

/** An S x S RGB crop mirrored left to right (the crop's columns reversed). */
export function mirrorCrop(crop, S) {
  const out = new Uint8Array(crop.length);
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) out.set(crop.subarray(3 * (y * S + x), 3 * (y * S + x) + 3), 3 * (y * S + S - 1 - x));
  }
  return out;
}

export class Landmarker {
  constructor(model, meta) {
    this.model = model;
    this.meta = meta;
    this.size = meta.input.shape[1];
    const pairs = meta.landmarks?.flip_pairs ?? [];
    this.permutation = pairs.length ? mirrorPermutation(meta.landmarks.count, pairs) : null;
    this.setFlip(true);  // as fas_tf.measure by default
  }

  /** Test-time flip in the page on or off (never for a model exported with --flip, whose graph
   * flips itself); returns whether the answers are flip-averaged. */
  setFlip(on) {
    this.flip = this.canFlip && Boolean(on);
    return this.flipped;
  }

  /** Whether the page can add test-time flip (the model's mirror pairs are known, and the
   * exported graph does not flip already). */
  get canFlip() { return Boolean(this.permutation) && !this.meta.flip; }

  /** Whether the answers are flip-averaged, by the page or by the exported graph. */
  get flipped() { return Boolean(this.meta.flip) || this.flip; }

  /** Compile model bytes after checking them against model.json (sha256). */
  static async load(bytes, meta) {
    checkMetadata(meta);
    const sha = await sha256Hex(bytes);
    if (sha !== meta.model_sha256) throw new Error(`model.tflite does not match model.json (sha256 ${sha.slice(0, 12)}..., expected ${meta.model_sha256.slice(0, 12)}...)`);
    const model = await loadAndCompile(new Uint8Array(bytes), {accelerator: 'wasm'});
    return new Landmarker(model, meta);
  }

  /** Landmarks (crop pixels) and confidences of one S x S RGB crop (Uint8Array, 0..255). */
  async predict(crop) {
    const S = this.size;
    const data = this.meta.input.dtype === 'uint8' ? crop : Float32Array.from(crop);
    const input = new Tensor(data, [1, S, S, 3]);
    const runner = this.model.signatures?.[this.meta.signature] ?? this.model;
    const out = await runner.run({[this.meta.input.name]: input});
    input.delete();
    const pts = out.landmarks.toTypedArray(), conf = out.confidence.toTypedArray();
    Object.values(out).forEach((t) => t.delete());
    const points = [];
    for (let i = 0; i < conf.length; i++) points.push([pts[2 * i], pts[2 * i + 1]]);
    return {points, confidence: Array.from(conf)};
  }

  /** predict(), averaged with the mirror image's answer mirrored back when `flip` is on
   * (fas_tf.inference.FlipAveraged: x = S - 1 - x', landmarks permuted; two model runs). */
  async predictCrop(crop) {
    const a = await this.predict(crop);
    if (!this.flip) return a;
    const S = this.size, m = await this.predict(mirrorCrop(crop, S)), perm = this.permutation;
    return {points: a.points.map(([x, y], k) => {
      const [mx, my] = m.points[perm[k]];
      return [(x + (S - 1 - mx)) / 2, (y + my) / 2];
    }), confidence: a.confidence.map((c, k) => (c + m.confidence[perm[k]]) / 2)};
  }

  /** The model on square sq {cx, cy, side, angle} of an RGBA image; points in image pixels too. */
  async inSquare(img, sq) {
    const crop = cutSquare(img, sq, this.size);
    const r = await this.predictCrop(crop);
    return {square: sq, crop, cropPoints: r.points, confidence: r.confidence,
      points: r.points.map((q) => toImage(q, sq, this.size))};
  }

  /** MOBILE.md's loop: first pass on `square`, then the upright second pass. */
  async contractLoop(img, square) {
    const first = await this.inSquare(img, square);
    const up = uprightSquare(first.points, this.meta.landmarks.interocular, this.meta.crop.scale);
    const second = await this.inSquare(img, up);
    return {first, second};
  }
}
