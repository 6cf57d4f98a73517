// Where the tests find the real CIFAR-10, in the trainer's order (data/cifar10.ts findCifar10) without
// downloading: $CIFAR10_DIR, the project's own cache ./data/cifar-10-batches-bin, and last the
// ../shared copy beside the repository. A test that needs the data and finds none is skipped
// (`ignore: !cifar.dir`) and the file says why once.

import { join } from "node:path";
import { allFiles, CIFAR10, RECORD_BYTES } from "../data/cifar10_spec.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

export interface TestCifar {
  /** A folder holding all six official files at their sizes, or null. */
  dir: string | null;
  /** Where it came from, or (dir null) why none was found. */
  why: string;
}

async function complete(dir: string): Promise<boolean> {
  for (const f of allFiles(CIFAR10)) {
    const size = await Deno.stat(join(dir, f.name)).then((s) => s.size, () => -1);
    if (size !== f.records * RECORD_BYTES) return false;
  }
  return true;
}

async function locate(): Promise<TestCifar> {
  const places: [string, string][] = [
    [Deno.env.get("CIFAR10_DIR") ?? "", "CIFAR10_DIR"],
    [join(ROOT, "data/cifar-10-batches-bin"), "the project cache"],
    [join(ROOT, "../shared/data/cifar-10-batches-bin"), "../shared"],
  ];
  const env = places[0][0];
  // a CIFAR10_DIR without the six files is a mistake worth hearing about, even when another copy serves
  const skipped = env && !await complete(env) ? `; CIFAR10_DIR=${env} lacks files or has wrong sizes` : "";
  for (const [dir, from] of places) {
    if (dir && await complete(dir)) return { dir, why: `${from} (${dir})${skipped}` };
  }
  return {
    dir: null,
    why: "no complete CIFAR-10 in $CIFAR10_DIR, ./data/cifar-10-batches-bin or ../shared/data/" +
      "cifar-10-batches-bin (run `deno task train --quick` once to fill the cache, or set CIFAR10_DIR)",
  };
}

export const cifar: TestCifar = await locate();

/** Logs, once per test file that needs the data, that its real-data tests are skipped and why. */
export function noteCifar(file: string): void {
  if (!cifar.dir) console.log(`${file}: real-data tests skipped: ${cifar.why}`);
  else if (cifar.why.includes("CIFAR10_DIR=")) console.log(`${file}: CIFAR-10 from ${cifar.why}`);
}
