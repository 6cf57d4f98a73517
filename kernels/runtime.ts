// The WebGPU runtime: one device per process, a pipeline cache keyed by the kernels' short keys, a
// buffer pool by size class, cached bind groups, and command batching (every kernel is recorded into one
// pending encoder that is submitted when data is read back or uploaded, or when `flush()` is called).

import { createPlannerContext, type PlannerContext } from "./plan_context.ts";

/** Features and limits the engine detected on the adapter. */
export interface GPUContext {
  device: GPUDevice;
  adapterInfo: GPUAdapterInfo;
  /** A short human-readable adapter name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  adapterName: string;
  isFallbackAdapter: boolean;
  features: { timestampQuery: boolean; shaderF16: boolean };
  limits: GPUSupportedLimits;
}

/** Limits the seven models need (the largest activation of `inverted` at batch 64 is 64 MiB). */
const WANTED_LIMITS = {
  maxStorageBufferBindingSize: 512 * 1024 * 1024,
  maxBufferSize: 1024 * 1024 * 1024,
  maxStorageBuffersPerShaderStage: 10,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
};
/** Below these the engine cannot run at all. */
const REQUIRED_LIMITS = {
  maxStorageBufferBindingSize: 64 * 1024 * 1024,
  maxStorageBuffersPerShaderStage: 8,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
};

export const NO_ADAPTER_HELP = "No WebGPU adapter found. Any WebGPU adapter works (Vulkan, Metal, D3D12). " +
  "On a machine without a GPU install Mesa's software Vulkan driver (lavapipe): " +
  "`sudo apt-get install -y mesa-vulkan-drivers` on Debian/Ubuntu.";

let ctx: GPUContext | null = null;
let initPromise: Promise<GPUContext> | null = null;
let lostError: Error | null = null;
let planner: PlannerContext | null = null;

/**
 * Requests the adapter and device once per process (and creates the planner's context); later calls
 * return the same context.
 */
export function initGPU(): Promise<GPUContext> {
  planner ??= createPlannerContext();
  if (!initPromise) initPromise = createContext().then((c) => (ctx = c));
  return initPromise;
}

/**
 * The planner's state (kernels/plan_context.ts): created by `initGPU`, or at first use where planning
 * runs without a device (a dry run listing a plan).
 */
export function plannerContext(): PlannerContext {
  return planner ??= createPlannerContext();
}

/** Replaces the planner's state (a fresh one by default), e.g. between tests; returns the previous one. */
export function resetPlannerContext(next: PlannerContext = createPlannerContext()): PlannerContext {
  const prev = plannerContext();
  planner = next;
  return prev;
}

async function createContext(): Promise<GPUContext> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) {
    throw new Error("This JavaScript runtime has no WebGPU (navigator.gpu). " + NO_ADAPTER_HELP);
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error(NO_ADAPTER_HELP);
  const lim = adapter.limits as unknown as Record<string, number>;
  for (const [name, need] of Object.entries(REQUIRED_LIMITS)) {
    if (lim[name] < need) {
      throw new Error(
        `WebGPU adapter "${adapter.info.description || adapter.info.vendor}" offers ${name} = ${
          lim[name]
        }, but the engine needs at least ${need}.`,
      );
    }
  }
  const requiredLimits: Record<string, number> = {};
  for (const [name, want] of Object.entries(WANTED_LIMITS)) requiredLimits[name] = Math.min(want, lim[name]);
  const requiredFeatures: GPUFeatureName[] = [];
  const timestampQuery = adapter.features.has("timestamp-query");
  const shaderF16 = adapter.features.has("shader-f16");
  if (timestampQuery) requiredFeatures.push("timestamp-query");
  if (shaderF16) requiredFeatures.push("shader-f16");
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  device.lost.then((info) => {
    lostError = new Error(`WebGPU device lost (${info.reason}): ${info.message}`);
    if (info.reason !== "destroyed") console.error(lostError.message);
  });
  const info = adapter.info;
  return {
    device,
    adapterInfo: info,
    adapterName: info.description || `${info.vendor} ${info.architecture} ${info.device}`.trim(),
    isFallbackAdapter: info.isFallbackAdapter ?? false,
    features: { timestampQuery, shaderF16 },
    limits: plainLimits(device.limits),
  };
}

