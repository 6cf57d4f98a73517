// Stop requests from signals: Ctrl-C (SIGINT) and what schedulers send before they stop a job —
// SIGTERM (Slurm, Kubernetes, systemd) and SIGHUP (a closed terminal or session). The first one asks
// the run to finish its current step, write a checkpoint and exit with the conventional status
// 128 + signal number; a second one exits at once with its own status.

/** The signals listened to and their conventional exit statuses. */
export const STOP_SIGNALS = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
export type StopSignal = keyof typeof STOP_SIGNALS;

export interface StopListener {
  /** The first signal received, or null. */
  readonly signal: StopSignal | null;
  /** The exit status for the first signal (0 when none came). */
  readonly status: number;
  /** Stops listening. */
  remove(): void;
}

/**
 * Listens for the stop signals. `say` gets a line when the first arrives. Signals the platform
 * cannot listen for (SIGTERM and SIGHUP on Windows) are skipped.
 */
export function listenForStop(say: (line: string) => void = (l) => console.error(l)): StopListener {
  let first: StopSignal | null = null;
  const handlers: [StopSignal, () => void][] = [];
  for (const sig of Object.keys(STOP_SIGNALS) as StopSignal[]) {
    const handler = () => {
      if (first) {
        say(`\n${sig}: a second stop signal, quitting now without a checkpoint`);
        Deno.exit(STOP_SIGNALS[sig]);
      }
      first = sig;
      const name = sig === "SIGINT" ? "Ctrl-C" : sig;
      say(
        `\n${name}: finishing the current step and writing a checkpoint, then exiting with status ` +
          `${STOP_SIGNALS[sig]} (send it again to quit now)`,
      );
    };
    try {
      Deno.addSignalListener(sig, handler);
      handlers.push([sig, handler]);
    } catch {
      // not supported on this platform
    }
  }
  return {
    get signal() {
      return first;
    },
    get status() {
      return first ? STOP_SIGNALS[first] : 0;
    },
    remove() {
      for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
    },
  };
}
