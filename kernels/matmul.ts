// Batched matrix multiply C[b] = op(A[b]) · op(B[b]), op = optional transpose, batch broadcast when
// A or B has a batch of 1. Each invocation keeps a 4×4 block of C in registers and reads A and B
// directly (no workgroup memory: barriers are expensive on software adapters).

import { type Binding, dispatch, pipeline } from "./runtime.ts";
import { storageDecls } from "./wgsl.ts";

export interface MatmulDims {
  batch: number;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  /** Whether A / B have a batch dimension of `batch` (false: one matrix shared by all). */
  batchA: boolean;
  batchB: boolean;
}

const TILE = 4;
const WGX = 8, WGY = 8;

export function matmul(a: Binding, b: Binding, c: Binding, d: MatmulDims): void {
  const { batch, m, n, k } = d;
  if (batch * m * n === 0) return;
  const sA = d.batchA ? m * k : 0, sB = d.batchB ? k * n : 0;
  const aIdx = (row: string, kk: string) => d.transA ? `${kk} * ${m}u + ${row}` : `${row} * ${k}u + ${kk}`;
  const bIdx = (kk: string, col: string) => d.transB ? `${col} * ${k}u + ${kk}` : `${kk} * ${n}u + ${col}`;
  const rows = [0, 1, 2, 3].map((i) => `r${i}`), cols = [0, 1, 2, 3].map((j) => `c${j}`);
  const wgsl = `${storageDecls(["A", "B"], ["C"])}
@compute @workgroup_size(${WGX}, ${WGY})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * ${TILE}u;
  let col0 = gid.x * ${TILE}u;
  if (row0 >= ${m}u || col0 >= ${n}u) { return; }
  let bat = gid.z;
  let aOff = bat * ${sA}u;
  let bOff = bat * ${sB}u;
  let cOff = bat * ${m * n}u;
  // clamped indices keep the inner loop free of branches; stores are guarded
${rows.map((r, i) => `  let ${r} = min(row0 + ${i}u, ${m - 1}u);`).join("\n")}
${cols.map((c, j) => `  let ${c} = min(col0 + ${j}u, ${n - 1}u);`).join("\n")}
  var acc: array<vec4<f32>, 4>;
  for (var kk = 0u; kk < ${k}u; kk++) {
    let bv = vec4<f32>(${cols.map((c) => `B[bOff + ${bIdx("kk", c)}]`).join(", ")});
${rows.map((r, i) => `    acc[${i}] += A[aOff + ${aIdx(r, "kk")}] * bv;`).join("\n")}
  }
  for (var i = 0u; i < 4u; i++) {
    let row = row0 + i;
    if (row >= ${m}u) { break; }
    for (var j = 0u; j < 4u; j++) {
      if (col0 + j < ${n}u) { C[cOff + row * ${n}u + col0 + j] = acc[i][j]; }
    }
  }
}`;
  const gx = Math.ceil(n / TILE / WGX), gy = Math.ceil(m / TILE / WGY);
  dispatch(pipeline("matmul", wgsl), [a, b, c], [gx, gy, batch]);
}
