// Workgroup-tiled storage-buffer GEMM for real GPUs: C[b] = op(A[b])·op(B[b]) (+ rowBias on every row),
// with the MatmulDims semantics of kernels/matmul.ts (transposes, batch broadcast, sumBatch). A workgroup
// computes a BM×BN tile of C: per step of BK along K it stages a BM×BK tile of op(A) and a BK×BN tile of
// op(B) in workgroup memory (one cooperative load, vec4 where the operand's contiguous axis is a multiple
// of 4, scalar otherwise), then every invocation accumulates a TM×TN register block from them.
// Workgroup memory holds both tiles K-major as vec4 (As[kk][row], Bs[kk][col]), so the inner loop reads
// TM/4 + TN/4 vec4s for TM·TN multiply-adds whatever the transposes.
//
// Variants (as in llm.c's dev/cuda):
//   v1 `gemm/tiled` with GEMM_TILES.t64: 64×64 tile, BK 16, 16×16 invocations of 4×4. The default.
//   v2 `gemm/tiled` with GEMM_TILES.t128: 128×128 tile, BK 8, 16×16 invocations of 8×8: twice the
//      multiply-adds per workgroup-memory read, for large M·N (needs enough registers).
//   v3 `gemm/tiled` with GEMM_TILES.t32: 32×32 tile, BK 16, 8×8 invocations of 4×4: more workgroups for
//      small outputs.
//   v4 split-K (label `gemm/tiled` too): any tile with the reduction (K, or batch×K with sumBatch) split into s
//      chunks, one workgroup per (tile, chunk) writing partial sums, then a second pass adding the
//      chunks (conv_common's withPartials). For weight gradients: small M·N (O×C), long K (N·H·W), where
//      one workgroup per tile would leave most of the GPU idle. `gemmSplitK` picks s for a shape.
// One pipeline serves every batch and split: the batch, the chunks' length and the reduction's steps
// are read at run time from the parameters `P` (batch × chunks is grid z).

import { type Binding, dispatch, kernel, params } from "./runtime.ts";
import { divU, modU, paramsDecl } from "./wgsl.ts";
import type { MatmulDims } from "./shapes.ts";
import { withPartials } from "./conv_common.ts";
import {
  epilogueBindings,
  epilogueDecl,
  epilogueFns,
  epilogueStore,
  epilogueTag,
  type GemmEpilogue,
} from "./epilogue.ts";

/** A GEMM tile: BM×BN of C per workgroup, BK along K per step, TM×TN of C per invocation. */
export interface GemmTile {
  bm: number;
  bn: number;
  bk: number;
  /** Register block (multiples of 4). */
  tm: number;
  tn: number;
}

