// CIFAR-10 loading, the split, the GPU augmentation against its CPU reference, and the batch iterator.
// The real files are found as tests/test_data.ts says ($CIFAR10_DIR, the project cache, ../shared).

import { poolStats, Rng } from "../mod.ts";
import {
  augmentCpu,
  augmentGpu,
  CIFAR_MEAN,
  CIFAR_STD,
  drawAugmentParams,
  identityParams,
  IMAGE_BYTES,
  normalizeValue,
} from "../data/augment.ts";
import {
  CIFAR10,
  type Cifar10Data,
  type Cifar10Spec,
  findCifar10,
  loadCifar10,
  md5Hex,
  RECORD_BYTES,
} from "../data/cifar10.ts";
import { CifarLoader, type CifarSplit, makeLoaders, makeSplits } from "../data/loader.ts";
import { syntheticCifar10 } from "../data/synthetic.ts";
import { setup } from "./helpers.ts";
import { cifar, noteCifar } from "./test_data.ts";
import assert from "node:assert/strict";
import { join } from "node:path";

await setup();

noteCifar("data_test");
const realDir = cifar.dir ?? "";
const haveReal = cifar.dir !== null;

let realPromise: Promise<Cifar10Data> | null = null;
function real(): Promise<Cifar10Data> {
  realPromise ??= loadCifar10(realDir, { stampFile: null }); // full MD5 check, no stamp written
  return realPromise;
}

function counts(labels: Uint8Array): number[] {
  const c = new Array(10).fill(0);
  for (const l of labels) c[l]++;
  return c;
}

Deno.test({
  name: "real CIFAR-10: 50,000 + 10,000 verified records, 5,000 / 1,000 per class, first labels",
  ignore: !haveReal,
  async fn() {
    const d = await real();
    assert.equal(d.train.count, 50000);
    assert.equal(d.test.count, 10000);
    assert.equal(d.train.images.length, 50000 * 3072);
    assert.deepEqual(counts(d.train.labels), new Array(10).fill(5000));
    assert.deepEqual(counts(d.test.labels), new Array(10).fill(1000));
    assert.deepEqual([...d.train.labels.subarray(0, 5)], [6, 9, 9, 4, 1]);
    assert.deepEqual([...d.test.labels.subarray(0, 5)], [3, 8, 8, 0, 6]);
    // image 0 of data_batch_1 starts with red 59, 43, 50 (planar layout kept)
    assert.deepEqual([...d.train.images.subarray(0, 3)], [59, 43, 50]);
  },
});

Deno.test({
  name: "findCifar10 takes --data-dir, then CIFAR10_DIR, and says so",
  ignore: !haveReal,
  async fn() {
    const logs: string[] = [];
    const a = await findCifar10({ dataDir: realDir, log: (m) => logs.push(m), mirror: false });
    assert.deepEqual(a, { dir: realDir, source: "data-dir" });
    const prev = Deno.env.get("CIFAR10_DIR");
    Deno.env.set("CIFAR10_DIR", realDir);
    try {
      const b = await findCifar10({ log: (m) => logs.push(m), mirror: false });
      assert.deepEqual(b, { dir: realDir, source: "env" });
    } finally {
      if (prev === undefined) Deno.env.delete("CIFAR10_DIR");
      else Deno.env.set("CIFAR10_DIR", prev);
    }
    assert.match(logs[0], /--data-dir/);
    assert.match(logs[1], /CIFAR10_DIR/);
  },
});

Deno.test({
  name: "the notebook's split: validation [0, 5000), train [5000, 50000), test; limits",
  ignore: !haveReal,
  async fn() {
    const d = await real();
    const s = makeSplits(d);
    assert.equal(s.validation.count, 5000);
    assert.equal(s.train.count, 45000);
    assert.equal(s.test.count, 10000);
    assert.deepEqual([...s.validation.labels.subarray(0, 5)], [6, 9, 9, 4, 1]);
    assert.equal(s.train.labels[0], d.train.labels[5000]);
    assert.deepEqual(s.train.images.subarray(0, 3072), d.train.images.subarray(5000 * 3072, 5001 * 3072));
    const l = makeSplits(d, { trainLimit: 1000, evalLimit: 200 });
    assert.deepEqual([l.train.count, l.validation.count, l.test.count], [1000, 200, 200]);
    assert.equal(l.train.labels[0], d.train.labels[5000]);
    assert.equal(makeSplits(d, { trainLimit: 10 ** 6 }).train.count, 45000);
    assert.throws(() => makeSplits(d, { trainLimit: 0 }), /positive integer/);
  },
});

