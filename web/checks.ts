// Hooks the browser tests (tests/browser/) call through `globalThis.demo.checks`: the PyTorch golden
// fixtures and the few training steps that Deno runs too, computed here on the browser's WebGPU.

import { decodeSafetensors } from "./engine.ts";
import { type CaseResult, runJsonFixture, runModelFixture } from "../checks/golden_cases.ts";
import { trainStepsLosses, type TrainStepsOptions } from "../checks/train_steps_case.ts";

export interface Checks {
  /** Replays a JSON fixture (parsed) by its file name. */
  golden(name: string, parsed: unknown): Promise<CaseResult[]>;
  /** Replays a models_*.safetensors fixture given as base64. */
  goldenModel(name: string, base64: string): Promise<CaseResult[]>;
  trainSteps(opts?: TrainStepsOptions): Promise<number[]>;
}

export const checks: Checks = {
  golden: (name, parsed) => runJsonFixture(name, parsed),
  goldenModel: (name, base64) =>
    runModelFixture(decodeSafetensors(Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)), name), name),
  trainSteps: (opts) => trainStepsLosses(opts),
};
