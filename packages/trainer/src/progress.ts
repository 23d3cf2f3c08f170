import { createProgressBar, type ProgressStream } from '@peftjs/core';

/** The trainer's line: step, epoch, loss, lr, tokens/s and ETA on core's bar. Quiet when stderr is not a TTY. */
export interface ProgressSink {
  update(p: { step: number; total: number; loss?: number; lr: number; tokensPerSecond: number; etaSeconds: number; epoch: number }): void;
  message(line: string): void;
  done(): void;
}

export function createTrainProgress(enabled: boolean | 'auto', stream?: ProgressStream): ProgressSink {
  let bar: ReturnType<typeof createProgressBar> | undefined;
  const get = (total: number) => (bar ??= createProgressBar({ total, enabled: enabled !== false, stream }));
  return {
    update(p) {
      get(p.total).update(p.step, {
        detail: `ep ${p.epoch.toFixed(2)} | loss ${p.loss === undefined ? '-' : p.loss.toFixed(4)} | lr ${p.lr.toExponential(2)} | ${Math.round(p.tokensPerSecond)} tok/s`,
        etaSeconds: p.etaSeconds,
      });
    },
    message(line) {
      get(0).message(line);
    },
    done() {
      bar?.done();
    },
  };
}
