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

/**
 * Cut square sq from an RGBA image {data, width, height} at S x S RGB (Uint8Array, row-major):
 * bilinear, black outside, sample positions on a 1/32-pixel grid like cv2.warpAffine.
 */
export function cutSquare(img, sq, S) {
  const out = new Uint8Array(S * S * 3);
  const {data, width, height} = img;
  const k = sq.side / S, cos = Math.cos(sq.angle), sin = Math.sin(sq.angle);
  const half = (S - 1) / 2;
  const pixel = (x, y, c) => (x >= 0 && y >= 0 && x < width && y < height ? data[(y * width + x) * 4 + c] : 0);
  for (let j = 0; j < S; j++) {
    for (let i = 0; i < S; i++) {
      const dx = (i - half) * k, dy = (j - half) * k;
      const px = Math.round((sq.cx + cos * dx - sin * dy) * 32) / 32;
      const py = Math.round((sq.cy + sin * dx + cos * dy) * 32) / 32;
      const x0 = Math.floor(px), y0 = Math.floor(py);
      const fx = px - x0, fy = py - y0;
      const o = (j * S + i) * 3;
      for (let c = 0; c < 3; c++) {
        const v = (1 - fy) * ((1 - fx) * pixel(x0, y0, c) + fx * pixel(x0 + 1, y0, c)) +
          fy * ((1 - fx) * pixel(x0, y0 + 1, c) + fx * pixel(x0 + 1, y0 + 1, c));
        out[o + c] = Math.min(255, Math.max(0, Math.round(v)));
      }
    }
  }
  return out;
}
