// GEMM store epilogues: elementwise work done where a GEMM writes its result, instead of a separate
// pass over the tensor. Used by the texture GEMM (kernels/matmul.ts), the tiled GEMM
// (kernels/gemm_tiled.ts) and the transposes of the 1×1 columns variants (kernels/conv1x1.ts):
//   gelu          C = gelu(v), v = acc (+ row bias); with `pre`, v is stored there too (the backward
//                 needs it). The forward of conv 1×1 → GELU.
//   geluGradOf    C = v · gelu'(geluGradOf) elementwise (same layout as C). The input gradient of a
//                 1×1 conv that reads a GELU's output: GELU's backward applied where its upstream
//                 gradient is produced.
// The GELU here is the exact (erf) one of kernels/activation.ts, with the same expressions.

import type { Binding } from "./runtime.ts";
import { WGSL_ERFC } from "./activation.ts";
import { texelLoad, textureDecl } from "./texture_operand.ts";

export interface GemmEpilogue {
  /** C = gelu(acc + bias); `pre`, when given, receives acc + bias. */
  gelu?: { pre?: Binding };
  /** C = (acc + bias) · gelu'(geluGradOf[i]), geluGradOf in C's layout. */
  geluGradOf?: Binding;
}

/** The epilogue's part of a pipeline key ("" for none): every choice that changes the WGSL. */
export function epilogueTag(ep?: GemmEpilogue): string {
  if (!ep) return "";
  if (ep.gelu && ep.geluGradOf) throw new Error("GEMM epilogue: gelu and geluGradOf exclude each other");
  if (ep.gelu) return ep.gelu.pre ? "gelu+pre" : "gelu";
  return ep.geluGradOf ? "dgelu" : "";
}

/** The extra bindings the epilogue reads or writes, in binding order. */
export function epilogueBindings(ep?: GemmEpilogue): Binding[] {
  if (ep?.gelu?.pre) return [ep.gelu.pre];
  if (ep?.geluGradOf) return [ep.geluGradOf];
  return [];
}

/**
 * WGSL declaration of the epilogue's binding (`Ep`) at `binding`, elements of type `elem`; with
 * `texture`, geluGradOf is read from an operand texture (vec4 elements, kernels/texture_operand.ts).
 */
export function epilogueDecl(
  ep: GemmEpilogue | undefined,
  binding: number,
  elem: string,
  texture = false,
): string {
  const tag = epilogueTag(ep);
  if (tag === "gelu+pre") {
    return `@group(0) @binding(${binding}) var<storage, read_write> Ep: array<${elem}>;`;
  }
  if (tag === "dgelu") {
    return texture
      ? textureDecl("Ep", binding)
      : `@group(0) @binding(${binding}) var<storage, read> Ep: array<${elem}>;`;
  }
  return "";
}

/** WGSL helpers the epilogue calls (empty without one). */
export function epilogueFns(ep?: GemmEpilogue): string {
  if (!epilogueTag(ep)) return "";
  return `${WGSL_ERFC}
fn gelu_f32(x: f32) -> f32 { return 0.5 * x * erfc_f32(-0.7071067811865476 * x); }
fn gelu_grad_f32(x: f32) -> f32 {
  return 0.5 * erfc_f32(-0.7071067811865476 * x) + x * 0.3989422804014327 * exp(-0.5 * x * x);
}
fn gelu_v4(v: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(gelu_f32(v.x), gelu_f32(v.y), gelu_f32(v.z), gelu_f32(v.w));
}
fn gelu_grad_v4(v: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(gelu_grad_f32(v.x), gelu_grad_f32(v.y), gelu_grad_f32(v.z), gelu_grad_f32(v.w));
}
`;
}

/**
 * WGSL statement storing `value` (a vec4 when `vec`) at `C[idx]` through the epilogue (`Ep[idx]` is
 * the same element of the epilogue's tensor; with `texture`, its texel `idx`).
 */
export function epilogueStore(
  ep: GemmEpilogue | undefined,
  idx: string,
  value: string,
  vec: boolean,
  out = "C",
  texture = false,
): string {
  const tag = epilogueTag(ep);
  const g = vec ? "gelu_v4" : "gelu_f32", dg = vec ? "gelu_grad_v4" : "gelu_grad_f32";
  if (tag === "gelu") return `${out}[${idx}] = ${g}(${value});`;
  if (tag === "gelu+pre") return `{ let v = ${value}; Ep[${idx}] = v; ${out}[${idx}] = ${g}(v); }`;
  if (tag === "dgelu") {
    const pre = texture ? texelLoad("Ep", `tc(u32(${idx}))`) : `Ep[${idx}]`;
    return `${out}[${idx}] = (${value}) * ${dg}(${pre});`;
  }
  return `${out}[${idx}] = ${value};`;
}
