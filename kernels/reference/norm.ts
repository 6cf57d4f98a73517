// CPU references of the norms (kernels/norm.ts; autograd/ops/norm.ts groupNorm, layerNorm, batchNorm2d)
// in f64, forward and backward: plain functions on Float64Array, the same row-major layouts as the ops.
// Every norm normalises sets of values by their mean and biased variance, then applies a per-channel
// affine weight and bias: GroupNorm a sample's group of channels, LayerNorm (GroupNorm(1) on
// [rows, L], the weight per element of L) a row, BatchNorm2d a channel over the batch.

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** Gradients of sum(y · dy) with respect to x, the weight and the bias. */
export interface NormGrads {
  dx: Float64Array;
  dw: Float64Array;
  db: Float64Array;
}

/**
 * Normalises the sets `sets(k)` (each a list of flat indices into x, channel `chan(i)` per index) and
 * returns y; with `dy`, the gradients too. The shared core of every norm's forward and backward.
 */
function normSets(
  x: Float64Array,
  sets: number[][],
  chan: (i: number) => number,
  channels: number,
  w: Float64Array | null,
  b: Float64Array | null,
  eps: number,
  dy: Float64Array | null,
): { y: Float64Array; mean: Float64Array; variance: Float64Array; grads: NormGrads | null } {
  const y = new Float64Array(x.length), mean = new Float64Array(sets.length);
  const variance = new Float64Array(sets.length);
  const grads = dy
    ? { dx: new Float64Array(x.length), dw: new Float64Array(channels), db: new Float64Array(channels) }
    : null;
  sets.forEach((set, k) => {
    const len = set.length;
    let mu = 0;
    for (const i of set) mu += x[i];
    mu /= len;
    let v = 0;
    for (const i of set) v += (x[i] - mu) ** 2;
    v /= len;
    mean[k] = mu;
    variance[k] = v;
    const rs = 1 / Math.sqrt(v + eps);
    for (const i of set) {
      const ch = chan(i);
      y[i] = (x[i] - mu) * rs * (w ? w[ch] : 1) + (b ? b[ch] : 0);
    }
    if (!dy || !grads) return;
    // dx = rs·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·w, x̂ = (x − μ)·rs
    let mg = 0, mgx = 0;
    for (const i of set) {
      const ch = chan(i), xh = (x[i] - mu) * rs, g = dy[i] * (w ? w[ch] : 1);
      mg += g;
      mgx += g * xh;
      grads.dw[ch] += dy[i] * xh;
      grads.db[ch] += dy[i];
    }
    mg /= len;
    mgx /= len;
    for (const i of set) {
      const xh = (x[i] - mu) * rs, g = dy[i] * (w ? w[chan(i)] : 1);
      grads.dx[i] = rs * (g - mg - xh * mgx);
    }
  });
  return { y, mean, variance, grads };
}

/** The sets of GroupNorm(groups) on x [N, C, *]: per sample and group, its channels' values. */
function groupSets(shape: number[], groups: number) {
  const [n, c] = shape, m = prod(shape.slice(2)), len = (c / groups) * m;
  const sets = Array.from(
    { length: n * groups },
    (_, s) => Array.from({ length: len }, (_, r) => s * len + r),
  );
  return { sets, chan: (i: number) => Math.floor(i / m) % c, channels: c };
}

/** GroupNorm(groups) on x [N, C, *]; LayerNorm over the last L values is GroupNorm(1) on [rows, L]. */
export function groupNormRef(
  x: Float64Array,
  shape: number[],
  groups: number,
  w: Float64Array | null,
  b: Float64Array | null,
  eps = 1e-5,
): Float64Array {
  const g = groupSets(shape, groups);
  return normSets(x, g.sets, g.chan, g.channels, w, b, eps, null).y;
}

