// The phase reporter (experiments/progress.ts) on an injected clock: off a terminal a line at the
// start, one every 5 s with done/total and the ETA, one at the end; on a terminal one redrawn line.

import assert from "node:assert/strict";
import { formatDuration, heartbeat, Phase, Progress, Watchdog } from "../experiments/progress.ts";

function fake() {
  const out: string[] = [];
  let t = 0;
  return {
    out,
    advance: (ms: number) => t += ms,
    opts: { write: (s: string) => void out.push(s), now: () => t },
  };
}

Deno.test("phase, not a terminal: a line at the start, at the first unit, every 5 s with done/total and ETA, at the end", () => {
  const f = fake();
  const p = new Phase("compiling 100 kernels", 100, { ...f.opts, tty: false, unit: "kernels" });
  p.update(0);
  assert.deepEqual(f.out, [
    "compiling 100 kernels [........................] 0/100 kernels (0%), 0:00 elapsed, ETA --:--\n",
  ]);
  for (let k = 1; k <= 100; k++) {
    f.advance(200); // 0.2 s a kernel: 20 s in all
    p.update(k);
  }
  p.end("compiled 100 kernels in 20.0 s");
  assert.deepEqual(f.out.slice(1), [
    // the first kernel done, then every 5 s: 26 done in 5.2 s, 74 left at that pace
    "compiling 100 kernels [........................] 1/100 kernels (1%), 0:00 elapsed, ETA 0:20\n",
    "compiling 100 kernels [######..................] 26/100 kernels (26%), 0:05 elapsed, ETA 0:15\n",
    "compiling 100 kernels [############............] 51/100 kernels (51%), 0:10 elapsed, ETA 0:10\n",
    "compiling 100 kernels [##################......] 76/100 kernels (76%), 0:15 elapsed, ETA 0:05\n",
    "compiling 100 kernels [########################] 100/100 kernels (100%), 0:20 elapsed\n",
    "compiled 100 kernels in 20.0 s\n",
  ]);
  for (const line of f.out) assert.ok(!line.includes("\r"), "no redraws off a terminal");
});

Deno.test("phase, not a terminal: a quick phase with quietMs says nothing; a slow one starts once it is due", () => {
  const f = fake();
  const quick = new Phase("test", 32, { ...f.opts, tty: false, unit: "images", quietMs: 1000 });
  quick.update(16);
  f.advance(300);
  quick.update(32);
  quick.end();
  assert.deepEqual(f.out, []);
  const slow = new Phase("test", 10, { ...f.opts, tty: false, unit: "images", quietMs: 1000 });
  for (let k = 1; k <= 10; k++) {
    f.advance(1500);
    slow.update(k);
  }
  slow.end();
  assert.deepEqual(f.out, [
    "test [##......................] 1/10 images (10%), 0:02 elapsed, ETA 0:14\n", // 1.5 s: the first due line
    "test [############............] 5/10 images (50%), 0:08 elapsed, ETA 0:08\n", // 7.5 s, ≥ 5 s after
    "test [######################..] 9/10 images (90%), 0:14 elapsed, ETA 0:02\n",
    "test [########################] 10/10 images (100%), 0:15 elapsed\n",
  ]);
});

Deno.test("phase, not a terminal: end() writes the last state once when the total was not reached", () => {
  const f = fake();
  const p = new Phase("autotune", 50, { ...f.opts, tty: false, unit: "shapes" });
  p.update(0);
  f.advance(2000);
  p.update(7);
  f.advance(2000);
  p.update(9); // 2 s after the last line: not written
  p.end(); // the last state, once
  p.end();
  assert.deepEqual(f.out, [
    "autotune [........................] 0/50 shapes (0%), 0:00 elapsed, ETA --:--\n",
    "autotune [###.....................] 7/50 shapes (14%), 0:02 elapsed, ETA 0:12\n", // the first unit done
    "autotune [####....................] 9/50 shapes (18%), 0:04 elapsed, ETA 0:18\n",
  ]);
});

