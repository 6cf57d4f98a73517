// 1×1 stride-1 convolutions as GEMMs over the pixels of each image (P = H·W):
//   forward       y[n] (O×P) = w (O×C) · x[n] (C×P) + b
//   input grad   dx[n] (C×P) = wᵀ (C×O) · dy[n] (O×P)
//   weight grad  dw (O×C)    = Σ_n dy[n] (O×P) · x[n]ᵀ (P×C), split over chunks of the N·P pixels
// The variants are the table GEMM1X1_VARIANTS at the end (kernels/variant.ts says what an entry holds):
//   gemm1x1/texture          the texture GEMM of kernels/matmul.ts, per image (weight gradient: summed
//                            over images inside the kernel)
//   gemm1x1/columns-texture  small images: [N, C, P] transposed to [C, N·P], one texture GEMM, back
//   gemm1x1/tiled            the workgroup-tiled GEMM of kernels/gemm_tiled.ts (split-K weight gradient)
//   gemm1x1/columns-tiled    the same over all images at once
//   gemm1x1/vec4             below: a register block per invocation (the profile's gemmBlockEdge: large
//                            where every load is a gather and spilled accumulators are cheap), operands
//                            read as vec4 straight from storage (C and H·W multiples of 4); forward and
//                            input gradient take a GEMM epilogue (GELU, GELU's backward)
//   gemm1x1/vec4-texture     the same with both operands (and the input gradient's GELU pre-activation)
//                            fetched from operand textures (a copy each, kernels/texture_operand.ts)
//   gemm1x1/vec4-texture-half  the same with half the profile's block edge, for autotune to weigh (which
//                            edge wins depends on the image size; bench/results-lavapipe.txt)
//   gemm1x1/scalar           below: 4×4 blocks, scalar loads, any sizes

import {
  acquireBuffer,
  type Binding,
  dispatch,
  FLAT_ARGS,
  flatIndex,
  grid1D,
  kernel,
  params,
  releaseBuffer,
  WG,
} from "./runtime.ts";
import { matmul } from "./matmul.ts";
import { gemmSplitK, matmulTiled } from "./gemm_tiled.ts";
import { divU, modU, paramsDecl, storageDecls } from "./wgsl.ts";
import { sumChunks } from "./reduce.ts";
import { convGrid, type ConvShape, specKey, splitReduction, wgc, withPartials } from "./conv_common.ts";
import {
  conv1x1Dims,
  CONV_PASSES,
  type ConvBindings,
  type ConvPass,
  convTuneKey,
  type ConvVariant,
  isPointwise,
  lookup,
  textureGemmApplies,
} from "./variant.ts";
import type { AdapterProfile } from "./profile.ts";
import { adapterProfile, gemmBlockEdge } from "./profile.ts";
import {
  fitsOperandTexture,
  operandResource,
  texelLoad,
  textureDecl,
  textureOperand,
  textureReadTag,
  WGSL_TEXEL_COORD,
} from "./texture_operand.ts";
import {
  epilogueBindings,
  epilogueDecl,
  epilogueFns,
  epilogueStore,
  epilogueTag,
  type GemmEpilogue,
} from "./epilogue.ts";
import { geluBackward, geluForward } from "./activation.ts";

const R4 = [0, 1, 2, 3];
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

// The pipelines serve every batch size: keys and sources hold the per-image shape (`imageKey`), the
// images are a grid axis (z) or their counts are read at run time from the parameters `P`.

/** The per-image part of a 1×1 conv's shape (the batch left out), for pipeline keys. */
const imageKey = (s: ConvShape) => `${s.c},${s.h},${s.w},${s.o}`;

/** WGSL `a / n` and `a % n` on i32s, without a division by a literal 1. */
const divI = (a: string, n: number) => n === 1 ? a : `(${a} / ${n})`;
const modI = (a: string, n: number) => n === 1 ? "0" : `(${a} % ${n})`;

/** WGSL stepping a weight-gradient walk over pixels to the next one (and to the next image). */
function nextPixel(p: number, o: number, c: number): string {
  return `    q++;
    a++;
    b++;
    if (q == ${p}) {
      q = 0;
      a += ${(o - 1) * p};
      b += ${(c - 1) * p};
    }`;
}

/**
 * WGSL starting a weight-gradient chunk's walk over the N·P pixels (`p` per image): its steps
 * start..end (P.len each, P.steps in all) and the first one's pixel q in image n0.
 */
function chunkStart(p: number): string {
  return `  let start = chunk * i32(P.len);
  let end = min(start + i32(P.len), i32(P.steps));
  var q = ${modI("start", p)};
  let n0 = ${divI("start", p)};`;
}

/** Binding of a buffer whose length is a multiple of 4 floats, read as vec4. */
const V4 = "array<vec4<f32>>";

/** How a vec4 variant runs: its name (kernel keys and labels), operands from textures or not, block edge. */
interface Vec4 {
  variant: string;
  tex: boolean;
  edge: number;
}

