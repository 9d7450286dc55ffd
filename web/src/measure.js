// FAS measurements from 68 landmarks: a port of fas_tf.measurements.measure (distances, ratios,
// first-order uncertainties, head pose and the verdict gates). Every table and threshold comes
// from `spec` (model.json "measurements", written by fas_tf.measurements.spec()): none is
// copied here. A measurement aid, not a diagnosis.

const N = 68;

function checkLandmarks(points, confidence) {
  if (points.length !== N || points.some((p) => p.length !== 2 || !p.every(Number.isFinite))) {
    throw new Error('landmarks must be 68 finite (x, y) points');
  }
  const conf = confidence
    ? Array.from(confidence, (c) => (Number.isNaN(c) ? 0 : Math.min(1, Math.max(0, c))))
    : new Array(N).fill(1);
  return [points.map(([x, y]) => [x, y]), conf];
}

const hypot = (v) => Math.hypot(v[0], v[1]);
const sub = (a, b) => [a[0] - b[0], a[1] - b[1]];

function weights(spec, name) {
  const w = new Float64Array(N);
  for (const [i, v] of spec.points[name]) w[i] = v;
  return w;
}

// A scalar of the landmarks: value, gradient d value / d p_i (Float64Array 2N), landmarks needed.
function segment(spec, pts, a, b) {
  const wa = weights(spec, a), wb = weights(spec, b);
  const vec = [0, 0];
  const coef = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    coef[i] = wa[i] - wb[i];
    vec[0] += coef[i] * pts[i][0];
    vec[1] += coef[i] * pts[i][1];
  }
  const d = hypot(vec);
  const u = d > 0 ? [vec[0] / d, vec[1] / d] : [0, 0];
  const grad = new Float64Array(2 * N);
  for (let i = 0; i < N; i++) { grad[2 * i] = coef[i] * u[0]; grad[2 * i + 1] = coef[i] * u[1]; }
  const needs = new Set([...spec.points[a], ...spec.points[b]].map(([i]) => i));
  return {value: d, grad, needs};
}

const union = (a, b) => new Set([...a, ...b]);

function mean(q1, q2) {
  return {value: (q1.value + q2.value) / 2, grad: q1.grad.map((g, i) => (g + q2.grad[i]) / 2),
    needs: union(q1.needs, q2.needs)};
}

function ratio(q1, q2) {
  if (q2.value <= 0) return {value: NaN, grad: new Float64Array(2 * N), needs: union(q1.needs, q2.needs)};
  const r = q1.value / q2.value;
  return {value: r, grad: q1.grad.map((g, i) => (g - r * q2.grad[i]) / q2.value), needs: union(q1.needs, q2.needs)};
}

function sigmaOf(q, sigmaI) {
  let s = 0;
  for (let i = 0; i < N; i++) s += sigmaI[i] ** 2 * (q.grad[2 * i] ** 2 + q.grad[2 * i + 1] ** 2);
  return Math.sqrt(s);
}

function quantities(spec, pts) {
  const q = {};
  for (const [name, [a, b]] of Object.entries(spec.segments)) q[name] = segment(spec, pts, a, b);
  q.pfl_mean = mean(q.pfl_right, q.pfl_left);
  for (const [name, [num, den]] of Object.entries(spec.ratios)) q[name] = ratio(q[num], q[den]);
  return q;
}

// ------------------------------------------------------------------ small linear algebra

function matmul(a, b) {
  return a.map((row) => b[0].map((_, j) => row.reduce((s, v, k) => s + v * b[k][j], 0)));
}
const transpose = (a) => a[0].map((_, j) => a.map((row) => row[j]));

/** Inverse of a square matrix (Gauss-Jordan with partial pivoting); null when singular. */
function inverse(m) {
  const n = m.length;
  const a = m.map((row, i) => [...row, ...row.map((_, j) => (i === j ? 1 : 0))]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r][c]) > Math.abs(a[p][c])) p = r;
    if (!(Math.abs(a[p][c]) > 1e-300)) return null;
    [a[c], a[p]] = [a[p], a[c]];
    const d = a[c][c];
    for (let j = 0; j < 2 * n; j++) a[c][j] /= d;
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = a[r][c];
      if (f !== 0) for (let j = 0; j < 2 * n; j++) a[r][j] -= f * a[c][j];
    }
  }
  return a.map((row) => row.slice(n));
}

