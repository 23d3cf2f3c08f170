import * as tf from '@tensorflow/tfjs';
import { composeLayer, type CompositionBlock, type ComposeOps } from '@peftjs/core';
import type { IA3Linear } from './layer';

/** The blocks an IA3 layer runs (AdapterHub's (IA)³ shares LoRALinear's: Stack, Parallel, Average, BatchSplit). */
export const IA3_COMPOSITIONS = ['Stack', 'Parallel', 'Average', 'BatchSplit'] as const;

/**
 * AdapterHub's LoRAState for (IA)³ (composition_mode 'scale'): the rows of the layer input and the running
 * scale per row, [rows, 1 …, features] (null before the first adapter). Its (IA)³ multiplies: a Stack scales
 * by l_a ⊙ l_b, Average by Σ wᵢ·lᵢ (an adapter the layer lacks counts as 1).
 */
interface IA3State {
  x: tf.Tensor;
  l: tf.Tensor | null;
}

/**
 * IA3 under a composition block: the per-row scale from the blocks, then the layer's own placement: the output
 * scaled (y = base(x) ⊙ l) or, for feed-forward modules, the input (y = base(x ⊙ l)).
 */
export function ia3ComposedForward(layer: IA3Linear, x: tf.Tensor, block: CompositionBlock): tf.Tensor {
  return tf.tidy(() => {
    const width = layer.isFeedforward ? layer.inFeatures : layer.outFeatures;
    const shape = (rows: number) => [rows, ...Array(x.rank - 2).fill(1), width];
    const ones = (rows: number) => tf.ones(shape(rows));
    const slice = (t: tf.Tensor, b: number, n: number) => tf.slice(t, [b], [n]);
    const ops: ComposeOps<IA3State> = {
      where: `an IA3 layer (${layer.inFeatures} → ${layer.outFeatures})`,
      has: (n) => layer.has(n),
      rows: (s) => s.x.shape[0],
      slice: (s, b, n) => ({ x: slice(s.x, b, n), l: s.l && slice(s.l, b, n) }),
      concat: (states) => ({
        x: tf.concat(states.map((s) => s.x), 0),
        l: states.some((s) => s.l) ? tf.concat(states.map((s) => s.l ?? ones(s.x.shape[0])), 0) : null,
      }),
      average: (states, weights) => ({
        x: states[0].x,
        l: tf.addN(states.map((s, i) => tf.mul(s.l ?? ones(s.x.shape[0]), weights[i]))),
      }),
      single: (name, s) => {
        const v = tf.reshape(layer.ia3L.get(name)!, [...Array(x.rank - 1).fill(1), width]);
        return { ...s, l: s.l ? tf.mul(s.l, v) : tf.mul(ones(s.x.shape[0]), v) };
      },
    };
    const { l } = composeLayer(block, { x, l: null }, ops);
    if (!l) return layer.baseLayer.forward(x);
    return layer.isFeedforward ? layer.baseLayer.forward(tf.mul(x, l)) : tf.mul(layer.baseLayer.forward(x), l);
  });
}