/** WGSL declaring GEMM operand `name` at `binding`: a vec4 storage buffer, or an operand texture. */
function operandDecl(name: string, binding: number, tex: boolean): string {
  return tex
    ? textureDecl(name, binding)
    : `@group(0) @binding(${binding}) var<storage, read> ${name}: ${V4};`;
}

/** WGSL loading vec4 `idx` (an i32) of GEMM operand `name`. */
function operandLoad(name: string, idx: string, tex: boolean): string {
  return tex ? texelLoad(name, `tc(u32(${idx}))`) : `${name}[${idx}]`;
}

/**
 * The pixel columns of the vec4 forward and input-gradient GEMMs, in vec4s of 4 pixels. Per image
 * (grid z = image) unless a register block is wider than one image (4×4 images on lavapipe): then the
 * columns run over all N·H·W pixels, so that blocks stay full. Decided from the image size alone, so
 * every batch size shares the pipeline (as at any batch of at least a block's width in images).
 */
function pixelColumns(s: ConvShape, edge: number) {
  const p4 = (s.h * s.w) / 4;
  const perImage = gemmBlockEdge(p4 * 4, edge);
  const merged = perImage < edge;
  return { p4, c4: s.c / 4, cb4: (merged ? edge : perImage) / 4, merged };
}

/**
 * The grid of a vec4 forward or input-gradient GEMM (`rowBlocks` blocks of `rb` rows) and the WGSL
 * that finds an invocation's block (t, row0, col0; returns past the last). Per image: the blocks of one
 * image (compiled) and the image on z. Merged: the block count follows the batch, so it, the column
 * blocks and the columns (`cols4`) are read from `P`, declared at `binding`.
 */
function blockGrid(s: ConvShape, edge: number, rowBlocks: number, rb: number, binding: number) {
  const { p4, cb4, merged } = pixelColumns(s, edge);
  if (!merged) {
    const colBlocks = Math.ceil(p4 / cb4), total = rowBlocks * colBlocks;
    const { groups, index } = convGrid(total, s.n);
    return {
      groups,
      args: "@builtin(global_invocation_id) gid: vec3<u32>",
      decl: "",
      extra: [] as GPUBuffer[],
      head: `  let t = ${index};
  if (t >= ${total}) { return; }
  let row0 = ${divI("t", colBlocks)} * ${rb};
  let col0 = ${modI("t", colBlocks)} * ${cb4};`,
    };
  }
  const cols4 = s.n * p4, colBlocks = Math.ceil(cols4 / cb4), total = rowBlocks * colBlocks;
  const g = grid1D(total, wgc());
  return {
    groups: [g[0], g[1], 1] as [number, number, number],
    args: FLAT_ARGS,
    decl: paramsDecl(binding, ["total", "colBlocks", "cols4"]),
    extra: [params(total, colBlocks, cols4)],
    head: `  let t = i32(${flatIndex(wgc())});
  if (t >= i32(P.total)) { return; }
  let row0 = (t / i32(P.colBlocks)) * ${rb};
  let col0 = (t % i32(P.colBlocks)) * ${cb4};`,
  };
}

/**
 * WGSL of a block's column offsets: x<j> into the operand read along K (`x` channels per image), y<j>
 * into the result (`y` channels), for the vec4 columns col0 + j (clamped to the last).
 */
function columnBases(s: ConvShape, edge: number, J: number[], ch: { x: number; y: number }): string {
  const { p4, merged } = pixelColumns(s, edge);
  return J.map((j) => {
    if (!merged) {
      const col = `min(col0 + ${j}, ${p4 - 1})`;
      return `  let x${j} = i32(gid.z) * ${ch.x * p4} + ${col};\n  let y${j} = i32(gid.z) * ${
        ch.y * p4
      } + ${col};`;
    }
    const col = `min(col0 + ${j}, i32(P.cols4) - 1)`;
    return `  let c${j} = ${col};\n  let n${j} = ${divI(`c${j}`, p4)};\n  let p${j} = ${modI(`c${j}`, p4)};
  let x${j} = n${j} * ${ch.x * p4} + p${j};\n  let y${j} = n${j} * ${ch.y * p4} + p${j};`;
  }).join("\n");
}

/** WGSL: whether vec4 column col0 + j is a column of the result. */
function colBound(merged: boolean, j: number, p4: number): string {
  return merged ? `col0 + ${j} < i32(P.cols4)` : `col0 + ${j} < ${p4}`;
}