/** Gradients of sum(groupNormRef(x, …) · dy); dw and db per channel (as if affine; w null: weight 1). */
export function groupNormBackwardRef(
  x: Float64Array,
  shape: number[],
  groups: number,
  w: Float64Array | null,
  dy: Float64Array,
  eps = 1e-5,
): NormGrads {
  const g = groupSets(shape, groups);
  return normSets(x, g.sets, g.chan, g.channels, w, null, eps, dy).grads!;
}

/** LayerNorm over the last `l` values of x (weight and bias of l values each). */
export function layerNormRef(
  x: Float64Array,
  l: number,
  w: Float64Array | null,
  b: Float64Array | null,
  eps = 1e-5,
): Float64Array {
  return groupNormRef(x, [x.length / l, l], 1, w, b, eps);
}

/** Gradients of sum(layerNormRef(x, …) · dy). */
export function layerNormBackwardRef(
  x: Float64Array,
  l: number,
  w: Float64Array | null,
  dy: Float64Array,
  eps = 1e-5,
): NormGrads {
  return groupNormBackwardRef(x, [x.length / l, l], 1, w, dy, eps);
}

/** The sets of BatchNorm on x [N, C, *]: per channel, its values in every sample. */
function batchSets(shape: number[]) {
  const [n, c] = shape, m = prod(shape.slice(2));
  const sets = Array.from({ length: c }, (_, ch) => {
    const set: number[] = [];
    for (let i = 0; i < n; i++) for (let r = 0; r < m; r++) set.push((i * c + ch) * m + r);
    return set;
  });
  return { sets, chan: (i: number) => Math.floor(i / m) % c, channels: c };
}

/** BatchNorm2d in training mode (batch statistics); also returns the statistics (biased variance). */
export function batchNorm2dRef(
  x: Float64Array,
  shape: number[],
  w: Float64Array | null,
  b: Float64Array | null,
  eps = 1e-5,
): { y: Float64Array; mean: Float64Array; variance: Float64Array } {
  const s = batchSets(shape);
  const { y, mean, variance } = normSets(x, s.sets, s.chan, s.channels, w, b, eps, null);
  return { y, mean, variance };
}

/** Gradients of sum(batchNorm2dRef(x, …).y · dy) (training mode: through the batch statistics). */
export function batchNorm2dBackwardRef(
  x: Float64Array,
  shape: number[],
  w: Float64Array | null,
  dy: Float64Array,
  eps = 1e-5,
): NormGrads {
  const s = batchSets(shape);
  return normSets(x, s.sets, s.chan, s.channels, w, null, eps, dy).grads!;
}

/** BatchNorm2d in eval mode: the running statistics `rm`, `rv` per channel. */
export function batchNorm2dEvalRef(
  x: Float64Array,
  shape: number[],
  w: Float64Array | null,
  b: Float64Array | null,
  rm: Float64Array,
  rv: Float64Array,
  eps = 1e-5,
): Float64Array {
  const c = shape[1], m = prod(shape.slice(2));
  return x.map((v, k) => {
    const ch = Math.floor(k / m) % c;
    return (v - rm[ch]) / Math.sqrt(rv[ch] + eps) * (w ? w[ch] : 1) + (b ? b[ch] : 0);
  });
}

/** Gradients of sum(batchNorm2dEvalRef(x, …) · dy): an affine map per channel. */
export function batchNorm2dEvalBackwardRef(
  x: Float64Array,
  shape: number[],
  w: Float64Array | null,
  rm: Float64Array,
  rv: Float64Array,
  dy: Float64Array,
  eps = 1e-5,
): NormGrads {
  const c = shape[1], m = prod(shape.slice(2));
  const dx = new Float64Array(x.length), dw = new Float64Array(c), db = new Float64Array(c);
  for (let k = 0; k < x.length; k++) {
    const ch = Math.floor(k / m) % c, rs = 1 / Math.sqrt(rv[ch] + eps);
    dx[k] = dy[k] * rs * (w ? w[ch] : 1);
    dw[ch] += dy[k] * (x[k] - rm[ch]) * rs;
    db[ch] += dy[k];
  }
  return { dx, dw, db };
}
