/** A one-line terminal progress bar on stderr: step, loss, lr, tokens/s, ETA. Quiet when stderr is not a TTY. */
export interface ProgressSink {
  update(p: { step: number; total: number; loss?: number; lr: number; tokensPerSecond: number; etaSeconds: number; epoch: number }): void;
  message(line: string): void;
  done(): void;
}

type Stream = { isTTY?: boolean; columns?: number; write(s: string): unknown };

function stderr(): Stream | undefined {
  const p = (globalThis as { process?: { stderr?: Stream } }).process;
  return p?.stderr;
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  s = Math.round(s);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

export function createProgress(enabled: boolean | 'auto', stream: Stream | undefined = stderr()): ProgressSink {
  const on = !!stream && (enabled === true || (enabled === 'auto' && !!stream.isTTY));
  let last = 0;
  let drawn = false;
  const draw = (line: string) => {
    if (!stream) return;
    const width = Math.max(20, (stream.columns ?? 100) - 1);
    stream.write(`\r${line.slice(0, width).padEnd(width)}`);
    drawn = true;
  };
  return {
    update(p) {
      if (!on) return;
      const now = Date.now();
      if (p.step < p.total && now - last < 100) return;
      last = now;
      const frac = p.total ? Math.min(1, p.step / p.total) : 0;
      const w = 24;
      const filled = Math.round(frac * w);
      const bar = '█'.repeat(filled) + '░'.repeat(w - filled);
      draw(
        `${bar} ${p.step}/${p.total} | ep ${p.epoch.toFixed(2)} | loss ${p.loss === undefined ? '-' : p.loss.toFixed(4)} | lr ${p.lr.toExponential(2)} | ${Math.round(p.tokensPerSecond)} tok/s | ETA ${formatDuration(p.etaSeconds)}`,
      );
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
