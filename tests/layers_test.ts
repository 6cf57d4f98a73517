// The layer order, kept: kernels/ → autograd/ → nn/ → models/ → data/ → training/ → experiments/ → bench/,
// each importing only from itself and the layers before it, and no import cycle anywhere. The module graph
// is built from the relative import specifiers of every .ts file (static, re-exports, type-only and
// dynamic `import("./…")` alike), so the test needs no GPU and no network. Also: fusion is an op (the model
// zoo imports nothing from kernels/; autograd/ and models/ never ask the planner for a fusion).

import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = normalize(join(dirname(fileURLToPath(import.meta.url)), ".."));
/** The layers in order; every other file (mod.ts, tests/, the browser app) sits above them all. */
export const LAYERS = ["kernels", "autograd", "nn", "models", "data", "training", "experiments", "bench"];
const SKIP = new Set([".git", "node_modules", "results", "fixtures", "cifar-10-batches-bin", "cache"]);

/** Relative specifiers a TypeScript source imports, comments removed first. */
export function importSpecifiers(src: string): string[] {
  // comments that start a line (line comments first: they may hold a "/*", as in "gemm1x1/*")
  const code = src.replace(/^\s*\/\/.*$/gm, "").replace(/^\s*\/\*[\s\S]*?\*\//gm, "");
  const found: string[] = [];
  const patterns = [
    /\b(?:import|export)\b[^;"'`]*?\bfrom\s*["']([^"']+)["']/g, // import … from, export … from
    /\bimport\s*["']([^"']+)["']/g, // side-effect import
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g, // dynamic import
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) if (m[1].startsWith(".")) found.push(m[1]);
  return [...new Set(found)];
}

async function tsFiles(dir: string, out: string[] = []): Promise<string[]> {
  for await (const e of Deno.readDir(dir)) {
    if (SKIP.has(e.name)) continue;
    const p = join(dir, e.name);
    if (e.isDirectory) await tsFiles(p, out);
    else if (e.isFile && e.name.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** file → the files it imports, paths relative to the project root. */
export async function moduleGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for (const abs of (await tsFiles(ROOT)).sort()) {
    const deps = importSpecifiers(await Deno.readTextFile(abs)).map((s) =>
      relative(ROOT, normalize(join(dirname(abs), s)))
    );
    graph.set(relative(ROOT, abs), deps.sort());
  }
  return graph;
}

/** A file's layer index; files outside the layers rank above all of them. */
export function layerOf(file: string): number {
  const i = LAYERS.indexOf(file.split("/")[0]);
  return i < 0 || !file.includes("/") ? LAYERS.length : i;
}

/** Every import cycle (strongly connected component of more than one file, or a file importing itself). */
export function cycles(graph: Map<string, string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>(), low = new Map<string, number>();
  const stack: string[] = [], onStack = new Set<string>(), found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || graph.get(v)!.includes(v)) found.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

const graph = await moduleGraph();

Deno.test("the import parser sees static, re-exported, type-only and dynamic imports, not comments", () => {
  // § stands for a quote, so this file's own imports do not include the sample's
  const src = `// import { x } from §./commented.ts§; (see kernels/*)
/** export * from §./block.ts§;
 */
import { a,
  b } from §./multi.ts§;
import type { T } from §../types.ts§;
export { c } from §./reexport.ts§;
export * as ns from §./star.ts§;
import §./side.ts§;
import assert from §node:assert/strict§;
const m = await import(§./lazy.ts§);`.replaceAll("§", '"');
  assert.deepEqual(
    importSpecifiers(src).sort(),
    ["../types.ts", "./lazy.ts", "./multi.ts", "./reexport.ts", "./side.ts", "./star.ts"],
  );
  const g = new Map([["a.ts", ["b.ts"]], ["b.ts", ["c.ts"]], ["c.ts", ["a.ts"]], ["d.ts", ["a.ts"]]]);
  assert.deepEqual(cycles(g), [["a.ts", "b.ts", "c.ts"]]);
});

Deno.test("every relative import names a file that exists", () => {
  const missing = [...graph].flatMap(([f, deps]) =>
    deps.filter((d) => !graph.has(d)).map((d) => `${f} → ${d}`)
  );
  assert.deepEqual(missing, []);
});

Deno.test("no layer imports from a layer after it (kernels → autograd → nn → models → data → training → experiments → bench)", () => {
  assert.ok(
    LAYERS.every((l) => [...graph.keys()].some((f) => f.startsWith(`${l}/`))),
    "a layer folder is empty",
  );
  const upward = [...graph].flatMap(([f, deps]) =>
    deps.filter((d) => layerOf(d) > layerOf(f)).map((d) => `${f} → ${d}`)
  );
  assert.deepEqual(upward, []);
});

Deno.test("no import cycles", () => {
  assert.deepEqual(cycles(graph), []);
});

Deno.test("kernels/, autograd/, nn/, models/ and training/ never mention Deno (they run in browsers too)", () => {
  const mentions = [...graph.keys()]
    .filter((f) => /^(kernels|autograd|nn|models|training)\//.test(f))
    .filter((f) => /\bDeno\b/.test(Deno.readTextFileSync(join(ROOT, f))));
  assert.deepEqual(mentions, []);
});

Deno.test("fusion is an op: the model zoo only composes modules, autograd never asks the planner for fusions", () => {
  // the planner's fusion choices are taken by nn/ (nn/fusions.ts) and passed to the ops as arguments
  const zoo = graph.get("models/zoo.ts");
  assert.ok(zoo, "models/zoo.ts");
  assert.deepEqual(zoo.filter((d) => d.startsWith("kernels/")), []);
  const asking = [...graph.keys()]
    .filter((f) => /^(autograd|models)\//.test(f))
    .filter((f) => /\bfusionEnabled\b/.test(Deno.readTextFileSync(join(ROOT, f))));
  assert.deepEqual(asking, []);
});