/** Forward, vec4 path: a block of RB output channels × CB pixels per invocation, K unrolled by 4. */
function forwardVec4(
  x: Binding,
  w: Binding,
  b: Binding | null,
  y: Binding,
  s: ConvShape,
  v: Vec4,
  ep?: GemmEpilogue,
): void {
  const { o } = s;
  const { tex } = v;
  const { p4, c4, cb4, merged } = pixelColumns(s, v.edge);
  const rb = gemmBlockEdge(o, v.edge);
  const grid = blockGrid(s, v.edge, Math.ceil(o / rb), rb, (b ? 4 : 3) + epilogueBindings(ep).length);
  const I = range(rb), J = range(cb4);
  const pipe = kernel(
    specKey(
      "c1x1f4",
      v.variant,
      v.tex && textureReadTag(),
      imageKey(s),
      !!b,
      rb,
      cb4,
      merged,
      wgc(),
      epilogueTag(ep),
    ),
    v.variant,
    () =>
      `${epilogueDecl(ep, b ? 4 : 3, "vec4<f32>")}
${grid.decl}
${epilogueFns(ep)}
${tex ? WGSL_TEXEL_COORD : ""}
${operandDecl("x", 0, tex)}
${operandDecl("w", 1, tex)}
${b ? "@group(0) @binding(2) var<storage, read> b: array<f32>;\n" : ""}@group(0) @binding(${
        b ? 3 : 2
      }) var<storage, read_write> y: ${V4};
@compute @workgroup_size(${wgc()})
fn main(${grid.args}) {
${grid.head}
${I.map((i) => `  let r${i} = min(row0 + ${i}, ${o - 1}) * ${c4};`).join("\n")}
${columnBases(s, v.edge, J, { x: s.c, y: o })}
${I.map((i) => J.map((j) => `  var acc${i}_${j} = vec4<f32>(0.0);`).join("\n")).join("\n")}
  for (var k4 = 0; k4 < ${c4}; k4++) {
    let ko = k4 * ${4 * p4};
${
        J.map((j) =>
          R4.map((q) => `    let b${q}_${j} = ${operandLoad("x", `x${j} + ko + ${q * p4}`, tex)};`).join("\n")
        ).join("\n")
      }
${
        I.map((i) =>
          `    let a${i} = ${operandLoad("w", `r${i} + k4`, tex)};\n` +
          J.map((j) =>
            `    acc${i}_${j} += a${i}.x * b0_${j} + a${i}.y * b1_${j} + a${i}.z * b2_${j} + a${i}.w * b3_${j};`
          )
            .join("\n")
        ).join("\n")
      }
  }
${b ? I.map((i) => `  let bias${i} = b[min(row0 + ${i}, ${o - 1})];`).join("\n") : ""}
${
        I.map((i) =>
          J.map((j) =>
            `  if (row0 + ${i} < ${o} && ${colBound(merged, j, p4)}) { ${
              epilogueStore(
                ep,
                `y${j} + (row0 + ${i}) * ${p4}`,
                `acc${i}_${j}${b ? ` + bias${i}` : ""}`,
                true,
                "y",
              )
            } }`
          ).join("\n")
        ).join("\n")
      }
}`,
  );
  const xr = operandResource("B", x, s.n * s.c * p4 * 4, tex), wr = operandResource("A", w, o * s.c, tex);
  dispatch(pipe, [xr, wr, ...(b ? [b] : []), y, ...epilogueBindings(ep), ...grid.extra], grid.groups);
}

