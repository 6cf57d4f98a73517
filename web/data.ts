// CIFAR-10 in the page: the server (experiments/demo.ts) serves the official binary files it found
// and verified exactly as `deno task train` does; the page fetches only the files a run needs and
// parses the records (1 label byte + 3072 planar pixel bytes) into a CifarSet, saying how many files are in.

import { CIFAR10, type CifarSet, IMAGE_BYTES, RECORD_BYTES } from "./engine.ts";

type FileSpec = { name: string; records: number };

async function fetchFile(f: FileSpec): Promise<Uint8Array> {
  const r = await fetch(`data/${f.name}`);
  if (!r.ok) {
    throw new Error(
      `CIFAR-10 file ${f.name}: HTTP ${r.status} ${r.statusText} (is \`deno task demo\` serving?)`,
    );
  }
  const bytes = new Uint8Array(await r.arrayBuffer());
  if (bytes.length !== f.records * RECORD_BYTES) {
    throw new Error(`CIFAR-10 file ${f.name}: ${bytes.length} bytes, expected ${f.records * RECORD_BYTES}`);
  }
  return bytes;
}

/** Parses whole files into one set (labels checked to be 0..9). */
function parse(files: Uint8Array[], names: string[]): CifarSet {
  const count = files.reduce((a, b) => a + b.length / RECORD_BYTES, 0);
  const images = new Uint8Array(count * IMAGE_BYTES), labels = new Uint8Array(count);
  let at = 0;
  files.forEach((bytes, k) => {
    for (let r = 0; r < bytes.length / RECORD_BYTES; r++, at++) {
      const label = bytes[r * RECORD_BYTES];
      if (label > 9) throw new Error(`CIFAR-10 file ${names[k]}: record ${r} has label ${label}`);
      labels[at] = label;
      images.set(bytes.subarray(r * RECORD_BYTES + 1, (r + 1) * RECORD_BYTES), at * IMAGE_BYTES);
    }
  });
  return { images, labels, count };
}

const cache = new Map<string, Promise<Uint8Array>>();

/**
 * The training files holding validation [0, 5000) and the first `trainImages` training images
 * (0 = all), and the test file; each file is fetched once per page.
 */
export async function loadData(
  trainImages: number,
  progress: (file: string, done: number, total: number) => void = () => {},
): Promise<{ train: CifarSet; test: CifarSet }> {
  const all = CIFAR10.trainFiles;
  const total = all.reduce((a, f) => a + f.records, 0);
  const need = trainImages > 0 ? Math.min(total, 5000 + trainImages) : total;
  const files: FileSpec[] = [];
  for (let have = 0; have < need; have += all[files.length].records) files.push(all[files.length]);
  const wanted = [CIFAR10.testFile, ...files];
  let done = 0;
  progress(wanted[0].name, 0, wanted.length);
  const get = async (f: FileSpec) => {
    if (!cache.has(f.name)) {
      const p = fetchFile(f);
      p.catch(() => cache.delete(f.name));
      cache.set(f.name, p);
    }
    const bytes = await cache.get(f.name)!;
    progress(f.name, ++done, wanted.length);
    return bytes;
  };
  const [test, ...train] = await Promise.all(wanted.map(get));
  return { train: parse(train, files.map((f) => f.name)), test: parse([test], [CIFAR10.testFile.name]) };
}
