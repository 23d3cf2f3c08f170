/**
 * Errors of the metric functions. The metrics entry (`@peftjs/evaluator/metrics`) imports neither
 * tfjs nor `@peftjs/core`, so it cannot construct core's `PeftError`; it throws an Error carrying the
 * same `Symbol.for('peftjs.error')` marker, name and `code`, so `PeftError.isInstance(e)` recognizes it.
 */
const marker = Symbol.for('peftjs.error');

export type MetricErrorCode = 'INVALID_ARGUMENT';

export interface MetricError extends Error {
  readonly code: MetricErrorCode;
}

export function metricError(message: string): MetricError {
  const e = new Error(message) as Error & { code: MetricErrorCode; [marker]: true };
  e.name = 'PeftError';
  e.code = 'INVALID_ARGUMENT';
  e[marker] = true;
  return e;
}