/** Input gradient, vec4 path: dx[n] = wᵀ · dy[n]; wᵀ is read as vec4 over 4 input channels. */
function backwardInputVec4(
  dy: Binding,
  w: Binding,
  dx: Binding,
  s: ConvShape,
  v: Vec4,
  ep?: GemmEpilogue,
): void {
  const { c, o } = s;
  const { tex } = v;
  const { p4, c4, cb4, merged } = pixelColumns(s, v.edge);
  const rb4 = gemmBlockEdge(c, v.edge) / 4;
  const grid = blockGrid(s, v.edge, Math.ceil(c4 / rb4), rb4, 3 + epilogueBindings(ep).length);
  const I = range(rb4), J = range(cb4);
  // K (the output channels) four at a time: each accumulator takes a sum of four products, so a
  // spilled accumulator is loaded and stored once per four multiply-adds, not once per one
  const o4 = Math.floor(o / 4);
  // GELU's pre-activation fetched from a texture too (it pays, the copy included); whether the tensor
  // fits one is the adapter's limit, not a choice (batches far beyond training's fit)
  const epTex = tex && !!ep?.geluGradOf && fitsOperandTexture(s.n * c * p4 * 4);
  const pipe = kernel(
    specKey(
      "c1x1i4",
      v.variant,
      v.tex && textureReadTag(),
      imageKey(s),
      rb4,
      cb4,
      merged,
      wgc(),
      epilogueTag(ep),
      epTex,
    ),
    v.variant,
    () =>
      `${epilogueDecl(ep, 3, "vec4<f32>", epTex)}
${grid.decl}
${epilogueFns(ep)}
${tex ? WGSL_TEXEL_COORD : ""}
${operandDecl("dy", 0, tex)}
${operandDecl("w", 1, tex)}
@group(0) @binding(2) var<storage, read_write> dx: ${V4};
@compute @workgroup_size(${wgc()})
fn main(${grid.args}) {
${grid.head}
${I.map((i) => `  let r${i} = min(row0 + ${i}, ${c4 - 1});`).join("\n")}
${columnBases(s, v.edge, J, { x: o, y: c })}
${
        I.map((i) =>
          R4.map((q) => J.map((j) => `  var acc${i}_${q}_${j} = vec4<f32>(0.0);`).join("\n")).join("\n")
        ).join("\n")
      }
  var ko = 0;
  var wo = 0;
  for (var k = 0; k < ${o4 * 4}; k += 4) {
${
        R4.map((u) =>
          J.map((j) => `    let b${u}_${j} = ${operandLoad("dy", `x${j} + ko + ${u * p4}`, tex)};`).join("\n")
        ).join("\n")
      }
${
        I.map((i) =>
          R4.map((u) => `    let a${u}_${i} = ${operandLoad("w", `wo + ${u * c4} + r${i}`, tex)};`).join(
            "\n",
          ) +
          "\n" +
          R4.map((q) =>
            J.map((j) =>
              `    acc${i}_${q}_${j} += ${R4.map((u) => `a${u}_${i}.${"xyzw"[q]} * b${u}_${j}`).join(" + ")};`
            ).join("\n")
          ).join("\n")
        ).join("\n")
      }
    ko += ${4 * p4};
    wo += ${4 * c4};
  }
  for (var k = ${o4 * 4}; k < ${o}; k++) {
${J.map((j) => `    let b${j} = ${operandLoad("dy", `x${j} + ko`, tex)};`).join("\n")}
${
        I.map((i) =>
          `    let a${i} = ${operandLoad("w", `wo + r${i}`, tex)};\n` +
          R4.map((q) => J.map((j) => `    acc${i}_${q}_${j} += a${i}.${"xyzw"[q]} * b${j};`).join("\n")).join(
            "\n",
          )
        ).join("\n")
      }
    ko += ${p4};
    wo += ${c4};
  }
${
        I.map((i) =>
          R4.map((q) =>
            J.map((j) =>
              `  if (row0 + ${i} < ${c4} && ${colBound(merged, j, p4)}) { ${
                epilogueStore(
                  ep,
                  `y${j} + (r${i} * 4 + ${q}) * ${p4}`,
                  `acc${i}_${q}_${j}`,
                  true,
                  "dx",
                  epTex,
                )
              } }`
            ).join("\n")
          ).join("\n")
        ).join("\n")
      }
}`,
  );
  const dyr = operandResource("B", dy, s.n * o * p4 * 4, tex), wr = operandResource("A", w, o * c, tex);
  const epr = epTex ? [textureOperand("E", ep!.geluGradOf!, s.n * c * p4 * 4)] : epilogueBindings(ep);
  dispatch(pipe, [dyr, wr, dx, ...epr, ...grid.extra], grid.groups);
}

/**
 * Weight gradient, vec4 path: both operands are contiguous along the pixels, read as vec4. With `db`,
 * the bias gradient Σ dy is summed from the dy values the kernel loads anyway (each invocation of the
 * first column block writes its rows' partial sums).
 */
