// Batched matrix multiply C[b] = op(A[b]) · op(B[b]), op = optional transpose, batch broadcast when
// A or B has a batch of 1. No workgroup memory (barriers are expensive on software adapters); each
// invocation keeps a block of C in registers and reads A and B directly.
//
// Versions (as in llm.c's dev/cuda, each kept for the shapes it serves; the table MATMUL_VARIANTS):
//   v1 `generic`: a 4×4 block of C per invocation, scalar storage-buffer loads, any sizes.
//   v2 (removed): ROWS×4 per invocation with vec4 storage-buffer loads (no faster than v1 where a storage
//                 load is a per-lane loop; bench/results-lavapipe.txt).
//   v3 `texture`: both operands are copied (copyBufferToTexture, a memcpy) into cached rgba32float
//                 textures, 2048 texels per row, and each invocation keeps ROWS×(4·COLVECS) of C
//                 (the profile's textureTuning) in registers, K unrolled by 4: A is fetched as vec4 along K
//                 (along M when transposed), B as vec4 along N (along K when transposed, transposed in
//                 registers). ROWS + 4·COLVECS fetches feed 16·ROWS·COLVECS multiply-adds: where texel
//                 fetches are cheap gathers and storage loads are not (software adapters), fetches per
//                 multiply-add bound the speed, so they are what the blocking saves. Needs K % 4 = 0,
//                 M % 4 = 0 when A is transposed and N % 4 = 0 when B is not (elsewhere it does not
//                 apply). `sumBatch` loops over the batch inside the kernel; a shared A with per-image B
//                 lays the images side by side as columns (a short N still fills column blocks).
//   v4 `tiled`:   the workgroup-tiled storage-buffer GEMM of kernels/gemm_tiled.ts (for real GPUs),
//                 with split-K for long reductions.
// The planner (kernels/planner.ts) picks the version; `opts.variant` forces one.

import { type Binding, dispatch, isDryRun, kernel, params } from "./runtime.ts";
import {
  copyToTexture,
  operandTexture,
  texelLoad,
  textureDecl,
  textureReadTag,
  viewOf,
  WGSL_TEXEL_COORD,
} from "./texture_operand.ts";
import { divU, modU, paramsDecl, storageDecls } from "./wgsl.ts";
import { NOMINAL_BATCH } from "./batch_class.ts";
import { type MatmulDims, matmulKey } from "./shapes.ts";
import { planMatmulIn } from "./plan_core.ts";
import { lookup, matmulTuneKey, type MatmulVariant, textureGemmApplies } from "./variant.ts";
import { adapterProfile, type TextureGemmTuning } from "./profile.ts";
import { matmulTiled } from "./gemm_tiled.ts";
import {
  epilogueBindings,
  epilogueDecl,
  epilogueFns,
  epilogueStore,
  epilogueTag,
  type GemmEpilogue,
} from "./epilogue.ts";

export type { MatmulDims } from "./shapes.ts";
export type { TextureGemmTuning as MatmulTuning } from "./profile.ts";

export interface MatmulOptions {
  /** Added to every row i of C (a conv bias, fused into the store). */
  rowBias?: Binding;
  /** Elementwise work in the store (kernels/epilogue.ts): GELU forward, or times GELU's derivative. */
  epilogue?: GemmEpilogue;
  /** "matmul/texture", "matmul/tiled" or "matmul/generic"; default: the planner's choice. */
  variant?: string;
  /** Tuning of the texture kernel (default: the adapter profile's). */
  tuning?: Partial<TextureGemmTuning>;
}

/** C = op(A)·op(B) (+ rowBias[i] on every row i of C), through `opts.epilogue` where given. */
export function matmul(a: Binding, b: Binding, c: Binding, d: MatmulDims, opts: MatmulOptions = {}): void {
  if (d.batch * d.m * d.n === 0) return;
  if (d.k === 0) throw new Error("matmul: k = 0 is not supported");
  const name = opts.variant ?? planMatmulIn(MATMUL_VARIANTS, d).variant;
  const v = lookup(MATMUL_VARIANTS, name, "matmul");
  if (!v.applies(d, adapterProfile())) throw new Error(`matmul: ${name} cannot run ${matmulKey(d)}`);
  if ((opts.rowBias || epilogueTag(opts.epilogue)) && !v.epilogue) {
    throw new Error(`matmul: ${name} has no row bias or epilogue (matmul/tiled and matmul/texture do)`);
  }
  v.run({ a, b, c, rowBias: opts.rowBias, epilogue: opts.epilogue, tuning: opts.tuning }, d);
}