/**
 * The device's limits copied into a plain object: every dispatch reads one, and reading a property of
 * a GPUSupportedLimits crosses into native code (measured ~2 µs per dispatch here).
 */
function plainLimits(l: GPUSupportedLimits): GPUSupportedLimits {
  const out: Record<string, number> = {};
  for (let o = l; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const k of Object.getOwnPropertyNames(o)) {
      const v = (l as unknown as Record<string, unknown>)[k];
      if (typeof v === "number") out[k] = v;
    }
  }
  return out as unknown as GPUSupportedLimits;
}

/** The initialised context; throws a clear error when `initGPU()` has not completed. */
export function gpu(): GPUContext {
  if (lostError) throw lostError;
  if (!ctx && dryDepth > 0) return NOMINAL;
  if (!ctx) throw new Error("WebGPU is not initialised: call `await initGPU()` before using tensors.");
  return ctx;
}

// ---------------------------------------------------------------- pipeline cache

// Pipelines are cached by a short key that the kernel family builds from its spec (the sizes and
// options its source depends on); the WGSL is generated only on a miss. With `setKeyCheck(true)`
// (the tests) every hit regenerates the source and throws when it differs from the cached one, so a
// key that forgets a parameter cannot hide.

const pipelines = new Map<string, GPUComputePipeline>();
const layouts = new WeakMap<GPUComputePipeline, GPUBindGroupLayout>();
const cachedSources = new Map<string, string>();
let keyCheck = false;

/** Makes every pipeline-cache hit regenerate its WGSL and compare it with the cached source. */
export function setKeyCheck(on: boolean): void {
  keyCheck = on;
  if (!on) cachedSources.clear();
}

/**
 * The compute pipeline for `key`, compiled from `source()` on the first call. `label` names the kernel
 * variant (it appears in profiles and validation errors). In a dry run inside `collectPipelines` the
 * pipelines the cache lacks are listed instead.
 */
export function kernel(key: string, label: string, source: () => string): GPUComputePipeline {
  if (dryDepth > 0) {
    if (collecting && !pipelines.has(key) && !collecting.has(key)) {
      collecting.set(key, { key, label, source });
    }
    return PLACEHOLDER_PIPELINE;
  }
  let p = pipelines.get(key);
  if (p) {
    if (keyCheck && cachedSources.get(key) !== source()) {
      throw new Error(`Pipeline key "${key}" (${label}) maps to two different WGSL sources`);
    }
    return p;
  }
  const code = source();
  if (keyCheck) cachedSources.set(key, code);
  const { device } = gpu();
  const module = device.createShaderModule({ label, code });
  p = device.createComputePipeline({ label, layout: "auto", compute: { module, entryPoint: "main" } });
  pipelines.set(key, p);
  return p;
}

/** Number of compiled pipelines. */
export function pipelineCacheSize(): number {
  return pipelines.size;
}

/** The keys of the compiled pipelines, in order of creation. */
export function pipelineKeys(): string[] {
  return [...pipelines.keys()];
}

/** A pipeline a dry run met that the cache lacks. */
export interface PipelineRequest {
  key: string;
  label: string;
  source: () => string;
}

let collecting: Map<string, PipelineRequest> | null = null;

/** Runs `fn` as a dry run and returns the pipelines it would create that the cache lacks. */
export function collectPipelines(fn: () => void): PipelineRequest[] {
  const outer = collecting;
  const mine = new Map<string, PipelineRequest>();
  collecting = mine;
  try {
    dryRun(fn);
  } finally {
    collecting = outer;
  }
  if (outer) { for (const [k, r] of mine) if (!outer.has(k)) outer.set(k, r); }
  return [...mine.values()];
}