function backwardWeightVec4(
  dy: Binding,
  x: Binding,
  dw: Binding,
  s: ConvShape,
  db: Binding | null,
  v: Vec4,
): void {
  const { tex } = v;
  const { n, c, o } = s;
  const p4 = (s.h * s.w) / 4;
  const steps = n * p4;
  const rb = gemmBlockEdge(o, v.edge), cb = gemmBlockEdge(c, v.edge);
  const rowBlocks = Math.ceil(o / rb), colBlocks = Math.ceil(c / cb);
  const total = rowBlocks * colBlocks;
  // split K (the pixels) until the invocations fill the adapter, no further: each chunk is a partial
  // dw written and summed again
  const fill = adapterProfile().splitInvocations;
  const minLen = fill ? Math.max(32, Math.ceil(steps / Math.ceil(fill / total))) : 32;
  const { chunks, len } = splitReduction(steps, o * c, minLen);
  // the chunks (grid z) and their length follow the batch: read from P
  const { groups, index } = convGrid(total, chunks);
  const I = range(rb), J4 = range(cb / 4), J = range(cb);
  const pipe = kernel(
    specKey("c1x1w4", v.variant, v.tex && textureReadTag(), imageKey(s), rb, cb, wgc(), !!db),
    v.variant,
    () =>
      `${tex ? WGSL_TEXEL_COORD : ""}
${operandDecl("dy", 0, tex)}
${operandDecl("x", 1, tex)}
@group(0) @binding(2) var<storage, read_write> out: ${V4};
${db ? "@group(0) @binding(3) var<storage, read_write> bout: array<f32>;" : ""}
${paramsDecl(db ? 4 : 3, ["len", "steps"])}
@compute @workgroup_size(${wgc()})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let chunk = i32(gid.z);
  let row0 = ${divI("t", colBlocks)} * ${rb};
  let col0 = ${modI("t", colBlocks)} * ${cb};
${I.map((i) => `  let r${i} = min(row0 + ${i}, ${o - 1}) * ${p4};`).join("\n")}
${J.map((j) => `  let c${j} = min(col0 + ${j}, ${c - 1}) * ${p4};`).join("\n")}
${I.map((i) => J4.map((j) => `  var acc${i}_${j} = vec4<f32>(0.0);`).join("\n")).join("\n")}
${db ? I.map((i) => `  var bs${i} = vec4<f32>(0.0);`).join("\n") : ""}
${chunkStart(p4)}
  var a = n0 * ${o * p4} + q;
  var b = n0 * ${c * p4} + q;
  for (var i = start; i < end; i++) {
${J.map((j) => `    let b${j} = ${operandLoad("x", `b + c${j}`, tex)};`).join("\n")}
${
        I.map((i) =>
          `    let a${i} = ${operandLoad("dy", `a + r${i}`, tex)};\n` + (db ? `    bs${i} += a${i};\n` : "") +
          J4.map((j) =>
            `    acc${i}_${j} += vec4<f32>(${R4.map((k) => `dot(a${i}, b${j * 4 + k})`).join(", ")});`
          ).join("\n")
        ).join("\n")
      }
${nextPixel(p4, o, c)}
  }
  let ob = chunk * ${(o * c) / 4};
${
        I.map((i) =>
          J4.map((j) =>
            `  if (row0 + ${i} < ${o} && col0 + ${j * 4} < ${c}) { out[ob + (row0 + ${i}) * ${
              c / 4
            } + col0 / 4 + ${j}] = acc${i}_${j}; }`
          ).join("\n")
        ).join("\n")
      }
${
        db
          ? `  if (col0 == 0) {\n${
            I.map((i) =>
              `    if (row0 + ${i} < ${o}) { bout[chunk * ${o} + row0 + ${i}] = dot(bs${i}, vec4<f32>(1.0)); }`
            )
              .join("\n")
          }\n  }`
          : ""
      }
}`,
  );
  const dyr = operandResource("A", dy, n * o * p4 * 4, tex),
    xr = operandResource("B", x, n * c * p4 * 4, tex);
  const run = (w: Binding, b: Binding | null) =>
    dispatch(pipe, [dyr, xr, w, ...(b ? [b] : []), params(len, steps)], groups);
  if (!db || chunks === 1) return withPartials(chunks, o * c, dw, (dst) => run(dst, db));
  // the weight's partials ([chunks, O·C]) and the bias's (one row of O per chunk) summed over the chunks
  // by one dispatch, in the order of the weight-only path's sum
  const wBuf = acquireBuffer(chunks * o * c * 4), bBuf = acquireBuffer(chunks * o * 4);
  const wPart = { buffer: wBuf, offset: 0, size: chunks * o * c * 4 };
  const bPart = { buffer: bBuf, offset: 0, size: chunks * o * 4 };
  run(wPart, bPart);
  sumChunks(chunks, [{ src: wPart, n: o * c, dst: dw }, { src: bPart, n: o, dst: db }]);
  releaseBuffer(wBuf); // later users of the pooled buffers are recorded after this pass
  releaseBuffer(bBuf);
}

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
  // one image per z-slice: nothing in the source follows the batch
  const { groups, index } = convGrid(total, batch);
  const hasBias = bindings.bias !== null;
  const pipe = kernel(
    specKey(name, m, kDim, p, aIdx("r", "k"), hasBias, wgc()),
    "gemm1x1/scalar",
    () =>
      `${storageDecls(hasBias ? ["A", "B", "bias"] : ["A", "B"], ["out"])}
@compute @workgroup_size(${wgc()})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let nn = i32(gid.z);
  let row0 = ${divI("t", colBlocks)} * 4;
  let col0 = ${modI("t", colBlocks)} * 4;
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
}`,
  );
  const binds = [bindings.a, bindings.b, ...(bindings.bias ? [bindings.bias] : []), bindings.out];
  dispatch(pipe, binds, groups);
}

/**
 * dst [b, a, inner] = src [a, b, inner] with the two leading axes swapped, through `ep` (the epilogue's
 * tensor in dst's layout): the columns variants apply a GEMM's epilogue here, after the transpose back.
 * One of a, b is the batch: both are read from P, `inner` (the pixels of an image) is compiled.
 */
function swapLeading(
  src: Binding,
  dst: Binding,
  a: number,
  b: number,
  inner: number,
  ep?: GemmEpilogue,
): void {
  const total = a * b * inner;
  const pipe = kernel(
    `swap_leading:${inner}:${epilogueTag(ep)}`,
    "gemm1x1/columns",
    () =>
      `${storageDecls(["src"], ["dst"])}
${epilogueDecl(ep, 2, "f32")}
${paramsDecl(2 + epilogueBindings(ep).length, ["total", "a", "b"])}
${epilogueFns(ep)}
@compute @workgroup_size(${WG})
fn main(${FLAT_ARGS}) {
  let t = ${flatIndex()};
  if (t >= P.total) { return; }
  let r = ${modU("t", inner)};
  let ta = ${divU("t", inner)};
  let i = ta % P.a;
  let j = ta / P.a;
  ${epilogueStore(ep, "t", `src[(i * P.b + j) * ${inner}u + r]`, false, "dst")}
}`,
  );
  dispatch(pipe, [src, dst, ...epilogueBindings(ep), params(total, a, b)], grid1D(total));
}

