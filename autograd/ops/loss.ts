// Differentiable cross-entropy (torch.nn.functional.cross_entropy with mean reduction) over logits
// [N, C] and class-index targets, with a fused, numerically stable log-softmax.

import { crossEntropyBackward, crossEntropyForward } from "../../kernels/loss.ts";
import { empty, record, Tensor, tensor } from "../tensor.ts";

/**
 * Mean cross-entropy of `logits` [N, C] against class indices `targets` (a number array or
 * `Int32Array` of length N, or a tensor [N] holding the indices as f32). Returns a scalar tensor.
 *
 * Array targets are checked on the CPU (integers in [0, C)); a tensor target is not range-checked
 * (that would need a read-back): an index outside [0, C) or not an integer makes the loss NaN.
 */
export function crossEntropy(logits: Tensor, targets: number[] | Int32Array | Tensor): Tensor {
  const op = "crossEntropy";
  if (logits.rank !== 2) throw new Error(`${op}: expects logits [N, C], got ${logits.describe()}`);
  const [n, c] = logits.shape;
  if (n === 0 || c === 0) throw new Error(`${op}: empty logits ${logits.describe()}`);
  let t: Tensor, ownTargets = false;
  if (targets instanceof Tensor) {
    if (targets.rank !== 1 || targets.shape[0] !== n) {
      throw new Error(
        `${op}: targets ${targets.describe()} do not match logits ${logits.describe()}: expected [${n}]`,
      );
    }
    t = targets;
  } else {
    if (targets.length !== n) {
      throw new Error(
        `${op}: ${targets.length} targets do not match logits ${logits.describe()}: expected ${n}`,
      );
    }
    for (let i = 0; i < n; i++) {
      const v = targets[i];
      if (!Number.isInteger(v) || v < 0 || v >= c) {
        throw new Error(
          `${op}: target ${v} at index ${i} is not a class index in [0, ${c}) for logits ${logits.describe()}`,
        );
      }
    }
    t = tensor(Float32Array.from(targets), [n]);
    ownTargets = true;
  }
  const lse = empty([n, 2]); // per row: max and log Σ exp(x − max)
  const out = empty([]);
  crossEntropyForward(logits.binding(), t.binding(), lse.binding(), out.binding(), n, c);
  return record(out, [logits], (g) => {
    const dx = empty(logits.shape);
    crossEntropyBackward(g.binding(), logits.binding(), t.binding(), lse.binding(), dx.binding(), n, c);
    return [dx];
  }, ownTargets ? [lse, t] : [lse]);
}