/**
 * The matmul family, in the order the planner lists candidates. The profile's default: the texture
 * GEMM where textureGemm and the dims suit it, else the generic one; without textureGemm the tiled one.
 */
export const MATMUL_VARIANTS: MatmulVariant[] = [
  {
    name: "matmul/texture",
    passes: ["forward"],
    applies: (d) => textureGemmApplies(d),
    rank: (_d, prof) => prof.textureGemm ? 0 : null,
    epilogue: true,
    run: (bd, d) => {
      // texture copies need 16-byte aligned sources (always true for pooled tensors and arena slices)
      if (![bd.a, bd.b].every((x) => x instanceof GPUBuffer || (x.offset ?? 0) % 16 === 0)) {
        throw new Error("matmul/texture: operands must start at 16-byte aligned offsets");
      }
      const tuning = { ...adapterProfile().textureTuning, ...bd.tuning };
      matmulTexture(bd.a, bd.b, bd.c, d, tuning, bd.rowBias, bd.epilogue);
    },
    tuneKey: matmulTuneKey,
  },
  {
    name: "matmul/tiled",
    passes: ["forward"],
    applies: () => true,
    rank: (_d, prof) => prof.textureGemm ? null : 1,
    epilogue: true,
    run: (bd, d) => matmulTiled(bd.a, bd.b, bd.c, d, { rowBias: bd.rowBias, epilogue: bd.epilogue }),
    tuneKey: matmulTuneKey,
  },
  {
    name: "matmul/generic",
    passes: ["forward"],
    applies: () => true,
    rank: (_d, prof) => prof.textureGemm ? 2 : null,
    epilogue: false,
    run: (bd, d) => matmulGeneric(bd.a, bd.b, bd.c, d),
    tuneKey: matmulTuneKey,
  },
];

// ---------------------------------------------------------------- v3: texture operands
//
// Both kernels compile n (the output's columns: a layer's features), the layouts and the tuning, and
// read m, k and the batch at run time from `P`: in a linear layer m is the batch (forward, input
// gradient) and k is the batch (weight gradient), so one pipeline serves every batch size.

/** Whether the images' columns of a shared A times per-image B are laid side by side (see below). */
const folds = (d: MatmulDims) => !d.sumBatch && !d.batchA && d.batchB && !d.transB && d.n % 4 === 0;

/**
 * The texture kernel's workgroup: few blocks (e.g. a weight gradient: small M·N, long K) get smaller
 * workgroups, at least 8 of them where possible, so every core (or compute unit) has work; no smaller
 * than the profile's minThreads. A side with few blocks gets a short workgroup side (no idle
 * invocations), the other side the rest. Chosen as for the nominal batch (m and any batch of
 * matrices at NOMINAL_BATCH), so that it does not depend on the batch.
 */
function textureWorkgroup(d: MatmulDims, t: TextureGemmTuning): { wgx: number; wgy: number } {
  const batch = d.batchA || d.batchB ? NOMINAL_BATCH : 1;
  const fold = folds(d);
  const width = fold ? batch * d.n : d.n, zs = fold || d.sumBatch ? 1 : batch;
  const rowBlocks = Math.ceil(NOMINAL_BATCH / t.rows), colBlocks = Math.ceil(width / (4 * t.colVecs));
  const blocks = rowBlocks * colBlocks * zs;
  const threads = Math.max(
    t.minThreads,
    Math.min(t.wgx * t.wgy, 2 ** Math.floor(Math.log2(Math.max(1, blocks / 8)))),
  );
  const pow2 = (x: number) => 2 ** Math.ceil(Math.log2(x));
  let wgx = Math.min(t.wgx, threads, pow2(colBlocks));
  const wgy = Math.min(threads / wgx, pow2(rowBlocks));
  wgx = Math.min(threads / wgy, pow2(colBlocks));
  return { wgx, wgy };
}