/**
 * All images as one GEMM (small images give a per-image GEMM too few columns): transposes `input`
 * [N, inCh, P] to [inCh, N·P], runs `mm` on the transposed operand and result, and transposes back.
 */
function imagesAsColumns(
  input: Binding,
  inCh: number,
  output: Binding,
  outCh: number,
  s: ConvShape,
  mm: (inT: GPUBuffer, outT: GPUBuffer) => void,
  ep?: GemmEpilogue,
): void {
  const p = s.h * s.w;
  const inT = acquireBuffer(s.n * inCh * p * 4), outT = acquireBuffer(s.n * outCh * p * 4);
  swapLeading(input, inT, s.n, inCh, p);
  mm(inT, outT);
  swapLeading(outT, output, outCh, s.n, p, ep);
  releaseBuffer(inT);
  releaseBuffer(outT);
}

// ---------------------------------------------------------------- the variants

/** A texture or tiled GEMM per image (`columns`: over all images at once) as a 1×1 conv variant's run. */
function gemmRun(mm: "matmul/texture" | "matmul/tiled", columns: boolean): ConvVariant["run"] {
  return (bd, s) => {
    if (bd.pass === "forward") {
      const rowBias = bd.b ?? undefined;
      const epilogue: GemmEpilogue | undefined = bd.gelu
        ? { gelu: bd.gelu.pre ? { pre: bd.gelu.pre } : {} }
        : undefined;
      const d = conv1x1Dims(s, "forward", columns);
      if (!columns) return matmul(bd.w, bd.x, bd.y, d, { rowBias, epilogue, variant: mm });
      const run = (xt: GPUBuffer, yt: GPUBuffer) => matmul(bd.w, xt, yt, d, { rowBias, variant: mm });
      return imagesAsColumns(bd.x, s.c, bd.y, s.o, s, run, epilogue);
    }
    if (bd.pass === "inputGrad") {
      const epilogue: GemmEpilogue | undefined = bd.geluGradOf ? { geluGradOf: bd.geluGradOf } : undefined;
      const d = conv1x1Dims(s, "inputGrad", columns);
      if (!columns) return matmul(bd.w, bd.dy, bd.dx, d, { epilogue, variant: mm });
      const run = (dyt: GPUBuffer, dxt: GPUBuffer) => matmul(bd.w, dyt, dxt, d, { variant: mm });
      return imagesAsColumns(bd.dy, s.o, bd.dx, s.c, s, run, epilogue);
    }
    const d = conv1x1Dims(s, "weightGrad");
    if (mm === "matmul/texture") return matmul(bd.dy, bd.x, bd.dw, d, { variant: mm });
    matmulTiled(bd.dy, bd.x, bd.dw, d, { splitK: gemmSplitK(d) });
  };
}

/** A vec4 variant's run: operands from textures or not, register block edge from the profile. */
export function vec4Run(variant: string, tex: boolean, half: boolean): ConvVariant["run"] {
  return (bd, s) => {
    const full = adapterProfile().gemmBlockEdge;
    const v4: Vec4 = { variant, tex, edge: half ? Math.max(4, Math.floor(full / 8) * 4) : full };
    if (bd.pass === "forward") {
      const epilogue: GemmEpilogue | undefined = bd.gelu
        ? { gelu: bd.gelu.pre ? { pre: bd.gelu.pre } : {} }
        : undefined;
      return forwardVec4(bd.x, bd.w, bd.b, bd.y, s, v4, epilogue);
    }
    if (bd.pass === "inputGrad") {
      const epilogue: GemmEpilogue | undefined = bd.geluGradOf ? { geluGradOf: bd.geluGradOf } : undefined;
      return backwardInputVec4(bd.dy, bd.w, bd.dx, s, v4, epilogue);
    }
    backwardWeightVec4(bd.dy, bd.x, bd.dw, s, bd.db ?? null, v4);
  };
}

function scalarRun(bd: ConvBindings, s: ConvShape): void {
  if (bd.pass === "forward") {
    return gemmPixels("conv1x1_forward", s.o, s.c, s.h * s.w, s.n, (r, k) => `${r} * ${s.c} + ${k}`, {
      a: bd.w,
      b: bd.x,
      bias: bd.b,
      out: bd.y,
    });
  }
  if (bd.pass === "inputGrad") {
    return gemmPixels("conv1x1_backward_input", s.c, s.o, s.h * s.w, s.n, (r, k) => `${k} * ${s.c} + ${r}`, {
      a: bd.w,
      b: bd.dy,
      bias: null,
      out: bd.dx,
    });
  }
  scalarWeight(bd.dy, bd.x, bd.dw, s);
}

