// Module: the base of every layer and model. A module owns named parameters (trainable tensors),
// named buffers (state that is saved but not trained, e.g. BatchNorm's running statistics) and named
// child modules; the dotted names of `stateDict()` are PyTorch's (`encoder.stem.0.weight`).
//
// Parameters and buffers live outside every `scope()` (they are `keep`-ed when created), so a training
// step wrapped in a scope frees its activations but never the model.
//
// Modules can also be built "on meta" (`onMeta(() => buildModel(...))`, like PyTorch's meta device):
// their parameters and buffers are meta tensors (shapes only, autograd/tensor.ts), no GPU memory is
// touched and no random numbers are drawn. Inside `dryRun(...)` their forward and backward run as on
// the GPU, minus the GPU. `summary()` (the per-layer table of `deno task info` and the benchmarks'
// layer cases) runs the model's own forward that way, with `traceModules` noting each leaf's shapes.

import { Rng } from "../autograd/random.ts";
import {
  keep,
  meta,
  metaValuesError,
  noGrad,
  numel,
  scope,
  type Tensor,
  tensor,
  withModule,
} from "../autograd/tensor.ts";
import { currentEncoder, dryRun, flush, gpu, isDryRun, upload } from "../kernels/runtime.ts";

export { currentModule } from "../autograd/tensor.ts";

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

// ---------------------------------------------------------------- leaf walks

let leafWalks = 0;

/**
 * Whether a `summary()` is walking the model leaf by leaf: a module that runs its children's work in
 * one fused op calls the children instead, so each leaf's shapes and FLOPs are seen.
 */
