// safetensors checkpoints: bit-exact round trips, PyTorch-written files, clear errors for corrupt,
// truncated and mismatched files, atomic writes, and verification (hashes, finite values).

import assert from "node:assert/strict";
import { scope, tensor } from "../autograd/tensor.ts";
import { crossEntropy } from "../autograd/ops/loss.ts";
import {
  DamagedFileError,
  decodeModel,
  decodeSafetensors,
  encodeModel,
  encodeSafetensors,
  moduleTensors,
  readSafetensors,
  sealSafetensors,
  type TensorEntry,
} from "../nn/safetensors.ts";
import {
  loadModel,
  loadSafetensors,
  saveModel,
  saveSafetensors,
  writeFileAtomic,
} from "../experiments/files.ts";
import { buildModel, type ModelOptions } from "../models/zoo.ts";
import { setup } from "./helpers.ts";

await setup();

const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;
const NARROW: ModelOptions = { widths: [8, 16, 32, 64], depths: [1, 1, 1, 1], stemFeatures: 8 };

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

Deno.test("encode → decode is bit-exact (NaN payloads, ±0, ±∞, subnormals), with I64, scalars, empty tensors and metadata", () => {
  const raw = new Uint32Array(1000);
  for (let i = 0; i < raw.length; i++) raw[i] = (Math.imul(i + 1, 2654435761) ^ (i << 7)) >>> 0;
  raw.set(
    [0x7fc00001, 0xffc12345, 0x80000000, 0x00000000, 0x7f800000, 0xff800000, 0x00000001, 0x807fffff],
    0,
  );
  const tensors: Record<string, TensorEntry> = {
    "a.weight": { shape: [10, 4, 5, 5], data: new Float32Array(raw.buffer) },
    "bn.num_batches_tracked": { shape: [], data: Float32Array.of(1234567), dtype: "I64" },
    "empty": { shape: [0, 3], data: new Float32Array(0) },
  };
  const meta = { stage: "final", note: 'quotes " and ünïcode' };
  const bytes = encodeSafetensors(tensors, meta);
  const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(headerLen % 8, 0, "data section is 8-byte aligned");
  const back = decodeSafetensors(bytes);
  assert.deepEqual(back.metadata, meta);
  assert.deepEqual(Object.keys(back.tensors), Object.keys(tensors));
  assert.deepEqual(bits(back.tensors["a.weight"].data), raw);
  assert.deepEqual(back.tensors["a.weight"].shape, [10, 4, 5, 5]);
  assert.equal(back.tensors["bn.num_batches_tracked"].dtype, "I64");
  assert.deepEqual(back.tensors["bn.num_batches_tracked"].shape, []);
  assert.equal(back.tensors["bn.num_batches_tracked"].data[0], 1234567);
  assert.equal(back.tensors.empty.data.length, 0);
});

Deno.test("reads PyTorch-written files and re-encodes them byte for byte", async () => {
  const bytes = await Deno.readFile(fixture("models_final.safetensors"));
  const file = decodeSafetensors(bytes);
  assert.equal(JSON.parse(file.metadata.golden).stage, "final");
  assert.deepEqual(file.tensors.input.shape, [2, 3, 32, 32]);
  assert.equal(file.tensors["encoder.stem.1.num_batches_tracked"].dtype, "I64");
  assert.equal(file.tensors["encoder.stem.1.num_batches_tracked"].data[0], 3);
  assert.deepEqual(file.tensors["encoder.stages.1.0.1.weight"].shape, [12, 8, 2, 2]); // OIHW
  assert.deepEqual(encodeSafetensors(file.tensors, file.metadata), bytes);
});

Deno.test("saveModel → loadModel restores a trained model bit for bit (running stats and num_batches_tracked too)", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/final.safetensors`;
  const a = buildModel("final", { ...NARROW, seed: 1 });
  const b = buildModel("final", { ...NARROW, seed: 2 });
  const x = new Float32Array(2 * 3 * 32 * 32).map((_, i) => Math.cos(i));
  scope(() => crossEntropy(a.forward(tensor(x, [2, 3, 32, 32])), [0, 1]).backward()); // moves BN stats
  await saveModel(path, a, { stage: "final", epoch: "3" });
  assert.deepEqual(await loadModel(path, b), { stage: "final", epoch: "3" });
  const [sa, sb] = [await a.stateDict(), await b.stateDict()];
  assert.deepEqual(Object.keys(sb), Object.keys(sa));
  for (const n of Object.keys(sa)) assert.deepEqual(bits(sb[n]), bits(sa[n]), n);
  assert.equal(sa["encoder.stem.1.num_batches_tracked"][0], 1);
  assert.deepEqual(
    [...Deno.readDirSync(dir)].map((e) => e.name),
    ["final.safetensors"],
    "no temp files",
  );
  // overwriting an existing checkpoint replaces it
  await saveModel(path, b);
  assert.deepEqual((await loadSafetensors(path)).metadata, {});
  a.dispose();
  b.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a checkpoint of another stage or shape is refused, naming the first mismatched tensor", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/k7.safetensors`;
  const k7 = buildModel("kernel7", NARROW);
  await saveModel(path, k7);
  const final = buildModel("final", NARROW);
  await assert.rejects(
    () => loadModel(path, final),
    /does not fit this model: tensor "encoder\.stages\.0\.0\.block\.0\.weight" \(shape \[8, 1, 7, 7\]\) is missing/,
  );
  const wide = buildModel("kernel7", { ...NARROW, widths: [8, 16, 32, 48] });
  await assert.rejects(
    () => loadModel(path, wide),
    /tensor "encoder\.stages\.3\.0\.block\.1\.0\.weight" has shape \[256, 32, 1, 1\] in the file, the model expects \[192, 32, 1, 1\]/,
  );
  [k7, final, wide].forEach((m) => m.dispose());
  await Deno.remove(dir, { recursive: true });
});

