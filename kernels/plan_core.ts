// The planner's core: a pure choice of variant over a family table, from the shape, the adapter profile,
// the override rules and the autotuned winners, and the accessors that plan with the current context
// (kernels/plan_context.ts: queue untuned shapes, log the decision). It imports no family table, so the
// families' dispatch functions plan through it; kernels/planner.ts puts the tables together.

import { type AdapterProfile, adapterProfile } from "./profile.ts";
import { plannerContext } from "./runtime.ts";
import { convKey, type ConvShape, type MatmulDims, matmulKey } from "./shapes.ts";
import type { ConvEpilogue, ConvPass, ConvVariant, MatmulVariant } from "./variant.ts";
import type { OverrideRule, Plan, Winner } from "./plan_context.ts";

const offHere = (name: string, prof: AdapterProfile) => prof.variantsOff.includes(name);

/** The variants of `table` that can run pass `pass` of `s` on profile `prof`, in table order. */
export function applicableConvIn(
  table: readonly ConvVariant[],
  s: ConvShape,
  pass: ConvPass,
  prof: AdapterProfile,
): ConvVariant[] {
  return table.filter((v) => v.passes.includes(pass) && !offHere(v.name, prof) && v.applies(s, pass, prof));
}

/** The variants of `table` that can run matmul `d` on profile `prof`. */
export function applicableMatmulIn(
  table: readonly MatmulVariant[],
  d: MatmulDims,
  prof: AdapterProfile,
): MatmulVariant[] {
  return table.filter((v) => !offHere(v.name, prof) && v.applies(d, prof));
}

/** The applicable variant of lowest rank (the first in table order among equals). */
function ranked<V extends { name: string }>(vs: V[], rank: (v: V) => number | null): string {
  let best: { name: string; r: number } | null = null;
  for (const v of vs) {
    const r = rank(v);
    if (r !== null && (!best || r < best.r)) best = { name: v.name, r };
  }
  if (!best) throw new Error(`planner: no variant ranked among ${vs.map((v) => v.name).join(", ")}`);
  return best.name;
}

type Tuned = { name: string; tuned?(prof: AdapterProfile, candidates: readonly string[]): boolean };

/** Of `candidates` (names in `table`), those autotune times on profile `prof` (each entry's `tuned`). */
export function tunedAmongIn(table: readonly Tuned[], candidates: string[], prof: AdapterProfile): string[] {
  return candidates.filter((name) => {
    const v = table.find((x) => x.name === name);
    return !v?.tuned || v.tuned(prof, candidates);
  });
}

/** A planning decision: the plan, its tune key, and whether autotune should time the shape. */
export interface Decision extends Plan {
  key: string;
  untuned: boolean;
}

/** The last override rule for `target` (or its op) that names one of `candidates`. */
function overridden(overrides: readonly OverrideRule[], target: string, candidates: string[]): string | null {
  let pick: string | null = null;
  for (const r of overrides) {
    if (r.target !== target && r.target !== target.split(".")[0]) continue;
    const hit = candidates.find((v) => v === r.variant || v.endsWith(`/${r.variant}`));
    if (hit) pick = hit;
  }
  return pick;
}

function decide(
  table: readonly Tuned[],
  target: string,
  key: string,
  candidates: { name: string; rewrite?: boolean }[],
  fallback: string,
  prof: AdapterProfile,
  overrides: readonly OverrideRule[],
  winners: ReadonlyMap<string, Winner> | null,
): Decision {
  const names = candidates.map((v) => v.name);
  const forced = overridden(overrides, target, names);
  if (forced) return { variant: forced, source: "override", key, untuned: false };
  // a graph rewrite (patches) is not a kernel a timer can compare: such shapes keep the default
  if (winners && names.length > 1 && !candidates.some((v) => v.rewrite)) {
    const tunable = tunedAmongIn(table, names, prof);
    const among = tunable.join(",");
    const fits = (w: Winner | undefined): w is Winner =>
      !!w && w.among === among && tunable.includes(w.variant);
    const w = winners.get(key);
    if (fits(w)) return { variant: w.variant, source: "autotune", key, untuned: false };
    // no winner in this bucket: the nearest tuned bucket's (a stale winner here is timed again)
    const near = nearestWinner(winners, key, among);
    if (near) return { variant: near.variant, source: "autotune", key, untuned: w !== undefined };
    return { variant: fallback, source: "default", key, untuned: true };
  }
  return { variant: fallback, source: "default", key, untuned: false };
}

/** A tune key split into its op (before the first ":") and its sizes; anchored sizes start with "~". */
function keyParts(key: string): { op: string; parts: string[] } {
  const i = key.indexOf(":");
  return { op: key.slice(0, i), parts: key.slice(i + 1).split(",") };
}

/**
 * The key of the nearest tuned bucket of `key`'s shape class: a key of the same op whose sizes are
 * `key`'s but for one anchored size (kernels/variant.ts: a conv's images; one of a matmul's dims), the
 * fewest doublings away (the larger bucket on a tie), among the keys of `winners`; null if none.
 */
