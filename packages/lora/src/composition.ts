import * as tf from '@tensorflow/tfjs';
import { PeftError, composeLayer, compositionToString, linearOp, type CompositionBlock, type ComposeOps } from '@peftjs/core';
import type { LoraLinear } from './layer';

/**
 * AdapterHub's LoRAState: the layer input, the adapters' running output `h` (null before the first adapter),
 * and the base layer's output. The layer returns base + h.
 */
interface LoraState {
  x: tf.Tensor;
  h: tf.Tensor | null;
  y: tf.Tensor;
}

/** The blocks a LoRA layer runs (AdapterHub's LoRALinear.supported_compositions; Fuse and Split are bottleneck-only). */
export const LORA_COMPOSITIONS = ['Stack', 'Parallel', 'Average', 'BatchSplit'] as const;

const rows = (t: tf.Tensor, begin: number, size: number) => tf.slice(t, [begin], [size]);

/**
 * LoRA under a composition block, with AdapterHub's semantics (adapters 1.x, methods/lora.py):
 * one adapter adds h = s·B·A·dropout(x); in a Stack the next adapter reads the previous one's output h (not x), so
 * Stack(a, b) gives base + s_b·B_b·A_b·(s_a·B_a·A_a·x) and needs a square layer; Average adds Σ wᵢ·hᵢ; Parallel and
 * BatchSplit give each row slice its own adapters. An adapter the layer lacks contributes nothing (h = 0).
 * For the sum of several adapters' deltas (HF PEFT's several active adapters) use setAdapter([...]) instead.
 */
export function loraComposedForward(layer: LoraLinear, x: tf.Tensor, block: CompositionBlock): tf.Tensor {
  return tf.tidy(() => {
    const where = `a LoRA layer (${layer.inFeatures} → ${layer.outFeatures})`;
    const zerosLike = (s: LoraState) => tf.zerosLike(s.y);
    const ops: ComposeOps<LoraState> = {
      where,
      has: (n) => layer.has(n),
      rows: (s) => s.x.shape[0],
      slice: (s, b, n) => ({ x: rows(s.x, b, n), h: s.h && rows(s.h, b, n), y: rows(s.y, b, n) }),
      concat: (states) => {
        const anyH = states.some((s) => s.h);
        return {
          x: tf.concat(states.map((s) => s.x), 0),
          h: anyH ? tf.concat(states.map((s) => s.h ?? zerosLike(s)), 0) : null,
          y: tf.concat(states.map((s) => s.y), 0),
        };
      },
      average: (states, weights) => {
        let h: tf.Tensor | null = null;
        states.forEach((s, i) => {
          if (!s.h) return;
          const t = tf.mul(s.h, weights[i]);
          h = h ? tf.add(h, t) : t;
        });
        return { x: states[0].x, h, y: states[0].y };
      },
      single: (name, s) => {
        if (layer.useDora[name]) throw new PeftError('UNSUPPORTED', `${compositionToString(block)}: adapter "${name}" uses DoRA, which composition blocks do not support (AdapterHub has no DoRA)`);
        const input = s.h ?? s.x;
        if (s.h && layer.inFeatures !== layer.outFeatures) {
          throw new PeftError('UNSUPPORTED', `${compositionToString(block)}: in a Stack, LoRA adapter "${name}" reads the previous adapter's output (AdapterHub's LoRA stacking), which needs a square layer; ${where} is not`);
        }
        const A = layer.loraA.get(name)!.weight;
        const B = layer.loraB.get(name)!.weight;
        const xd = layer.loraDropout.get(name)!.forward(input);
        const h = tf.mul(linearOp({ x: linearOp({ x: xd, weight: A }, {}), weight: B }, {}), layer.scaling[name]);
        return { ...s, h };
      },
    };
    const out = composeLayer(block, { x, h: null, y: layer.baseLayer.forward(x) }, ops);
    return out.h ? tf.add(out.y, out.h) : out.y;
  });
}