/** Pipelines issued together by `compilePipelines` before it waits for them. */
const COMPILE_WAVE = 4;

/**
 * Compiles the pipelines `requests` lists (those not cached by now) with createComputePipelineAsync, in
 * waves issued together (a browser compiles them on worker threads; wgpu in a native runtime compiles each inside the call,
 * so there a wave is sequential); `progress(done, total)` is called after each wave.
 */
export async function compilePipelines(
  requests: PipelineRequest[],
  progress?: (done: number, total: number) => void,
): Promise<void> {
  const todo = requests.filter((r) => !pipelines.has(r.key));
  const { device } = gpu();
  progress?.(0, todo.length);
  for (let i = 0; i < todo.length; i += COMPILE_WAVE) {
    await Promise.all(
      todo.slice(i, i + COMPILE_WAVE).map(async (r) => {
        const code = r.source();
        if (keyCheck) cachedSources.set(r.key, code);
        const module = device.createShaderModule({ label: r.label, code });
        const p = await device.createComputePipelineAsync({
          label: r.label,
          layout: "auto",
          compute: { module, entryPoint: "main" },
        });
        if (!pipelines.has(r.key)) pipelines.set(r.key, p);
      }),
    );
    progress?.(Math.min(i + COMPILE_WAVE, todo.length), todo.length);
  }
}

// ---------------------------------------------------------------- buffer pool

/** Identities of GPU objects, in order of first sight (buffers: of creation), for keys and ordering. */
const ids = new WeakMap<object, number>();
let nextId = 1;
const idOf = (o: object): number => {
  let id = ids.get(o);
  if (id === undefined) ids.set(o, id = nextId++);
  return id;
};

const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** Size classes: multiples of 256 B up to 64 KiB, then steps of 1/8 of the power of two. */
export function sizeClass(bytes: number): number {
  const b = Math.max(256, bytes);
  if (b <= 65536) return Math.ceil(b / 256) * 256;
  const step = 2 ** (Math.floor(Math.log2(b)) - 3);
  return Math.ceil(b / step) * step;
}

// ---------------------------------------------------------------- run-time parameters

// Sizes a kernel reads at run time instead of compiling them in (the batch size and the counts that
// follow it), so that one pipeline serves every batch size. Each distinct set of values is one small
// uniform buffer written at creation and kept, so a step binds the same buffers every time.

const paramBuffers = new Map<string, GPUBuffer>();

/**
 * A uniform buffer holding `values` as u32s, for a binding declared with `paramsDecl` (kernels/wgsl.ts)
 * after a kernel's storage bindings.
 */
export function params(...values: number[]): GPUBuffer {
  if (dryDepth > 0) return PLACEHOLDER;
  const key = values.join(",");
  let buf = paramBuffers.get(key);
  if (buf) return buf;
  for (const v of values) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`params: ${v} is not a u32`);
  }
  buf = gpu().device.createBuffer({
    size: Math.max(16, Math.ceil(values.length / 4) * 16),
    usage: GPUBufferUsage.UNIFORM,
    mappedAtCreation: true,
  });
  new Uint32Array(buf.getMappedRange()).set(values);
  buf.unmap();
  idOf(buf);
  paramBuffers.set(key, buf);
  return buf;
}

const free = new Map<number, GPUBuffer[]>();
const stats = { bytesAllocated: 0, bytesInUse: 0, buffersAllocated: 0 };

/** Counters tests and benchmarks can read. */
export function poolStats(): { bytesAllocated: number; bytesInUse: number; buffersAllocated: number } {
  return { ...stats };
}

