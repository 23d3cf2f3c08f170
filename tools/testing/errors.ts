// What a test expects of a bad input: a PeftError (anything else, or no error, fails the test), returned so
// the test can match its code and message.
import { PeftError } from '@peftjs/core';

const notPeft = (e: unknown) => new Error(`expected a PeftError, got ${(e as Error)?.name}: ${(e as Error)?.message}`);

/** The PeftError `fn` throws. */
export function peftError(fn: () => unknown): PeftError {
  try {
    fn();
  } catch (e) {
    if (!PeftError.isInstance(e)) throw notPeft(e);
    return e;
  }
  throw new Error('expected an error');
}

/** The PeftError a promise rejects with (or an async function throws). */
export async function peftErrorAsync(p: Promise<unknown> | (() => unknown)): Promise<PeftError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (!PeftError.isInstance(e)) throw notPeft(e);
    return e;
  }
  throw new Error('expected an error');
}
