// AdamW with one fused dispatch per step (the kernel: kernels/optim.ts), and PyTorch's CosineAnnealingLR.
//
// The optimizer moves every parameter into one flat "arena" buffer (each parameter a slice starting
// on a 256-byte boundary, so a slice is a valid storage binding), gives each parameter a `.grad`
// that is a view into a second arena of the same layout (the tape's leaf accumulation adds into an
// existing `.grad` in place), and keeps the first and second moments in two more arenas. A step is
// then one kernel over the whole arena; `zeroGrad()` is one clearBuffer. The step's scalars (the
// decay factor 1 − lr·wd, lr / (1 − β1^t), √(1 − β2^t), …) are computed on the host in f64 like
// PyTorch, rounded to f32 like PyTorch's scalar arguments, and copied into a small storage buffer by
// a command recorded in the same encoder, so neither the schedule nor the step count recompiles or
// submits anything. Padding between slices stays zero (zero gradient, zero moments, zero update).

import { Storage, Tensor } from "../autograd/tensor.ts";
import { adamw, ADAMW_SCALARS, adamwScalars } from "../kernels/optim.ts";
import { clear, copy, flush, gpu, readback, upload, writeInOrder } from "../kernels/runtime.ts";

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** Optimizer state for checkpoints: the step count, the learning rate and both moments per parameter. */
export interface AdamWState {
  step: number;
  lr: number;
  /** `${i}.exp_avg` and `${i}.exp_avg_sq` for parameter i (PyTorch's state names). */
  tensors: Record<string, Float32Array>;
}

const ALIGN = 64; // floats per 256 bytes
const ARENA_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/**
 * AdamW with PyTorch's semantics (torch.optim.AdamW, amsgrad off):
 * p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
 * p ← p − lr/(1−β1^t) · m / (√v / √(1−β2^t) + eps).
 * Every parameter is updated, a zero gradient included (PyTorch skips parameters whose grad is None).
 */