Deno.test("corrupt and truncated files give clear errors", async () => {
  const good = encodeSafetensors({ w: { shape: [4, 4], data: new Float32Array(16).fill(1.5) } }, { a: "b" });
  const cases: [Uint8Array, RegExp][] = [
    [good.slice(0, 5), /truncated \(5 bytes, no header length\)/],
    [good.slice(0, 20), /truncated: the header claims/],
    [good.slice(0, good.length - 3), /truncated: tensor "w" ends at byte 64 of a 61-byte data section/],
    [Uint8Array.of(...good, 0, 0, 0, 0), /4 bytes after the last tensor/],
  ];
  const garbled = good.slice();
  garbled[8] = 0x78; // "x" instead of the JSON's opening brace
  cases.push([garbled, /corrupt header/]);
  const huge = good.slice();
  new DataView(huge.buffer).setBigUint64(0, 1n << 40n, true);
  cases.push([huge, /corrupt header length/]);
  const bf16 = encodeSafetensors({ w: { shape: [2], data: new Float32Array(2) } });
  const text = new TextDecoder().decode(bf16).replace('"F32"', '"BF16"').replace("[0,8]", "[0,4]");
  cases.push([new TextEncoder().encode(text).slice(0, bf16.length - 4), /unsupported dtype "BF16"/]);
  for (const [bytes, re] of cases) assert.throws(() => decodeSafetensors(bytes, "ckpt.safetensors"), re);
  assert.throws(() => decodeSafetensors(good.slice(0, 5), "ckpt.safetensors"), /^Error: ckpt\.safetensors: /);
  // through the file API, the error names the path
  const dir = await Deno.makeTempDir();
  await Deno.writeFile(`${dir}/bad.safetensors`, good.slice(0, 30));
  await assert.rejects(
    () => loadSafetensors(`${dir}/bad.safetensors`),
    /bad\.safetensors: not a valid safetensors file/,
  );
  await assert.rejects(() => saveSafetensors(`${dir}/missing/x.safetensors`, {}), Deno.errors.NotFound);
  assert.deepEqual(
    [...Deno.readDirSync(dir)].map((e) => e.name),
    ["bad.safetensors"],
    "no temp files",
  );
  await Deno.remove(dir, { recursive: true });
});

/** The byte offset in `bytes` of the data of tensor `name` (after the header). */
function dataOffset(bytes: Uint8Array, name: string): number {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return 8 + n + header[name].data_offsets[0];
}

Deno.test("sealed files: one flipped bit in a tensor, or a changed metadata value, is caught and named", async () => {
  const tensors: Record<string, TensorEntry> = {
    "a.weight": { shape: [3, 5], data: new Float32Array(15).map((_, i) => i / 7) },
    "bn.num_batches_tracked": { shape: [], data: Float32Array.of(42), dtype: "I64" },
  };
  const sealed = await sealSafetensors(tensors, { stage: "final" });
  const ok = await readSafetensors(sealed, "ok.safetensors");
  assert.equal(ok.verified, true);
  assert.deepEqual(ok.metadata, { stage: "final" }, "the hashes are not part of the returned metadata");
  assert.deepEqual(bits(ok.tensors["a.weight"].data), bits(tensors["a.weight"].data));
  // the sealed file is still a plain safetensors file (PyTorch reads it; the hashes are one more entry)
  assert.ok(
    JSON.parse(decodeSafetensors(sealed).metadata.sha256).tensors["a.weight"].match(/^[0-9a-f]{64}$/),
  );

  for (const [name, at] of [["a.weight", 4 * 7 + 2], ["bn.num_batches_tracked", 0]] as const) {
    const flipped = sealed.slice();
    flipped[dataOffset(sealed, name) + at] ^= 0x10; // one bit, same size
    await assert.rejects(
      () => readSafetensors(flipped, "run0.last.safetensors"),
      (e: Error) => {
        assert.ok(e instanceof DamagedFileError);
        assert.match(
          e.message,
          new RegExp(`^run0\\.last\\.safetensors: tensor "${name}" does not match the SHA-256 recorded`),
        );
        assert.match(e.message, /changed on disk/);
        return true;
      },
    );
  }
  const edited = sealed.slice();
  edited[new TextDecoder().decode(sealed.subarray(0, 600)).indexOf('"final"') + 5] = 0x31; // "fina1"
  await assert.rejects(
    () => readSafetensors(edited, "x.safetensors"),
    /x\.safetensors: the metadata does not match/,
  );
  // a file without hashes (as PyTorch writes them) reads, reported as unverified
  const plain = await readSafetensors(encodeSafetensors(tensors, { stage: "final" }));
  assert.equal(plain.verified, false);
  assert.deepEqual(plain.metadata, { stage: "final" });
});

