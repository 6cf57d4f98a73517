// PyTorch's default initialisation, drawn from a seeded generator.
//
// nn.Conv2d and nn.Linear call kaiming_uniform_(weight, a=√5): gain = √(2 / (1 + a²)) = √(1/3),
// std = gain / √fan_in, bound = √3 · std = 1 / √fan_in. Their bias is uniform in ±1 / √fan_in.
// Norm layers start at weight 1, bias 0; BatchNorm's running mean 0 and variance 1.

import type { Rng } from "../autograd/random.ts";

/** fan_in of a weight of shape [out, in/groups, ...kernel] (or [out, in] for a linear layer). */
export function fanIn(shape: readonly number[]): number {
  if (shape.length < 2) throw new Error(`fanIn: needs a weight of rank >= 2, got [${shape.join(", ")}]`);
  return shape.slice(1).reduce((a, b) => a * b, 1);
}

/** The bound of kaiming_uniform_(a) for `fanIn` inputs: √3 · gain(a) / √fan_in. */
export function kaimingUniformBound(fanIn: number, a = Math.sqrt(5)): number {
  const gain = Math.sqrt(2 / (1 + a * a)); // calculate_gain("leaky_relu", a)
  return Math.sqrt(3) * (gain / Math.sqrt(fanIn)); // PyTorch's order of operations
}

/** `n` values uniform in [-bound, bound). */
export function uniform(n: number, bound: number, rng: Rng): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rng.uniform() - 1) * bound;
  return out;
}

/** PyTorch's default conv / linear weight: kaiming_uniform_(a=√5), i.e. uniform ±1/√fan_in. */
export function defaultWeight(shape: readonly number[], rng: Rng): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  return uniform(n, kaimingUniformBound(fanIn(shape)), rng);
}

/** PyTorch's default conv / linear bias: uniform ±1/√fan_in of the layer's weight. */
export function defaultBias(n: number, weightFanIn: number, rng: Rng): Float32Array {
  return uniform(n, weightFanIn > 0 ? 1 / Math.sqrt(weightFanIn) : 0, rng);
}

/** `n` copies of `value`. */
export function constant(n: number, value: number): Float32Array {
  return new Float32Array(n).fill(value);
}
