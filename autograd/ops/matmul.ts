// Differentiable matrix multiply: 2-D [m,k]·[k,n] or batched [b,m,k]·[b,k,n] (either side may be 2-D
// and is then shared across the batch).

import { matmul as matmulKernel } from "../../kernels/matmul.ts";
import { planMatmul } from "../../kernels/planner.ts";
import { currentModule, empty, record, type Tensor } from "../tensor.ts";
import { sum } from "./reduce.ts";

interface MM {
  transA?: boolean;
  transB?: boolean;
}

/** op(a)·op(b) with optional transposes of the last two dims (the building block of the backward). */
export function matmulT(a: Tensor, b: Tensor, t: MM = {}): Tensor {
  const { transA = false, transB = false } = t;
  if (a.rank < 2 || a.rank > 3 || b.rank < 2 || b.rank > 3) {
    throw new Error(`matmul: expects 2-D or 3-D tensors, got ${a.describe()} and ${b.describe()}`);
  }
  const [ar, ac] = a.shape.slice(-2), [br, bc] = b.shape.slice(-2);
  const [m, k] = transA ? [ac, ar] : [ar, ac];
  const [k2, n] = transB ? [bc, br] : [br, bc];
  const batchA = a.rank === 3 ? a.shape[0] : 0, batchB = b.rank === 3 ? b.shape[0] : 0;
  if (k !== k2 || (batchA && batchB && batchA !== batchB)) {
    throw new Error(`matmul: shapes ${a.describe()} and ${b.describe()} do not match (inner ${k} vs ${k2})`);
  }
  const batch = Math.max(batchA, batchB, 1);
  const out = empty(batchA || batchB ? [batch, m, n] : [m, n]);
  const d = { batch, m, n, k, transA, transB, batchA: batchA > 0, batchB: batchB > 0 };
  matmulKernel(a.binding(), b.binding(), out.binding(), d, {
    variant: planMatmul(d, currentModule()).variant,
  });
  return record(out, [a, b], (g) => {
    let ga: Tensor | null = null, gb: Tensor | null = null;
    if (a.requiresGrad) {
      ga = transA ? matmulT(b, g, { transA: transB, transB: true }) : matmulT(g, b, { transB: !transB });
      if (ga.rank === 3 && a.rank === 2) ga = sumBatch(ga);
    }
    if (b.requiresGrad) {
      gb = transB ? matmulT(g, a, { transA: true, transB: transA }) : matmulT(a, g, { transA: !transA });
      if (gb.rank === 3 && b.rank === 2) gb = sumBatch(gb);
    }
    return [ga, gb];
  });
}

function sumBatch(t: Tensor): Tensor {
  const r = sum(t, { dim: 0 });
  t.dispose();
  return r;
}

/** a·b (2-D or batched). */
export function matmul(a: Tensor, b: Tensor): Tensor {
  return matmulT(a, b);
}
