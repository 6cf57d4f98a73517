// CPU reference of the adaptive average pooling (kernels/pool.ts; autograd/ops/pool.ts
// adaptiveAvgPool2d) in f64, forward and backward, with PyTorch's windows.

/** Calls f(p, i, j, y0, y1, x0, x1) for every output (plane p, row i, column j) and its window. */
function windows(
  shape: number[],
  oh: number,
  ow: number,
  f: (p: number, i: number, j: number, y0: number, y1: number, x0: number, x1: number) => void,
): void {
  const [n, c, h, w] = shape;
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < oh; i++) {
      const y0 = Math.floor((i * h) / oh), y1 = Math.ceil(((i + 1) * h) / oh);
      for (let j = 0; j < ow; j++) {
        f(p, i, j, y0, y1, Math.floor((j * w) / ow), Math.ceil(((j + 1) * w) / ow));
      }
    }
  }
}

/** Adaptive average pooling of [N, C, H, W] to [oh, ow]. */
export function adaptiveAvgPool2dRef(x: Float64Array, shape: number[], oh: number, ow: number): Float64Array {
  const [n, c, h, w] = shape;
  const out = new Float64Array(n * c * oh * ow);
  windows(shape, oh, ow, (p, i, j, y0, y1, x0, x1) => {
    let s = 0;
    for (let y = y0; y < y1; y++) for (let xx = x0; xx < x1; xx++) s += x[p * h * w + y * w + xx];
    out[(p * oh + i) * ow + j] = s / ((y1 - y0) * (x1 - x0));
  });
  return out;
}

/** dx: each output's gradient spread evenly over its window. */
export function adaptiveAvgPool2dBackwardRef(
  dy: Float64Array,
  shape: number[],
  oh: number,
  ow: number,
): Float64Array {
  const [n, c, h, w] = shape;
  const dx = new Float64Array(n * c * h * w);
  windows(shape, oh, ow, (p, i, j, y0, y1, x0, x1) => {
    const g = dy[(p * oh + i) * ow + j] / ((y1 - y0) * (x1 - x0));
    for (let y = y0; y < y1; y++) for (let xx = x0; xx < x1; xx++) dx[p * h * w + y * w + xx] += g;
  });
  return dx;
}
