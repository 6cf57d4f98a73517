// Module: the base of every layer and model. A module owns named parameters (trainable tensors),
// named buffers (state that is saved but not trained, e.g. BatchNorm's running statistics) and named
// child modules; the dotted names of `stateDict()` are PyTorch's (`encoder.stem.0.weight`).
//
// Parameters and buffers live outside every `scope()` (they are `keep`-ed when created), so a training
// step wrapped in a scope frees its activations but never the model.
//
// Modules can also be built "on meta" (`onMeta(() => buildModel(...))`, like PyTorch's meta device):
// only the shapes exist, no GPU memory is touched, and no random numbers are drawn. Counting
// parameters and FLOPs (`numParameters()`, `summary()`) works on meta modules; forward does not.

import { Rng } from "../autograd/random.ts";
import { keep, numel, type Tensor, tensor } from "../autograd/tensor.ts";
import { currentEncoder, flush, gpu, upload } from "../kernels/runtime.ts";

/** A state dict: PyTorch dotted name → values (row-major, PyTorch's layout). */
export type StateDict = Record<string, Float32Array>;

/** Element type of a state entry as PyTorch stores it. */
export type StateDType = "F32" | "I64";

/** Shape and type of one state-dict entry. */
export interface StateSpec {
  shape: number[];
  dtype: StateDType;
  kind: "parameter" | "buffer";
}

/** One row of `Module.summary()`: a leaf layer, its output shape, parameters and forward FLOPs. */
export interface LayerInfo {
  name: string;
  type: string;
  inShape: number[];
  outShape: number[];
  params: number;
  /** 2 × multiply-adds (convolutions and linear layers; 0 for everything else). */
  flops: number;
}

// ---------------------------------------------------------------- meta mode and the default generator

let metaDepth = 0;

/** Builds modules inside `fn` with shapes only: no GPU tensors, no random draws. */
export function onMeta<T>(fn: () => T): T {
  metaDepth++;
  try {
    return fn();
  } finally {
    metaDepth--;
  }
}

/** Whether modules built now are meta modules. */
export function isMeta(): boolean {
  return metaDepth > 0;
}

let globalRng = new Rng(0);

/** The generator layers draw their initial values from when none is given (seed it with `manualSeed`). */
export function defaultRng(): Rng {
  return globalRng;
}

/** Re-seeds the default initialisation generator (like `torch.manual_seed`). */
export function manualSeed(seed: number): void {
  globalRng = new Rng(seed);
}

// ---------------------------------------------------------------- Module

interface TensorSlot {
  shape: number[];
  tensor: Tensor | null;
}

interface CounterSlot {
  get(): number;
  set(v: number): void;
}

type BufferSlot = (TensorSlot & { counter?: undefined }) | { shape: number[]; counter: CounterSlot };

export abstract class Module {
  /** Training mode (batch statistics, stochastic depth active); `eval()` clears it. */
  training = true;
  readonly #params = new Map<string, TensorSlot>();
  readonly #buffers = new Map<string, BufferSlot>();
  readonly #children = new Map<string, Module>();
  /** Whether this module was built on meta (shapes only). */
  readonly meta: boolean = isMeta();

  /** The module's computation. */
  abstract forward(x: Tensor): Tensor;

  /** The class name shown in summaries. */
  get typeName(): string {
    return this.constructor.name;
  }

  // ------------------------------------------------------------ registration (for subclasses)