export function nearestKey(keys: Iterable<string>, key: string): string | null {
  const me = keyParts(key);
  let best: { key: string; dist: number; size: number } | null = null;
  for (const k of keys) {
    if (k === key) continue;
    const o = keyParts(k);
    if (o.op !== me.op || o.parts.length !== me.parts.length) continue;
    let diff = -1, ok = true;
    for (let i = 0; i < me.parts.length && ok; i++) {
      if (o.parts[i] === me.parts[i]) continue;
      if (diff >= 0 || !me.parts[i].startsWith("~") || !o.parts[i].startsWith("~")) ok = false;
      else diff = i;
    }
    if (!ok || diff < 0) continue;
    const size = Number(o.parts[diff].slice(1));
    const dist = Math.abs(Math.log2(size) - Math.log2(Number(me.parts[diff].slice(1))));
    if (
      !best || dist < best.dist ||
      (dist === best.dist && (size > best.size || (size === best.size && k < best.key)))
    ) {
      best = { key: k, dist, size };
    }
  }
  return best?.key ?? null;
}

/** Per winners map, the nearest keys found so far (valid while the map's size is unchanged). */
const nearestCache = new WeakMap<
  ReadonlyMap<string, Winner>,
  { size: number; near: Map<string, string | null> }
>();

/**
 * The winner of the nearest tuned bucket of `key`'s shape class (see `nearestKey`) if it was measured
 * among the same candidates `among`; null otherwise.
 */
export function nearestWinner(
  winners: ReadonlyMap<string, Winner>,
  key: string,
  among: string,
): Winner | null {
  let c = nearestCache.get(winners);
  if (!c || c.size !== winners.size) nearestCache.set(winners, c = { size: winners.size, near: new Map() });
  let k = c.near.get(key);
  if (k === undefined) c.near.set(key, k = nearestKey(winners.keys(), key));
  const w = k === null ? undefined : winners.get(k);
  return w && w.among === among && among.split(",").includes(w.variant) ? w : null;
}

/**
 * The variant of `table` that runs pass `pass` of `s` (with GEMM epilogue `epilogue`, if any): a pure
 * function of the shape, the profile, the override rules and the autotuned winners (null: autotune off).
 */
export function chooseConvIn(
  table: readonly ConvVariant[],
  s: ConvShape,
  pass: ConvPass,
  prof: AdapterProfile,
  overrides: readonly OverrideRule[],
  winners: ReadonlyMap<string, Winner> | null,
  epilogue?: ConvEpilogue,
): Decision {
  const vs = applicableConvIn(table, s, pass, prof);
  if (!vs.length) throw new Error(`planner: no conv variant runs ${pass} of ${convKey(s)}`);
  const fallback = ranked(vs, (v) => v.rank(s, pass, prof));
  const key = vs.find((v) => v.name === fallback)!.tuneKey(s, pass, epilogue);
  return decide(table, `conv.${pass}`, key, vs, fallback, prof, overrides, winners);
}

/** The variant of `table` that runs matmul `d`: as `chooseConvIn`. */
export function chooseMatmulIn(
  table: readonly MatmulVariant[],
  d: MatmulDims,
  prof: AdapterProfile,
  overrides: readonly OverrideRule[],
  winners: ReadonlyMap<string, Winner> | null,
): Decision {
  const vs = applicableMatmulIn(table, d, prof);
  const fallback = ranked(vs, (v) => v.rank(d, prof));
  const key = vs.find((v) => v.name === fallback)!.tuneKey(d);
  return decide(table, "matmul", key, vs, fallback, prof, overrides, winners);
}

/** Plans pass `pass` of `s` over `table` with the current context: queues it if untuned, logs it. */
export function planConvIn(
  table: readonly ConvVariant[],
  s: ConvShape,
  pass: ConvPass,
  layer = "",
  epilogue?: ConvEpilogue,
): Plan {
  const ctx = plannerContext();
  const winners = ctx.autotune ? ctx.winners : null;
  const d = chooseConvIn(table, s, pass, adapterProfile(), ctx.overrides, winners, epilogue);
  if (d.untuned && !ctx.pending.has(d.key)) ctx.pending.set(d.key, { op: "conv", s, pass, epilogue });
  const plan: Plan = { variant: d.variant, source: d.source };
  ctx.log?.push({ ...plan, layer, op: "conv", pass, shape: convKey(s) });
  return plan;
}

/** Plans matmul `d` over `table` with the current context. */
export function planMatmulIn(table: readonly MatmulVariant[], d: MatmulDims, layer = ""): Plan {
  const ctx = plannerContext();
  const winners = ctx.autotune ? ctx.winners : null;
  const dec = chooseMatmulIn(table, d, adapterProfile(), ctx.overrides, winners);
  if (dec.untuned && !ctx.pending.has(dec.key)) ctx.pending.set(dec.key, { op: "matmul", d });
  const plan: Plan = { variant: dec.variant, source: dec.source };
  ctx.log?.push({ ...plan, layer, op: "matmul", pass: "forward", shape: matmulKey(d) });
  return plan;
}
