// A one-line progress bar on stderr (redrawn in place on a terminal, a line at a time otherwise).

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export class Progress {
  private readonly tty = Deno.stderr.isTerminal();
  private readonly start = performance.now();
  private readonly enc = new TextEncoder();

  constructor(private readonly label: string, private readonly total: number) {}

  update(done: number, images: number, extra = ""): void {
    const secs = (performance.now() - this.start) / 1000;
    const rate = images / Math.max(secs, 1e-9);
    const eta = done > 0 ? (secs / done) * (this.total - done) : NaN;
    const width = 24, filled = Math.round((width * done) / Math.max(this.total, 1));
    const bar = "#".repeat(filled) + ".".repeat(width - filled);
    const line = `${this.label} [${bar}] ${done}/${this.total} steps, ${rate.toFixed(1)} img/s, ETA ${
      formatDuration(eta)
    }${extra ? ", " + extra : ""}`;
    Deno.stderr.writeSync(this.enc.encode(this.tty ? `\r\x1b[2K${line}` : `${line}\n`));
  }

  done(): void {
    if (this.tty) Deno.stderr.writeSync(this.enc.encode("\r\x1b[2K"));
  }
}
