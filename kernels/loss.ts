// Cross-entropy with a fused log-softmax. Targets are class indices stored as f32.
//
// Forward: one workgroup; each invocation takes rows n (strided), computes m = max_c x and
// ls = log Σ exp(x − m) (stable for any logits), saves both (`lse` holds [N, 2]) and adds
// (m − x[n, t[n]]) + ls, which keeps full precision for logits of ~1e4; a tree sums the rows and
// writes the mean. A target outside [0, C) gives a NaN loss (never a stray read).
// Backward: dx[n, c] = g / N · (exp((x[n, c] − m) − ls) − [c = t[n]]).

import { type Binding, dispatch, grid1D, kernel, linearIndex, WG } from "./runtime.ts";
import { f32, storageDecls } from "./wgsl.ts";

const WG_CE = 64;

/** The forward's WGSL for `n` rows of `c` logits. */
export function forwardSource(n: number, c: number): string {
  return `${storageDecls(["x", "t"], ["lse", "out"])}
var<workgroup> part: array<f32, ${WG_CE}>;
@compute @workgroup_size(${WG_CE})
fn main(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var row = lid; row < ${n}u; row += ${WG_CE}u) {
    let b = row * ${c}u;
    var m = x[b];
    for (var k = 1u; k < ${c}u; k++) { m = max(m, x[b + k]); }
    var s = 0.0;
    for (var k = 0u; k < ${c}u; k++) { s += exp(x[b + k] - m); }
    let ls = log(s);
    lse[2u * row] = m;
    lse[2u * row + 1u] = ls;
    let tf = t[row];
    if (tf >= 0.0 && tf < ${f32(c)} && tf == floor(tf)) {
      acc += (m - x[b + u32(tf)]) + ls; // exact difference first: accurate for large logits
    } else {
      acc += bitcast<f32>(0x7fc00000u | (bitcast<u32>(tf) & 0u)); // NaN (a runtime value, not a constant)
    }
  }
  part[lid] = acc;
  workgroupBarrier();
  for (var w = ${WG_CE / 2}u; w > 0u; w = w / 2u) {
    if (lid < w) { part[lid] += part[lid + w]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[0] = part[0] * ${f32(1 / n)}; }
}`;
}

export function crossEntropyForward(
  logits: Binding,
  targets: Binding,
  lse: Binding,
  out: Binding,
  n: number,
  c: number,
): void {
  const pipe = kernel(`ce:${n}:${c}`, "cross_entropy", () => forwardSource(n, c));
  dispatch(pipe, [logits, targets, lse, out], [1]);
}

/** The backward's WGSL for `n` rows of `c` logits. */
export function backwardSource(n: number, c: number): string {
  const total = n * c;
  const grid = grid1D(total);
  return `${storageDecls(["g", "x", "t", "lse"], ["dx"])}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = ${linearIndex(grid)};
  if (i >= ${total}u) { return; }
  let row = i / ${c}u;
  let k = i % ${c}u;
  let p = exp((x[i] - lse[2u * row]) - lse[2u * row + 1u]);
  let hit = select(0.0, 1.0, t[row] == f32(k));
  dx[i] = g[0] * ${f32(1 / n)} * (p - hit);
}`;
}

export function crossEntropyBackward(
  g: Binding,
  logits: Binding,
  targets: Binding,
  lse: Binding,
  dx: Binding,
  n: number,
  c: number,
): void {
  const total = n * c;
  if (total === 0) return;
  dispatch(
    kernel(`ce_backward:${n}:${c}`, "cross_entropy_backward", () => backwardSource(n, c)),
    [g, logits, targets, lse, dx],
    grid1D(total),
  );
}
