// Small helpers to generate shape-specialised WGSL.

/** A WGSL f32 literal for a finite JS number. */
export function f32(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`Cannot write ${x} as a WGSL literal`);
  if (Number.isInteger(x) && Math.abs(x) < 1e15) return `${x}.0`;
  return `${x.toExponential()}`;
}

/** Row-major strides of `shape`. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/**
 * The declaration of a kernel's run-time parameters (runtime.ts `params`, u32s in this order) as the
 * uniform `P` at `binding`: read them as `P.<name>`.
 */
export function paramsDecl(binding: number, names: readonly string[]): string {
  return `struct Params { ${names.map((n) => `${n}: u32,`).join(" ")} }
@group(0) @binding(${binding}) var<uniform> P: Params;`;
}

/** `var<storage, read>` declarations for bindings 0..n-1 named by `names`, then the writable ones. */
export function storageDecls(readNames: string[], writeNames: string[], type = "array<f32>"): string {
  const lines: string[] = [];
  readNames.forEach((n, i) => lines.push(`@group(0) @binding(${i}) var<storage, read> ${n}: ${type};`));
  writeNames.forEach((n, i) =>
    lines.push(`@group(0) @binding(${readNames.length + i}) var<storage, read_write> ${n}: ${type};`)
  );
  return lines.join("\n");
}

/**
 * `a / n` and `a % n` over u32 with n a literal, folded when n = 1: Chromium's SwiftShader (Dawn)
 * never finishes compiling a loop that divides by a literal 1 (wgpu on lavapipe does).
 */
export const divU = (a: string, n: number): string => n === 1 ? a : `(${a} / ${n}u)`;
export const modU = (a: string, n: number): string => n === 1 ? "0u" : `(${a} % ${n}u)`;

/**
 * WGSL expression for the flat index into a tensor of shape `inShape` broadcast (numpy rules) to
 * `outShape`, given the flat output index expression `i`.
 */
export function broadcastIndex(outShape: readonly number[], inShape: readonly number[], i: string): string {
  const n = outShape.length;
  const padded = [...new Array(n - inShape.length).fill(1), ...inShape];
  if (padded.every((d, k) => d === outShape[k])) return i;
  if (padded.every((d) => d === 1)) return "0u";
  const outStrides = stridesOf(outShape);
  const inStrides = stridesOf(padded);
  const terms: string[] = [];
  for (let k = 0; k < n; k++) {
    if (padded[k] === 1 || outShape[k] === 1) continue;
    const coord = k === 0 ? divU(i, outStrides[k]) : modU(divU(i, outStrides[k]), outShape[k]);
    terms.push(inStrides[k] === 1 ? coord : `${coord} * ${inStrides[k]}u`);
  }
  return terms.join(" + ");
}

/** Numpy broadcast of two shapes, or an error naming `op`. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const da = a[a.length - n + k] ?? 1;
    const db = b[b.length - n + k] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`${op}: shapes [${a.join(", ")}] and [${b.join(", ")}] cannot be broadcast`);
    }
    out.push(da === 1 ? db : da);
  }
  return out;
}