/** The texture kernel's run-time sizes, in the order of TEXTURE_PARAMS. */
const TEXTURE_PARAMS = ["m", "m4", "k4", "rowBlocks", "colBlocks", "width", "cStride", "sA", "sB", "batch"];

/** The sizes and layout a matmul kernel compiles in: all but m, k and the batch. */
const layoutKey = (d: MatmulDims) => matmulKey({ ...d, batch: 0, m: 0, k: 0 });

function matmulTexture(
  a: Binding,
  b: Binding,
  c: Binding,
  d: MatmulDims,
  t: TextureGemmTuning,
  rowBias?: Binding,
  ep?: GemmEpilogue,
): void {
  const tag = epilogueTag(ep);
  const { batch, m, n, k, transA, transB } = d;
  const R = t.rows, CV = t.colVecs, CW = 4 * CV;
  const sum = !!d.sumBatch;
  if (R % 4 !== 0) throw new Error("matmul: rows per invocation must be a multiple of 4");
  // A shared by every image and B per image, not transposed (a 1×1 conv over NCHW, forward or input
  // gradient): the images' columns are laid side by side as one [M, batch·N] product, so a short N
  // (16 pixels at 4×4) still fills column blocks; each vec4 of columns stays inside one image
  const fold = folds(d);
  const width = fold ? batch * n : n, zs = fold || sum ? 1 : batch;
  const n4 = Math.ceil(n / 4);
  const rowBlocks = Math.ceil(m / R), colBlocks = Math.ceil(width / CW);
  const { wgx, wgy } = textureWorkgroup(d, t);
  const aTexels = ((d.batchA ? batch : 1) * m * k) / 4, bTexels = ((d.batchB ? batch : 1) * k * n) / 4;
  const nAligned = n % 4 === 0;
  // operand offsets in texels (all multiples of 4 floats under the vec4 conditions)
  const sizes = params(
    m,
    Math.ceil(m / 4),
    k / 4,
    rowBlocks,
    colBlocks,
    width,
    nAligned ? (m * n) / 4 : m * n,
    d.batchA ? (m * k) / 4 : 0,
    d.batchB ? (k * n) / 4 : 0,
    batch,
  );
  const key = `mmt:${layoutKey(d)}:${R},${CV},${wgx},${wgy},${rowBias ? 1 : 0},${tag},${
    fold ? 1 : 0
  },${textureReadTag()}`;
  const pipe = kernel(key, "matmul/texture", () => {
    const rs = Array.from({ length: R }, (_, i) => i);
    const cols = Array.from({ length: CW }, (_, i) => i);
    const cvs = Array.from({ length: CV }, (_, i) => i);
    const q4 = [0, 1, 2, 3];
    const at = (tex: string, idx: string) => texelLoad(tex, `tc(${idx})`);
    const setup: string[] = [];
    const body: string[] = [];
    // A values: a(r, j) = A[row0 + r, kk + j]
    if (!transA) {
      for (const r of rs) setup.push(`  let ar${r} = aOff + min(row0 + ${r}u, P.m - 1u) * P.k4;`);
      for (const r of rs) body.push(`    let va${r} = ${at("TA", `ar${r} + kq`)};`);
    } else {
      // A stored [k, m]: vec4 along M per k
      for (let g = 0; g < R / 4; g++) setup.push(`  let ag${g} = aOff + min(row0 / 4u + ${g}u, P.m4 - 1u);`);
      for (const j of q4) {
        for (let g = 0; g < R / 4; g++) {
          body.push(`    let ta${j}_${g} = ${at("TA", `ag${g} + (kk + ${j}u) * P.m4`)};`);
        }
      }
    }
    // B values: vb{j}_{v} = B[kk + j, col0 + 4v .. col0 + 4v + 3]
    if (!transB) {
      for (const v of cvs) {
        setup.push(
          `  let bc${v} = ${fold ? `fi${v} * P.sB + fq${v}` : `bOff + min(col0 / 4u + ${v}u, ${n4 - 1}u)`};`,
        );
      }
      for (const j of q4) {
        for (const v of cvs) {
          body.push(`    let vb${j}_${v} = ${at("TB", `bc${v} + (kk + ${j}u) * ${n4}u`)};`);
        }
      }
    } else {
      // B stored [n, k]: vec4 along K per column, transposed in registers
      for (const cc of cols) setup.push(`  let bt${cc} = bOff + min(col0 + ${cc}u, ${n - 1}u) * P.k4;`);
      for (const cc of cols) body.push(`    let tb${cc} = ${at("TB", `bt${cc} + kq`)};`);
      for (const j of q4) {
        for (const v of cvs) {
          body.push(`    let vb${j}_${v} = vec4<f32>(${q4.map((i) => `tb${4 * v + i}[${j}]`).join(", ")});`);
        }
      }
    }
    const aVal = (
      r: number,
      j: number,
    ) => (!transA ? `va${r}[${j}]` : `ta${j}_${Math.floor(r / 4)}[${r % 4}]`);
    for (const j of q4) {
      for (const r of rs) {
        for (const v of cvs) {
          body.push(`    acc${r}_${v} = fma(vec4<f32>(${aVal(r, j)}), vb${j}_${v}, acc${r}_${v});`);
        }
      }
    }
    const stores: string[] = [];
    for (const r of rs) {
      for (const v of cvs) {
        const row = `row0 + ${r}u`, col = `col0 + ${4 * v}u`;
        if (nAligned) {
          const value = `acc${r}_${v}${rowBias ? ` + Bias[${row}]` : ""}`;
          const idx = fold
            ? `fi${v} * P.cStride + (${row}) * ${n4}u + fq${v}`
            : `cOff + (${row}) * ${n4}u + (${col}) / 4u`;
          stores.push(
            `  if (${row} < P.m && ${col} < ${fold ? "P.width" : `${n}u`}) { ${
              epilogueStore(ep, idx, value, true)
            } }`,
          );
        } else {
          for (const i of q4) {
            const value = `acc${r}_${v}[${i}]${rowBias ? ` + Bias[${row}]` : ""}`;
            const idx = `cOff + (${row}) * ${n}u + ${col} + ${i}u`;
            stores.push(
              `  if (${row} < P.m && ${col} + ${i}u < ${n}u) { ${epilogueStore(ep, idx, value, false)} }`,
            );
          }
        }
      }
    }
    const epBinding = rowBias ? 4 : 3;
    return `${textureDecl("TA", 0)}
${textureDecl("TB", 1)}
@group(0) @binding(2) var<storage, read_write> C: array<${nAligned ? "vec4<f32>" : "f32"}>;
${rowBias ? "@group(0) @binding(3) var<storage, read> Bias: array<f32>;" : ""}
${epilogueDecl(ep, epBinding, nAligned ? "vec4<f32>" : "f32")}
${paramsDecl(epBinding + epilogueBindings(ep).length, TEXTURE_PARAMS)}
${epilogueFns(ep)}
${WGSL_TEXEL_COORD}
@compute @workgroup_size(${wgx}, ${wgy})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  // no early return: out-of-range invocations compute clamped blocks and store nothing
  let row0 = min(gid.y, P.rowBlocks - 1u) * ${R}u;
  let col0 = min(gid.x, P.colBlocks - 1u) * ${CW}u;
  let live = gid.x < P.colBlocks && gid.y < P.rowBlocks;
  let cOff = ${sum ? "0u" : "gid.z"} * P.cStride;
${
      // folded images: the image and the texel within its row of each vec4 of columns
      fold
        ? cvs.map((v) =>
          `  let fc${v} = min(col0 + ${4 * v}u, P.width - 4u);\n  let fi${v} = ${
            divU(`fc${v}`, n)
          };\n  let fq${v} = ${divU(modU(`fc${v}`, n), 4)};`
        ).join("\n")
        : ""}
${rs.flatMap((r) => cvs.map((v) => `  var acc${r}_${v} = vec4<f32>(0.0);`)).join("\n")}
  for (var bat = ${sum ? "0u" : "gid.z"}; bat < ${sum ? "P.batch" : "gid.z + 1u"}; bat++) {
  let aOff = bat * P.sA;
  let bOff = bat * P.sB;
${setup.join("\n")}
  for (var kq = 0u; kq < P.k4; kq++) {
    let kk = kq * 4u;
${body.join("\n")}
  }
  }
  if (!live) { return; }
${stores.join("\n")}
}`;
  });
  if (isDryRun()) return; // the pipeline is listed; a dry run has no operand textures
  const ta = operandTexture("A", aTexels), tb = operandTexture("B", bTexels);
  copyToTexture(a, ta, aTexels);
  copyToTexture(b, tb, bTexels);
  const gx = Math.ceil(colBlocks / wgx), gy = Math.ceil(rowBlocks / wgy);
  const bindings = [
    viewOf(ta),
    viewOf(tb),
    c,
    ...(rowBias ? [rowBias] : []),
    ...epilogueBindings(ep),
    sizes,
  ];
  dispatch(pipe, bindings, [gx, gy, zs]);
}