/** The tiles of variants v1-v3. */
export const GEMM_TILES = {
  t64: { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  t128: { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  t32: { bm: 32, bn: 32, bk: 16, tm: 4, tn: 4 },
} as const satisfies Record<string, GemmTile>;

/** Workgroup memory and invocations WebGPU guarantees (every tile must fit them). */
const MAX_WG_BYTES = 16384, MAX_INVOCATIONS = 256;
/** Largest partial-sum buffer (floats) split-K allocates, and the most chunks. */
const MAX_PARTIAL = 4 * 1024 * 1024, MAX_CHUNKS = 64;
/** Fewest BK steps per split-K chunk (shorter chunks cost more in partial sums than they gain). */
const MIN_STEPS_PER_CHUNK = 4;

/** Throws unless `t` is a valid tile within WebGPU's default limits. */
export function checkGemmTile(t: GemmTile): void {
  const inv = (t.bm / t.tm) * (t.bn / t.tn), bytes = 4 * t.bk * (t.bm + t.bn);
  const ok = [t.tm, t.tn, t.bk].every((v) => Number.isInteger(v) && v > 0 && v % 4 === 0) &&
    t.bm % t.tm === 0 && t.bn % t.tn === 0 && inv <= MAX_INVOCATIONS && bytes <= MAX_WG_BYTES;
  if (!ok) {
    throw new Error(
      `gemm tile ${JSON.stringify(t)}: TM, TN, BK must be multiples of 4 dividing BM, BN; ` +
        `${inv} invocations (max ${MAX_INVOCATIONS}), ${bytes} bytes of workgroup memory (max ${MAX_WG_BYTES})`,
    );
  }
}

/** A tile for these dims: v2 for large outputs, v3 for small ones, else v1. */
export function gemmTile(d: MatmulDims): GemmTile {
  if (d.m >= 256 && d.n >= 256) return GEMM_TILES.t128;
  if (d.m <= 32 || d.n <= 32) return GEMM_TILES.t32;
  return GEMM_TILES.t64;
}

/** Steps of the reduction loop: BK steps along K, times the batch with sumBatch. */
function reductionSteps(d: MatmulDims, t: GemmTile): number {
  return (d.sumBatch ? d.batch : 1) * Math.ceil(d.k / t.bk);
}

/**
 * A split-K factor for these dims: enough chunks that the output tiles × chunks reach
 * `targetWorkgroups` (a few per compute unit of the adapter), each chunk at least 4 BK steps long,
 * at most 64 chunks and 4 Mi partial sums. 1 when the output tiles alone fill the adapter.
 */
export function gemmSplitK(d: MatmulDims, tile: GemmTile = gemmTile(d), targetWorkgroups = 256): number {
  const outBatch = d.sumBatch ? 1 : d.batch;
  const tiles = Math.ceil(d.m / tile.bm) * Math.ceil(d.n / tile.bn) * outBatch;
  if (tiles >= targetWorkgroups) return 1;
  const byLength = Math.floor(reductionSteps(d, tile) / MIN_STEPS_PER_CHUNK);
  const byMemory = Math.floor(MAX_PARTIAL / (outBatch * d.m * d.n));
  return Math.max(1, Math.min(Math.ceil(targetWorkgroups / tiles), byLength, byMemory, MAX_CHUNKS));
}

export interface GemmTiledOptions {
  /** Added to every row of C (rowBias[i] on row i). */
  rowBias?: Binding;
  /** Elementwise work in the store (kernels/epilogue.ts); needs an unsplit reduction. */
  epilogue?: GemmEpilogue;
  /** Chunks of the reduction (1: no split; clamped to the number of BK steps). */
  splitK?: number;
  tile?: GemmTile;
}

/** C = op(A)·op(B) (+ rowBias), workgroup-tiled, optionally split along K. */
export function matmulTiled(
  a: Binding,
  b: Binding,
  c: Binding,
  d: MatmulDims,
  opts: GemmTiledOptions = {},
): void {
  if (d.batch * d.m * d.n === 0) return;
  if (d.k === 0) throw new Error("matmulTiled: k = 0 is not supported");
  const t = opts.tile ?? gemmTile(d);
  checkGemmTile(t);
  const steps = reductionSteps(d, t);
  const requested = opts.splitK ?? 1;
  if (!Number.isInteger(requested) || requested < 1) {
    throw new Error(`matmulTiled: splitK must be a positive integer, got ${requested}`);
  }
  const len = Math.ceil(steps / Math.min(requested, steps));
  const chunks = Math.ceil(steps / len);
  const outBatch = d.sumBatch ? 1 : d.batch;
  const bias = !!opts.rowBias;
  const ep = opts.epilogue, tag = epilogueTag(ep);
  if (tag && chunks > 1) throw new Error("matmulTiled: an epilogue needs an unsplit reduction (splitK 1)");
  // vec4 operands where the contiguous axis of the stored matrix is a multiple of 4 (pooled buffers and
  // binding offsets are 256-byte aligned, so every vec4 is aligned)
  const vecA = d.transA ? d.m % 4 === 0 : d.k % 4 === 0;
  const vecB = d.transB ? d.k % 4 === 0 : d.n % 4 === 0;
  const vecC = d.n % 4 === 0;
  const f = (x: boolean | undefined) => (x ? 1 : 0);
  const key = `gemm_tiled:${d.m},${d.n},${d.k},${f(d.transA)}${f(d.transB)}${f(d.batchA)}${f(d.batchB)}${
    f(d.sumBatch)
  }${f(bias)}${tag},${t.bm},${t.bn},${t.bk},${t.tm},${t.tn}`;
  // split or not, one pipeline (and label): the split follows the batch
  const pipe = kernel(key, "gemm/tiled", () => tiledSource(d, t, { bias, vecA, vecB, vecC, ep }));
  const groups: [number, number, number] = [Math.ceil(d.n / t.bn), Math.ceil(d.m / t.bm), outBatch * chunks];
  const p = params(outBatch, len, steps);
  withPartials(chunks, outBatch * d.m * d.n, c, (dst) => {
    dispatch(pipe, [a, b, dst, ...(opts.rowBias ? [opts.rowBias] : []), ...epilogueBindings(ep), p], groups);
  });
}

interface SourceOpts {
  bias: boolean;
  vecA: boolean;
  vecB: boolean;
  vecC: boolean;
  ep?: GemmEpilogue;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * WGSL of one cooperative tile load: `count` elements spread over `inv` invocations, element `e` of
 * each round handled by `body` (the rounds are unrolled; a partial last round is guarded).
 */
function cooperative(count: number, inv: number, body: string): string {
  return range(Math.ceil(count / inv)).map((l) => {
    const guard = (l + 1) * inv > count;
    return `  {
    let e = lid + ${l * inv}u;
    ${guard ? `if (e < ${count}u) {` : "{"}
${body}
    }
  }`;
  }).join("\n");
}

function tiledSource(d: MatmulDims, t: GemmTile, o: SourceOpts): string {
  const { m, n, k } = d;
  const { bm, bn, bk, tm, tn } = t;
  const wx = bn / tn, inv = (bm / tm) * wx;
  const bm4 = bm / 4, bn4 = bn / 4, bk4 = bk / 4;
  const sum = !!d.sumBatch, kTiles = Math.ceil(k / bk);
  const sA = d.batchA ? m * k : 0, sB = d.batchB ? k * n : 0;
  // As[kk·BM/4 + r/4][r%4] = op(A)[row0 + r, k0 + kk]; Bs[kk·BN/4 + c/4][c%4] = op(B)[k0 + kk, col0 + c]
  const scatter = (arr: string, vec: string, kIdx: (i: number) => string, w4: number, pos: string) =>
    range(4).map((i) => `      ${arr}[(${kIdx(i)}) * ${w4}u + ${pos} / 4u][${pos} % 4u] = ${vec}[${i}];`)
      .join("\n");
  let loadA: string;
  if (o.vecA && !d.transA) { // A [m, k]: vec4 along K
    loadA = cooperative(
      bm * bk4,
      inv,
      `      let r = e / ${bk4}u; let q = e % ${bk4}u;
      let gr = row0 + r; let gk = k0 + q * 4u;
      var v = vec4<f32>(0.0);
      if (gr < ${m}u && gk < ${k}u) { v = A[(aOff + gr * ${k}u + gk) / 4u]; }
${scatter("As", "v", (i) => `q * 4u + ${i}u`, bm4, "r")}`,
    );
  } else if (o.vecA) { // A stored [k, m]: vec4 along M
    loadA = cooperative(
      bk * bm4,
      inv,
      `      let kk = e / ${bm4}u; let q = e % ${bm4}u;
      let gk = k0 + kk; let gr = row0 + q * 4u;
      var v = vec4<f32>(0.0);
      if (gk < ${k}u && gr < ${m}u) { v = A[(aOff + gk * ${m}u + gr) / 4u]; }
      As[kk * ${bm4}u + q] = v;`,
    );
  } else {
    const inner = d.transA ? bm : bk;
    loadA = cooperative(
      bm * bk,
      inv,
      `      let p = e / ${inner}u; let q = e % ${inner}u;
      let r = ${d.transA ? "q" : "p"}; let kk = ${d.transA ? "p" : "q"};
      let gr = row0 + r; let gk = k0 + kk;
      var v = 0.0;
      if (gr < ${m}u && gk < ${k}u) { v = A[aOff + ${d.transA ? `gk * ${m}u + gr` : `gr * ${k}u + gk`}]; }
      As[kk * ${bm4}u + r / 4u][r % 4u] = v;`,
    );
  }
  let loadB: string;
  if (o.vecB && !d.transB) { // B [k, n]: vec4 along N
    loadB = cooperative(
      bk * bn4,
      inv,
      `      let kk = e / ${bn4}u; let q = e % ${bn4}u;
      let gk = k0 + kk; let gc = col0 + q * 4u;
      var v = vec4<f32>(0.0);
      if (gk < ${k}u && gc < ${n}u) { v = B[(bOff + gk * ${n}u + gc) / 4u]; }
      Bs[kk * ${bn4}u + q] = v;`,
    );
  } else if (o.vecB) { // B stored [n, k]: vec4 along K
    loadB = cooperative(
      bn * bk4,
      inv,
      `      let cc = e / ${bk4}u; let q = e % ${bk4}u;
      let gc = col0 + cc; let gk = k0 + q * 4u;
      var v = vec4<f32>(0.0);
      if (gc < ${n}u && gk < ${k}u) { v = B[(bOff + gc * ${k}u + gk) / 4u]; }
${scatter("Bs", "v", (i) => `q * 4u + ${i}u`, bn4, "cc")}`,
    );
  } else {
    const inner = d.transB ? bk : bn;
    loadB = cooperative(
      bn * bk,
      inv,
      `      let p = e / ${inner}u; let q = e % ${inner}u;
      let cc = ${d.transB ? "p" : "q"}; let kk = ${d.transB ? "q" : "p"};
      let gc = col0 + cc; let gk = k0 + kk;
      var v = 0.0;
      if (gc < ${n}u && gk < ${k}u) { v = B[bOff + ${d.transB ? `gc * ${k}u + gk` : `gk * ${n}u + gc`}]; }
      Bs[kk * ${bn4}u + cc / 4u][cc % 4u] = v;`,
    );
  }
  const I = range(tm), H = range(tn / 4), G = range(tm / 4);
  const biasTerm = (row: string) => (o.bias ? ` + select(0.0, Bias[${row}], chunk == 0u)` : "");
  const stores = I.map((i) =>
    H.map((h) => {
      const row = `(rb + ${i}u)`, col = `(cb + ${4 * h}u)`;
      if (o.vecC) {
        const idx = `(cOff + ${row} * ${n}u + ${col}) / 4u`;
        return `  if (${row} < ${m}u && ${col} < ${n}u) { ${
          epilogueStore(o.ep, idx, `acc${i}_${h}${biasTerm(row)}`, true)
        } }`;
      }
      return range(4).map((j) =>
        `  if (${row} < ${m}u && ${col} + ${j}u < ${n}u) { ${
          epilogueStore(
            o.ep,
            `cOff + ${row} * ${n}u + ${col} + ${j}u`,
            `acc${i}_${h}[${j}]${biasTerm(row)}`,
            false,
          )
        } }`
      ).join("\n");
    }).join("\n")
  ).join("\n");
  const arr = (vec: boolean) => (vec ? "array<vec4<f32>>" : "array<f32>");
  return `@group(0) @binding(0) var<storage, read> A: ${arr(o.vecA)};
@group(0) @binding(1) var<storage, read> B: ${arr(o.vecB)};
@group(0) @binding(2) var<storage, read_write> C: ${arr(o.vecC)};
${o.bias ? "@group(0) @binding(3) var<storage, read> Bias: array<f32>;" : ""}
${epilogueDecl(o.ep, o.bias ? 4 : 3, o.vecC ? "vec4<f32>" : "f32")}
${paramsDecl((o.bias ? 4 : 3) + epilogueBindings(o.ep).length, ["batch", "len", "steps"])}
${epilogueFns(o.ep)}
var<workgroup> As: array<vec4<f32>, ${bk * bm4}>;
var<workgroup> Bs: array<vec4<f32>, ${bk * bn4}>;
@compute @workgroup_size(${inv})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  // every invocation takes part in every load and barrier; only the stores are guarded
  let row0 = wid.y * ${bm}u;
  let col0 = wid.x * ${bn}u;
  // z: chunk-major over the output's batch (P.batch, 1 with sumBatch)
  let chunk = wid.z / P.batch;
  let bz = wid.z % P.batch;
  let rb = row0 + (lid / ${wx}u) * ${tm}u;
  let cb = col0 + (lid % ${wx}u) * ${tn}u;
  let ar = (lid / ${wx}u) * ${tm / 4}u;
  let bc = (lid % ${wx}u) * ${tn / 4}u;
${I.map((i) => H.map((h) => `  var acc${i}_${h} = vec4<f32>(0.0);`).join("\n")).join("\n")}
  let first = chunk * P.len;
  let last = min(first + P.len, P.steps);
  for (var st = first; st < last; st++) {
    let bat = ${sum ? divU("st", kTiles) : "bz"};
    let k0 = ${sum ? modU("st", kTiles) : "st"} * ${bk}u;
    let aOff = bat * ${sA}u;
    let bOff = bat * ${sB}u;
${loadA}
${loadB}
    workgroupBarrier();
    for (var kk = 0u; kk < ${bk}u; kk++) {
${G.map((g) => `      let a${g} = As[kk * ${bm4}u + ar + ${g}u];`).join("\n")}
${H.map((h) => `      let b${h} = Bs[kk * ${bn4}u + bc + ${h}u];`).join("\n")}
${
    I.map((i) =>
      H.map((h) => `      acc${i}_${h} = fma(vec4<f32>(a${i >> 2}[${i & 3}]), b${h}, acc${i}_${h});`).join(
        "\n",
      )
    ).join("\n")
  }
    }
    workgroupBarrier();
  }
  let cOff = wid.z * ${m * n}u;
${stores}
}`;
}
