/**
 * The one terminal progress bar of peftjs (trainer, evaluator, CLI): a single line on stderr, redrawn at
 * most every 100 ms, drawn only when the stream is a TTY (silent in CI, pipes and browsers).
 */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(s: string): unknown;
}

export interface ProgressBar {
  /** Redraws with `done` of `total` steps; `detail` follows the count; `etaSeconds` overrides the estimate. */
  update(done: number, opts?: { detail?: string; etaSeconds?: number }): void;
  /** Prints a line above the bar. */
  message(line: string): void;
  /** Ends the bar's line. */
  done(): void;
}

function stderr(): ProgressStream | undefined {
  return (globalThis as { process?: { stderr?: ProgressStream } }).process?.stderr;
}

/** 75 → "1m15s", 3725 → "1h02m"; "?" for an unknown duration. */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  s = Math.round(s);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

export function createProgressBar(opts: { total: number; label?: string; enabled?: boolean; stream?: ProgressStream }): ProgressBar {
  const stream = opts.stream ?? stderr();
  const on = (opts.enabled ?? true) && !!stream?.isTTY;
  const start = Date.now();
  let first: number | undefined;
  let last = 0;
  let drawn = false;
  return {
    update(done, u = {}) {
      if (!on) return;
      const now = Date.now();
      first ??= done;
      if (done < opts.total && now - last < 100) return;
      last = now;
      const width = 24;
      const frac = opts.total > 0 ? Math.min(1, done / opts.total) : 1;
      const filled = Math.round(frac * width);
      const secs = (now - start) / 1000;
      const rate = done > first ? (done - first) / secs : 0;
      const eta = u.etaSeconds ?? (rate > 0 ? (opts.total - done) / rate : NaN);
      const line = `${opts.label ? `${opts.label} ` : ''}${'█'.repeat(filled)}${'░'.repeat(width - filled)} ${done}/${opts.total}${
        u.detail ? ` | ${u.detail}` : ''
      } | ${formatDuration(secs)}${done < opts.total ? ` | ETA ${formatDuration(eta)}` : ''}`;
      const cols = Math.max(20, (stream!.columns ?? 100) - 1);
      stream!.write(`\r${line.slice(0, cols).padEnd(cols)}`);
      drawn = true;
    },
    message(line) {
      if (!on) return;
      if (drawn) stream!.write('\n');
      drawn = false;
      stream!.write(`${line}\n`);
    },
    done() {
      if (on && drawn) stream!.write('\n');
      drawn = false;
    },
  };
}