/** Random images, or real ones when available. */
async function someImages(n: number, seed: number): Promise<Uint8Array> {
  if (haveReal) return (await real()).train.images.slice(seed * IMAGE_BYTES, (seed + n) * IMAGE_BYTES);
  const rng = new Rng(seed);
  return Uint8Array.from({ length: n * IMAGE_BYTES }, () => rng.int(256));
}

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

Deno.test("GPU augmentation equals the CPU reference bit for bit", async () => {
  const n = 37;
  const images = await someImages(n, 123);
  const params = drawAugmentParams(new Rng(7), n);
  // make sure the extremes are covered
  params.offsets.set([0, 0, 8, 8, 0, 8, 8, 0], 0);
  params.flips.set([1, 0, 1, 0], 0);
  const before = poolStats().bytesInUse;
  const x = augmentGpu(images, n, params);
  assert.deepEqual(x.shape, [n, 3, 32, 32]);
  const got = await x.toArray();
  x.dispose();
  assert.equal(poolStats().bytesInUse, before);
  const want = augmentCpu(images, n, params);
  const g = bits(got), w = bits(want);
  for (let i = 0; i < w.length; i++) {
    if (g[i] !== w[i]) assert.fail(`element ${i}: GPU ${got[i]}, CPU ${want[i]}`);
  }
});

Deno.test("normalisation follows ToTensor + Normalize; padded pixels equal -mean/std", async () => {
  for (let c = 0; c < 3; c++) {
    assert.ok(Math.abs(normalizeValue(c, 0) + CIFAR_MEAN[c] / CIFAR_STD[c]) < 1e-6);
    assert.ok(Math.abs(normalizeValue(c, 255) - (1 - CIFAR_MEAN[c]) / CIFAR_STD[c]) < 1e-6);
    assert.ok(Math.abs(normalizeValue(c, 100) - (100 / 255 - CIFAR_MEAN[c]) / CIFAR_STD[c]) < 1e-6);
  }
  const n = 2;
  const images = new Uint8Array(n * IMAGE_BYTES).fill(200); // no zero pixels, so any -mean/std is padding
  const params = { offsets: Uint8Array.from([0, 0, 8, 8]), flips: Uint8Array.from([0, 1]) };
  const x = augmentGpu(images, n, params);
  const v = await x.toArray();
  x.dispose();
  for (let b = 0; b < n; b++) {
    for (let c = 0; c < 3; c++) {
      const pad = -CIFAR_MEAN[c] / CIFAR_STD[c];
      for (let y = 0; y < 32; y++) {
        for (let xx = 0; xx < 32; xx++) {
          // image 0: crop at (0, 0) → rows/cols 0..3 padded; image 1: crop at (8, 8) → rows/cols 28..31
          // padded, then the flip (applied after the crop) moves the padded columns to 0..3
          const padded = b === 0 ? y < 4 || xx < 4 : y >= 28 || xx < 4;
          const got = v[b * IMAGE_BYTES + c * 1024 + y * 32 + xx];
          if (padded) assert.ok(Math.abs(got - pad) < 1e-6, `b${b} c${c} (${y},${xx}) = ${got}, want ${pad}`);
          else assert.equal(got, normalizeValue(c, 200));
        }
      }
    }
  }
});

Deno.test("a flipped image equals the mirrored original; identity params are plain normalisation", async () => {
  const images = await someImages(3, 5);
  const plain = augmentGpu(images, 3, identityParams(3));
  const flipped = augmentGpu(images, 3, {
    offsets: new Uint8Array(6).fill(4),
    flips: new Uint8Array(3).fill(1),
  });
  const p = await plain.toArray(), f = await flipped.toArray();
  plain.dispose();
  flipped.dispose();
  for (let i = 0; i < p.length; i++) {
    const c = Math.floor(i / 1024) % 3;
    assert.equal(p[i], normalizeValue(c, images[i]));
    const xx = i % 32;
    assert.equal(f[i], p[i - xx + (31 - xx)]);
  }
});

/** A synthetic split whose every image holds its index in its first bytes. */
function syntheticSplit(count: number, name: CifarSplit["name"] = "train"): CifarSplit {
  const images = new Uint8Array(count * IMAGE_BYTES);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    images[i * IMAGE_BYTES] = i & 255;
    images[i * IMAGE_BYTES + 1] = i >> 8;
    for (let k = 2; k < IMAGE_BYTES; k++) images[i * IMAGE_BYTES + k] = (i * 31 + k * 7) & 255;
    labels[i] = i % 10;
  }
  return { name, images, labels, count };
}

