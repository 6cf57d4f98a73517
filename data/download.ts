// Downloading CIFAR-10: an HTTP download with a progress bar into a temporary folder next to the cache,
// gunzip (DecompressionStream) and untar (./tar.ts), verification of every file, and only then a rename
// into the cache. Whatever fails, the temporary folder is removed: nothing partial is left behind.
//
// API
//   downloadTo(url, path, {log, hashes}) → Promise<{ bytes, digests }>   one file, with progress; refuses
//       HTTP errors, bodies shorter than their Content-Length, no answer in 60 s or no data for 120 s;
//       `digests` are hex (md5) or base64 (others)
//   downloadOfficial(url, cacheDir, {spec, log})   the official cifar-10-binary.tar.gz into `cacheDir`
//   withStagingDir(cacheDir, fn)                   runs fn(tmpDir) in a fresh folder beside cacheDir, removed after
//   installDir(src, dest)                          moves a verified folder's files into place
//   writeMeta(dir)                                 batches.meta.txt (the class names) when absent

import { createHash } from "node:crypto";
import { basename, dirname, join, resolve } from "node:path";
import { CIFAR10, CIFAR10_CLASSES, type Cifar10Spec } from "./cifar10_spec.ts";
import { verifyCifar10Dir } from "./cifar10_verify.ts";
import { gunzip, readTar } from "./tar.ts";

export type Log = (msg: string) => void;

function mib(n: number): string {
  return (n / 1048576).toFixed(1);
}

/** Progress on a terminal (one rewritten line) or, elsewhere, a log line every 10 %. */
class Progress {
  private lastDraw = 0;
  private lastDecile = -1;
  private tty: boolean;
  constructor(private what: string, private total: number | null, private log: Log, bar: boolean) {
    this.tty = bar && Deno.stderr.isTerminal();
  }
  update(received: number): void {
    const now = performance.now();
    if (this.tty) {
      if (now - this.lastDraw < 100) return;
      this.lastDraw = now;
      let line: string;
      if (this.total) {
        const f = Math.min(1, received / this.total);
        const w = 30, full = Math.round(f * w);
        line =
          `\r${this.what} [${"#".repeat(full)}${"-".repeat(w - full)}] ${
            (100 * f).toFixed(0).padStart(3)
          }% ` +
          `${mib(received)}/${mib(this.total)} MiB`;
      } else line = `\r${this.what} ${mib(received)} MiB`;
      Deno.stderr.writeSync(new TextEncoder().encode(line));
    } else if (this.total) {
      const d = Math.floor((10 * received) / this.total);
      if (d > this.lastDecile && d < 10) {
        this.lastDecile = d;
        this.log(`${this.what}: ${d * 10}% of ${mib(this.total)} MiB`);
      }
    }
  }
  done(received: number): void {
    if (this.tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
    else this.log(`${this.what}: ${mib(received)} MiB received`);
  }
}

const defaultLog: Log = (m) => console.error(m);

/** No response headers within this time: the host is considered unreachable. */
const CONNECT_TIMEOUT_MS = 60_000;
/** No data for this long in the middle of a download: it is abandoned. */
const STALL_TIMEOUT_MS = 120_000;

/**
 * Downloads `url` to `path`, hashing on the way. Throws (and deletes `path`) on an HTTP error, a network
 * error, a timeout, or a body shorter or longer than the announced Content-Length. Progress goes to a bar
 * on a terminal when no `log` is given, else to `log` every 10 %.
 */
export async function downloadTo(
  url: string,
  path: string,
  opts: { log?: Log; hashes?: string[] } = {},
): Promise<{ bytes: number; digests: Record<string, string> }> {
  const log = opts.log ?? defaultLog;
  const algos = opts.hashes ?? ["md5"];
  const abort = new AbortController();
  let timedOut = "";
  let timer = setTimeout(() => {
    timedOut = `no answer within ${CONNECT_TIMEOUT_MS / 1000} s`;
    abort.abort();
  }, CONNECT_TIMEOUT_MS);
  const stallTimer = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = `no data for ${STALL_TIMEOUT_MS / 1000} s`;
      abort.abort();
    }, STALL_TIMEOUT_MS);
  };
  try {
    return await fetchTo(url, path, log, !opts.log, algos, abort.signal, stallTimer, () => timedOut);
  } finally {
    clearTimeout(timer);
  }
}

