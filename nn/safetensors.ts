// safetensors (https://github.com/huggingface/safetensors, the format PyTorch and Hugging Face read):
// an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} with an
// optional "__metadata__" map of strings, then the raw little-endian data.
//
// Model checkpoints use PyTorch's state-dict names and layouts (f32, OIHW), so a file written here
// loads with `safetensors.torch.load_file` + `model.load_state_dict` into the notebook's model, and
// back. `num_batches_tracked` is written as an I64 scalar (shape []), as PyTorch stores it; every other
// tensor is F32.
//
// Verification: files sealed by `sealSafetensors` carry, in the metadata entry "sha256", a JSON
// object {"tensors": {name: hex SHA-256 of the tensor's bytes in the file}, "metadata": hex SHA-256
// of the other metadata entries (sorted [key, value] pairs as JSON)}. `readSafetensors` checks every
// hash, so one flipped bit is caught and the tensor named; files without it (written by PyTorch)
// still load, reported as unverified. PyTorch ignores the extra metadata entry.
//
// Pure format code (no file system: it runs in a browser too); hashing uses Web Crypto, hence async.
// Reading and writing files lives in experiments/files.ts.

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

/** A tensor's bytes as stored in the file (little-endian; a view of `data` for F32 where possible). */
function tensorBytes(name: string, entry: TensorEntry): Uint8Array {
  const { data } = entry;
  if ((entry.dtype ?? "F32") === "F32") {
    if (LITTLE_ENDIAN) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const out = new Uint8Array(data.length * 4), view = new DataView(out.buffer);
    data.forEach((v, i) => view.setFloat32(4 * i, v, true));
    return out;
  }
  const out = new Uint8Array(data.length * 8), view = new DataView(out.buffer);
  data.forEach((v, i) => {
    if (!Number.isFinite(v)) throw new Error(`safetensors: I64 tensor "${name}" holds ${v}`);
    view.setBigInt64(8 * i, BigInt(Math.round(v)), true);
  });
  return out;
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
  const parts: { name: string; entry: TensorEntry; at: number }[] = [];
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
    parts.push({ name, entry, at: offset });
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
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  const base = 8 + json.length;
  for (const { name, entry, at } of parts) out.set(tensorBytes(name, entry), base + at);
  return out;
}

/** Parses safetensors bytes; `source` names the file in errors. Every inconsistency is an error. */
export function decodeSafetensors(bytes: Uint8Array, source = "safetensors data"): SafetensorsFile {
  const { tensors, metadata } = decode(bytes, source);
  return { tensors, metadata };
}

/** `decodeSafetensors`, also returning each tensor's bytes in the file (views of `bytes`). */
function decode(bytes: Uint8Array, source: string): SafetensorsFile & { raw: Record<string, Uint8Array> } {
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
  const spanBytes: Record<string, Uint8Array> = {};
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
    spanBytes[name] = bytes.subarray(o, base + end);
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
  return { tensors, metadata, raw: spanBytes };
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

// ---------------------------------------------------------------- verification

/** The metadata entry that holds the hashes (see the file header). */
export const HASH_KEY = "sha256";

interface Hashes {
  tensors: Record<string, string>;
  metadata: string;
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The metadata entries other than the hashes, in a fixed order, as the bytes that are hashed. */
function metadataBytes(metadata: Record<string, string>): Uint8Array {
  const pairs = Object.keys(metadata).filter((k) => k !== HASH_KEY).sort().map((k) => [k, metadata[k]]);
  return new TextEncoder().encode(JSON.stringify(pairs));
}

/** Serialises like `encodeSafetensors`, adding the SHA-256 of every tensor and of the metadata. */
export async function sealSafetensors(
  tensors: Record<string, TensorEntry>,
  metadata: Record<string, string> = {},
): Promise<Uint8Array> {
  const hashes: Hashes = { tensors: {}, metadata: await sha256(metadataBytes(metadata)) };
  for (const [name, entry] of Object.entries(tensors)) {
    hashes.tensors[name] = await sha256(tensorBytes(name, entry));
  }
  const { [HASH_KEY]: _, ...rest } = metadata;
  return encodeSafetensors(tensors, { ...rest, [HASH_KEY]: JSON.stringify(hashes) });
}

/** A file whose content does not match its recorded hashes, or holds non-finite values. */
export class DamagedFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DamagedFileError";
  }
}