function solve(a, b) {
  const inv = inverse(a);
  return inv ? inv.map((row) => row.reduce((s, v, k) => s + v * b[k], 0)) : null;
}

/** Rotation matrix of a rotation vector (cv2.Rodrigues). */
function rodrigues(r) {
  const t = Math.hypot(r[0], r[1], r[2]);
  if (t < 1e-300) return [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
  const k = r.map((v) => v / t), c = Math.cos(t), s = Math.sin(t);
  const K = [[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]];
  return [0, 1, 2].map((i) => [0, 1, 2].map((j) => (i === j ? c : 0) + (1 - c) * k[i] * k[j] + s * K[i][j]));
}

// ------------------------------------------------------------------ head pose

/** Pinhole projection of object points (rows) with params [rvec, tvec] -> [u0, v0, u1, ...]. */
function project(obj, p, f, cx, cy) {
  const R = rodrigues(p.slice(0, 3));
  const out = [];
  for (const X of obj) {
    const x = R[0][0] * X[0] + R[0][1] * X[1] + R[0][2] * X[2] + p[3];
    const y = R[1][0] * X[0] + R[1][1] * X[1] + R[1][2] * X[2] + p[4];
    const z = R[2][0] * X[0] + R[2][1] * X[1] + R[2][2] * X[2] + p[5];
    out.push(f * x / z + cx, f * y / z + cy);
  }
  return out;
}

/** d (projection) / d params by central differences: rows 2n, columns 6. */
function jacobian(fn, p) {
  const cols = p.map((v, c) => {
    const h = 1e-7 * Math.max(1, Math.abs(v));
    const hi = [...p], lo = [...p];
    hi[c] += h; lo[c] -= h;
    const a = fn(hi), b = fn(lo);
    return a.map((x, i) => (x - b[i]) / (2 * h));
  });
  return transpose(cols);
}

/** Levenberg-Marquardt fit of params p0 minimizing |fn(p) - target|^2 (cv2.solvePnPRefineLM). */
function levenbergMarquardt(fn, target, p0) {
  let p = [...p0];
  const cost = (q) => fn(q).reduce((s, v, i) => s + (v - target[i]) ** 2, 0);
  let c = cost(p), lambda = 1e-3;
  for (let it = 0; it < 500; it++) {
    const J = jacobian(fn, p), Jt = transpose(J);
    const r = fn(p).map((v, i) => v - target[i]);
    const A = matmul(Jt, J), g = Jt.map((row) => row.reduce((s, v, k) => s + v * r[k], 0));
    let improved = false;
    while (lambda < 1e16) {
      const damped = A.map((row, i) => row.map((v, j) => (i === j ? v * (1 + lambda) : v)));
      const step = solve(damped, g.map((v) => -v));
      if (!step) { lambda *= 10; continue; }
      const q = p.map((v, i) => v + step[i]);
      const cq = cost(q);
      if (cq <= c) {
        const small = Math.hypot(...step) <= 1e-14 * Math.max(1, Math.hypot(...p));
        const flat = c - cq <= 1e-18 * Math.max(c, 1e-300);
        p = q; lambda = Math.max(lambda / 10, 1e-12);
        improved = !(small || flat);
        c = cq;
        break;
      }
      lambda *= 10;
    }
    if (!improved) break;
  }
  return p;
}

const FLIP_Z = [1, 1, -1];

/** (yaw, pitch, roll) in degrees of a rotation vector, R = Rz Rx Ry in the head frame. */
function angles(rvec) {
  const R0 = rodrigues(rvec);
  const r = R0.map((row, i) => row.map((v, j) => FLIP_Z[i] * v * FLIP_Z[j]));
  const pitch = Math.asin(Math.min(1, Math.max(-1, r[2][1])));
  const yaw = Math.atan2(-r[2][0], r[2][2]);
  const roll = Math.atan2(-r[0][1], r[1][1]);
  return [yaw, pitch, roll].map((a) => a * 180 / Math.PI);
}

/** Head pose as fas_tf.measurements.estimate_pose (same keys; NaN when it cannot be fitted). */
export function estimatePose(spec, pts, conf, th) {
  const idx = spec.pose_landmarks.filter((i) => conf[i] >= th.min_confidence);
  const out = {yaw_deg: NaN, pitch_deg: NaN, roll_deg: NaN, yaw_sigma_deg: NaN, pitch_sigma_deg: NaN,
    roll_sigma_deg: NaN, pose_residual: NaN, pose_landmarks: idx.length};
  const iod = hypot(sub(pts[45], pts[36]));
  if (idx.length < spec.min_pose_landmarks || !(iod > 0)) return out;
  const model = idx.map((i) => spec.head_model[i]);
  const centroid = [0, 1, 2].map((c) => model.reduce((s, m) => s + m[c], 0) / model.length);
  const obj = model.map((m) => m.map((v, c) => (v - centroid[c]) * FLIP_Z[c]));
  const img = idx.map((i) => pts[i]);
  const centre = [0, 1].map((c) => img.reduce((s, p) => s + p[c], 0) / img.length);
  const objC = [0, 1].map((c) => obj.reduce((s, o) => s + o[c], 0) / obj.length);
  const meanSq = (rows, c) => rows.reduce((s, r) => s + (r[0] - c[0]) ** 2 + (r[1] - c[1]) ** 2, 0) / rows.length;
  const scale = Math.sqrt(meanSq(img, centre) / meanSq(obj, objC));
  if (!(scale > 0)) return out;
  const f = th.camera_distance * scale;
  const eye = [0, 1].map((c) => (pts[42][c] + pts[45][c] - pts[36][c] - pts[39][c]) / 2);
  const roll0 = Math.atan2(eye[1], eye[0]);
  const fn = (p) => project(obj, p, f, centre[0], centre[1]);
  const target = img.flat();
  const p = levenbergMarquardt(fn, target, [0, 0, roll0, 0, 0, th.camera_distance]);
  const proj = fn(p);
  const resid = proj.map((v, i) => v - target[i]);
  const sq = resid.reduce((s, v) => s + v * v, 0);
  const residVar = sq / Math.max(2 * idx.length - 6, 1);
  const sigmaI = idx.map((i) => iod * (th.sigma_floor + th.k * (1 - conf[i])));
  const misfit = Math.max(residVar - sigmaI.reduce((s, v) => s + v * v, 0) / sigmaI.length, 0);
  const J = jacobian(fn, p);
  const w = J.map((_, row) => 1 / (sigmaI[row >> 1] ** 2 + misfit));
  const JtWJ = transpose(J).map((col) => transpose(J).map((col2) => col.reduce((s, v, k) => s + v * w[k] * col2[k], 0)));
  const inv = inverse(JtWJ);
  const cov = inv ? inv.slice(0, 3).map((row) => row.slice(0, 3)) : [[Infinity, Infinity, Infinity],
    [Infinity, Infinity, Infinity], [Infinity, Infinity, Infinity]];
  const rvec = p.slice(0, 3);
  const ang = angles(rvec);
  const G = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
  for (let c = 0; c < 3; c++) {
    const hi = [...rvec], lo = [...rvec];
    hi[c] += 1e-6; lo[c] -= 1e-6;
    const a = angles(hi), b = angles(lo);
    for (let r = 0; r < 3; r++) G[r][c] = ((((a[r] - b[r] + 180) % 360) + 360) % 360 - 180) / 2e-6;
  }
  const GCG = matmul(matmul(G, cov), transpose(G));
  const sig = [0, 1, 2].map((i) => Math.sqrt(Math.max(GCG[i][i], 0)));
  return {...out, yaw_deg: ang[0], pitch_deg: ang[1], roll_deg: ang[2], yaw_sigma_deg: sig[0],
    pitch_sigma_deg: sig[1], roll_sigma_deg: sig[2],
    pose_residual: Math.sqrt(sq / idx.length) / iod};
}

// ------------------------------------------------------------------ gates and the report

function eyeOpening(spec, pts) {
  const out = {};
  for (const [eye, [outer, inner, upper, lower]] of Object.entries(spec.eyes)) {
    const width = hypot(sub(pts[outer], pts[inner]));
    const gaps = upper.reduce((s, u, k) => s + hypot(sub(pts[u], pts[lower[k]])), 0);
    out[eye] = width > 0 ? gaps / (2 * width) : NaN;
  }
  return out;
}

function expression(pts) {
  const width = hypot(sub(pts[54], pts[48]));
  const gap = hypot(sub(pts[66], pts[62]));
  const axis = sub(pts[45], pts[36]);
  const iod = hypot(axis);
  let brow = NaN;
  if (iod > 0) {
    const normal = [-axis[1] / iod, axis[0] / iod];
    brow = [19, 24].map((i) => Math.abs(sub(pts[i], pts[36])[0] * normal[0] + sub(pts[i], pts[36])[1] * normal[1]))
      .reduce((s, v) => s + v, 0) / 2 / iod;
  }
  return {mouth_open: width > 0 ? gap / width : NaN, brow_raise: brow};
}

const fmt = (x) => (x === null || x === undefined || !Number.isFinite(x) ? null : x);
const g = (x) => String(x);

/**
 * Measure one face (fas_tf.measurements.measure): {disclaimer, face, distances, ratios,
 * thresholds}; values null when not measurable, each with verdict, reasons and reason_codes.
 */
export function measure(spec, landmarks, confidence = null, mmPerPixel = null) {
  const th = spec.thresholds;
  const [pts, conf] = checkLandmarks(landmarks, confidence);
  const iod = hypot(sub(pts[45], pts[36]));
  const sigmaI = conf.map((c) => iod * (th.sigma_floor + th.k * (1 - c)));
  const pose = estimatePose(spec, pts, conf, th);
  const eyes = eyeOpening(spec, pts);
  const expr = expression(pts);
  const face = [];
  if (iod <= 1e-9) face.push(['degenerate', 'degenerate landmarks: outer eye corners coincide']);
  else if (iod < th.min_interocular_px) {
    face.push(['face_too_small', `face too small: inter-ocular distance ${iod.toFixed(1)} px < ${g(th.min_interocular_px)} px`]);
  }
  const yaw = pose.yaw_deg, pitch = pose.pitch_deg;
  const poseOk = Number.isFinite(yaw) && Number.isFinite(pitch);
  if (!poseOk) {
    face.push(['pose_unknown', `head pose cannot be estimated: ${pose.pose_landmarks} confident pose landmarks (need ${spec.min_pose_landmarks})`]);
  } else {
    if (Math.abs(yaw) > th.max_yaw_deg) {
      face.push(['head_turned', `head turned: yaw ${yaw.toFixed(0)} +- ${pose.yaw_sigma_deg.toFixed(0)} deg (limit ${g(th.max_yaw_deg)})`]);
    }
    if (Math.abs(pitch) > th.max_pitch_deg) {
      face.push(['head_pitched', `head pitched (${pitch > 0 ? 'chin up' : 'chin down'}): pitch ${pitch.toFixed(0)} +- ${pose.pitch_sigma_deg.toFixed(0)} deg (limit ${g(th.max_pitch_deg)})`]);
    }
  }
  const q = quantities(spec, pts);
  const mouthGated = new Set(spec.mouth_gated), browGated = new Set(spec.brow_gated);
  const unilateral = new Set(spec.unilateral), mixed = new Set(spec.mixed_direction);

  function reasonsFor(name) {
    const rs = [...face];
    const parts = spec.ratios[name] || [name];
    const needs = new Set(q[name].needs);
    const eyesNeeded = [...new Set(parts.flatMap((p) => spec.eye_of[p] || []))].sort();
    for (const eye of eyesNeeded) {
      const [, , upper, lower] = spec.eyes[eye];
      [...upper, ...lower].forEach((i) => needs.add(i));
      if (eyes[eye] < th.min_eye_opening) {
        rs.push(['eyes_not_open', `${eye} eye not open enough: eye aspect ratio ${eyes[eye].toFixed(2)} < ${g(th.min_eye_opening)}`]);
      }
    }
    if (parts.some((p) => mouthGated.has(p))) {
      spec.mouth_landmarks.forEach((i) => needs.add(i));
      if (expr.mouth_open > th.max_mouth_open) {
        rs.push(['mouth_open', `strong expression: mouth open (lip gap ${expr.mouth_open.toFixed(2)} x mouth width > ${g(th.max_mouth_open)})`]);
      }
    }
    if (parts.some((p) => browGated.has(p))) {
      spec.brow_landmarks.forEach((i) => needs.add(i));
      if (expr.brow_raise > th.max_brow_raise) {
        rs.push(['brows_raised', `strong expression: brows raised (${expr.brow_raise.toFixed(2)} IOD above the eyes > ${g(th.max_brow_raise)})`]);
      }
    }
    const low = [...needs].filter((i) => conf[i] < th.min_confidence).sort((a, b) => a - b);
    if (low.length) rs.push(['low_confidence', `low confidence (< ${g(th.min_confidence)}) at landmark(s) [${low.join(', ')}]`]);
    const oneEye = parts.some((p) => unilateral.has(p));
    const limit = oneEye ? th.max_yaw_unilateral_deg : th.max_yaw_mixed_deg;
    if ((oneEye || mixed.has(name)) && poseOk && limit < Math.abs(yaw) && Math.abs(yaw) <= th.max_yaw_deg) {
      rs.push(['head_turned_for_value', `head turned too far for this value: yaw ${yaw.toFixed(0)} deg (limit ${g(limit)})${oneEye ? '; use pfl_mean' : ''}`]);
    }
    const sig = sigmaOf(q[name], sigmaI);
    const v = q[name].value;
    if (!(v > 0 && Number.isFinite(v))) rs.push(['degenerate', 'degenerate geometry (zero length)']);
    else if (sig / v > th.max_relative_uncertainty) {
      rs.push(['uncertain', `uncertainty too large: ${(100 * sig / v).toFixed(0)} % > ${g(100 * th.max_relative_uncertainty)} %`]);
    }
    return rs;
  }

  function entry(name, valueKey, description) {
    const rs = reasonsFor(name);
    const ok = rs.length === 0;
    const sig = sigmaOf(q[name], sigmaI);
    const e = {
      [valueKey]: ok ? fmt(q[name].value) : null,
      [valueKey.replace('value', 'sigma')]: ok ? fmt(sig) : null,
      verdict: ok ? 'ok' : 'not measurable',
      reasons: rs.map(([, m]) => m),
      reason_codes: [...new Set(rs.map(([c]) => c))].sort(),
      landmarks: [...q[name].needs].sort((a, b) => a - b),
      description,
    };
    if (mmPerPixel !== null && valueKey === 'value_px') {
      e.value_mm = ok ? fmt(q[name].value * mmPerPixel) : null;
      e.sigma_mm = ok ? fmt(sig * mmPerPixel) : null;
    }
    return e;
  }

  const distances = {};
  for (const name of spec.distances) {
    distances[name] = entry(name, 'value_px', spec.segments[name] ? spec.segments[name][2] : 'mean palpebral fissure length of both eyes');
  }
  const ratios = {};
  for (const [name, [num, den]] of Object.entries(spec.ratios)) ratios[name] = entry(name, 'value', `${num} / ${den}`);
  const poseOut = {};
  for (const [k, v] of Object.entries(pose)) poseOut[k] = fmt(v);
  return {
    disclaimer: spec.disclaimer,
    side_convention: spec.side_convention,
    face: {
      verdict: face.length ? 'not measurable' : 'ok',
      reasons: face.map(([, m]) => m),
      reason_codes: [...new Set(face.map(([c]) => c))].sort(),
      interocular_px: iod,
      mm_per_pixel: mmPerPixel,
      ...poseOut,
      eye_opening_right: fmt(eyes.right),
      eye_opening_left: fmt(eyes.left),
      mouth_open: fmt(expr.mouth_open),
      brow_raise: fmt(expr.brow_raise),
    },
    distances,
    ratios,
    thresholds: th,
  };
}
