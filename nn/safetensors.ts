// safetensors I/O (https://github.com/huggingface/safetensors, the format PyTorch and Hugging Face
// read): an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}
// with an optional "__metadata__" map of strings, then the raw little-endian data.
//
// Model checkpoints use PyTorch's state-dict names and layouts (f32, OIHW), so a file written here
// loads with `safetensors.torch.load_file` + `model.load_state_dict` into the notebook's model, and
// back. `num_batches_tracked` is written as an I64 scalar (shape []), as PyTorch stores it; every other
// tensor is F32. Files are written atomically: into a temporary file in the same directory, flushed
// to disk, then renamed over the target, so a crash never leaves a half-written checkpoint.

import type { Module } from "./module.ts";

export type SafeDType = "F32" | "I64";

/** One tensor of a safetensors file. I64 values are carried as f32 numbers (exact below 2^24). */
export interface TensorEntry {
  shape: number[];
  data: Float32Array;
  dtype?: SafeDType;
}

export interface SafetensorsFile {
  tensors: Record<string, TensorEntry>;
  metadata: Record<string, string>;
}

const ITEM: Record<SafeDType, number> = { F32: 4, I64: 8 };
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;
const MAX_HEADER = 100 * 1024 * 1024;

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Serialises tensors (in the given order) and string metadata into safetensors bytes. */
export function encodeSafetensors(
  tensors: Record<string, TensorEntry>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new Error(`safetensors: metadata "${k}" must be a string`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  const parts: { entry: TensorEntry; dtype: SafeDType; at: number }[] = [];
  for (const [name, entry] of Object.entries(tensors)) {
    if (name === "__metadata__") throw new Error(`safetensors: "__metadata__" is not a valid tensor name`);
    const dtype = entry.dtype ?? "F32";
    if (!(dtype in ITEM)) throw new Error(`safetensors: tensor "${name}" has unsupported dtype ${dtype}`);
    if (entry.data.length !== numel(entry.shape)) {
      throw new Error(
        `safetensors: tensor "${name}" has ${entry.data.length} values for shape [${entry.shape.join(", ")}]`,
      );
    }
    const bytes = entry.data.length * ITEM[dtype];
    header[name] = { dtype, shape: [...entry.shape], data_offsets: [offset, offset + bytes] };
    parts.push({ entry, dtype, at: offset });
    offset += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8; // pad with spaces so the data starts 8-byte aligned
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  const base = 8 + json.length;
  for (const { entry, dtype, at } of parts) {
    const o = base + at;
    if (dtype === "F32") {
      if (LITTLE_ENDIAN) {
        out.set(new Uint8Array(entry.data.buffer, entry.data.byteOffset, entry.data.byteLength), o);
      } else entry.data.forEach((v, i) => view.setFloat32(o + 4 * i, v, true));
    } else {
      entry.data.forEach((v, i) => {
        if (!Number.isFinite(v)) throw new Error(`safetensors: I64 tensor holds ${v}`);
        view.setBigInt64(o + 8 * i, BigInt(Math.round(v)), true);
      });
    }
  }
  return out;
}

/** Parses safetensors bytes; `source` names the file in errors. Every inconsistency is an error. */
export function decodeSafetensors(bytes: Uint8Array, source = "safetensors data"): SafetensorsFile {
  const bad = (why: string) => new Error(`${source}: not a valid safetensors file: ${why}`);
  if (bytes.length < 8) throw bad(`truncated (${bytes.length} bytes, no header length)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER)) throw bad(`corrupt header length ${n}`);
  const headerLen = Number(n);
  if (8 + headerLen > bytes.length) {
    throw bad(
      `truncated: the header claims ${headerLen} bytes but the file has ${bytes.length - 8} after the length`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw bad(`corrupt header (${(e as Error).message})`);
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) {
    throw bad("the header is not a JSON object");
  }
  const base = 8 + headerLen;
  const dataLen = bytes.length - base;
  const metadata: Record<string, string> = {};
  const tensors: Record<string, TensorEntry> = {};
  const spans: [number, number, string][] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (!raw || typeof raw !== "object") throw bad(`"__metadata__" is not an object`);
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== "string") throw bad(`metadata "${k}" is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = info?.dtype as SafeDType;
    if (typeof dtype !== "string" || !(dtype in ITEM)) {
      throw bad(
        `tensor "${name}" has unsupported dtype ${JSON.stringify(info?.dtype)} (F32 and I64 are read)`,
      );
    }
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw bad(`tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    }
    const offs = info.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isInteger(d) && d >= 0)) {
      throw bad(`tensor "${name}" has invalid data_offsets ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as number[];
    const count = numel(shape as number[]);
    if (end - begin !== count * ITEM[dtype]) {
      throw bad(`tensor "${name}": data_offsets [${begin}, ${end}] do not hold ${count} ${dtype} values`);
    }
    if (end > dataLen) {
      throw bad(`truncated: tensor "${name}" ends at byte ${end} of a ${dataLen}-byte data section`);
    }
    spans.push([begin, end, name]);
    const o = base + begin;
    let data: Float32Array;
    if (dtype === "F32") {
      if (LITTLE_ENDIAN) data = new Float32Array(bytes.slice(o, o + count * 4).buffer);
      else {
        data = new Float32Array(count);
        for (let i = 0; i < count; i++) data[i] = view.getFloat32(o + 4 * i, true);
      }
    } else {
      data = new Float32Array(count);
      for (let i = 0; i < count; i++) data[i] = Number(view.getBigInt64(o + 8 * i, true));
    }
    tensors[name] = { shape: [...(shape as number[])], data, dtype };
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let at = 0;
  for (const [begin, end, name] of spans) {
    if (begin !== at) throw bad(`tensor "${name}" starts at byte ${begin}, expected ${at} (overlap or hole)`);
    at = end;
  }
  if (at !== dataLen) throw bad(`${dataLen - at} bytes after the last tensor`);
  return { tensors, metadata };
}

/** Writes `bytes` to `path` atomically (temporary file in the same directory, fsync, rename). */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash >= 0 ? path.slice(0, slash + 1) : "";
  const tmp = `${dir}.${path.slice(slash + 1)}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Saves tensors (and optional string metadata) as a safetensors file, atomically. */
export async function saveSafetensors(
  path: string,
  tensors: Record<string, TensorEntry>,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}

/** Reads a safetensors file; a corrupt or truncated file gives an error naming the file and the fault. */
export async function loadSafetensors(path: string): Promise<SafetensorsFile> {
  return decodeSafetensors(await Deno.readFile(path), path);
}

/** A module's state dict as safetensors entries (PyTorch's names, shapes and dtypes); reads the GPU. */
export async function moduleTensors(model: Module): Promise<Record<string, TensorEntry>> {
  const spec = model.stateSpec();
  const state = await model.stateDict();
  const tensors: Record<string, TensorEntry> = {};
  for (const [name, s] of Object.entries(spec)) {
    tensors[name] = { shape: s.shape, dtype: s.dtype, data: state[name] };
  }
  return tensors;
}

/** Saves a module's state dict with PyTorch's names, shapes and dtypes (atomically). */
export async function saveModel(
  path: string,
  model: Module,
  metadata: Record<string, string> = {},
): Promise<void> {
  await saveSafetensors(path, await moduleTensors(model), metadata);
}

/**
 * Checks that `file` holds exactly `model`'s state (same names and shapes) and throws an error
 * naming the first tensor that differs.
 */
export function checkStateFits(file: SafetensorsFile, model: Module, source = "checkpoint"): void {
  const spec = model.stateSpec();
  for (const [name, s] of Object.entries(spec)) {
    const t = file.tensors[name];
    if (!t) {
      throw new Error(
        `${source} does not fit this model: tensor "${name}" (shape [${s.shape.join(", ")}]) is missing ` +
          `(a checkpoint of another stage or configuration?)`,
      );
    }
    if (t.shape.join() !== s.shape.join()) {
      throw new Error(
        `${source} does not fit this model: tensor "${name}" has shape [${
          t.shape.join(", ")
        }] in the file, ` +
          `the model expects [${s.shape.join(", ")}]`,
      );
    }
  }
  const extra = Object.keys(file.tensors).find((n) => !(n in spec));
  if (extra) {
    throw new Error(
      `${source} does not fit this model: tensor "${extra}" is not in the model (another stage?)`,
    );
  }
}

/** Loads a checkpoint written by `saveModel` (or PyTorch) into `model`; returns the file's metadata. */
export async function loadModel(path: string, model: Module): Promise<Record<string, string>> {
  const file = await loadSafetensors(path);
  checkStateFits(file, model, path);
  const state: Record<string, Float32Array> = {};
  for (const [n, t] of Object.entries(file.tensors)) state[n] = t.data;
  model.loadStateDict(state);
  return file.metadata;
}
