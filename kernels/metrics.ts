// Training metrics summed on the GPU, so a training step never waits on a readback:
// sums[0] += loss · batch, sums[1] += number of correct argmax predictions, sums[2] += batch.
// One pipeline serves every batch: the batch is read from `P`.

import { type Binding, dispatch, kernel, params } from "./runtime.ts";
import { paramsDecl, storageDecls } from "./wgsl.ts";

/** Number of f32 slots `accumulateMetrics` uses. */
export const METRIC_SLOTS = 4;

/** The WGSL for rows of `classes` logits, with or without a loss to add. */
export function source(classes: number, withLoss: boolean): string {
  const reads = withLoss ? ["logits", "targets", "loss"] : ["logits", "targets"];
  return `${storageDecls(reads, ["sums"])}
${paramsDecl(reads.length + 1, ["batch"])}
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32) {
  var correct = 0.0;
  for (var row = lid; row < P.batch; row += 64u) {
    var best = logits[row * ${classes}u];
    var arg = 0u;
    for (var c = 1u; c < ${classes}u; c++) {
      let v = logits[row * ${classes}u + c];
      if (v > best) { best = v; arg = c; }
    }
    if (f32(arg) == targets[row]) { correct += 1.0; }
  }
  part[lid] = correct;
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var i = 0u; i < 64u; i++) { total += part[i]; }
    ${withLoss ? "sums[0] += loss[0] * f32(P.batch);" : ""}
    sums[1] += total;
    sums[2] += f32(P.batch);
  }
}
var<workgroup> part: array<f32, 64>;`;
}

/**
 * Adds one batch into `sums`: `logits` [batch, classes], `targets` [batch] (class indices as f32),
 * `loss` a one-element buffer holding the batch's mean loss (or null for evaluation).
 */
export function accumulateMetrics(
  logits: Binding,
  targets: Binding,
  loss: Binding | null,
  sums: Binding,
  batch: number,
  classes: number,
): void {
  // one invocation per row writes a 0/1 flag; a single invocation then folds them (batches are small)
  const withLoss = loss !== null;
  const pipe = kernel(
    `metrics:${classes}:${withLoss ? 1 : 0}`,
    "metrics",
    () => source(classes, withLoss),
  );
  const prm = params(batch);
  dispatch(pipe, loss ? [logits, targets, loss, sums, prm] : [logits, targets, sums, prm], [1]);
}
