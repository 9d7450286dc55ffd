// Crop geometry of the model.json contract: the same rules as fas_tf.framing (crop_box,
// detector_square, upright_square, cut_square, to_image), in image pixels, pixel centres at
// integer coordinates, x right, y down.

/** The framing rule on points [[x, y], ...]: {cx, cy, side} of the square around them. */
export function cropBox(points, scale) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const [x, y] of points) {
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
  }
  return {cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, side: Math.max(Math.max(x1 - x0, y1 - y0) * scale, 1)};
}

/** Crop square {cx, cy, side, angle} of a detector box {x, y, w, h} through its constants. */
export function detectorSquare(box, constants, framingScale) {
  const {dx, dy, scale} = constants;
  return {
    cx: box.x + box.w * (0.5 + dx),
    cy: box.y + box.h * (0.5 + dy),
    side: framingScale * scale * Math.max(box.w, box.h),
    angle: 0,
  };
}

/** Crop square of a box drawn around the face by hand: the framing rule on its corners. */
export function drawnSquare(box, framingScale) {
  const sq = cropBox([[box.x, box.y], [box.x + box.w, box.y + box.h]], framingScale);
  return {...sq, angle: 0};
}

/** The framing rule applied with the eyes (landmarks eyes[0] -> eyes[1]) level. */
export function uprightSquare(points, eyes, framingScale) {
  const [a, b] = [points[eyes[0]], points[eyes[1]]];
  const angle = Math.atan2(b[1] - a[1], b[0] - a[0]);
  const c0 = cropBox(points, framingScale);
  const cos = Math.cos(angle), sin = Math.sin(angle);
  // u = R(-angle) (p - c0)
  const turned = points.map(([x, y]) => {
    const dx = x - c0.cx, dy = y - c0.cy;
    return [cos * dx + sin * dy, -sin * dx + cos * dy];
  });
  const m = cropBox(turned, framingScale);
  // c = c0 + R(angle) m
  return {cx: c0.cx + cos * m.cx - sin * m.cy, cy: c0.cy + sin * m.cx + cos * m.cy, side: m.side, angle};
}

/** Image point of crop point (qx, qy) for crop square sq cut at size S. */
export function toImage(q, sq, S) {
  const k = sq.side / S, cos = Math.cos(sq.angle), sin = Math.sin(sq.angle);
  const dx = (q[0] - (S - 1) / 2) * k, dy = (q[1] - (S - 1) / 2) * k;
  return [sq.cx + cos * dx - sin * dy, sq.cy + sin * dx + cos * dy];
}

/** Round half to even (cvRound, numpy.rint). */
function rint(v) {
  const r = Math.round(v);
  return Math.abs(v - Math.trunc(v)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * cv2.warpAffine(img, matrix, (W, H)) for an RGBA image {data, width, height}: RGB Uint8Array,
 * row-major. matrix [[a, b, c], [d, e, f]] maps image pixels to output pixels; bilinear, black
 * outside, inverted and sampled as OpenCV 5 does, in float32 arithmetic (a few values differ by
 * one level from OpenCV's, whose exact float rounding order is not reproduced).
 */
export function warpAffine(img, [[l00, l01, t0], [l10, l11, t1]], W, H) {
  const f = Math.fround;
  const {data, width, height} = img;
  let d = l00 * l11 - l01 * l10;
  d = d !== 0 ? 1 / d : 0;
  const m0 = l11 * d, m1 = l01 * -d, m3 = l10 * -d, m4 = l00 * d;
  const m2 = -m0 * t0 - m1 * t1, m5 = -m3 * t0 - m4 * t1;
  const [a0, a1, a2, a3, a4, a5] = [m0, m1, m2, m3, m4, m5].map(f);
  const out = new Uint8Array(W * H * 3);
  const pixel = (x, y, c) => (x >= 0 && y >= 0 && x < width && y < height ? data[(y * width + x) * 4 + c] : 0);
  for (let j = 0; j < H; j++) {
    for (let i = 0; i < W; i++) {
      const X = f(a0 * i + a1 * j + a2), Y = f(a3 * i + a4 * j + a5);
      const x0 = Math.floor(X), y0 = Math.floor(Y);
      const fx = f(X - x0), fy = f(Y - y0), gx = f(1 - fx), gy = f(1 - fy);
      const o = (j * W + i) * 3;
      for (let c = 0; c < 3; c++) {
        const top = f(f(gx * pixel(x0, y0, c)) + f(fx * pixel(x0 + 1, y0, c)));
        const bottom = f(f(gx * pixel(x0, y0 + 1, c)) + f(fx * pixel(x0 + 1, y0 + 1, c)));
        out[o + c] = Math.min(255, Math.max(0, rint(f(f(gy * top) + f(fy * bottom)))));
      }
    }
  }
  return out;
}

/** Square sq cut at S x S RGB: fas_tf.framing.cut_square (its matrix, then warpAffine). */
export function cutSquare(img, sq, S) {
  const s = S / sq.side, cos = Math.cos(-sq.angle), sin = Math.sin(-sq.angle);
  const l00 = s * cos, l01 = s * -sin, l10 = s * sin, l11 = s * cos;
  const t0 = (S - 1) / 2 - (l00 * sq.cx + l01 * sq.cy), t1 = (S - 1) / 2 - (l10 * sq.cx + l11 * sq.cy);
  return warpAffine(img, [[l00, l01, t0], [l10, l11, t1]], S, S);
}