/** A decoded file, its metadata without the hashes, and whether hashes were there to check. */
export interface ReadResult extends SafetensorsFile {
  /** false for files written without hashes (e.g. by PyTorch): nothing could be checked. */
  verified: boolean;
}

/**
 * Decodes `bytes` and checks every recorded SHA-256; throws a `DamagedFileError` naming `source`
 * and the first tensor (or the metadata) that changed since the file was written. Malformed files
 * throw the `decodeSafetensors` errors.
 */
export async function readSafetensors(bytes: Uint8Array, source = "safetensors data"): Promise<ReadResult> {
  const { tensors, metadata, raw } = decode(bytes, source);
  const { [HASH_KEY]: recorded, ...rest } = metadata;
  if (recorded === undefined) return { tensors, metadata: rest, verified: false };
  const changed = (what: string) =>
    new DamagedFileError(
      `${source}: ${what} does not match the SHA-256 recorded when the file was written: ` +
        `the file changed on disk (a disk fault or an edit), so it cannot be trusted`,
    );
  let hashes: Hashes;
  try {
    hashes = JSON.parse(recorded);
    if (typeof hashes.metadata !== "string" || !hashes.tensors || typeof hashes.tensors !== "object") {
      throw new Error("incomplete");
    }
  } catch {
    throw changed(`the "${HASH_KEY}" metadata entry`);
  }
  const names = Object.keys(tensors);
  const listed = Object.keys(hashes.tensors);
  const unlisted = names.find((n) => !(n in hashes.tensors)) ?? listed.find((n) => !(n in tensors));
  if (unlisted !== undefined) throw changed(`the list of tensors (tensor "${unlisted}")`);
  for (const name of names) {
    if (await sha256(raw[name]) !== hashes.tensors[name]) throw changed(`tensor "${name}"`);
  }
  if (await sha256(metadataBytes(rest)) !== hashes.metadata) throw changed("the metadata");
  return { tensors, metadata: rest, verified: true };
}

/** The first NaN or ±∞ among `tensors`: its tensor's name, index and value; null when all are finite. */
export function firstNonFinite(
  tensors: Record<string, TensorEntry>,
): { name: string; index: number; value: number; count: number } | null {
  for (const [name, t] of Object.entries(tensors)) {
    const index = t.data.findIndex((v) => !Number.isFinite(v));
    if (index >= 0) return { name, index, value: t.data[index], count: t.data.length };
  }
  return null;
}

/** Throws a `DamagedFileError` naming `source`, the tensor and the index of the first NaN or ±∞. */
export function checkFinite(file: SafetensorsFile, source = "safetensors data"): void {
  const bad = firstNonFinite(file.tensors);
  if (bad) {
    throw new DamagedFileError(
      `${source}: tensor "${bad.name}" holds ${bad.value} at index ${bad.index} of ${bad.count}: ` +
        `weights and optimizer state must be finite (a damaged file, or saved from a diverged run)`,
    );
  }
}

/** The note given when a file has no hashes to check. */
export function unverifiedNote(source: string): string {
  return `note: ${source} has no SHA-256 in its metadata (written by PyTorch or an older version?): ` +
    `its content could not be verified`;
}

export interface DecodeModelOptions {
  /** Names the file in messages. */
  source?: string;
  /** Receives the note for files without hashes (default console.warn). */
  warn?: (message: string) => void;
}

/** Sealed safetensors bytes of `model`'s state dict (PyTorch's names, shapes and dtypes). */
export async function encodeModel(model: Module, metadata: Record<string, string> = {}): Promise<Uint8Array> {
  return sealSafetensors(await moduleTensors(model), metadata);
}

/**
 * Loads safetensors bytes written by `encodeModel` (or PyTorch) into `model` after checking the
 * hashes, that every value is finite and that the file fits the model; returns the metadata.
 */
export async function decodeModel(
  bytes: Uint8Array,
  model: Module,
  opts: DecodeModelOptions = {},
): Promise<Record<string, string>> {
  const source = opts.source ?? "safetensors data";
  const file = await readSafetensors(bytes, source);
  if (!file.verified) (opts.warn ?? console.warn)(unverifiedNote(source));
  checkStateFits(file, model, source);
  checkFinite(file, source);
  loadTensors(model, file);
  return file.metadata;
}

/** Copies the tensors of `file` (already checked to fit) into `model`. */
export function loadTensors(model: Module, file: SafetensorsFile): void {
  const state: Record<string, Float32Array> = {};
  for (const [n, t] of Object.entries(file.tensors)) state[n] = t.data;
  model.loadStateDict(state);
}