  /** Registers a trainable parameter initialised by `init` (not called on meta). */
  protected addParameter(name: string, shape: number[], init: () => Float32Array): void {
    this.#checkFree(name);
    this.#params.set(name, {
      shape: [...shape],
      tensor: this.meta ? null : this.#create(shape, init(), true),
    });
  }

  /** Registers a GPU buffer (saved in the state dict, not trained). */
  protected addBuffer(name: string, shape: number[], init: () => Float32Array): void {
    this.#checkFree(name);
    this.#buffers.set(name, {
      shape: [...shape],
      tensor: this.meta ? null : this.#create(shape, init(), false),
    });
  }

  /**
   * Registers a host-side integer counter exported as a 0-dim state entry (PyTorch's
   * `num_batches_tracked`, an int64 scalar; our state dict carries it as one f32 value).
   */
  protected addCounter(name: string, counter: CounterSlot): void {
    this.#checkFree(name);
    this.#buffers.set(name, { shape: [], counter });
  }

  /** Registers a child module under `name` and returns it. */
  protected addModule<M extends Module>(name: string, m: M): M {
    this.#checkFree(name);
    this.#children.set(name, m);
    return m;
  }

  /** The parameter `name` of this module. */
  protected param(name: string): Tensor {
    const slot = this.#params.get(name);
    if (!slot) throw new Error(`${this.typeName} has no parameter "${name}"`);
    return this.#live(name, slot);
  }

  /** The GPU buffer `name` of this module. */
  protected buffer(name: string): Tensor {
    const slot = this.#buffers.get(name);
    if (!slot || slot.counter) throw new Error(`${this.typeName} has no buffer "${name}"`);
    return this.#live(name, slot);
  }

  #live(name: string, slot: TensorSlot): Tensor {
    if (!slot.tensor) {
      throw new Error(`${this.typeName}.${name} has no values: the module was built on meta (shapes only)`);
    }
    return slot.tensor;
  }

  #create(shape: number[], values: Float32Array, requiresGrad: boolean): Tensor {
    if (values.length !== numel(shape)) {
      throw new Error(`${this.typeName}: ${values.length} initial values for shape [${shape.join(", ")}]`);
    }
    return keep(tensor(values, shape, { requiresGrad }));
  }

  #checkFree(name: string): void {
    if (this.#params.has(name) || this.#buffers.has(name) || this.#children.has(name)) {
      throw new Error(`${this.typeName}: "${name}" is already registered`);
    }
  }

  // ------------------------------------------------------------ traversal

  /** Direct children with their names. */
  namedChildren(): [string, Module][] {
    return [...this.#children];
  }

  /** This module and every descendant, with dotted names ("" for this one), in registration order. */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [n, m] of this.#children) out.push(...m.namedModules(join(prefix, n)));
    return out;
  }

  /** Every parameter with its dotted name, in PyTorch's order. Also sets each tensor's `name`. */
  namedParameters(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [n, slot] of m.#params) {
        const t = m.#live(n, slot);
        t.name = join(prefix, n);
        out.push([t.name, t]);
      }
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** GPU buffers with their dotted names (host counters are not included). */
  namedBuffers(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [n, slot] of m.#buffers) if (!slot.counter) out.push([join(prefix, n), m.#live(n, slot)]);
    }
    return out;
  }

  /** Number of trainable values (works on meta modules). */
  numParameters(): number {
    let n = 0;
    for (const [, m] of this.namedModules()) for (const slot of m.#params.values()) n += numel(slot.shape);
    return n;
  }

  /** Number of trainable values owned by this module itself (not its children). */
  ownParameters(): number {
    let n = 0;
    for (const slot of this.#params.values()) n += numel(slot.shape);
    return n;
  }

  // ------------------------------------------------------------ modes

  /** Sets training mode on this module and every descendant. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  // ------------------------------------------------------------ state dict

  /**
   * Names, shapes and types of the state dict, in PyTorch's order (per module: parameters, then
   * buffers, then children). `num_batches_tracked` is I64 with shape [] as in PyTorch.
   */
  stateSpec(): Record<string, StateSpec> {
    const out: Record<string, StateSpec> = {};
    for (const [prefix, m] of this.namedModules()) {
      for (const [n, s] of m.#params) {
        out[join(prefix, n)] = { shape: [...s.shape], dtype: "F32", kind: "parameter" };
      }
      for (const [n, s] of m.#buffers) {
        out[join(prefix, n)] = { shape: [...s.shape], dtype: s.counter ? "I64" : "F32", kind: "buffer" };
      }
    }
    return out;
  }

  /**
   * Reads every parameter and buffer back (one GPU round trip for all of them). Counters such as
   * `num_batches_tracked` come back as a one-element array holding the count.
   */
  async stateDict(): Promise<StateDict> {
    const names: string[] = [];
    const tensors: Tensor[] = [];
    const out: StateDict = {};
    for (const [prefix, m] of this.namedModules()) {
      for (const [n, s] of m.#params) {
        names.push(join(prefix, n));
        tensors.push(m.#live(n, s));
      }
      for (const [n, s] of m.#buffers) {
        const name = join(prefix, n);
        if (s.counter) out[name] = Float32Array.of(s.counter.get());
        else {
          names.push(name);
          tensors.push(m.#live(n, s));
        }
      }
    }
    const values = await readMany(tensors);
    names.forEach((n, i) => (out[n] = values[i]));
    // PyTorch's order
    const ordered: StateDict = {};
    for (const n of Object.keys(this.stateSpec())) ordered[n] = out[n];
    return ordered;
  }

  /**
   * Copies `state` into the parameters and buffers. Every entry must be present with the right
   * number of values; with `strict` (the default) no other entry may be present. Errors name the
   * first offending tensor.
   */
  loadStateDict(state: StateDict, { strict = true }: { strict?: boolean } = {}): void {
    const spec = this.stateSpec();
    for (const [name, s] of Object.entries(spec)) {
      const v = state[name];
      if (!v) {
        if (strict) {
          throw new Error(`loadStateDict: missing tensor "${name}" (shape [${s.shape.join(", ")}])`);
        }
        continue;
      }
      if (v.length !== numel(s.shape)) {
        throw new Error(
          `loadStateDict: tensor "${name}" has ${v.length} values, the model expects shape [${
            s.shape.join(", ")
          }] (${numel(s.shape)} values)`,
        );
      }
    }
    if (strict) {
      const extra = Object.keys(state).find((n) => !(n in spec));
      if (extra) throw new Error(`loadStateDict: unexpected tensor "${extra}" (not in this model)`);
    }
    for (const [prefix, m] of this.namedModules()) {
      const load = (n: string, slot: BufferSlot | TensorSlot) => {
        const v = state[join(prefix, n)];
        if (!v) return;
        if ("counter" in slot && slot.counter) slot.counter.set(Math.round(v[0]));
        else {
          const t = m.#live(n, slot as TensorSlot);
          if (t.size > 0) upload(t.storage.buffer, v, t.storage.offset);
        }
      };
      for (const [n, s] of m.#params) load(n, s);
      for (const [n, s] of m.#buffers) load(n, s);
    }
  }

  /** Frees every parameter and buffer of this module and its descendants. */
  dispose(): void {
    for (const [, m] of this.namedModules()) {
      for (const s of m.#params.values()) s.tensor?.dispose();
      for (const s of m.#buffers.values()) if (!s.counter) s.tensor?.dispose();
    }
  }

  // ------------------------------------------------------------ shapes and FLOPs

  /**
   * Output shape of this module for an input of `inShape` and its FLOPs; leaves override it.
   * Containers override `trace` instead.
   */
  protected shapeOf(_inShape: number[]): { outShape: number[]; flops: number } {
    throw new Error(`${this.typeName} does not describe its output shape`);
  }

  /** Appends one row per leaf module to `rows` and returns the output shape. */
  trace(inShape: number[], rows: LayerInfo[], name = ""): number[] {
    const { outShape, flops } = this.shapeOf(inShape);
    rows.push({ name, type: this.typeName, inShape, outShape, params: this.ownParameters(), flops });
    return outShape;
  }

  /** Per-layer table for one input of `inShape` (default one 3×32×32 image). */
  summary(inShape: number[] = [1, 3, 32, 32]): LayerInfo[] {
    const rows: LayerInfo[] = [];
    this.trace(inShape, rows);
    return rows;
  }

  /** Forward FLOPs (2 × multiply-adds of conv and linear layers) for one input of `inShape`. */
  flops(inShape: number[] = [1, 3, 32, 32]): number {
    return this.summary(inShape).reduce((a, r) => a + r.flops, 0);
  }
}

/** Dotted name of `name` under `prefix`. */
export function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

/** Reads several tensors back with one copy pass and one wait. */
export async function readMany(tensors: Tensor[]): Promise<Float32Array[]> {
  const offsets: number[] = [];
  let total = 0;
  for (const t of tensors) {
    offsets.push(total);
    total += t.size * 4;
  }
  if (total === 0) return tensors.map(() => new Float32Array(0));
  const { device } = gpu();
  const staging = device.createBuffer({
    size: total,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = currentEncoder();
  tensors.forEach((t, i) => {
    if (t.size > 0) {
      enc.copyBufferToBuffer(t.storage.buffer, t.storage.offset, staging, offsets[i], t.size * 4);
    }
  });
  flush();
  await staging.mapAsync(GPUMapMode.READ);
  const all = new Float32Array(staging.getMappedRange().slice(0));
  staging.unmap();
  staging.destroy();
  return tensors.map((t, i) => all.slice(offsets[i] / 4, offsets[i] / 4 + t.size));
}
