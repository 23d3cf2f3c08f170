// A small progress bar on stderr: drawn only when stderr is a TTY, silent otherwise (CI, pipes, browsers).

export interface Progress {
  tick(n?: number): void;
  done(): void;
}

export type ProgressOption = boolean | ((done: number, total: number) => void);

interface TtyLike {
  isTTY?: boolean;
  columns?: number;
  write(s: string): unknown;
}

function stderr(): TtyLike | undefined {
  const p = (globalThis as { process?: { stderr?: TtyLike } }).process;
  return p?.stderr;
}

/**
 * A progress reporter for `total` steps. `option`: a callback gets (done, total) on every tick;
 * true draws the bar when stderr is a TTY; false draws nothing. Default: draw on a TTY when
 * `total` ≥ `minTotal` (a long set).
 */
export function createProgress(label: string, total: number, option?: ProgressOption, minTotal = 2): Progress {
  let done = 0;
  if (typeof option === 'function') {
    return {
      tick(n = 1) {
        done = Math.min(total, done + n);
        option(done, total);
      },
      done() {},
    };
  }
  const out = stderr();
  const enabled = option !== false && !!out?.isTTY && (option === true || total >= minTotal);
  if (!enabled || !out) return { tick() {}, done() {} };
  const start = Date.now();
  let last = 0;
  const draw = (force: boolean) => {
    const now = Date.now();
    if (!force && now - last < 100) return;
    last = now;
    const width = Math.max(10, Math.min(30, (out.columns ?? 80) - label.length - 40));
    const frac = total > 0 ? done / total : 1;
    const filled = Math.round(frac * width);
    const secs = (now - start) / 1000;
    const eta = done > 0 && done < total ? ` eta ${Math.ceil((secs / done) * (total - done))}s` : '';
    out.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${secs.toFixed(1)}s${eta}\x1b[K`);
  };
  draw(true);
  return {
    tick(n = 1) {
      done = Math.min(total, done + n);
      draw(done === total);
    },
    done() {
      draw(true);
      out.write('\n');
    },
  };
}