export function isLeafWalk(): boolean {
  return leafWalks > 0;
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
  /** A meta tensor on meta modules. */
  tensor: Tensor;
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
    this.#params.set(name, { shape: [...shape], tensor: this.#create(shape, init, true) });
  }

  /** Registers a GPU buffer (saved in the state dict, not trained). */
  protected addBuffer(name: string, shape: number[], init: () => Float32Array): void {
    this.#checkFree(name);
    this.#buffers.set(name, { shape: [...shape], tensor: this.#create(shape, init, false) });
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

  /** A slot's tensor for computing: a meta module's only inside a dry run. */
  #live(name: string, slot: TensorSlot): Tensor {
    if (this.meta && !isDryRun()) {
      throw new Error(
        `${this.typeName}.${name} has no values: the module was built on meta (shapes only); ` +
          "run its forward inside dryRun(...)",
      );
    }
    return slot.tensor;
  }

  #create(shape: number[], init: () => Float32Array, requiresGrad: boolean): Tensor {
    if (this.meta) return keep(meta(shape, requiresGrad));
    const values = init();
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

  /**
   * Every parameter with its dotted name, in PyTorch's order (meta tensors on a meta module). Also sets
   * each tensor's `name`.
   */
  namedParameters(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [n, slot] of m.#params) {
        const t = slot.tensor;
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
      for (const [n, slot] of m.#buffers) if (!slot.counter) out.push([join(prefix, n), slot.tensor]);
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
        tensors.push(s.tensor);
      }
      for (const [n, s] of m.#buffers) {
        const name = join(prefix, n);
        if (s.counter) out[name] = Float32Array.of(s.counter.get());
        else {
          names.push(name);
          tensors.push(s.tensor);
        }
      }
    }
    const metaAt = tensors.findIndex((t) => t.isMeta);
    if (metaAt >= 0) {
      throw new Error(`stateDict: "${names[metaAt]}" is a meta tensor (shape only): no values`);
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
    const metaModule = this.namedModules().find(([, m]) => m.meta && m.#params.size + m.#buffers.size > 0);
    if (metaModule) {
      const where = metaModule[0] ? `"${metaModule[0]}"` : "the module";
      throw new Error(`loadStateDict: ${where} was built on meta (shapes only) and cannot hold values`);
    }
    for (const [prefix, m] of this.namedModules()) {
      const load = (n: string, slot: BufferSlot | TensorSlot) => {
        const v = state[join(prefix, n)];
        if (!v) return;
        if ("counter" in slot && slot.counter) slot.counter.set(Math.round(v[0]));
        else {
          const t = (slot as TensorSlot).tensor;
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
      for (const s of m.#params.values()) s.tensor.dispose();
      for (const s of m.#buffers.values()) if (!s.counter) s.tensor.dispose();
    }
  }

  // ------------------------------------------------------------ shapes and FLOPs

  /**
   * Forward FLOPs (2 × multiply-adds) of this module's own computation for one call that took `input`
   * and gave `output`; convolutions and linear layers override it, everything else counts 0.
   */
  layerFlops(_input: readonly number[], _output: readonly number[]): number {
    return 0;
  }

  /**
   * Per-layer table for one input of `inShape` (default one 3×32×32 image): one row per call of a
   * leaf module, in the order the model's own forward calls them. The forward runs on a meta input
   * inside a dry run, in eval mode (so nothing is counted or drawn) and without a tape; the modes are
   * restored afterwards. Works on meta and on real modules; no GPU is needed.
   */
  summary(inShape: number[] = [1, 3, 32, 32]): LayerInfo[] {
    const rows: LayerInfo[] = [];
    const modes = this.namedModules().map(([, m]) => [m, m.training] as const);
    this.eval();
    leafWalks++;
    try {
      dryRun(() =>
        noGrad(() =>
          scope(() => {
            traceModules(this, () => void this.forward(meta(inShape)), {
              exit(name, m, x, y) {
                if (m.#children.size > 0) return;
                rows.push({
                  name,
                  type: m.typeName,
                  inShape: [...x.shape],
                  outShape: [...y.shape],
                  params: m.ownParameters(),
                  flops: m.layerFlops(x.shape, y.shape),
                });
              },
            });
          })
        )
      );
    } finally {
      leafWalks--;
      for (const [m, mode] of modes) m.training = mode;
    }
    return rows;
  }

  /** Forward FLOPs (2 × multiply-adds of conv and linear layers) for one input of `inShape`. */
  flops(inShape: number[] = [1, 3, 32, 32]): number {
    return this.summary(inShape).reduce((a, r) => a + r.flops, 0);
  }
}

// ---------------------------------------------------------------- tracing modules

/** Callbacks of `traceModules`, called around every traced module's forward. */
export interface ModuleHooks {
  /** Before `module`'s forward, with its dotted name ("" for the root) and its input. */
  enter?(name: string, module: Module, input: Tensor): void;
  /** After it, with its output. */
  exit?(name: string, module: Module, input: Tensor, output: Tensor): void;
}

/**
 * Runs `fn` (synchronous: a forward, a backward, a training step) with every module of `root` traced:
 * each forward runs with its dotted PyTorch name as `currentModule()` (the innermost running module;
 * during backward, that of the module whose forward recorded the op) and calls `hooks` around it.
 * It wraps each module's `forward` for the duration of `fn` only. Traces nest: each calls its own
 * hooks, and the names of the trace that started first are current. Modules that appear twice in the
 * tree are traced under their first name (as PyTorch's `named_modules`).
 */
export function traceModules<T>(root: Module, fn: () => T, hooks: ModuleHooks = {}): T {
  const restore: (() => void)[] = [];
  const seen = new Set<Module>();
  try {
    for (const [name, m] of root.namedModules()) {
      if (seen.has(m)) continue;
      seen.add(m);
      const own = Object.hasOwn(m, "forward");
      const inner = m.forward;
      const trace: Tracer = (x, body) =>
        withModule(name, () => {
          hooks.enter?.(name, m, x);
          const y = body(x);
          hooks.exit?.(name, m, x, y);
          return y;
        });
      const stack = tracers.get(m) ?? tracers.set(m, []).get(m)!;
      stack.push(trace);
      m.forward = (x: Tensor) => trace(x, (v) => inner.call(m, v));
      restore.push(() => {
        stack.pop();
        if (own) m.forward = inner;
        else delete (m as { forward?: unknown }).forward;
      });
    }
    const result = fn();
    if (result instanceof Promise) throw new Error("traceModules(root, fn): fn must be synchronous");
    return result;
  } finally {
    for (const r of restore.reverse()) r();
  }
}

/** Runs a body as a module's forward under one trace (its name current, its hooks called). */
type Tracer = (x: Tensor, body: (x: Tensor) => Tensor) => Tensor;

/** The traces running now of each module, the first started first. */
const tracers = new WeakMap<Module, Tracer[]>();

/**
 * Runs `body(x)` in place of `m.forward(x)`, entering `m` as its forward would be entered: under each
 * running trace, with its name current and its hooks called (the first trace innermost, as nested
 * traces run a forward). A module whose fused op does the work of some of its children (nn/convnext.ts)
 * still lists each child this way; untraced, it is `body(x)`.
 */
export function forwardAs(m: Module, x: Tensor, body: (x: Tensor) => Tensor): Tensor {
  let run = body;
  for (const trace of tracers.get(m) ?? []) {
    const inner = run;
    run = (v) => trace(v, inner);
  }
  return run(x);
}

/** Dotted name of `name` under `prefix`. */
export function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

/** Reads several tensors back with one copy pass and one wait. */
export async function readMany(tensors: Tensor[]): Promise<Float32Array[]> {
  const m = tensors.find((t) => t.isMeta);
  if (m) throw new Error(metaValuesError(m));
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
