// Checking a folder of CIFAR-10 files against a spec: each file's size (cheap), its MD5, and an error that
// names the file, what was expected and how to fix it (the fix depends on where the folder came from).
//
// API
//   checkSize(dir, file, origin) → Promise<string | null>   the error message of a missing or wrong-sized file
//   md5Error(path, got, file, dir, origin) → string          the error message of a corrupt file
//   verifyCifar10Dir(dir, {spec, origin})                    size and MD5 of every file; throws the first problem
//   md5Hex(bytes)                                             hex MD5
//   type Cifar10Origin                                        "data-dir" | "env" | "cache" | "download" | "mirror"

import { createHash } from "node:crypto";
import { join } from "node:path";
import { allFiles, CIFAR10, type Cifar10Spec, type CifarFileSpec, RECORD_BYTES } from "./cifar10_spec.ts";

export function md5Hex(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

const FILE_LIST = "data_batch_1.bin … data_batch_5.bin and test_batch.bin";

/** How to fix a bad folder, by where it came from. */
export function fixFor(dir: string, origin: Origin): string {
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

/** Where a folder of files came from. */
export type Origin = "data-dir" | "env" | "cache" | "download" | "mirror";

/** Checks one file's size (cheap); returns an error message or null. */
export async function checkSize(dir: string, f: CifarFileSpec, origin: Origin): Promise<string | null> {
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

export function md5Error(path: string, got: string, f: CifarFileSpec, dir: string, origin: Origin): string {
  return `CIFAR-10 file ${path} is corrupt: its MD5 is ${got}, expected ${f.md5} (the official ${f.name}). ` +
    fixFor(dir, origin);
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

export type { Origin as Cifar10Origin };
