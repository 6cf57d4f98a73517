// The phase reporter every command uses for its long phases (download, decode, compile, tune, train,
// evaluate, checkpoint): a label, done/total in a unit, the elapsed time and an ETA. On a terminal it is
// one line redrawn in place (at most every `redrawMs`); elsewhere (a log file, a pipe, Slurm) it is a
// line at the start, one when the first unit is done, one every `everyMs` (5 s) while the phase runs, and
// one at the end, so that no log goes silent for long. The clock and the output are injectable (tests use a fake clock).
//
//   const p = new Phase("compiling", 152, { unit: "kernels" });
//   p.update(40);  // "compiling 152 kernels [######..................] 40/152 kernels (26%), 0:05 elapsed, ETA 0:14"
//   p.log("a line");         // printed above the bar on a terminal
//   p.end("compiled 152 kernels in 19.2 s");
//
// `heartbeat(label, fn)` covers a phase without a count (a bundle, a checkpoint): it says `label…` once
// the phase has lasted `quietMs`, then every `everyMs` how long it has run, and how long it took.

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** How a phase writes and keeps time; every field has a default (stderr, its TTY-ness, the clock). */
export interface PhaseOptions {
  /** What is counted ("steps", "kernels", "images", "shapes"); default "". */
  unit?: string;
  /** Redraw one line in place (default: whether stderr is a terminal). */
  tty?: boolean;
  /** Writes text as is (default: stderr). Lines end with "\n"; redraws start with "\r\x1b[2K". */
  write?: (text: string) => void;
  /** Milliseconds (default performance.now). */
  now?: () => number;
  /** Not a terminal: a line at most this often (default 5000 ms). */
  everyMs?: number;
  /** A terminal: redraw at most this often (default 100 ms). */
  redrawMs?: number;
  /** Say nothing at all (a caller's `progress: false`). */
  quiet?: boolean;
  /** Not a terminal: no line before the phase has lasted this long (default 0): a quick phase is silent. */
  quietMs?: number;
  /** Where `log(line)` goes (default: `write(line + "\n")`). */
  log?: (line: string) => void;
}

const stderrIsTerminal = (): boolean => {
  try {
    return typeof Deno !== "undefined" && Deno.stderr.isTerminal();
  } catch {
    return false;
  }
};

const enc = new TextEncoder();
const writeStderr = (text: string): void => {
  if (typeof Deno !== "undefined") Deno.stderr.writeSync(enc.encode(text));
  else if (!text.startsWith("\r")) console.error(text.replace(/\n$/, "")); // no terminal to redraw on
};

/** The defaults of `PhaseOptions`, filled in. */
function resolveOptions(o: PhaseOptions) {
  const write = o.write ?? writeStderr;
  return {
    unit: o.unit ?? "",
    tty: o.tty ?? (o.write ? false : stderrIsTerminal()),
    write,
    now: o.now ?? (() => performance.now()),
    everyMs: o.everyMs ?? 5000,
    redrawMs: o.redrawMs ?? 100,
    quiet: o.quiet ?? false,
    quietMs: o.quietMs ?? 0,
    log: o.log ?? ((line: string) => write(`${line}\n`)),
  };
}

/** One long phase with a count: see the file header. */
export class Phase {
  private readonly o: ReturnType<typeof resolveOptions>;
  private readonly t0: number;
  private lastLine = -Infinity;
  private lastDraw = -Infinity;
  private drawn = false;
  private count = 0;
  private extra = "";
  private saidDone = false;
  private saidFirst = false;
  private ended = false;

  constructor(readonly label: string, public total: number | null, opts: PhaseOptions = {}) {
    this.o = resolveOptions(opts);
    this.t0 = this.o.now();
  }

  /** Seconds since the phase began. */
  get seconds(): number {
    return (this.o.now() - this.t0) / 1000;
  }

  /** Remaining seconds at the pace so far (NaN before the first unit or without a total). */
  eta(done = this.count): number {
    if (this.total === null || done <= 0) return NaN;
    return (this.seconds / done) * Math.max(0, this.total - done);
  }

  /** The phase's line: label, [bar] done/total unit (percent), elapsed, ETA, then `extra`. */
  line(done = this.count, extra = this.extra, bar = false): string {
    const unit = this.o.unit ? ` ${this.o.unit}` : "";
    let count: string;
    if (this.total === null) count = `${done}${unit}`;
    else {
      const f = this.total > 0 ? Math.min(1, done / this.total) : 1;
      const width = 24, filled = Math.round(width * f);
      count = (bar ? `[${"#".repeat(filled)}${".".repeat(width - filled)}] ` : "") +
        `${done}/${this.total}${unit} (${Math.floor(100 * f)}%)`;
    }
    const eta = this.total !== null && done < this.total ? `, ETA ${formatDuration(this.eta(done))}` : "";
    return `${this.label} ${count}, ${formatDuration(this.seconds)} elapsed${eta}${
      extra ? `, ${extra}` : ""
    }`;
  }

