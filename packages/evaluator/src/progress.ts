// Progress of an evaluation run: core's bar on a TTY, or a (done, total) callback.
import { createProgressBar } from '@peftjs/core';

export interface Progress {
  tick(n?: number): void;
  done(): void;
}

export type ProgressOption = boolean | ((done: number, total: number) => void);

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
  const bar = createProgressBar({ total, label, enabled: option === true || (option !== false && total >= minTotal) });
  bar.update(0);
  return {
    tick(n = 1) {
      done = Math.min(total, done + n);
      bar.update(done);
    },
    done() {
      bar.done();
    },
  };
}