// ---------------------------------------------------------------- v1: generic, 4×4 per invocation

const TILE = 4;
const WGX = 8, WGY = 8;

function matmulGeneric(a: Binding, b: Binding, c: Binding, d: MatmulDims): void {
  const { batch, m, n, k } = d;
  const sum = !!d.sumBatch;
  const aIdx = (row: string, kk: string) => d.transA ? `${kk} * P.m + ${row}` : `${row} * P.k + ${kk}`;
  const bIdx = (kk: string, col: string) => d.transB ? `${col} * P.k + ${kk}` : `${kk} * ${n}u + ${col}`;
  const pipe = kernel(`mmg:${layoutKey(d)}`, "matmul/generic", () => {
    const rows = [0, 1, 2, 3].map((i) => `r${i}`), cols = [0, 1, 2, 3].map((j) => `c${j}`);
    return `${storageDecls(["A", "B"], ["C"])}
${paramsDecl(3, ["m", "k", "batch", "sA", "sB", "mn"])}
@compute @workgroup_size(${WGX}, ${WGY})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * ${TILE}u;
  let col0 = gid.x * ${TILE}u;
  if (row0 >= P.m || col0 >= ${n}u) { return; }
  let cOff = ${sum ? "0u" : "gid.z"} * P.mn;
  // clamped indices keep the inner loop free of branches; stores are guarded
${rows.map((r, i) => `  let ${r} = min(row0 + ${i}u, P.m - 1u);`).join("\n")}
${cols.map((c, j) => `  let ${c} = min(col0 + ${j}u, ${n - 1}u);`).join("\n")}
  var acc: array<vec4<f32>, 4>;
  for (var bat = ${sum ? "0u" : "gid.z"}; bat < ${sum ? "P.batch" : "gid.z + 1u"}; bat++) {
  let aOff = bat * P.sA;
  let bOff = bat * P.sB;
  for (var kk = 0u; kk < P.k; kk++) {
    let bv = vec4<f32>(${cols.map((c) => `B[bOff + ${bIdx("kk", c)}]`).join(", ")});
${rows.map((r, i) => `    acc[${i}] += A[aOff + ${aIdx(r, "kk")}] * bv;`).join("\n")}
  }
  }
  for (var i = 0u; i < 4u; i++) {
    let row = row0 + i;
    if (row >= P.m) { break; }
    for (var j = 0u; j < 4u; j++) {
      if (col0 + j < ${n}u) { C[cOff + row * ${n}u + col0 + j] = acc[i][j]; }
    }
  }
}`;
  });
  const sizes = params(m, k, batch, d.batchA ? m * k : 0, d.batchB ? k * n : 0, m * n);
  const gx = Math.ceil(n / TILE / WGX), gy = Math.ceil(m / TILE / WGY);
  dispatch(pipe, [a, b, c, sizes], [gx, gy, sum ? 1 : batch]);
}