/** A storage buffer of at least `bytes` bytes from the pool. Its content is undefined. */
export function acquireBuffer(bytes: number): GPUBuffer {
  if (dryDepth > 0) return PLACEHOLDER;
  const size = sizeClass(bytes);
  const list = free.get(size);
  stats.bytesInUse += size;
  const reused = list?.pop();
  if (reused) return reused;
  const { device, limits } = gpu();
  if (size > limits.maxStorageBufferBindingSize) {
    throw new Error(
      `A tensor of ${bytes} bytes exceeds this adapter's maxStorageBufferBindingSize (${limits.maxStorageBufferBindingSize}).`,
    );
  }
  stats.bytesAllocated += size;
  stats.buffersAllocated++;
  const buf = device.createBuffer({ size, usage: STORAGE_USAGE });
  idOf(buf);
  return buf;
}

/**
 * Returns a buffer to the pool. Commands already recorded that use it still see it in order. Each size
 * class hands out its oldest buffer first (lists are kept sorted by creation, newest first), so a
 * training step that acquires and releases the same sizes in the same order gets the same buffers every
 * step, and so the same cached bind groups, whatever order the previous step released them in.
 */
export function releaseBuffer(buf: GPUBuffer): void {
  if (buf === PLACEHOLDER) return;
  let list = free.get(buf.size);
  if (!list) free.set(buf.size, list = []);
  const id = idOf(buf);
  let lo = 0, hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (idOf(list[mid]) > id) lo = mid + 1;
    else hi = mid;
  }
  list.splice(lo, 0, buf);
  stats.bytesInUse -= buf.size;
}

/** Destroys every free buffer (e.g. between benchmarks). */
export function trimPool(): void {
  for (const list of free.values()) {
    for (const b of list) {
      stats.bytesAllocated -= b.size;
      stats.buffersAllocated--;
      b.destroy();
    }
  }
  free.clear();
  bindGroups.clear();
  resourcesChanged();
}

// ---------------------------------------------------------------- command batching

// Dispatches go into one open compute pass of the pending encoder (WebGPU orders the storage accesses of
// successive dispatches in a pass); copies and clears end it. Bind groups are cached by the identities
// of what they bind, so a training step that meets the same pooled buffers again binds at no cost.

let encoder: GPUCommandEncoder | null = null;
let pass: GPUComputePassEncoder | null = null;
let passPerDispatch = false;
let pendingDispatches = 0;
let submits = 0;

/** The encoder that collects every kernel until the next submit (ends an open compute pass). */
export function currentEncoder(): GPUCommandEncoder {
  if (pass) {
    pass.end();
    pass = null;
  }
  if (!encoder) encoder = gpu().device.createCommandEncoder();
  return encoder;
}

/**
 * Gives every dispatch a compute pass of its own, labelled with its kernel (for profilers that time
 * passes with timestamp queries); off by default, since one pass for many dispatches costs less.
 */
export function setPassPerDispatch(on: boolean): void {
  passPerDispatch = on;
}

/** Whether every dispatch gets a compute pass of its own (profiling). */
export function passPerDispatchOn(): boolean {
  return passPerDispatch;
}

/** A storage binding: a whole pooled buffer or a slice of one. */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };
/** What a dispatch binds: storage buffers, or texture views for kernels that sample textures. */
export type Resource = Binding | GPUTextureView;

const bindGroups = new Map<string, GPUBindGroup>();
/** Bind groups kept before the cache starts afresh (a step of the full model binds ~1,500). */
const MAX_BIND_GROUPS = 16384;

function bindGroupFor(pipe: GPUComputePipeline, bindings: Resource[]): GPUBindGroup {
  let key = String(idOf(pipe));
  for (const b of bindings) {
    if (b instanceof GPUBuffer || b instanceof GPUTextureView) key += `,${idOf(b)}`;
    else key += `,${idOf(b.buffer)}:${b.offset ?? 0}:${b.size ?? -1}`;
  }
  let group = bindGroups.get(key);
  if (group) return group;
  let layout = layouts.get(pipe);
  if (!layout) layouts.set(pipe, layout = pipe.getBindGroupLayout(0));
  group = gpu().device.createBindGroup({
    layout,
    entries: bindings.map((b, i) => ({ binding: i, resource: b instanceof GPUBuffer ? { buffer: b } : b })),
  });
  if (bindGroups.size >= MAX_BIND_GROUPS) bindGroups.clear();
  bindGroups.set(key, group);
  return group;
}

