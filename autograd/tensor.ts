// Tensor: a shape over f32 GPU storage, plus the tape that makes it differentiable.
// Each differentiable op calls `record()` with its inputs and a backward rule; `backward()` walks the
// recorded graph in reverse topological order, accumulates `.grad` on leaves and frees everything
// the graph held. `scope()` disposes every tensor created inside it except what it returns.
//
// Meta tensors have a shape and no data: their storage is the dry run's placeholder buffer. Every tensor
// an op creates inside `dryRun(fn)` is one, and `meta(shape)` makes one anywhere. Ops accept them inside
// a dry run (shape checks and the tape work as usual, the GPU commands are dropped), so a model's
// forward and backward run on shapes alone; reading their values throws, and so does using them in ops
// outside a dry run.

import { accumulate, elementwise } from "../kernels/elementwise.ts";
import {
  acquireBuffer,
  type Binding,
  copy,
  dryRun,
  isDryRun,
  readback,
  releaseBuffer,
  upload,
} from "../kernels/runtime.ts";
import type { Rng } from "./random.ts";

/** Reference-counted GPU storage shared by a tensor and its views. */
export class Storage {
  refs = 1;
  constructor(
    readonly buffer: GPUBuffer,
    /** Byte offset of element 0 (non-zero for slices of an arena). */
    readonly offset: number,
    /** Bytes available from `offset`. */
    readonly bytes: number,
    /** Pooled storage goes back to the pool when the last reference is dropped. */
    readonly pooled: boolean,
    /** Shape-only storage (a dry run's placeholder buffer): it holds no values. */
    readonly meta = false,
  ) {}
}

/** A backward rule: upstream gradient in, one gradient (or null) per input out. */
export type BackwardFn = (grad: Tensor) => (Tensor | null)[];

interface Node {
  inputs: Tensor[];
  backward: BackwardFn;
  /** Tensors only this op's backward needs (e.g. saved statistics); disposed with the node. */
  saved: Tensor[];
  /** The module that recorded the op (see `currentModule`), current again while its backward runs. */
  module: string;
}

export class Tensor {
  readonly shape: readonly number[];
  readonly size: number;
  requiresGrad: boolean;
  grad: Tensor | null = null;
  /**
   * Whether `.grad` holds the zeros of an optimizer's zeroGrad and nothing since: then the one
   * contribution of a backward pass may be written into it instead of added (see `gradOutput`).
   */
  gradZeroed = false;
  /** Set on tensors produced by a recorded op. */
  node: Node | null = null;
  /** Optional name (parameters), used in error messages. */
  name = "";
  private _storage: Storage | null;

