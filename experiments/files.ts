// Files on disk (the Deno side of nn/safetensors.ts): atomic, durable writes, and safetensors files and
// model checkpoints read and written by path, verified on every read.
//
// A write goes into a temporary file in the same directory, is flushed to disk, then renamed over the
// target, and the directory is flushed, so a crash or power loss leaves either the old file or the
// new one, never a mix. A failed write (e.g. a full disk) removes the temporary file and leaves the
// target as it was.

import {
  decodeModel,
  type DecodeModelOptions,
  encodeModel,
  type ReadResult,
  readSafetensors,
  sealSafetensors,
  type TensorEntry,
} from "../nn/safetensors.ts";
import type { Module } from "../nn/module.ts";

export interface WriteOptions {
  /** Before replacing `path`, keep its current content under this name (rotated atomically). */
  keepPrevious?: string;
}

function dirOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash > 0 ? path.slice(0, slash) : slash === 0 ? "/" : ".";
}

function tempName(path: string): string {
  const slash = path.lastIndexOf("/");
  const dir = slash >= 0 ? path.slice(0, slash + 1) : "";
  return `${dir}.${path.slice(slash + 1)}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
}

/**
 * Removes the temporary files that writes to `path` left behind when their process was killed
 * mid-write (`kill -9`, a node failure). Only for files no other process is writing now.
 */
export async function removeStaleTemps(path: string): Promise<string[]> {
  const slash = path.lastIndexOf("/");
  const prefix = `.${path.slice(slash + 1)}.`;
  const removed: string[] = [];
  for await (const e of Deno.readDir(dirOf(path))) {
    if (
      e.isFile && e.name.startsWith(prefix) && /^\d+\.[0-9a-f]{8}\.tmp$/.test(e.name.slice(prefix.length))
    ) {
      const p = `${dirOf(path)}/${e.name}`;
      await Deno.remove(p).then(() => removed.push(p), () => {});
    }
  }
  return removed;
}

/** Flushes a directory's entries (the renames in it) to disk; not every platform allows it. */
async function syncDir(dir: string): Promise<void> {
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch {
    // Windows cannot open a directory; the rename itself is still atomic
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, (e) => {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  });
}

/**
 * Writes `data` to `path` atomically and durably (see the file header). With `keepPrevious`, the file
 * being replaced is first linked (or copied) to that name, so at every moment both names hold a
 * complete file: `path` the old or the new content, `keepPrevious` the older or the old.
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string,
  opts: WriteOptions = {},
): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const tmp = tempName(path);
  let prevTmp: string | null = null;
  try {
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    if (opts.keepPrevious && await exists(path)) {
      prevTmp = tempName(opts.keepPrevious);
      await Deno.link(path, prevTmp).catch(() => Deno.copyFile(path, prevTmp!));
      await Deno.rename(prevTmp, opts.keepPrevious);
      prevTmp = null;
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    if (prevTmp) await Deno.remove(prevTmp).catch(() => {});
    throw e;
  }
  await syncDir(dirOf(path));
}

/** Saves tensors (and optional string metadata) as a safetensors file with hashes, atomically. */
export async function saveSafetensors(
  path: string,
  tensors: Record<string, TensorEntry>,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeFileAtomic(path, await sealSafetensors(tensors, metadata));
}

/**
 * Reads a safetensors file and checks its hashes when it has them (`verified` says whether it did);
 * a corrupt, truncated or changed file gives an error naming the file and the fault.
 */
export async function loadSafetensors(path: string): Promise<ReadResult> {
  return readSafetensors(await Deno.readFile(path), path);
}

/** Saves a module's state dict with PyTorch's names, shapes and dtypes (with hashes, atomically). */
export async function saveModel(
  path: string,
  model: Module,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeFileAtomic(path, await encodeModel(model, metadata));
}

/**
 * Loads a file written by `saveModel` (or PyTorch) into `model` after verifying it (hashes, finite
 * values, names and shapes); returns its metadata. Files without hashes load with a note (`warn`).
 */
export async function loadModel(
  path: string,
  model: Module,
  opts: Omit<DecodeModelOptions, "source"> = {},
): Promise<Record<string, string>> {
  return decodeModel(await Deno.readFile(path), model, { ...opts, source: path });
}