/** Records one compute dispatch of `pipe` with bindings 0..n-1 of group 0. */
export function dispatch(
  pipe: GPUComputePipeline,
  bindings: Resource[],
  workgroups: [number, number?, number?],
): void {
  if (dryDepth > 0) return;
  const x = workgroups[0], y = workgroups[1] ?? 1, z = workgroups[2] ?? 1;
  const maxDim = gpu().limits.maxComputeWorkgroupsPerDimension;
  if (x > maxDim || y > maxDim || z > maxDim) {
    throw new Error(
      `Kernel ${pipe.label}: ${Math.max(x, y, z)} workgroups exceeds the adapter's limit of ${maxDim}.`,
    );
  }
  const bindGroup = bindGroupFor(pipe, bindings);
  if (!pass) pass = currentEncoder().beginComputePass(passPerDispatch ? { label: pipe.label } : undefined);
  pass.setPipeline(pipe);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(x, y, z);
  if (passPerDispatch) currentEncoder();
  pendingDispatches++;
  captured?.push({ label: pipe.label, pipe, bindGroup, workgroups: [x, y, z] });
  if (recording) {
    recording.commands.push({ kind: "dispatch", pipe, bindGroup, x, y, z });
    for (const b of bindings) if (!(b instanceof GPUTextureView)) recording.buffers.add(bufferOf(b));
  }
}

// ---------------------------------------------------------------- dry runs

// A dry run executes code that records kernels (a model's forward and backward on shape-only tensors)
// without touching the GPU: dispatches, copies, clears and uploads are dropped, and pooled buffers are
// placeholders. The planner still answers, which is how a model's plan is listed.

let dryDepth = 0;
const PLACEHOLDER = { size: 0, label: "dry-run placeholder" } as unknown as GPUBuffer;
const PLACEHOLDER_PIPELINE = { label: "dry-run placeholder" } as unknown as GPUComputePipeline;
/** The context a dry run sees when no adapter was initialised: WebGPU's default limits, no device. */
const NOMINAL: GPUContext = {
  device: null as unknown as GPUDevice,
  adapterInfo: { vendor: "", architecture: "", device: "", description: "none" } as GPUAdapterInfo,
  adapterName: "none (dry run)",
  isFallbackAdapter: false,
  features: { timestampQuery: false, shaderF16: false },
  limits: {
    maxComputeWorkgroupsPerDimension: 65535,
    maxStorageBufferBindingSize: 134217728,
    maxBufferSize: 268435456,
    maxComputeWorkgroupStorageSize: 16384,
    maxComputeInvocationsPerWorkgroup: 256,
    maxTextureDimension2D: 8192,
  } as GPUSupportedLimits,
};

/** Runs `fn` with every GPU command dropped. */
export function dryRun<T>(fn: () => T): T {
  dryDepth++;
  try {
    return fn();
  } finally {
    dryDepth--;
  }
}

/** Whether a dry run is in progress. */
export function isDryRun(): boolean {
  return dryDepth > 0;
}

/** Submits the pending encoder (if any). Does not wait. */
export function flush(): void {
  if (!encoder) return;
  const enc = currentEncoder(); // ends the open pass
  encoder = null;
  gpu().device.queue.submit([enc.finish()]);
  encoder = null;
  pendingDispatches = 0;
  submits++;
}

/** Number of submits so far and dispatches waiting in the current encoder. */
export function commandStats(): { submits: number; pendingDispatches: number } {
  return { submits, pendingDispatches };
}

