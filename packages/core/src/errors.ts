const marker = Symbol.for('peftjs.error');

/** Error codes a caller can branch on; the message always names the file, field or tensor at fault. */
export type PeftErrorCode =
  | 'FILE_NOT_FOUND'
  | 'INVALID_FILE'
  | 'INVALID_CONFIG'
  | 'UNKNOWN_METHOD'
  | 'UNKNOWN_MODEL_TYPE'
  | 'SHAPE_MISMATCH'
  | 'NO_TARGET_MODULES'
  | 'REGISTRY'
  | 'UNSUPPORTED'
  | 'INVALID_ARGUMENT'
  | 'BACKEND'
  /** A file system operation failed (permissions, disk full …); the message names the path. */
  | 'IO_ERROR'
  /** A size, count or byte budget was exceeded (a cap, or `maxBytes`); the message names the field or file. */
  | 'LIMIT_EXCEEDED'
  /** Training stopped: the loss (or gradient norm) was NaN/Inf for too many steps in a row. */
  | 'NON_FINITE_LOSS'
  /** Training was interrupted (an AbortSignal, or SIGINT / SIGTERM with handleSignals); a checkpoint was written. */
  | 'INTERRUPTED';

/**
 * The one error class of peftjs. `PeftError.isInstance` works across duplicated package copies
 * (a Symbol.for marker, not instanceof).
 */
export class PeftError extends Error {
  readonly [marker] = true;
  readonly code: PeftErrorCode;
  constructor(code: PeftErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PeftError';
    this.code = code;
  }
  static isInstance(e: unknown): e is PeftError {
    return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[marker] === true;
  }
}
