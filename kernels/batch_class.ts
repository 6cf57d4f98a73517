// The batch size a kernel's compiled choices are made for. Pipelines are keyed without the batch (the
// leading axis of activations) and read the counts that follow it from their run-time parameters
// (runtime.ts `params`); where a tiling or chunking choice depends on the batch, it is made for this
// nominal batch (the training batch), so that one pipeline serves every batch and the training batch
// runs exactly as tuned.

/** The training batch: choices that would depend on the batch are made as for this one. */
export const NOMINAL_BATCH = 64;

/** The leading axis of a shape class (any value above 1: the sources never read it). */
export const ANY_BATCH = 2;

/** `shape` with its leading axis (the batch) set to `n` (rank-1 shapes unchanged). */
export const withBatch = (shape: readonly number[], n: number): number[] =>
  shape.length < 2 ? [...shape] : [n, ...shape.slice(1)];