Deno.test("the loader: every image once per epoch, same seed ⇒ same batches, epochs differ", async () => {
  const split = syntheticSplit(150);
  const opts = { batchSize: 64, shuffle: true, augment: true, seed: 11 };
  const a = new CifarLoader(split, opts);
  assert.equal(a.batchesPerEpoch, 3);
  const before = poolStats().bytesInUse;
  const seen: number[] = [];
  const sizes: number[] = [];
  const xa: Float32Array[] = [];
  for (const batch of a.epoch(0)) {
    sizes.push(batch.size);
    const h = a.hostBatch(0, batch.index);
    for (let k = 0; k < batch.size; k++) {
      seen.push(h.images[k * IMAGE_BYTES] | (h.images[k * IMAGE_BYTES + 1] << 8));
    }
    assert.deepEqual(batch.labels, h.labels);
    assert.deepEqual([...await batch.y.toArray()], [...h.labels]);
    const x = await batch.x.toArray();
    assert.deepEqual(bits(x), bits(augmentCpu(h.images, h.size, h.params)));
    xa.push(x);
    batch.x.dispose();
    batch.y.dispose();
  }
  assert.deepEqual(sizes, [64, 64, 22]); // the last batch is kept, as in the notebook
  assert.deepEqual(seen.slice().sort((p, q) => p - q), Array.from({ length: 150 }, (_, i) => i));
  assert.notDeepEqual(seen, Array.from({ length: 150 }, (_, i) => i)); // shuffled
  let k = 0;
  const b = new CifarLoader(split, { ...opts, prefetch: false });
  for (const batch of b.epoch(0)) { // a second loader with the same seed gives the same batches
    assert.deepEqual(bits(await batch.x.toArray()), bits(xa[k++]));
    batch.x.dispose();
    batch.y.dispose();
  }
  assert.equal(poolStats().bytesInUse, before);
  assert.notDeepEqual(a.order(1), a.order(0));
  assert.deepEqual(b.order(1), a.order(1));
  assert.notDeepEqual(new CifarLoader(split, { ...opts, seed: 12 }).order(0), a.order(0));
  assert.notDeepEqual(a.hostBatch(1, 0).params, a.hostBatch(0, 0).params);
  // resuming mid-epoch rebuilds the same batch from the seed alone
  const resumed = new CifarLoader(split, opts).epoch(0, { startBatch: 2 });
  const r = resumed.next().value!;
  assert.equal(r.index, 2);
  assert.deepEqual(bits(await r.x.toArray()), bits(xa[2]));
  r.x.dispose();
  r.y.dispose();
  resumed.return();
});

Deno.test("the loader without shuffle keeps order; dropLast; breaking out frees the prefetched batch", async () => {
  const split = syntheticSplit(100, "test");
  const l = new CifarLoader(split, { batchSize: 32, dropLast: true });
  assert.equal(l.batchesPerEpoch, 3);
  assert.deepEqual(l.order(3), Uint32Array.from({ length: 100 }, (_, i) => i));
  assert.deepEqual(l.hostBatch(0, 0).params, identityParams(32));
  const before = poolStats().bytesInUse;
  for (const batch of l.epoch(0)) {
    assert.equal(batch.size, 32);
    const x = await batch.x.toArray();
    assert.equal(x[0], normalizeValue(0, 0));
    batch.x.dispose();
    batch.y.dispose();
    break; // the generator's finally disposes batch 1, already built
  }
  assert.equal(poolStats().bytesInUse, before);
});

Deno.test("makeLoaders: train augmented and shuffled, validation plain unless validationAugment", () => {
  const train = syntheticSplit(6000);
  const test = syntheticSplit(300, "test");
  const L = makeLoaders({ train, test }, { trainLimit: 500, evalLimit: 100 });
  assert.deepEqual([L.train.count, L.validation.count, L.test.count], [500, 100, 100]);
  assert.ok(L.train.shuffle && L.train.augment);
  assert.ok(!L.validation.augment && !L.validation.shuffle && !L.test.augment && !L.test.shuffle);
  const N = makeLoaders({ train, test }, { validationAugment: true });
  assert.ok(N.validation.augment && N.validation.shuffle);
  // validation and training draws are independent streams
  assert.notDeepEqual(N.validation.order(0).subarray(0, 100), N.train.order(0).subarray(0, 100));
});

// ---------------------------------------------------------------- bad files