export class AdamW {
  readonly params: Tensor[];
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Steps taken (PyTorch's `state['step']`). */
  stepCount = 0;
  #lr: number;
  readonly #offsets: number[] = [];
  readonly #total: number;
  readonly #arena: GPUBuffer;
  readonly #grads: GPUBuffer;
  readonly #m: GPUBuffer;
  readonly #v: GPUBuffer;
  readonly #hyper: GPUBuffer;
  readonly #gradViews: Tensor[] = [];

  constructor(params: Tensor[], opts: AdamWOptions = {}) {
    const { lr = 1e-3, betas = [0.9, 0.999], eps = 1e-8, weightDecay = 1e-2 } = opts;
    if (!(lr >= 0)) throw new Error(`AdamW: invalid learning rate ${lr}`);
    if (!(eps >= 0)) throw new Error(`AdamW: invalid eps ${eps}`);
    for (const b of betas) if (!(b >= 0 && b < 1)) throw new Error(`AdamW: invalid beta ${b}`);
    if (!(weightDecay >= 0)) throw new Error(`AdamW: invalid weight decay ${weightDecay}`);
    if (params.length === 0) throw new Error("AdamW: got an empty parameter list");
    if (new Set(params).size !== params.length) throw new Error("AdamW: a parameter appears twice");
    this.params = [...params];
    this.#lr = lr;
    [this.beta1, this.beta2] = betas;
    this.eps = eps;
    this.weightDecay = weightDecay;

    let total = 0;
    for (const p of params) {
      this.#offsets.push(total);
      total += Math.ceil(Math.max(p.size, 1) / ALIGN) * ALIGN;
    }
    this.#total = total;
    const { device, limits } = gpu();
    const bytes = total * 4;
    const max = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
    if (bytes > max) {
      throw new Error(
        `AdamW: ${params.length} parameters need ${bytes} bytes, over this adapter's limit of ${max}`,
      );
    }
    const make = (label: string) => device.createBuffer({ label, size: bytes, usage: ARENA_USAGE }); // zeroed
    this.#arena = make("adamw.params");
    this.#grads = make("adamw.grads");
    this.#m = make("adamw.exp_avg");
    this.#v = make("adamw.exp_avg_sq");
    this.#hyper = device.createBuffer({ label: "adamw.hyper", size: ADAMW_SCALARS * 4, usage: ARENA_USAGE });

    params.forEach((p, i) => {
      const off = this.#offsets[i] * 4, n = p.size * 4;
      const s = p.storage;
      if (n > 0) copy(s.buffer, s.offset, this.#arena, off, n);
      p.setStorage(new Storage(this.#arena, off, Math.max(n, 4), false));
      const g = new Tensor(p.shape, new Storage(this.#grads, off, Math.max(n, 4), false));
      g.name = p.name ? `${p.name}.grad` : "";
      if (p.grad && n > 0) copy(p.grad.storage.buffer, p.grad.storage.offset, this.#grads, off, n);
      p.grad?.dispose();
      p.grad = g;
      this.#gradViews.push(g);
    });
  }

  get lr(): number {
    return this.#lr;
  }

  set lr(v: number) {
    if (!(v >= 0)) throw new Error(`AdamW: invalid learning rate ${v}`);
    this.#lr = v;
  }

  /** Makes sure every parameter's `.grad` is its arena view again (copying a foreign gradient in). */
  #attachGrads(): void {
    this.params.forEach((p, i) => {
      const view = this.#gradViews[i];
      if (p.grad === view) return;
      const off = this.#offsets[i] * 4, n = p.size * 4;
      if (view.disposed) throw new Error(`AdamW: parameter ${p.describe()} was disposed`);
      if (n > 0) {
        if (p.grad) copy(p.grad.storage.buffer, p.grad.storage.offset, this.#grads, off, n);
        else clear(this.#grads, off, n);
      }
      p.grad?.dispose();
      p.grad = view;
    });
  }

  /** Sets every gradient to zero (one clearBuffer over the gradient arena). */
  zeroGrad(): void {
    this.#attachGrads();
    clear(this.#grads, 0, this.#total * 4);
    for (const p of this.params) p.gradZeroed = true;
  }

  /** One AdamW update of every parameter: a single dispatch, recorded without waiting. */
  step(): void {
    this.#attachGrads();
    writeInOrder(this.#hyper, 0, this.nextStepScalars());
    adamw(this.#total, this.#grads, this.#hyper, this.#arena, this.#m, this.#v);
  }

  /**
   * The host side of a step: the step count moves on and the step's scalars are returned (a replayed
   * step, training/step.ts, writes them where the recorded step wrote its own).
   */
  nextStepScalars(): Float32Array {
    this.stepCount++;
    return adamwScalars({
      lr: this.#lr,
      beta1: this.beta1,
      beta2: this.beta2,
      eps: this.eps,
      weightDecay: this.weightDecay,
      step: this.stepCount,
    });
  }

  /**
   * Frees the four arenas. The parameters live in the parameter arena, so they are disposed too (the
   * model cannot be used afterwards): call it when a run is over, e.g. before building the next model.
   */
  dispose(): void {
    flush(); // commands already recorded still see the buffers
    for (const p of this.params) p.dispose();
    for (const b of [this.#arena, this.#grads, this.#m, this.#v, this.#hyper]) b.destroy();
  }

  /** The moments and the step count, for a checkpoint (reads the GPU back). */
  async stateDict(): Promise<AdamWState> {
    const bytes = this.#total * 4;
    const [m, v] = [
      new Float32Array(await readback(this.#m, 0, bytes)),
      new Float32Array(await readback(this.#v, 0, bytes)),
    ];
    const tensors: Record<string, Float32Array> = {};
    this.params.forEach((p, i) => {
      const o = this.#offsets[i];
      tensors[`${i}.exp_avg`] = m.slice(o, o + p.size);
      tensors[`${i}.exp_avg_sq`] = v.slice(o, o + p.size);
    });
    return { step: this.stepCount, lr: this.#lr, tensors };
  }

  /** Restores `stateDict()` output; errors name the first tensor that does not fit. */
  loadStateDict(state: AdamWState): void {
    this.params.forEach((p, i) => {
      for (const k of ["exp_avg", "exp_avg_sq"]) {
        const a = state.tensors[`${i}.${k}`];
        if (!a) throw new Error(`AdamW.loadStateDict: missing "${i}.${k}" (parameter ${p.describe()})`);
        if (a.length !== p.size) {
          throw new Error(
            `AdamW.loadStateDict: "${i}.${k}" has ${a.length} values, parameter ${p.describe()} has ${p.size}`,
          );
        }
      }
    });
    const extra = Object.keys(state.tensors).find((k) => {
      const [i, name] = k.split(".");
      return !(Number(i) < this.params.length) || !["exp_avg", "exp_avg_sq"].includes(name);
    });
    if (extra) throw new Error(`AdamW.loadStateDict: unexpected tensor "${extra}"`);
    this.params.forEach((p, i) => {
      if (p.size === 0) return;
      upload(this.#m, state.tensors[`${i}.exp_avg`], this.#offsets[i] * 4);
      upload(this.#v, state.tensors[`${i}.exp_avg_sq`], this.#offsets[i] * 4);
    });
    this.stepCount = state.step;
    this.lr = state.lr;
  }
}

/**
 * torch.optim.lr_scheduler.CosineAnnealingLR, stepped once per epoch: after e steps the learning
 * rate is etaMin + (base − etaMin)·(1 + cos(π·e/tMax))/2. Computed with PyTorch's recursive form (so
 * values match it to the last bit, and past tMax it continues the cosine like PyTorch).
 */
export class CosineAnnealingLR {
  readonly tMax: number;
  readonly etaMin: number;
  readonly baseLr: number;
  /** PyTorch's `last_epoch`: scheduler steps taken. */
  lastEpoch = 0;

  constructor(readonly optimizer: { lr: number }, { tMax, etaMin = 0 }: { tMax: number; etaMin?: number }) {
    if (!(tMax > 0)) throw new Error(`CosineAnnealingLR: tMax must be positive, got ${tMax}`);
    this.tMax = tMax;
    this.etaMin = etaMin;
    this.baseLr = optimizer.lr;
  }

  /** The learning rate the optimizer uses now. */
  get lr(): number {
    return this.optimizer.lr;
  }

  /** Advances one epoch and sets the optimizer's learning rate. */
  step(): void {
    this.lastEpoch++;
    const e = this.lastEpoch, T = this.tMax, lr = this.optimizer.lr, eta = this.etaMin;
    const mod = (a: number, b: number) => ((a % b) + b) % b; // Python's %
    let next: number;
    if (mod(e - 1 - T, 2 * T) === 0) {
      next = lr + (this.baseLr - eta) * (1 - Math.cos(Math.PI / T)) / 2;
    } else {
      next = (1 + Math.cos(Math.PI * e / T)) / (1 + Math.cos(Math.PI * (e - 1) / T)) * (lr - eta) + eta;
    }
    this.optimizer.lr = next;
  }

  stateDict(): { lastEpoch: number; baseLr: number; lr: number } {
    return { lastEpoch: this.lastEpoch, baseLr: this.baseLr, lr: this.optimizer.lr };
  }

  loadStateDict(s: { lastEpoch: number; lr: number }): void {
    this.lastEpoch = s.lastEpoch;
    this.optimizer.lr = s.lr;
  }
}