  /**
   * `done` units are done (`extra`: what else to show, e.g. the loss). A terminal redraws (throttled);
   * elsewhere a line is written at the first update, every `everyMs`, and when `done` reaches the total.
   */
  update(done: number, extra = ""): void {
    this.count = done;
    this.extra = extra;
    if (this.o.quiet || this.ended) return;
    const now = this.o.now(), complete = this.total !== null && done >= this.total;
    if (this.o.tty) {
      if (!complete && now - this.lastDraw < this.o.redrawMs) return;
      this.lastDraw = now;
      this.o.write(`\r\x1b[2K${this.line(done, extra, true)}`);
      this.drawn = true;
      return;
    }
    if (this.lastLine === -Infinity && now - this.t0 < this.o.quietMs) return;
    const first = done > 0 && !this.saidFirst; // the first unit done: the phase is moving (the first step)
    if (complete ? this.saidDone : !first && now - this.lastLine < this.o.everyMs) return;
    this.lastLine = now;
    this.saidDone = complete;
    this.saidFirst ||= done > 0;
    this.o.write(`${this.line(done, extra, true)}\n`);
  }

  /** Adds `n` units done. */
  tick(n = 1, extra = this.extra): void {
    this.update(this.count + n, extra);
  }

  /** A line of the phase's own (a decision, a warning), above the bar on a terminal. */
  log(text: string): void {
    if (this.o.quiet) return;
    if (this.o.tty && this.drawn) this.o.write("\r\x1b[2K");
    this.o.log(text);
    if (this.o.tty && this.drawn && !this.ended) {
      this.o.write(`\r\x1b[2K${this.line(this.count, this.extra, true)}`);
    }
  }

  /**
   * Ends the phase: a terminal's bar is cleared; `summary`, when given, is written as a line (else, off
   * a terminal, the last state unless it was written already).
   */
  end(summary?: string): void {
    if (this.ended) return;
    this.ended = true;
    if (this.o.quiet) return;
    if (this.o.tty && this.drawn) this.o.write("\r\x1b[2K");
    if (summary !== undefined) this.o.log(summary);
    else if (!this.o.tty && !this.saidDone && this.lastLine > -Infinity) {
      this.o.write(`${this.line(this.count, this.extra, true)}\n`);
    }
  }
}

/** The training bar of an epoch: steps, images per second and the loss, as a Phase. */
export class Progress extends Phase {
  constructor(label: string, total: number, opts: PhaseOptions = {}) {
    super(label, total, { unit: "steps", ...opts });
  }

  /** `done` steps of `images` images so far (`extra`: e.g. the loss). */
  steps(done: number, images: number, extra = ""): void {
    const rate = images / Math.max(this.seconds, 1e-9);
    this.update(done, `${rate.toFixed(1)} img/s${extra ? ", " + extra : ""}`);
  }
}

/**
 * Runs `fn`, a phase without a count: after `quietMs` (default 2000) it says `label…`, then every
 * `everyMs` how long it has run, and at the end how long it took (nothing at all when it was quick).
 * Timers cannot fire while `fn` blocks the thread: use a `Phase` with counts for synchronous work.
 */
export async function heartbeat<T>(
  label: string,
  fn: () => Promise<T>,
  opts: PhaseOptions = {},
): Promise<T> {
  const o = resolveOptions(opts);
  if (o.quiet) return await fn();
  const t0 = o.now();
  let said = false;
  const secs = () => ((o.now() - t0) / 1000).toFixed(0);
  const say = () => {
    o.log(said ? `${label}… ${secs()} s` : `${label}…`);
    said = true;
    timer = setTimeout(say, o.everyMs);
  };
  let timer = setTimeout(say, opts.quietMs ?? 2000);
  try {
    return await fn();
  } finally {
    clearTimeout(timer);
    if (said) o.log(`${label}: done in ${((o.now() - t0) / 1000).toFixed(1)} s`);
  }
}

/**
 * Watches a stream of log lines: when none came for `everyMs` (5 s), says `what()` is still under way and
 * for how long nothing was said (again every `everyMs`). For a command whose steps log a line each
 * (bench rows) but where one step can be long. Its timer does not keep the process alive; `check()` is
 * what the timer calls (tests call it on a fake clock).
 */
export class Watchdog {
  private readonly o: ReturnType<typeof resolveOptions>;
  private lastLine: number;
  private lastSaid: number;
  private readonly timer: number | null;

  constructor(private readonly what: () => string, opts: PhaseOptions & { timer?: boolean } = {}) {
    this.o = resolveOptions(opts);
    this.lastLine = this.lastSaid = this.o.now();
    this.timer = this.o.quiet || opts.timer === false
      ? null
      : setInterval(() => this.check(), Math.min(1000, this.o.everyMs)) as unknown as number;
    if (this.timer !== null && typeof Deno !== "undefined") Deno.unrefTimer(this.timer);
  }

  /** A line was written: the silence starts again. */
  touch(): void {
    this.lastLine = this.lastSaid = this.o.now();
  }

  check(): void {
    const now = this.o.now();
    if (now - this.lastSaid < this.o.everyMs) return;
    this.lastSaid = now;
    this.o.log(
      `${this.what()}… still working, ${formatDuration((now - this.lastLine) / 1000)} since the last line`,
    );
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
  }
}