  constructor(shape: readonly number[], storage: Storage, requiresGrad = false) {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new Error(`Invalid tensor shape [${shape.join(", ")}]`);
    }
    this.shape = [...shape];
    this.size = numel(shape);
    if (this.size * 4 > storage.bytes) {
      throw new Error(`Storage of ${storage.bytes} bytes cannot hold shape [${shape.join(", ")}]`);
    }
    this._storage = storage;
    this.requiresGrad = requiresGrad;
    track(this);
  }

  get disposed(): boolean {
    return this._storage === null;
  }

  get storage(): Storage {
    if (!this._storage) {
      throw new Error(`Tensor ${this.describe()} was used after dispose()`);
    }
    return this._storage;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** Whether this is a meta tensor (a shape without values; see the file's header). */
  get isMeta(): boolean {
    return this.storage.meta;
  }

  /** The buffer binding of this tensor's elements (a meta tensor's only inside a dry run). */
  binding(): Binding {
    const s = this.storage;
    if (s.meta && !isDryRun()) {
      throw new Error(
        `Tensor ${this.describe()} is a meta tensor (shape only): ops take it only inside dryRun(...)`,
      );
    }
    return { buffer: s.buffer, offset: s.offset, size: Math.max(4, this.size * 4) };
  }

  describe(): string {
    return `${this.name ? this.name + " " : ""}[${this.shape.join(", ")}]`;
  }

  /** Reads the values back (waits for the GPU). */
  async toArray(): Promise<Float32Array> {
    const s = this.storage;
    if (s.meta) throw new Error(metaValuesError(this));
    if (this.size === 0) return new Float32Array(0);
    return new Float32Array(await readback(s.buffer, s.offset, this.size * 4));
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item() needs a one-element tensor, got ${this.describe()}`);
    return (await this.toArray())[0];
  }

  /** Returns the storage to the pool (idempotent). Views keep shared storage alive. */
  dispose(): void {
    const s = this._storage;
    if (!s) return;
    this._storage = null;
    releaseNode(this);
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
    untrack(this);
    if (--s.refs === 0 && s.pooled) releaseBuffer(s.buffer);
  }

  /**
   * Re-points this tensor at `storage` (e.g. a slice of an optimizer's flat arena) and drops its
   * reference to the old storage. The caller copies the values first; views made earlier keep the
   * old storage.
   */
  setStorage(storage: Storage): void {
    if (this.size * 4 > storage.bytes) {
      throw new Error(`Storage of ${storage.bytes} bytes cannot hold ${this.describe()}`);
    }
    const old = this.storage;
    this._storage = storage;
    if (--old.refs === 0 && old.pooled) releaseBuffer(old.buffer);
  }

  /** Back-propagates from this tensor (a scalar, or pass the upstream gradient). */
  backward(grad?: Tensor): void {
    backward(this, grad);
  }
}

/** The error for reading the values of a meta tensor. */
export function metaValuesError(t: Tensor): string {
  return `Tensor ${t.describe()} is a meta tensor (shape only): it has no values to read`;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

// ---------------------------------------------------------------- creation

/** A tensor of ones written by a kernel (no upload, so recording a step submits nothing). */
function onesByKernel(shape: readonly number[]): Tensor {
  const t = empty(shape);
  elementwise("fill", "1.0", [], t.binding(), shape);
  return t;
}

/** A tensor with fresh pooled storage (content undefined until a kernel writes it); meta in a dry run. */
export function empty(shape: readonly number[], requiresGrad = false): Tensor {
  const bytes = Math.max(4, numel(shape) * 4);
  return new Tensor(shape, new Storage(acquireBuffer(bytes), 0, bytes, true, isDryRun()), requiresGrad);
}

/** A meta tensor: `shape` without values or GPU memory, for forward and backward inside `dryRun`. */
export function meta(shape: readonly number[], requiresGrad = false): Tensor {
  return dryRun(() => empty(shape, requiresGrad));
}

/** A view of `t`'s storage with another shape of the same size (no copy). */
export function view(t: Tensor, shape: readonly number[]): Tensor {
  if (numel(shape) !== t.size) {
    throw new Error(`Cannot view ${t.describe()} as [${shape.join(", ")}]: sizes differ`);
  }
  const s = t.storage;
  s.refs++;
  return new Tensor(shape, s);
}

export interface TensorOptions {
  requiresGrad?: boolean;
}

/** A tensor from host data (`Float32Array` or numbers), with `shape` defaulting to 1-D. */
export function tensor(
  data: Float32Array | ArrayLike<number>,
  shape?: readonly number[],
  opts: TensorOptions = {},
): Tensor {
  const arr = data instanceof Float32Array ? data : Float32Array.from(data);
  const sh = shape ?? [arr.length];
  if (numel(sh) !== arr.length) {
    throw new Error(`tensor(): ${arr.length} values cannot fill shape [${sh.join(", ")}]`);
  }
  const t = empty(sh, opts.requiresGrad ?? false);
  if (arr.length > 0) upload(t.storage.buffer, arr, t.storage.offset);
  return t;
}

export function full(shape: readonly number[], value: number, opts: TensorOptions = {}): Tensor {
  return tensor(new Float32Array(numel(shape)).fill(value), shape, opts);
}

export function zeros(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  return full(shape, 0, opts);
}

export function ones(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  return full(shape, 1, opts);
}

/** Normal(mean, std) values from a seeded generator. */
export function randn(
  shape: readonly number[],
  rng: Rng,
  opts: TensorOptions & { mean?: number; std?: number } = {},
): Tensor {
  const a = new Float32Array(numel(shape));
  const { mean = 0, std = 1 } = opts;
  for (let i = 0; i < a.length; i++) a[i] = mean + std * rng.normal();
  return tensor(a, shape, opts);
}

/** Uniform [low, high) values from a seeded generator. */
export function rand(
  shape: readonly number[],
  rng: Rng,
  opts: TensorOptions & { low?: number; high?: number } = {},
): Tensor {
  const a = new Float32Array(numel(shape));
  const { low = 0, high = 1 } = opts;
  for (let i = 0; i < a.length; i++) a[i] = low + (high - low) * rng.uniform();
  return tensor(a, shape, opts);
}

/** A copy of `t` in fresh storage (not recorded on the tape). */
export function clone(t: Tensor): Tensor {
  t.binding(); // refuses a meta tensor outside a dry run
  const out = empty(t.shape);
  const s = t.storage;
  if (t.size > 0) copy(s.buffer, s.offset, out.storage.buffer, out.storage.offset, t.size * 4);
  return out;
}

// ---------------------------------------------------------------- scopes

const scopes: Set<Tensor>[] = [];

function track(t: Tensor): void {
  if (scopes.length) scopes[scopes.length - 1].add(t);
}

function untrack(t: Tensor): void {
  for (const s of scopes) s.delete(t);
}

/** Exempts tensors from disposal by the enclosing scopes (e.g. parameters, optimizer state). */
export function keep<T extends Tensor>(t: T): T {
  untrack(t);
  return t;
}

/**
 * Runs `fn` and disposes every tensor it created, except tensors in its result (a tensor, or an
 * array or object of them), which move to the enclosing scope. `fn` must be synchronous.
 */
export function scope<T>(fn: () => T): T {
  const created = new Set<Tensor>();
  scopes.push(created);
  let result: T;
  try {
    result = fn();
    if (result instanceof Promise) throw new Error("scope(fn): fn must be synchronous");
  } finally {
    scopes.pop();
  }
  const survivors = new Set<Tensor>();
  collectTensors(result, survivors);
  for (const t of created) {
    if (survivors.has(t)) track(t);
    else t.dispose();
  }
  return result;
}

function collectTensors(v: unknown, out: Set<Tensor>): void {
  if (v instanceof Tensor) out.add(v);
  else if (Array.isArray(v)) v.forEach((x) => collectTensors(x, out));
  else if (v && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    Object.values(v).forEach((x) => collectTensors(x, out));
  }
}

// ---------------------------------------------------------------- tape

let gradEnabled = true;

/** Runs `fn` without recording anything on the tape. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

// ---------------------------------------------------------------- which module is running

// The dotted name of the module whose forward is running, so that code below the modules (a kernel
// planner's listing, a profiler) can say which layer an op belongs to. `traceModules` in nn/module.ts
// sets it around each module's forward; each recorded op keeps it, and `backward()` makes it current
// again while that op's backward rule runs. Gradients summed into leaves' `.grad` run under the name
// that was current when `backward()` was called.

let moduleName = "";

/**
 * The dotted PyTorch name of the innermost module running now (e.g. "encoder.stages.1.0.block.2"),
 * during backward that of the module whose forward recorded the op being differentiated; "" outside
 * a traced forward (and for the whole model: its name is "").
 */
export function currentModule(): string {
  return moduleName;
}

/** Runs `fn` with `name` as `currentModule()` (restored afterwards, also when `fn` throws). */
export function withModule<T>(name: string, fn: () => T): T {
  const prev = moduleName;
  moduleName = name;
  try {
    return fn();
  } finally {
    moduleName = prev;
  }
}

/** Records `out = op(inputs)` with its backward rule when any input needs a gradient. */
export function record(out: Tensor, inputs: Tensor[], backward: BackwardFn, saved: Tensor[] = []): Tensor {
  if (gradEnabled && inputs.some((t) => t.requiresGrad)) {
    out.requiresGrad = true;
    out.node = { inputs, backward, saved, module: moduleName };
  } else {
    for (const s of saved) s.dispose();
  }
  return out;
}

function releaseNode(t: Tensor): void {
  const n = t.node;
  if (!n) return;
  t.node = null;
  for (const s of n.saved) s.dispose();
}

/** dst += src for gradients of the same shape: one in-place elementwise kernel, recorded on no tape. */
function accumulateInto(dst: Tensor, src: Tensor): void {
  accumulate("grad_accumulate", dst.binding(), { binding: src.binding(), shape: src.shape }, dst.shape);
}

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // iterative DFS: deep models would overflow a recursive one
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.node?.inputs ?? [];
    if (i < inputs.length) {
      top[1]++;
      const c = inputs[i];
      if (c.requiresGrad && !seen.has(c)) {
        seen.add(c);
        stack.push([c, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order.reverse();
}

/** Leaf parameters whose one gradient contribution of this backward pass may be written into `.grad`. */
let directGrads: Set<Tensor> | null = null;

/**
 * The tensor a backward rule writes the gradient of parameter `p` into: `p.grad` itself where `p` gets
 * exactly one contribution in this backward pass and its `.grad` holds zeroGrad's zeros (the optimizer's
 * arena view), so no kernel adds it there afterwards; else a fresh tensor. The rule must overwrite every
 * element.
 */
export function gradOutput(p: Tensor): Tensor {
  if (p.grad && directGrads?.delete(p)) {
    p.gradZeroed = false;
    return p.grad;
  }
  return empty(p.shape);
}

/** The leaves of `order` whose `.grad` holds zeroGrad's zeros and that have exactly one consumer. */
function singleUseLeaves(order: Tensor[]): Set<Tensor> {
  const count = new Map<Tensor, number>();
  for (const t of order) {
    for (const inp of t.node?.inputs ?? []) {
      if (!inp.node && inp.requiresGrad && inp.grad && inp.gradZeroed) {
        count.set(inp, (count.get(inp) ?? 0) + 1);
      }
    }
  }
  return new Set([...count].filter(([, n]) => n === 1).map(([t]) => t));
}

/** Reverse-mode differentiation from `root`; see `Tensor.backward`. */
export function backward(root: Tensor, grad?: Tensor): void {
  if (!root.requiresGrad) throw new Error(`backward(): ${root.describe()} does not require grad`);
  if (!grad && root.size !== 1) {
    throw new Error(`backward(): ${root.describe()} is not a scalar; pass the upstream gradient`);
  }
  if (grad && !sameShape(grad.shape, root.shape)) {
    throw new Error(`backward(): gradient [${grad.shape}] does not match ${root.describe()}`);
  }
  const order = topoOrder(root);
  const grads = new Map<Tensor, Tensor>();
  const uses = new Map<Tensor, number>(); // how many map entries hold each gradient tensor
  const own = (g: Tensor) => uses.set(g, (uses.get(g) ?? 0) + 1);
  const drop = (g: Tensor) => {
    const n = (uses.get(g) ?? 1) - 1;
    if (n > 0) uses.set(g, n);
    else {
      uses.delete(g);
      if (g !== grad) g.dispose();
    }
  };
  const seed = grad ?? onesByKernel(root.shape);
  grads.set(root, seed);
  own(seed);
  const outer = directGrads;
  directGrads = singleUseLeaves(order);
  try {
    noGrad(() => {
      for (const t of order) {
        const g = grads.get(t);
        if (!g) {
          releaseNode(t);
          continue;
        }
        grads.delete(t);
        if (t.node) {
          const inGrads = withModule(t.node.module, () => t.node!.backward(g));
          t.node.inputs.forEach((inp, i) => {
            const gi = inGrads[i];
            if (!gi || !inp.requiresGrad) {
              if (gi && gi !== g && !uses.has(gi)) gi.dispose();
              return;
            }
            if (!sameShape(gi.shape, inp.shape)) {
              throw new Error(`backward of ${inp.describe()}: gradient has shape [${gi.shape.join(", ")}]`);
            }
            const prev = grads.get(inp);
            if (prev && prev !== g && prev !== grad && uses.get(prev) === 1 && prev.storage.refs === 1) {
              // the tape's own tensor, seen by nothing else: add in place
              accumulateInto(prev, gi);
              if (!uses.has(gi) && gi !== g) gi.dispose();
            } else if (prev) {
              const sum = clone(prev);
              accumulateInto(sum, gi);
              drop(prev);
              if (!uses.has(gi) && gi !== g) gi.dispose();
              grads.set(inp, sum);
              own(sum);
            } else {
              grads.set(inp, gi);
              own(gi);
            }
          });
          releaseNode(t);
        } else if (g === t.grad) {
          continue; // written into .grad by the rule (gradOutput); .grad is not the tape's to free
        } else {
          // a leaf: accumulate into .grad (which persists, outside any scope)
          if (t.grad) accumulateInto(t.grad, g);
          else t.grad = keep(clone(g));
          t.gradZeroed = false;
        }
        drop(g);
      }
    });
  } finally {
    directGrads = outer;
  }
}
