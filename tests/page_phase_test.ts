// The demo page's banner is a function of its status (web/session.ts phaseText): it follows the state
// through loading, compiling, training, evaluating and done, so it can never keep an earlier phase's
// text (seen before: "loading CIFAR-10 data_batch_1.bin…" while the status said training, step 30).

import assert from "node:assert/strict";
import { idleStatus, phaseText, type Status } from "../web/session.ts";

const base: Status = idleStatus();

Deno.test("page banner: each state of a run says its phase and how far it is", () => {
  const run: [Partial<Status>, string][] = [
    [{ state: "idle" }, ""],
    [
      { state: "loading", progress: { done: 0, total: 2, unit: "files", detail: "test_batch.bin" } },
      "loading CIFAR-10 0/2 files (test_batch.bin)…",
    ],
    [
      { state: "compiling", progress: { done: 40, total: 134, unit: "kernels" } },
      "compiling 134 kernels 40/134…",
    ],
    [
      { state: "training", epoch: 1, step: 0, progress: { done: 0, total: 30, unit: "steps" } },
      "training: epoch 1, 0/30 steps",
    ],
    [
      {
        state: "training",
        epoch: 1,
        step: 30,
        firstStepSeconds: 12.34,
        progress: { done: 30, total: 30, unit: "steps" },
      },
      "training: epoch 1, 30/30 steps (first step 12.3 s after Start)",
    ],
    [
      { state: "evaluating", progress: { done: 64, total: 200, unit: "images" } },
      "evaluating on the test set: 64/200 images",
    ],
    [{ state: "paused", step: 12 }, "paused at step 12: Resume continues"],
    [{ state: "done", firstStepSeconds: 12.34 }, "done (first step 12.3 s after Start)"],
    [{ state: "error" }, "stopped by an error"],
  ];
  for (const [patch, text] of run) assert.equal(phaseText({ ...base, ...patch }), text);
});

Deno.test("page banner: training at step 30 never reads as loading, whatever the last file loaded was", () => {
  const s: Status = {
    ...base,
    state: "training",
    epoch: 1,
    step: 30,
    progress: { done: 30, total: 30, unit: "steps" },
  };
  assert.doesNotMatch(phaseText(s), /loading/);
  assert.match(phaseText(s), /^training: epoch 1, 30\/30 steps/);
});
