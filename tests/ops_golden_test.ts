// Replays tests/fixtures/ops.json (written by scripts/golden/ops.py from PyTorch, in float64) on the
// GPU: every output, every gradient and BatchNorm's running statistics, at 1e-4 relative.

import { gelu, softmax } from "../autograd/ops/activation.ts";
import { linear } from "../autograd/ops/linear.ts";
import { crossEntropy } from "../autograd/ops/loss.ts";
import { batchNorm2d, groupNorm, layerNorm } from "../autograd/ops/norm.ts";
import { adaptiveAvgPool2d } from "../autograd/ops/pool.ts";
import { mul, reshape, scope, type Tensor, tensor } from "../mod.ts";
import { assertClose, setup } from "./helpers.ts";

await setup();

interface Arr {
  shape: number[];
  data: number[];
}
interface Case {
  name: string;
  op: string;
  args: Record<string, unknown>;
  inputs: Record<string, Arr>;
  upstream: Arr;
  output: Arr;
  grads: Record<string, Arr>;
  runningMeanAfter?: Arr;
  runningVarAfter?: Arr;
}

const fixture = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/ops.json", import.meta.url)),
) as { cases: Case[] };

const toTensor = (a: Arr, requiresGrad = false) => tensor(a.data, a.shape, { requiresGrad });

type Run = (
  inp: Record<string, Tensor>,
  args: Record<string, unknown>,
  state: Record<string, Tensor>,
) => Tensor;

const ops: Record<string, Run> = {
  gelu: (i) => gelu(i.x),
  softmax: (i, a) => softmax(i.x, a.dim as number),
  crossEntropy: (i, a) => crossEntropy(i.logits, a.targets as number[]),
  crossEntropySoftmax: (i, a) => crossEntropy(softmax(i.logits, 1), a.targets as number[]),
  groupNorm: (i, a) => groupNorm(i.x, a.groups as number, i.weight, i.bias),
  layerNorm: (i, a) => layerNorm(i.x, a.normalizedShape as number[], i.weight, i.bias),
  batchNorm2d: (i, a, s) =>
    batchNorm2d(
      i.x,
      s.runningMean,
      s.runningVar,
      i.weight,
      i.bias,
      a.training as boolean,
      a.momentum as number,
    ),
  adaptiveAvgPool2d: (i, a) => adaptiveAvgPool2d(i.x, a.outputSize as number),
  linear: (i) => linear(i.x, i.weight, i.bias),
  layerScale: (i) => mul(i.x, reshape(i.gamma, [i.gamma.size, 1, 1])),
};

const TOL = { rtol: 1e-4, atol: 1e-5 };
/** Per op: worst elementwise |a − e| / (|e| + 1e-5) and worst max|a − e| / max|e| over its arrays. */
const worst = new Map<string, [number, number]>();

/** Asserts closeness and returns [elementwise, normwise] relative errors. */
function compare(actual: Float32Array, expected: number[], what: string): [number, number] {
  const elem = assertClose(actual, expected, TOL, what);
  let diff = 0, scale = 0;
  expected.forEach((e, i) => {
    diff = Math.max(diff, Math.abs(actual[i] - e));
    scale = Math.max(scale, Math.abs(e));
  });
  return [elem, scale > 0 ? diff / scale : diff];
}

for (const c of fixture.cases) {
  Deno.test(`PyTorch golden: ${c.name}`, async () => {
    const inputs: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(c.inputs)) inputs[k] = toTensor(v, k in c.grads);
    const state: Record<string, Tensor> = {};
    for (const k of ["runningMean", "runningVar"]) {
      if (c.args[k]) state[k] = toTensor(c.args[k] as Arr);
    }
    const y = scope(() => {
      const out = ops[c.op](inputs, c.args, state);
      const up = toTensor(c.upstream);
      out.backward(up);
      up.dispose();
      return out;
    });
    const errs = [compare(await y.toArray(), c.output.data, `${c.name} output`)];
    for (const [k, g] of Object.entries(c.grads)) {
      const grad = inputs[k].grad;
      if (!grad) throw new Error(`${c.name}: no gradient for ${k}`);
      errs.push(compare(await grad.toArray(), g.data, `${c.name} grad ${k}`));
    }
    if (c.runningMeanAfter) {
      errs.push(
        compare(await state.runningMean.toArray(), c.runningMeanAfter.data, `${c.name} running mean`),
      );
      errs.push(compare(await state.runningVar.toArray(), c.runningVarAfter!.data, `${c.name} running var`));
    }
    const prev = worst.get(c.op) ?? [0, 0];
    worst.set(c.op, [
      Math.max(prev[0], ...errs.map((e) => e[0])),
      Math.max(prev[1], ...errs.map((e) => e[1])),
    ]);
    [y, ...Object.values(inputs), ...Object.values(state)].forEach((t) => t.dispose());
  });
}

Deno.test("PyTorch golden: worst relative error per op", () => {
  const rows = [...worst].map(([op, [e, n]]) =>
    `${op.padEnd(20)} ${e.toExponential(2)}   ${n.toExponential(2)}`
  );
  console.log(
    `op                   elementwise  normwise   (worst over outputs and gradients)\n${rows.join("\n")}`,
  );
});