/** dw = Σ_n dy[n] · x[n]ᵀ with 4×4 blocks and scalar loads, split over chunks of the N·P pixels. */
function scalarWeight(dy: Binding, x: Binding, dw: Binding, s: ConvShape): void {
  const { n, c, o } = s;
  const p = s.h * s.w;
  const steps = n * p;
  const { chunks, len } = splitReduction(steps, o * c, 128);
  const rowBlocks = Math.ceil(o / 4), colBlocks = Math.ceil(c / 4);
  const total = rowBlocks * colBlocks;
  const { groups, index } = convGrid(total, chunks);
  const pipe = kernel(
    specKey("c1x1w", imageKey(s), wgc()),
    "gemm1x1/scalar",
    () =>
      `${storageDecls(["dy", "x"], ["out"])}
${paramsDecl(3, ["len", "steps"])}
@compute @workgroup_size(${wgc()})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = ${index};
  if (t >= ${total}) { return; }
  let chunk = i32(gid.z);
  let row0 = ${divI("t", colBlocks)} * 4;
  let col0 = ${modI("t", colBlocks)} * 4;
${R4.map((i) => `  let r${i} = min(row0 + ${i}, ${o - 1}) * ${p};`).join("\n")}
${R4.map((j) => `  let c${j} = min(col0 + ${j}, ${c - 1}) * ${p};`).join("\n")}
${chunkStart(p)}
  var a = n0 * ${o * p} + q;
  var b = n0 * ${c * p} + q;
${R4.map((i) => `  var acc${i} = vec4<f32>(0.0);`).join("\n")}
  for (var i = start; i < end; i++) {
    let xv = vec4<f32>(${R4.map((j) => `x[b + c${j}]`).join(", ")});
${R4.map((i) => `    acc${i} += dy[a + r${i}] * xv;`).join("\n")}
${nextPixel(p, o, c)}
  }
  let oBase = chunk * ${o * c};
${
        R4.map((i) =>
          R4.map((j) =>
            `  if (row0 + ${i} < ${o} && col0 + ${j} < ${c}) { out[oBase + (row0 + ${i}) * ${c} + col0 + ${j}] = acc${i}[${j}]; }`
          ).join("\n")
        ).join("\n")
      }
}`,
  );
  withPartials(
    chunks,
    o * c,
    dw,
    (dst) => dispatch(pipe, [dy, x, dst, params(len, steps)], groups),
  );
}

const ALL: readonly ConvPass[] = CONV_PASSES;
const vec4Fits = (s: ConvShape) => s.c % 4 === 0 && (s.h * s.w) % 4 === 0;
const columnsFit = (s: ConvShape, pass: ConvPass, prof: AdapterProfile) =>
  pass !== "weightGrad" && s.h * s.w < prof.columnsBelowPixels && s.n > 1;
/** Whether the profile lets the texture GEMM serve 1×1 convs (as the default, and in autotune). */
const textureOn = (prof: AdapterProfile) => prof.textureGemm && prof.conv1x1Texture;
const pointwise = { passes: ALL, tuneKey: convTuneKey, epilogue: true };

/**
 * The 1×1 stride-1 GEMM family, in the order the planner lists candidates. Ranks give the profile's
 * default: without textureGemm the tiled GEMMs; with it the texture GEMMs above the profile's sizes
 * (where conv1x1Texture), else the vec4 GEMM (operands from textures where gemmTextures), else scalar.
 */
export const GEMM1X1_VARIANTS: ConvVariant[] = [
  {
    ...pointwise,
    name: "gemm1x1/columns-texture",
    passes: ["forward", "inputGrad"],
    applies: (s, pass, prof) =>
      isPointwise(s) && columnsFit(s, pass, prof) && textureGemmApplies(conv1x1Dims(s, pass, true)),
    rank: (s, pass, prof) => {
      const d = conv1x1Dims(s, pass);
      return textureOn(prof) && d.m >= prof.columnsTextureMin.rows && d.k >= prof.columnsTextureMin.k
        ? 2
        : null;
    },
    tuned: (prof) => prof.conv1x1Texture,
    run: gemmRun("matmul/texture", true),
  },
  {
    ...pointwise,
    name: "gemm1x1/columns-tiled",
    passes: ["forward", "inputGrad"],
    applies: (s, pass, prof) => isPointwise(s) && columnsFit(s, pass, prof),
    rank: (_s, _pass, prof) => prof.textureGemm ? null : 0,
    run: gemmRun("matmul/tiled", true),
  },
  {
    ...pointwise,
    name: "gemm1x1/texture",
    applies: (s, pass) => isPointwise(s) && textureGemmApplies(conv1x1Dims(s, pass)),
    rank: (s, pass, prof) => {
      if (!textureOn(prof)) return null;
      if (pass === "weightGrad") {
        const { rows, cols } = prof.textureMinWeight;
        return s.o >= rows && s.c >= cols ? 3 : null;
      }
      const d = conv1x1Dims(s, pass), { rows, cols } = prof.textureMin;
      return d.m >= rows && d.n >= cols ? 3 : null;
    },
    tuned: (prof) => prof.conv1x1Texture,
    run: gemmRun("matmul/texture", false),
  },
  {
    ...pointwise,
    name: "gemm1x1/tiled",
    applies: (s) => isPointwise(s),
    rank: (_s, _pass, prof) => prof.textureGemm ? null : 1,
    run: gemmRun("matmul/tiled", false),
  },
  {
    ...pointwise,
    name: "gemm1x1/vec4-texture",
    applies: (s) =>
      isPointwise(s) && vec4Fits(s) &&
      [s.n * s.c * s.h * s.w, s.n * s.o * s.h * s.w, s.o * s.c].every(fitsOperandTexture),
    rank: (_s, _pass, prof) => prof.textureGemm && prof.gemmTextures ? 4 : null,
    biasGrad: true,
    run: vec4Run("gemm1x1/vec4-texture", true, false),
  },
  {
    // half the profile's block edge, for autotune to weigh against the full one
    ...pointwise,
    name: "gemm1x1/vec4-texture-half",
    applies: (s) =>
      isPointwise(s) && vec4Fits(s) &&
      [s.n * s.c * s.h * s.w, s.n * s.o * s.h * s.w, s.o * s.c].every(fitsOperandTexture),
    rank: () => null,
    biasGrad: true,
    run: vec4Run("gemm1x1/vec4-texture-half", true, true),
  },
  {
    ...pointwise,
    name: "gemm1x1/vec4",
    applies: (s) => isPointwise(s) && vec4Fits(s),
    rank: (_s, _pass, prof) => prof.textureGemm ? 5 : null,
    biasGrad: true,
    run: vec4Run("gemm1x1/vec4", false, false),
  },
  {
    // any sizes; autotune times it only where no vec4 GEMM can run
    ...pointwise,
    name: "gemm1x1/scalar",
    applies: (s) => isPointwise(s),
    rank: (_s, _pass, prof) => prof.textureGemm ? 6 : null,
    tuned: (_prof, candidates) => !candidates.some((c) => c.startsWith("gemm1x1/vec4")),
    epilogue: false,
    run: scalarRun,
  },
];