/** Writes `data` into `buf` at `offset` bytes, after every command recorded so far. */
export function upload(buf: GPUBuffer, data: ArrayBufferView, offset = 0): void {
  if (dryDepth > 0) return;
  if (recording) recording.broken ??= "a queue write (upload) inside the step";
  flush(); // queue writes run before unsubmitted commands; submitting first keeps program order
  let bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  if (bytes.byteLength % 4 !== 0) { // writeBuffer needs a multiple of 4 bytes
    const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
    padded.set(bytes);
    bytes = padded;
  }
  gpu().device.queue.writeBuffer(buf, offset, bytes);
}

/** Records a zero fill of `bytes` bytes (multiple of 4) of `buf` at `offset`. */
export function clear(buf: GPUBuffer, offset = 0, bytes?: number): void {
  if (dryDepth > 0) return;
  currentEncoder().clearBuffer(buf, offset, bytes);
  if (recording) {
    recording.commands.push({ kind: "clear", buf, offset, bytes });
    recording.buffers.add(buf);
  }
}

/** Records a copy between storage buffers. */
export function copy(
  src: GPUBuffer,
  srcOffset: number,
  dst: GPUBuffer,
  dstOffset: number,
  bytes: number,
): void {
  if (dryDepth > 0) return;
  currentEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  if (recording) {
    recording.commands.push({ kind: "copy", src, srcOffset, dst, dstOffset, bytes });
    recording.buffers.add(src).add(dst);
  }
}

/** Records a copy from a storage buffer into a texture (`copyBufferToTexture`). */
export function copyToTextureCommand(
  src: GPUTexelCopyBufferInfo,
  dst: GPUTexelCopyTextureInfo,
  size: number[],
): void {
  if (dryDepth > 0) return;
  currentEncoder().copyBufferToTexture(src, dst, size);
  if (recording) {
    recording.commands.push({ kind: "texture", src, dst, size });
    recording.buffers.add(src.buffer);
  }
}

let stagingBuffers: { buffer: GPUBuffer; submit: number }[] = [];

/**
 * Writes `values` into `dst` at `offset` in command order (a staging buffer copied by a command of the
 * pending encoder: no submit, no queue write), e.g. a step's scalars. In a recording it is a write the
 * replay fills with that step's values.
 */
export function writeInOrder(dst: GPUBuffer, offset: number, values: Float32Array): void {
  if (dryDepth > 0) return;
  const { device } = gpu();
  // staging buffers whose copy was submitted can go (wgpu keeps them alive until the GPU is done)
  stagingBuffers = stagingBuffers.filter((st) => {
    if (st.submit < submits) st.buffer.destroy();
    return st.submit >= submits;
  });
  const staging = device.createBuffer({
    size: values.byteLength,
    usage: GPUBufferUsage.COPY_SRC,
    mappedAtCreation: true,
  });
  new Float32Array(staging.getMappedRange()).set(values);
  staging.unmap();
  currentEncoder().copyBufferToBuffer(staging, 0, dst, offset, values.byteLength);
  stagingBuffers.push({ buffer: staging, submit: submits });
  if (recording) {
    recording.commands.push({ kind: "write", dst, offset, floats: values.length });
    recording.buffers.add(dst);
  }
}

/** Submits everything pending and reads `bytes` bytes of `buf` back. The only call that waits on the GPU. */
export async function readback(buf: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
  if (dryDepth > 0) throw new Error("readback: a dry run has no data to read");
  if (recording) recording.broken ??= "a readback inside the step";
  const { device } = gpu();
  const size = Math.ceil(bytes / 4) * 4;
  const staging = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  currentEncoder().copyBufferToBuffer(buf, offset, staging, 0, size);
  flush();
  await staging.mapAsync(GPUMapMode.READ);
  if (lostError) throw lostError;
  const out = staging.getMappedRange().slice(0, bytes);
  staging.unmap();
  staging.destroy();
  return out;
}

/** Waits until the GPU has finished everything submitted so far. */
export async function sync(): Promise<void> {
  flush();
  await gpu().device.queue.onSubmittedWorkDone();
  if (lostError) throw lostError;
}

