// The seven stages' names and the narrow variant: no CLI and no runtime API, so the model builders (and
// the browser build, web/) can use them.

export const STAGES = [
  "base",
  "stage_ratio",
  "patchify",
  "resnextify",
  "inverted",
  "kernel7",
  "final",
] as const;
export type Stage = typeof STAGES[number];

export function isStage(s: string): s is Stage {
  return (STAGES as readonly string[]).includes(s);
}

export function checkStage(s: string): Stage {
  if (!isStage(s)) throw new Error(`Unknown stage "${s}". Valid stages: ${STAGES.join(", ")}`);
  return s;
}

/** The CPU-sized variant of the models (not in the notebook). */
export const NARROW = { widths: [16, 32, 64, 128], depths: [1, 1, 3, 1], stemFeatures: 16 };
