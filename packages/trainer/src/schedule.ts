import { PeftError } from '@peftjs/core';
import type { SchedulerType } from './args';

/**
 * HF's learning-rate schedules (transformers.optimization get_*_schedule*): the multiplier of the
 * peak rate at scheduler step `step` (0-based). As with HF's LambdaLR, the first optimizer step runs
 * with the rate of step 0 — with warmup that is 0.
 */
export function lrLambda(type: SchedulerType, step: number, warmupSteps: number, totalSteps: number, numCycles?: number): number {
  const warm = (s: number) => s / Math.max(1, warmupSteps);
  switch (type) {
    case 'constant':
      return 1;
    case 'constant_with_warmup':
      return step < warmupSteps ? warm(step) : 1;
    case 'linear':
      if (step < warmupSteps) return warm(step);
      return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
    case 'cosine': {
      if (step < warmupSteps) return warm(step);
      const cycles = numCycles ?? 0.5;
      const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress)));
    }
    case 'cosine_with_restarts': {
      if (step < warmupSteps) return warm(step);
      const cycles = numCycles ?? 1;
      const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
      if (progress >= 1) return 0;
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((cycles * progress) % 1))));
    }
    default:
      throw new PeftError('INVALID_CONFIG', `unknown lrSchedulerType "${type as string}"`);
  }
}

export interface SchedulerState {
  type: SchedulerType;
  baseLr: number;
  warmupSteps: number;
  totalSteps: number;
  /** Scheduler steps taken (HF's last_epoch + 1 … the step whose rate `lr` returns). */
  step: number;
  numCycles?: number;
}

/** A stateful schedule (HF's LambdaLR): `lr` is the rate of the next optimizer step; `step()` advances. */
export class LrScheduler {
  state: SchedulerState;
  constructor(opts: Omit<SchedulerState, 'step'> & { step?: number }) {
    this.state = { ...opts, step: opts.step ?? 0 };
  }
  get lr(): number {
    const s = this.state;
    return s.baseLr * lrLambda(s.type, s.step, s.warmupSteps, s.totalSteps, s.numCycles);
  }
  step(): void {
    this.state.step++;
  }
  stateDict(): SchedulerState {
    return { ...this.state };
  }
  loadStateDict(s: SchedulerState): void {
    this.state = { ...s };
  }
}

/** Warmup steps as HF resolves them: warmupSteps when > 0, else ceil(warmupRatio · total). */
export function resolveWarmupSteps(warmupSteps: number, warmupRatio: number, totalSteps: number): number {
  return warmupSteps > 0 ? warmupSteps : Math.ceil(warmupRatio * totalSteps);
}
