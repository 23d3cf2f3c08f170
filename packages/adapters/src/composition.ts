import * as tf from '@tensorflow/tfjs';
import { PeftError, composeLayer, compositionToString, type AdapterSetup, type CompositionBlock, type ComposeOps, type FuseBlock } from '@peftjs/core';
import type { BottleneckLayer } from './layer';
import { fusionOf } from './fusion';

/** Every block AdapterHub's BottleneckLayer runs (its supported_compositions). */
export const BOTTLENECK_COMPOSITIONS = ['Stack', 'Parallel', 'Average', 'BatchSplit', 'Split', 'Fuse'] as const;

/**
 * AdapterHub's BottleneckState: the running hidden states, the sub-block's residual input (the decoder's skip
 * input), the current adapter's skip input, the last adapter's `up` (for Fuse) and the last adapter's name.
 */
interface BottleneckState {
  hidden: tf.Tensor;
  residual: tf.Tensor;
  adapterResidual: tf.Tensor;
  up: tf.Tensor | null;
  last: string | null;
}

const rows = (t: tf.Tensor, begin: number, size: number) => tf.slice(t, [begin], [size]);
const positions = (t: tf.Tensor, begin: number, size: number) => tf.slice(t, [0, begin], [-1, size]);

function firstAdapter(setup: AdapterSetup, has: (n: string) => boolean): string | undefined {
  if (typeof setup === 'string') return has(setup) ? setup : undefined;
  for (const c of setup.children) {
    const f = firstAdapter(c, has);
    if (f) return f;
  }
  return undefined;
}

function lastAdapter(setup: AdapterSetup): string {
  return typeof setup === 'string' ? setup : lastAdapter(setup.children[setup.children.length - 1]);
}

/**
 * A bottleneck layer's output under a composition block (AdapterHub's BottleneckLayer.bottleneck_layer_forward
 * with its compose_* methods): the state starts as (hidden, residual, residual), the blocks run through
 * core's composeLayer with the layer's per-adapter pieces, and the last adapter's post_forward ends it.
 */
export function bottleneckComposedForward(layer: BottleneckLayer, block: CompositionBlock, hidden: tf.Tensor, residual: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const has = (n: string) => layer.has(n);
    const where = `layer ${layer.layerIdx} ${layer.location}`;
    const ops: ComposeOps<BottleneckState> = {
      where,
      has,
      rows: (s) => s.hidden.shape[0],
      slice: (s, b, n) => ({ hidden: rows(s.hidden, b, n), residual: rows(s.residual, b, n), adapterResidual: rows(s.adapterResidual, b, n), up: s.up && rows(s.up, b, n), last: s.last }),
      concat: (states) => ({
        hidden: tf.concat(states.map((s) => s.hidden), 0),
        residual: tf.concat(states.map((s) => s.residual), 0),
        adapterResidual: tf.concat(states.map((s) => s.adapterResidual), 0),
        up: states.every((s) => s.up) ? tf.concat(states.map((s) => s.up!), 0) : null,
        last: [...states].reverse().find((s) => s.last)?.last ?? null,
      }),
      seqLength: (s) => s.hidden.shape[1]!,
      sliceSeq: (s, b, n) => ({ hidden: positions(s.hidden, b, n), residual: positions(s.residual, b, n), adapterResidual: positions(s.adapterResidual, b, n), up: s.up && positions(s.up, b, n), last: s.last }),
      concatSeq: (states) => ({
        hidden: tf.concat(states.map((s) => s.hidden), 1),
        residual: tf.concat(states.map((s) => s.residual), 1),
        adapterResidual: tf.concat(states.map((s) => s.adapterResidual), 1),
        up: states.every((s) => s.up) ? tf.concat(states.map((s) => s.up!), 1) : null,
        last: [...states].reverse().find((s) => s.last)?.last ?? null,
      }),
      // Σ wᵢ·hiddenᵢ: the weighted mean of the branches' outputs (AdapterHub documents a weighted average; its
      // code's torch.mean over the weighted stack would divide by the count once more)
      average: (states, weights) => ({
        ...states[0],
        hidden: states.map((s, i) => tf.mul(s.hidden, weights[i])).reduce((a, b) => tf.add(a, b)),
        last: [...states].reverse().find((s) => s.last)?.last ?? null,
      }),
      preBlock: (setup, s) => {
        const name = firstAdapter(setup, has);
        if (!name) return s;
        const pre = layer.preForward(name, s.hidden, s.residual);
        return { ...s, hidden: pre.hidden, adapterResidual: pre.residual };
      },
      single: (name, s) => {
        const { output, up } = layer.adapterForward(name, s.hidden, s.adapterResidual);
        return { ...s, hidden: output, up, last: name };
      },
      fuse: (fuse: FuseBlock, s, run) => {
        const fusion = fusionOf(layer, fuse.name);
        if (!fusion) throw new PeftError('INVALID_ARGUMENT', `${compositionToString(fuse)}: ${where} has no fusion layer "${fuse.name}"; add it with addAdapterFusion`);
        const last = lastAdapter(fuse);
        if (!has(last)) return s;
        // the last fused adapter's pre_forward gives the query (query_before_ln false: the adapter's input)
        const pre = layer.preForward(last, s.hidden, s.residual);
        const query = fusion.config.queryBeforeLn ? s.hidden : pre.hidden;
        const ups: tf.Tensor[] = [];
        for (const child of fuse.children) {
          if (!has(lastAdapter(child))) continue;
          ups.push(run(child, s).up!); // each child on the block's input, as it runs alone
        }
        return { ...s, hidden: fusion.fuse(query, tf.stack(ups, 2), pre.residual), adapterResidual: pre.residual, last };
      },
    };
    const start: BottleneckState = { hidden, residual, adapterResidual: residual, up: null, last: null };
    const out = composeLayer(block, start, ops);
    if (!out.last) return tf.add(hidden, residual);
    return layer.postForward(out.last, out.hidden, hidden, out.residual);
  });
}