async function fetchTo(
  url: string,
  path: string,
  log: Log,
  bar: boolean,
  algos: string[],
  signal: AbortSignal,
  alive: () => void,
  timedOut: () => string,
): Promise<{ bytes: number; digests: Record<string, string> }> {
  let res: Response;
  try {
    res = await fetch(url, { signal });
  } catch (e) {
    throw new Error(`cannot reach ${url}: ${timedOut() || (e as Error).message}`);
  }
  alive();
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new Error(`${url} answered HTTP ${res.status} ${res.statusText}`.trim());
  }
  const lenHeader = res.headers.get("content-length");
  const total = lenHeader !== null && /^\d+$/.test(lenHeader) ? Number(lenHeader) : null;
  const hashers = algos.map((a) => createHash(a));
  const progress = new Progress(`downloading ${basename(new URL(url).pathname)}`, total, log, bar);
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  let received = 0;
  try {
    const reader = res.body.getReader();
    while (true) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw new Error(
          `the download of ${url} broke off after ${received}${total ? ` of ${total}` : ""} bytes: ${
            timedOut() || (e as Error).message
          }`,
        );
      }
      if (chunk.done) break;
      const v = chunk.value;
      for (let at = 0; at < v.length;) at += await file.write(v.subarray(at));
      for (const h of hashers) h.update(v);
      received += v.length;
      alive();
      progress.update(received);
    }
  } catch (e) {
    file.close();
    await Deno.remove(path).catch(() => {});
    throw e;
  }
  file.close();
  progress.done(received);
  if (total !== null && received !== total) {
    await Deno.remove(path).catch(() => {});
    throw new Error(`the download of ${url} is incomplete: ${received} of ${total} bytes`);
  }
  const digests: Record<string, string> = {};
  algos.forEach((a, i) => (digests[a] = hashers[i].digest(a === "md5" ? "hex" : "base64")));
  return { bytes: received, digests };
}

const STAGING_PREFIX = ".cifar10-download-";

/**
 * Runs `fn` with a fresh folder beside `cacheDir` (same file system, so the final rename is atomic) and
 * removes that folder afterwards, whatever happens. Leftovers of interrupted runs are removed first.
 */
export async function withStagingDir<T>(cacheDir: string, fn: (tmp: string) => Promise<T>): Promise<T> {
  const parent = dirname(resolve(cacheDir));
  await Deno.mkdir(parent, { recursive: true });
  for await (const e of Deno.readDir(parent)) {
    if (e.isDirectory && e.name.startsWith(STAGING_PREFIX)) {
      const p = join(parent, e.name);
      const st = await Deno.stat(p).catch(() => null);
      // older than a day: surely an interrupted run, not a concurrent one
      if (st?.mtime && Date.now() - st.mtime.getTime() > 86400e3) await Deno.remove(p, { recursive: true });
    }
  }
  const tmp = await Deno.makeTempDir({ dir: parent, prefix: STAGING_PREFIX });
  try {
    return await fn(tmp);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** Moves the files of the verified folder `src` to `dest` (a rename of the folder when `dest` is absent or empty). */
export async function installDir(src: string, dest: string): Promise<void> {
  try {
    await Deno.rename(src, dest); // atomic; replaces an empty folder
    return;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw e;
  }
  await Deno.mkdir(dest, { recursive: true });
  for await (const e of Deno.readDir(src)) await Deno.rename(join(src, e.name), join(dest, e.name));
}

/** Downloads, checks and unpacks the official archive into `cacheDir`. */
export async function downloadOfficial(
  url: string,
  cacheDir: string,
  opts: { spec?: Cifar10Spec; log?: Log } = {},
): Promise<void> {
  const spec = opts.spec ?? CIFAR10;
  const log = opts.log ?? defaultLog;
  await withStagingDir(cacheDir, async (tmp) => {
    const archive = join(tmp, "archive.tar.gz");
    const { digests } = await downloadTo(url, archive, { log: opts.log, hashes: ["md5"] });
    if (spec.archiveMd5 && digests.md5 !== spec.archiveMd5) {
      throw new Error(
        `the archive downloaded from ${url} has MD5 ${digests.md5}, expected ${spec.archiveMd5} ` +
          `(the official cifar-10-binary.tar.gz): it is corrupt or not the official file; it was not kept.`,
      );
    }
    const out = join(tmp, "files");
    await Deno.mkdir(out);
    const wanted = new Set([...spec.trainFiles, spec.testFile].map((f) => f.name));
    let found = 0;
    log(`CIFAR-10: unpacking ${basename(new URL(url).pathname)}`);
    try {
      const file = await Deno.open(archive, { read: true });
      for await (const entry of readTar(gunzip(file.readable))) {
        if (entry.type !== "file") continue;
        const parts = entry.name.split("/").filter((p) => p && p !== ".");
        if (parts.length < 2 || parts[parts.length - 2] !== spec.archiveFolder) continue;
        const name = parts[parts.length - 1];
        if (name.startsWith(".") || name.includes("\\")) continue;
        await Deno.writeFile(join(out, name), entry.data);
        if (wanted.has(name)) found++;
      }
    } catch (e) {
      throw new Error(`the archive downloaded from ${url} cannot be unpacked: ${(e as Error).message}`);
    }
    if (found < wanted.size) {
      log(`CIFAR-10: the archive holds ${found} of the ${wanted.size} expected files`);
    }
    try {
      await verifyCifar10Dir(out, { spec, origin: "download" });
    } catch (e) {
      throw new Error(`the archive downloaded from ${url} was refused: ${(e as Error).message}`);
    }
    await writeMeta(out);
    await installDir(out, cacheDir);
  });
}

/** batches.meta.txt as in the official folder (class names, one a line). */
export async function writeMeta(dir: string): Promise<void> {
  const path = join(dir, "batches.meta.txt");
  try {
    await Deno.stat(path);
  } catch {
    await Deno.writeTextFile(path, CIFAR10_CLASSES.join("\n") + "\n");
  }
}
