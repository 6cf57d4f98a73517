// CPU reference of the 2-D convolution (kernels/conv.ts; autograd/ops/conv.ts conv2d: dense, grouped,
// depthwise; NCHW input, OIHW weight, square k×k kernel, PyTorch semantics) in f64: forward, input
// gradient, weight gradient and bias gradient.
// Plain functions on Float64Array (no GPU), for tests and checks of every conv kernel.

import { convOutSize, type ConvShape } from "../shapes.ts";

/** The ConvShape of an [n, c, h, w] input and an [o, c/groups, k, k] weight. */
export function convShape(
  x: readonly [number, number, number, number] | number[],
  o: number,
  k: number,
  stride = 1,
  pad = 0,
  groups = 1,
): ConvShape {
  const [n, c, h, w] = x;
  const oh = convOutSize(h, k, stride, pad), ow = convOutSize(w, k, stride, pad);
  return { n, c, h, w, o, k, stride, pad, groups, oh, ow };
}

/**
 * Calls `f(xi, wi, yi)` for every (input, weight, output) index triple that the convolution multiplies
 * (taps in the padding skipped): forward and both gradients are sums over these triples.
 */
function forEachTap(s: ConvShape, f: (xi: number, wi: number, yi: number) => void): void {
  const { n, c, h, w: W, o, k, stride, pad, groups, oh, ow } = s;
  const cg = c / groups, og = o / groups;
  for (let b = 0; b < n; b++) {
    for (let oc = 0; oc < o; oc++) {
      const g = Math.floor(oc / og);
      for (let i = 0; i < oh; i++) {
        for (let j = 0; j < ow; j++) {
          const yi = ((b * o + oc) * oh + i) * ow + j;
          for (let ci = 0; ci < cg; ci++) {
            const xc = (b * c + g * cg + ci) * h * W, wc = (oc * cg + ci) * k * k;
            for (let kh = 0; kh < k; kh++) {
              const ih = i * stride - pad + kh;
              if (ih < 0 || ih >= h) continue;
              for (let kw = 0; kw < k; kw++) {
                const iw = j * stride - pad + kw;
                if (iw >= 0 && iw < W) f(xc + ih * W + iw, wc + kh * k + kw, yi);
              }
            }
          }
        }
      }
    }
  }
}

/** y = conv(x, w) + b. */
export function conv2dRef(
  x: Float64Array,
  w: Float64Array,
  b: Float64Array | null,
  s: ConvShape,
): Float64Array {
  const y = new Float64Array(s.n * s.o * s.oh * s.ow);
  forEachTap(s, (xi, wi, yi) => y[yi] += x[xi] * w[wi]);
  if (b) { for (let t = 0; t < y.length; t++) y[t] += b[Math.floor(t / (s.oh * s.ow)) % s.o]; }
  return y;
}

/** dx = ∂ sum(y · dy) / ∂x. */
export function conv2dBackwardInputRef(dy: Float64Array, w: Float64Array, s: ConvShape): Float64Array {
  const dx = new Float64Array(s.n * s.c * s.h * s.w);
  forEachTap(s, (xi, wi, yi) => dx[xi] += dy[yi] * w[wi]);
  return dx;
}

/** dw = ∂ sum(y · dy) / ∂w. */
export function conv2dBackwardWeightRef(dy: Float64Array, x: Float64Array, s: ConvShape): Float64Array {
  const dw = new Float64Array(s.o * (s.c / s.groups) * s.k * s.k);
  forEachTap(s, (xi, wi, yi) => dw[wi] += dy[yi] * x[xi]);
  return dw;
}

/** db = ∂ sum(y · dy) / ∂b: dy summed over images and pixels per output channel. */
export function conv2dBackwardBiasRef(dy: Float64Array, s: ConvShape): Float64Array {
  const db = new Float64Array(s.o);
  for (let t = 0; t < dy.length; t++) db[Math.floor(t / (s.oh * s.ow)) % s.o] += dy[t];
  return db;
}