Deno.test("phase on a terminal: one line redrawn at most every 100 ms, logs above it, cleared at the end", () => {
  const f = fake();
  const logged: string[] = [];
  const p = new Progress("epoch 1/2", 4, { ...f.opts, tty: true, log: (l) => void logged.push(l) });
  p.steps(0, 0);
  f.advance(50);
  p.steps(1, 64); // within 100 ms of the last redraw: skipped
  f.advance(950);
  p.steps(2, 128, "loss 2.3000");
  p.log("autotune: a decision");
  f.advance(1000);
  p.steps(4, 256, "loss 2.2000"); // the last step is always drawn
  p.end();
  assert.ok(f.out.every((s) => s.startsWith("\r\x1b[2K") && !s.endsWith("\n")));
  const draws = f.out.filter((s) => s.length > 5).map((s) => s.slice(5));
  assert.deepEqual(draws, [
    "epoch 1/2 [........................] 0/4 steps (0%), 0:00 elapsed, ETA --:--, 0.0 img/s",
    "epoch 1/2 [############............] 2/4 steps (50%), 0:01 elapsed, ETA 0:01, 128.0 img/s, loss 2.3000",
    "epoch 1/2 [############............] 2/4 steps (50%), 0:01 elapsed, ETA 0:01, 128.0 img/s, loss 2.3000",
    "epoch 1/2 [########################] 4/4 steps (100%), 0:02 elapsed, 128.0 img/s, loss 2.2000",
  ]);
  assert.deepEqual(logged, ["autotune: a decision"]);
  assert.equal(f.out.at(-1), "\r\x1b[2K", "the bar is cleared at the end");
});

Deno.test("phase: quiet says nothing; an unknown total shows the count only", () => {
  const f = fake();
  const q = new Phase("x", 10, { ...f.opts, quiet: true });
  q.update(3);
  q.log("y");
  q.end("z");
  assert.deepEqual(f.out, []);
  const n = new Phase("downloading", null, { ...f.opts, tty: false, unit: "MiB" });
  n.update(12);
  assert.deepEqual(f.out, ["downloading 12 MiB, 0:00 elapsed\n"]);
});

Deno.test("heartbeat: silent when quick; else a line after quietMs, every everyMs, and how long it took", async () => {
  const f = fake();
  assert.equal(await heartbeat("bundling", () => Promise.resolve(7), { ...f.opts, quietMs: 50 }), 7);
  assert.deepEqual(f.out, []);
  const slow = () => new Promise<string>((r) => setTimeout(() => r("ok"), 120));
  let t = 0;
  const clock = () => t;
  const tick = setInterval(() => t += 10, 10);
  try {
    const got = await heartbeat("writing the checkpoint", slow, {
      write: (s) => void f.out.push(s),
      now: clock,
      quietMs: 20,
      everyMs: 40,
    });
    assert.equal(got, "ok");
  } finally {
    clearInterval(tick);
  }
  assert.equal(f.out[0], "writing the checkpoint…\n");
  assert.ok(f.out.length >= 3, f.out.join(""));
  assert.match(f.out[1], /^writing the checkpoint… \d+ s\n$/);
  assert.match(f.out.at(-1)!, /^writing the checkpoint: done in \d+\.\d s\n$/);
});

Deno.test("formatDuration", () => {
  assert.equal(formatDuration(5), "0:05");
  assert.equal(formatDuration(125), "2:05");
  assert.equal(formatDuration(3725), "1:02:05");
  assert.equal(formatDuration(NaN), "--:--");
});

Deno.test("watchdog: says what is under way after 5 s without a line, again every 5 s; a line resets it", () => {
  const f = fake();
  let section = "ceilings";
  const w = new Watchdog(() => `bench: ${section}`, { ...f.opts, timer: false });
  f.advance(4000);
  w.check();
  assert.deepEqual(f.out, []);
  f.advance(1000);
  w.check();
  section = "training steps";
  f.advance(5000);
  w.check();
  w.touch();
  f.advance(4900);
  w.check();
  w.stop();
  assert.deepEqual(f.out, [
    "bench: ceilings… still working, 0:05 since the last line\n",
    "bench: training steps… still working, 0:10 since the last line\n",
  ]);
});