/**
 * Runs `fn` inside a validation error scope and throws an error naming `label` if any WebGPU call
 * in it was invalid (used by tests to surface shader and binding errors).
 */
export async function checked<T>(label: string, fn: () => T | Promise<T>): Promise<T> {
  const { device } = gpu();
  device.pushErrorScope("validation");
  device.pushErrorScope("out-of-memory");
  let result: T | undefined, thrown: unknown = null;
  try {
    result = await fn();
    flush();
  } catch (e) {
    thrown = e;
  }
  const oom = await device.popErrorScope();
  const val = await device.popErrorScope();
  const err = val ?? oom;
  if (err) throw new Error(`WebGPU error in ${label}: ${err.message}`);
  if (thrown) throw thrown;
  return result as T;
}

// ---------------------------------------------------------------- recording and replay

// A recording is the list of commands some code recorded (dispatches with their bind groups, clears,
// copies, texture copies, and writes of per-call values), to be encoded again without running that
// code: no tape, no planning, no bind-group lookups. The pooled buffers the commands use and that were
// free when the recording stopped (the temporaries) are taken out of the pool and kept for it, so a
// replay finds them unused; buffers held by live tensors (parameters, running statistics, inputs) are
// the caller's to keep. The caller decides when a recording still describes the work (training/step.ts).

type Command =
  | { kind: "dispatch"; pipe: GPUComputePipeline; bindGroup: GPUBindGroup; x: number; y: number; z: number }
  | { kind: "clear"; buf: GPUBuffer; offset: number; bytes?: number }
  | { kind: "copy"; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; bytes: number }
  | { kind: "texture"; src: GPUTexelCopyBufferInfo; dst: GPUTexelCopyTextureInfo; size: number[] }
  | { kind: "write"; dst: GPUBuffer; offset: number; floats: number };

export interface Recording {
  commands: Command[];
  /** Every buffer the commands use. */
  buffers: Set<GPUBuffer>;
  /** The temporaries taken out of the pool for the recording (`releaseRecording` returns them). */
  pinned: GPUBuffer[];
  /** Why the recorded work cannot be replayed (a queue write or a readback inside it), or null. */
  broken: string | null;
  /** `resourcesEpoch()` when recorded: textures or pooled buffers destroyed since invalidate it. */
  epoch: number;
  dispatches: number;
  /** Number of `writeInOrder` values a replay must supply, in order. */
  writes: number;
}

let recording: Recording | null = null;
let epoch = 0;

/** Marks every recording made so far as stale (cached textures or buffers were destroyed). */
export function resourcesChanged(): void {
  epoch++;
}

/** The current resource epoch (see `Recording.epoch`). */
export function resourcesEpoch(): number {
  return epoch;
}

const bufferOf = (b: Binding): GPUBuffer => (b instanceof GPUBuffer ? b : b.buffer);

/** Starts recording the commands issued from now on (they still run as usual). */
export function startRecording(): void {
  if (recording) throw new Error("startRecording: a recording is already in progress");
  recording = { commands: [], buffers: new Set(), pinned: [], broken: null, epoch, dispatches: 0, writes: 0 };
  if (passPerDispatch) recording.broken = "a pass per dispatch (profiling)";
}

/** Stops recording; pins the pooled temporaries the commands used (see above). */
export function stopRecording(): Recording {
  const rec = recording;
  if (!rec) throw new Error("stopRecording: no recording in progress");
  recording = null;
  for (const buf of rec.buffers) {
    const list = free.get(buf.size);
    const i = list ? list.indexOf(buf) : -1;
    if (i < 0) continue;
    list!.splice(i, 1);
    stats.bytesInUse += buf.size;
    rec.pinned.push(buf);
  }
  rec.dispatches = rec.commands.filter((c) => c.kind === "dispatch").length;
  rec.writes = rec.commands.filter((c) => c.kind === "write").length;
  return rec;
}