Deno.test("decodeModel refuses a NaN weight naming the file and tensor; PyTorch-style files load with a note", async () => {
  const model = buildModel("final", { ...NARROW, seed: 3 });
  const other = buildModel("final", { ...NARROW, seed: 4 });
  const tensors = await moduleTensors(model);
  const name = "encoder.stages.2.1.block.0.weight";
  const poisoned = { ...tensors, [name]: { ...tensors[name], data: tensors[name].data.slice() } };
  poisoned[name].data[5] = NaN;
  // sealed after the NaN was written: the hashes match, the finite check must catch it
  await assert.rejects(
    async () => decodeModel(await sealSafetensors(poisoned), other, { source: "m.safetensors" }),
    /^DamagedFileError: m\.safetensors: tensor "encoder\.stages\.2\.1\.block\.0\.weight" holds NaN at index 5/,
  );
  const notes: string[] = [];
  await decodeModel(encodeSafetensors(tensors), other, {
    source: "torch.safetensors",
    warn: (m) => notes.push(m),
  });
  assert.equal(notes.length, 1);
  assert.match(notes[0], /torch\.safetensors has no SHA-256 .* could not be verified/);
  const [sa, sb] = [await model.stateDict(), await other.stateDict()];
  for (const n of Object.keys(sa)) assert.deepEqual(bits(sb[n]), bits(sa[n]), n);
  // a sealed model loads without a note
  await decodeModel(await encodeModel(model), other, { warn: (m) => notes.push(m) });
  assert.equal(notes.length, 1);
  model.dispose();
  other.dispose();
});

Deno.test("loadModel verifies: a flipped bit on disk is refused, the file and tensor named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/m.safetensors`;
    const model = buildModel("final", NARROW);
    await saveModel(path, model);
    const bytes = await Deno.readFile(path);
    bytes[dataOffset(bytes, "head.3.weight") + 9] ^= 0x01;
    await Deno.writeFile(path, bytes);
    await assert.rejects(
      () => loadModel(path, model),
      new RegExp(`${path}: tensor "head\\.3\\.weight" does not match the SHA-256`),
    );
    await assert.rejects(() => loadSafetensors(path), /tensor "head\.3\.weight" does not match/);
    model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic keeps the previous content under another name, and a failed write changes nothing", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const [last, prev] = [`${dir}/run0.last.safetensors`, `${dir}/run0.prev.safetensors`];
    await writeFileAtomic(last, "one", { keepPrevious: prev });
    assert.equal(await Deno.readTextFile(last), "one");
    await assert.rejects(() => Deno.stat(prev), Deno.errors.NotFound, "nothing to keep the first time");
    await writeFileAtomic(last, "two", { keepPrevious: prev });
    await writeFileAtomic(last, "three", { keepPrevious: prev });
    assert.deepEqual([await Deno.readTextFile(last), await Deno.readTextFile(prev)], ["three", "two"]);
    // a write that cannot complete (here: the target is a directory) leaves both files as they were
    await Deno.mkdir(`${dir}/sub`);
    await assert.rejects(() => writeFileAtomic(`${dir}/sub`, "x", { keepPrevious: prev }));
    assert.deepEqual([await Deno.readTextFile(last), await Deno.readTextFile(prev)], ["three", "two"]);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      ["run0.last.safetensors", "run0.prev.safetensors", "sub"],
      "no temp files",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nn/ uses no Deno API (the engine runs in a browser)", async () => {
  const dir = new URL("../nn/", import.meta.url);
  for (const e of Deno.readDirSync(dir)) {
    if (!e.name.endsWith(".ts")) continue;
    const src = await Deno.readTextFile(new URL(e.name, dir));
    assert.doesNotMatch(src, /\bDeno\b/, `nn/${e.name} refers to Deno`);
  }
});