const gemm1x1 = (variant: string) => lookup(GEMM1X1_VARIANTS, variant, "conv1x1");

/** y = conv1x1(x, w) + b, by `variant` (the bias is added in the GEMMs' store). */
export function conv1x1Forward(
  x: Binding,
  w: Binding,
  b: Binding | null,
  y: Binding,
  s: ConvShape,
  variant: string,
): void {
  gemm1x1(variant).run({ pass: "forward", x, w, b, y }, s);
}

/** dx = wᵀ · dy per image, by `variant`. */
export function conv1x1BackwardInput(
  dy: Binding,
  w: Binding,
  dx: Binding,
  s: ConvShape,
  variant: string,
): void {
  gemm1x1(variant).run({ pass: "inputGrad", dy, w, dx }, s);
}

/**
 * dw = Σ_n dy[n] · x[n]ᵀ, by `variant`. With `db` (only for variants with `biasGrad`), db = Σ dy from
 * the same kernel.
 */
export function conv1x1BackwardWeight(
  dy: Binding,
  x: Binding,
  dw: Binding,
  s: ConvShape,
  variant: string,
  db: Binding | null = null,
): void {
  const v = gemm1x1(variant);
  if (db && !v.biasGrad) throw new Error(`conv1x1BackwardWeight: ${variant} does not sum the bias gradient`);
  v.run({ pass: "weightGrad", dy, x, dw, db }, s);
}

// ---------------------------------------------------------------- with a GELU epilogue

/**
 * y = gelu(conv1x1(x, w) + b), and pre = conv1x1(x, w) + b when `pre` is given (the backward needs
 * it). Fused into the GEMM's store (columns variants: into the transpose back) where the variant takes
 * an epilogue; other variants run the conv into `pre` (a scratch buffer without it), then a GELU pass.
 */
export function conv1x1ForwardGelu(
  x: Binding,
  w: Binding,
  b: Binding | null,
  pre: Binding | null,
  y: Binding,
  s: ConvShape,
  variant: string,
): void {
  const v = gemm1x1(variant);
  if (v.epilogue) return v.run({ pass: "forward", x, w, b, y, gelu: { pre } }, s);
  const count = s.n * s.o * s.h * s.w;
  const scratch = pre ? null : acquireBuffer(count * 4);
  const p = pre ?? scratch!;
  v.run({ pass: "forward", x, w, b, y: p }, s);
  geluForward(p, y, count);
  if (scratch) releaseBuffer(scratch);
}

/**
 * dx = (wᵀ · dy) · gelu'(pre) per image: the input gradient of a 1×1 conv whose input was gelu(pre),
 * carried on through the GELU. Fused into the GEMM's store where the variant takes an epilogue; other
 * variants run the input gradient, then a GELU-backward pass.
 */
export function conv1x1BackwardInputGeluGrad(
  dy: Binding,
  w: Binding,
  pre: Binding,
  dx: Binding,
  s: ConvShape,
  variant: string,
): void {
  const v = gemm1x1(variant);
  if (v.epilogue) return v.run({ pass: "inputGrad", dy, w, dx, geluGradOf: pre }, s);
  const count = s.n * s.c * s.h * s.w;
  const g = acquireBuffer(count * 4);
  v.run({ pass: "inputGrad", dy, w, dx: g }, s);
  geluBackward(g, pre, dx, count);
  releaseBuffer(g);
}