/** Returns a recording's pinned temporaries to the pool; it cannot be replayed afterwards. */
export function releaseRecording(rec: Recording): void {
  for (const b of rec.pinned) releaseBuffer(b);
  rec.pinned = [];
  rec.broken ??= "released";
}

/**
 * Encodes `rec`'s commands again into the pending encoder, after everything recorded so far, with
 * `writes` as the values of its writes in order.
 */
export function replayRecording(rec: Recording, writes: Float32Array[]): void {
  if (rec.broken) throw new Error(`replay: ${rec.broken}`);
  if (rec.epoch !== epoch) throw new Error("replay: the recording's textures or buffers were destroyed");
  if (writes.length !== rec.writes) {
    throw new Error(`replay: ${rec.writes} writes expected, got ${writes.length}`);
  }
  if (lostError) throw lostError;
  let w = 0, pipe: GPUComputePipeline | null = null;
  for (const c of rec.commands) {
    if (c.kind === "dispatch") {
      if (!pass) {
        pass = currentEncoder().beginComputePass();
        pipe = null;
      }
      if (c.pipe !== pipe) pass.setPipeline(pipe = c.pipe);
      pass.setBindGroup(0, c.bindGroup);
      pass.dispatchWorkgroups(c.x, c.y, c.z);
    } else if (c.kind === "clear") currentEncoder().clearBuffer(c.buf, c.offset, c.bytes);
    else if (c.kind === "copy") {
      currentEncoder().copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.bytes);
    } else if (c.kind === "texture") currentEncoder().copyBufferToTexture(c.src, c.dst, c.size);
    else writeInOrder(c.dst, c.offset, writes[w++]);
  }
  pendingDispatches += rec.dispatches;
}

// ---------------------------------------------------------------- profiling

// Profiling captures the dispatches recorded while it is on, then replays each on its own (submit,
// wait) to time it. Replaying re-runs kernels on their current buffers, so state updated in place
// (optimizer, running statistics) moves on: profile on throwaway state. (Timestamp queries would be
// cheaper, but software adapters such as lavapipe return zeros for them.)

export interface CapturedDispatch {
  label: string;
  pipe: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups: [number, number, number];
}

let captured: CapturedDispatch[] | null = null;

/** Starts capturing every dispatch (they still run normally). */
export function startCapture(): void {
  captured = [];
}

/** Stops capturing and returns the dispatches recorded since `startCapture()`. */
export function stopCapture(): CapturedDispatch[] {
  const c = captured ?? [];
  captured = null;
  return c;
}

// ---------------------------------------------------------------- dispatch geometry helpers

/** Workgroup size of the 1-D elementwise kernels. */
export const WG = 256;

/**
 * Grid for `n` invocations of 1-D kernels with workgroup size `wg`, folded into two dimensions when
 * it exceeds the per-dimension limit. Pair it with `linearIndex(grid)` in the WGSL.
 */
export function grid1D(n: number, wg = WG): [number, number] {
  const groups = Math.max(1, Math.ceil(n / wg));
  const maxDim = gpu().limits.maxComputeWorkgroupsPerDimension;
  if (groups <= maxDim) return [groups, 1];
  const y = Math.ceil(groups / maxDim);
  return [Math.ceil(groups / y), y];
}

/**
 * The parameters of a `main` that reads the flat invocation index of any `grid1D` dispatch with
 * `flatIndex()`: the grid is read at run time, so the source does not depend on the size.
 */
export const FLAT_ARGS =
  "@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>";

/** WGSL expression for the flat invocation index of a `grid1D` dispatch, in a `main(FLAT_ARGS)`. */
export function flatIndex(wg = WG): string {
  return `(gid.x + gid.y * nwg.x * ${wg}u)`;
}

/** WGSL expression for the flat invocation index of a `grid1D` dispatch (uses `gid`). */
export function linearIndex(grid: [number, number], wg = WG): string {
  return grid[1] === 1 ? "gid.x" : `(gid.x + gid.y * ${grid[0] * wg}u)`;
}
