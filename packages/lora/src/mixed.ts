// Per-sample adapters in one batch (HF's adapter_names= / _mixed_batch_forward): the rows naming one
// adapter form a sub-batch that goes through that adapter alone; '__base__' rows get no update.
import * as tf from '@tensorflow/tfjs';
import { PeftError } from '@peftjs/core';

export const BASE_ADAPTER_NAME = '__base__';

/**
 * `base` plus, for each adapter named in `names` (one per row of x's first axis), that adapter's update of
 * its rows: `delta(name, rows of x)` returns the update of those rows, or null where the layer has no such
 * adapter. The sub-batches' updates are concatenated and put back in row order with one gather, so the
 * result is differentiable. Call inside a tidy.
 */
export function mixedBatchForward(
  x: tf.Tensor,
  base: tf.Tensor,
  names: string[],
  delta: (name: string, sub: tf.Tensor) => tf.Tensor | null,
): tf.Tensor {
  const rows = x.shape[0];
  if (names.length !== rows) throw new PeftError('INVALID_ARGUMENT', `adapterNames has ${names.length} names for a batch of ${rows} rows`);
  const groups = new Map<string, number[]>();
  names.forEach((n, i) => {
    const g = groups.get(n);
    if (g) g.push(i);
    else groups.set(n, [i]);
  });
  const parts: tf.Tensor[] = [];
  const order: number[] = [];
  let any = false;
  for (const [name, idx] of groups) {
    let d: tf.Tensor | null = null;
    if (name !== BASE_ADAPTER_NAME) {
      const sub = idx.length === rows ? x : tf.gather(x, tf.tensor1d(idx, 'int32'), 0);
      d = delta(name, sub);
    }
    if (d) any = true;
    parts.push(d ?? tf.zeros([idx.length, ...base.shape.slice(1)], base.dtype));
    order.push(...idx);
  }
  if (!any) return base;
  const stacked = parts.length === 1 ? parts[0] : tf.concat(parts, 0);
  // the row of `stacked` that holds row i of the batch
  const where = new Array<number>(rows);
  order.forEach((row, j) => (where[row] = j));
  const inOrder = order.every((row, j) => row === j) ? stacked : tf.gather(stacked, tf.tensor1d(where, 'int32'), 0);
  return tf.add(base, inOrder);
}
