// 1×1 stride-1 convolutions as GEMMs over the pixels of each image (P = H·W):
//   forward       y[n] (O×P) = w (O×C) · x[n] (C×P) + b
//   input grad   dx[n] (C×P) = wᵀ (C×O) · dy[n] (O×P)
//   weight grad  dw (O×C)    = Σ_n dy[n] (O×P) · x[n]ᵀ (P×C), split over chunks of the N·P pixels
// Each invocation keeps a 4×4 block of the result in registers and reads its operands directly from
// global memory (no workgroup memory: barriers are expensive on software adapters).

import { type Binding, dispatch, pipeline } from "./runtime.ts";
import { storageDecls } from "./wgsl.ts";
import { convGrid, type ConvShape, splitReduction, WGC, withPartials } from "./conv_common.ts";

const R4 = [0, 1, 2, 3];

/**
 * out[n] (M×P) = A (M×K) · B[n] (K×P) (+ bias[row]); `aIdx(row, k)` is A's flat index, B[n] and
 * out[n] are row-major at offsets n·K·P and n·M·P.
 */
function gemmPixels(
  name: string,
  m: number,
  kDim: number,
  p: number,
  batch: number,
  aIdx: (row: string, k: string) => string,
  bindings: { a: Binding; b: Binding; bias: Binding | null; out: Binding },
): void {
  const rowBlocks = Math.ceil(m / 4), colBlocks = Math.ceil(p / 4);
  const total = rowBlocks * colBlocks;
  const { groups, index } = convGrid(total, batch);
  const hasBias = bindings.bias !== null;
  const wgsl = `${storageDecls(hasBias ? ["A", "B", "bias"] : ["A", "B"], ["out"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let nn = i32(gid.z);
  let row0 = (t / ${colBlocks}) * 4;
  let col0 = (t % ${colBlocks}) * 4;
${R4.map((i) => `  let r${i} = min(row0 + ${i}, ${m - 1});`).join("\n")}
${R4.map((j) => `  let c${j} = min(col0 + ${j}, ${p - 1});`).join("\n")}
  let bBase = nn * ${kDim * p};
${R4.map((i) => `  var acc${i} = vec4<f32>(0.0);`).join("\n")}
  for (var k = 0; k < ${kDim}; k++) {
    let bo = bBase + k * ${p};
    let bv = vec4<f32>(${R4.map((j) => `B[bo + c${j}]`).join(", ")});
${R4.map((i) => `    acc${i} += A[${aIdx(`r${i}`, "k")}] * bv;`).join("\n")}
  }
  let oBase = nn * ${m * p};
${
    R4.map((i) =>
      R4.map((j) =>
        `  if (row0 + ${i} < ${m} && col0 + ${j} < ${p}) { out[oBase + r${i} * ${p} + c${j}] = acc${i}[${j}]${
          hasBias ? ` + bias[r${i}]` : ""
        }; }`
      ).join("\n")
    ).join("\n")
  }
}`;
  const binds = [bindings.a, bindings.b, ...(bindings.bias ? [bindings.bias] : []), bindings.out];
  dispatch(pipeline(name, wgsl), binds, groups);
}

/** y = conv1x1(x, w) + b. */
export function conv1x1Forward(x: Binding, w: Binding, b: Binding | null, y: Binding, s: ConvShape): void {
  const p = s.h * s.w;
  gemmPixels("conv1x1_forward", s.o, s.c, p, s.n, (r, k) => `${r} * ${s.c} + ${k}`, {
    a: w,
    b: x,
    bias: b,
    out: y,
  });
}

/** dx = wᵀ · dy per image. */
export function conv1x1BackwardInput(dy: Binding, w: Binding, dx: Binding, s: ConvShape): void {
  const p = s.h * s.w;
  gemmPixels("conv1x1_backward_input", s.c, s.o, p, s.n, (r, k) => `${k} * ${s.c} + ${r}`, {
    a: w,
    b: dy,
    bias: null,
    out: dx,
  });
}

/** dw = Σ_n dy[n] · x[n]ᵀ, as partial sums over chunks of the N·P pixels plus a second pass. */
export function conv1x1BackwardWeight(dy: Binding, x: Binding, dw: Binding, s: ConvShape): void {
  const { n, c, o } = s;
  const p = s.h * s.w;
  const steps = n * p;
  const { chunks, len } = splitReduction(steps, o * c, 128);
  const rowBlocks = Math.ceil(o / 4), colBlocks = Math.ceil(c / 4);
  const total = rowBlocks * colBlocks;
  const { groups, index } = convGrid(total, chunks);
  const wgsl = `${storageDecls(["dy", "x"], ["out"])}
@compute @workgroup_size(${WGC})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let chunk = i32(gid.z);
  let row0 = (t / ${colBlocks}) * 4;
  let col0 = (t % ${colBlocks}) * 4;
${R4.map((i) => `  let r${i} = min(row0 + ${i}, ${o - 1}) * ${p};`).join("\n")}
${R4.map((j) => `  let c${j} = min(col0 + ${j}, ${c - 1}) * ${p};`).join("\n")}
  let start = chunk * ${len};
  let end = min(start + ${len}, ${steps});
  var q = start % ${p};
  let n0 = start / ${p};
  var a = n0 * ${o * p} + q;
  var b = n0 * ${c * p} + q;
${R4.map((i) => `  var acc${i} = vec4<f32>(0.0);`).join("\n")}
  for (var i = start; i < end; i++) {
    let xv = vec4<f32>(${R4.map((j) => `x[b + c${j}]`).join(", ")});
${R4.map((i) => `    acc${i} += dy[a + r${i}] * xv;`).join("\n")}
    q++;
    a++;
    b++;
    if (q == ${p}) {
      q = 0;
      a += ${(o - 1) * p};
      b += ${(c - 1) * p};
    }
  }
  let oBase = chunk * ${o * c};
${
    R4.map((i) =>
      R4.map((j) =>
        `  if (row0 + ${i} < ${o} && col0 + ${j} < ${c}) { out[oBase + (row0 + ${i}) * ${c} + col0 + ${j}] = acc${i}[${j}]; }`
      ).join("\n")
    ).join("\n")
  }
}`;
  withPartials(
    chunks,
    o * c,
    dw,
    (dst) => dispatch(pipeline("conv1x1_backward_weight", wgsl), [dy, x, dst], groups),
  );
}