/** A tiny data set (3 records per file) and the spec that accepts it. */
function tinyFiles(): { files: Record<string, Uint8Array>; spec: Cifar10Spec } {
  const rng = new Rng(99);
  const files: Record<string, Uint8Array> = {};
  const mk = (name: string) => {
    const b = Uint8Array.from({ length: 3 * RECORD_BYTES }, () => rng.int(256));
    for (let r = 0; r < 3; r++) b[r * RECORD_BYTES] = rng.int(10);
    files[name] = b;
    return { name, records: 3, md5: md5Hex(b) };
  };
  const spec: Cifar10Spec = {
    ...CIFAR10,
    trainFiles: CIFAR10.trainFiles.map((f) => mk(f.name)),
    testFile: mk(CIFAR10.testFile.name),
  };
  return { files, spec };
}

async function writeAll(dir: string, files: Record<string, Uint8Array>): Promise<void> {
  for (const [n, b] of Object.entries(files)) await Deno.writeFile(join(dir, n), b);
}

Deno.test("missing, truncated or corrupt files: the error names the file, the expectation and the fix", async () => {
  const { files, spec } = tinyFiles();
  const dir = await Deno.makeTempDir({ prefix: "cifar-bad-" });
  try {
    await writeAll(dir, files);
    const ok = await loadCifar10(dir, { spec, stampFile: null });
    assert.equal(ok.train.count, 15);
    assert.deepEqual(ok.test.labels[0], files["test_batch.bin"][0]);

    await Deno.remove(join(dir, "data_batch_3.bin"));
    await assert.rejects(
      () => loadCifar10(dir, { spec, stampFile: null }),
      /data_batch_3\.bin is missing from .*expected .*9219 bytes.*Fix: /s,
    );
    await assert.rejects(
      () => findCifar10({ dataDir: dir, spec, log: () => {}, mirror: false }),
      /data_batch_3\.bin is missing.*Fix: point --data-dir/s,
    );

    await Deno.writeFile(join(dir, "data_batch_3.bin"), files["data_batch_3.bin"].subarray(0, 5000));
    await assert.rejects(
      () => loadCifar10(dir, { spec, stampFile: null }),
      /data_batch_3\.bin is truncated: 5000 bytes, expected 9219 .*Fix: /s,
    );

    const bad = files["data_batch_3.bin"].slice();
    bad[100] ^= 1;
    await Deno.writeFile(join(dir, "data_batch_3.bin"), bad);
    await assert.rejects(
      () => loadCifar10(dir, { spec, stampFile: null, origin: "cache" }),
      new RegExp(
        `data_batch_3\\.bin is corrupt: its MD5 is ${md5Hex(bad)}, expected ${spec.trainFiles[2].md5}.*` +
          `Fix: delete .* and run again to download`,
        "s",
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a verified file is stamped and not hashed again until it changes", async () => {
  const { files, spec } = tinyFiles();
  const dir = await Deno.makeTempDir({ prefix: "cifar-stamp-" });
  try {
    await writeAll(dir, files);
    const stampFile = join(dir, "stamps", "verified.json");
    await loadCifar10(dir, { spec, stampFile });
    const stamps = JSON.parse(await Deno.readTextFile(stampFile));
    assert.equal(Object.keys(stamps).length, 6);
    // proof that a stamped file is not hashed again: damage it behind the stamp's back (same size and mtime)
    const path = join(dir, "test_batch.bin");
    const { mtime } = await Deno.stat(path);
    const bad = files["test_batch.bin"].slice();
    bad[7] ^= 0xff;
    await Deno.writeFile(path, bad);
    await Deno.utime(path, mtime!, mtime!);
    assert.equal((await loadCifar10(dir, { spec, stampFile })).test.images[6], bad[7]);
    // "always" ignores the stamp; a changed mtime invalidates it
    await assert.rejects(
      () => loadCifar10(dir, { spec, stampFile, verify: "always" }),
      /test_batch\.bin is corrupt/,
    );
    await Deno.utime(path, 1, 1);
    await assert.rejects(() => loadCifar10(dir, { spec, stampFile }), /test_batch\.bin is corrupt/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("synthetic CIFAR-10: official shapes, labels 0..9, the same bytes for the same seed", () => {
  const a = syntheticCifar10(3, 200, 50), b = syntheticCifar10(3, 200, 50), c = syntheticCifar10(4, 200, 50);
  assert.equal(a.train.images.length, 200 * 3072);
  assert.equal(a.test.count, 50);
  assert.deepEqual(a.train.images, b.train.images);
  assert.deepEqual(a.test.labels, b.test.labels);
  assert.notDeepEqual(a.train.images, c.train.images);
  assert.ok(a.train.labels.every((l) => l < 10));
  assert.equal(new Set(a.train.labels).size, 10);
  const loaders = makeLoaders(syntheticCifar10(3), { batchSize: 16, seed: 1 });
  assert.deepEqual([loaders.train.count, loaders.validation.count, loaders.test.count], [45000, 5000, 10000]);
});
