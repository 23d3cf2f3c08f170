import * as tf from '@tensorflow/tfjs';
import { PeftError } from './errors';
import { getRngState, setRngState } from './nn/random';

interface EngineState {
  activeTape: unknown;
  gradientDepth: number;
  kernelDepth: number;
}

function engineState(): EngineState {
  return (tf.engine() as unknown as { state: EngineState }).state;
}

/** Whether tfjs is recording a tape now (inside tf.grad / variableGrads, outside a kernel). */
export function isRecordingGradients(): boolean {
  const s = engineState();
  return s.gradientDepth > 0 && s.kernelDepth === 0;
}

/**
 * Activation (gradient) checkpointing, torch.utils.checkpoint's: `fn(...inputs, ...constants)` runs
 * without recording anything for backward — only `inputs` and `constants` are kept — and the backward
 * pass runs `fn` again on them under a fresh tape to get the gradients of `inputs` and `params`.
 *
 * - `inputs`: the tensors fn differentiates through (float; gradients flow to them).
 * - `params`: the trainable variables fn reads (its gradients go to them as if fn had run on the tape).
 * - `constants`: other tensors fn reads that must survive until backward (masks, RoPE tables); no
 *   gradient. Any tensor fn reads that is created inside the outer forward must be passed here or in
 *   inputs, or it will have been disposed by the time backward runs.
 *
 * The random stream (`nextSeed`) is rewound for the recomputation, so dropout draws the same masks.
 * Outside a gradient tape it is plain `fn(...inputs, ...constants)`.
 */
export function checkpoint(
  fn: (...tensors: tf.Tensor[]) => tf.Tensor,
  inputs: tf.Tensor[],
  params: tf.Variable[],
  constants: tf.Tensor[] = [],
): tf.Tensor {
  if (!isRecordingGradients()) return fn(...inputs, ...constants);
  for (const [i, x] of inputs.entries()) {
    if (x.dtype !== 'float32') throw new PeftError('INVALID_ARGUMENT', `checkpoint: inputs[${i}] is ${x.dtype}; pass integer and boolean tensors as constants`);
  }
  const nIn = inputs.length;
  const seed = getRngState();
  const op = tf.customGrad(((...args: unknown[]) => {
    const save = args[args.length - 1] as (ts: tf.Tensor[]) => void;
    const xs = args.slice(0, nIn) as tf.Tensor[];
    save([...xs, ...constants]);
    const value = fn(...xs, ...constants);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor[] => {
      const savedInputs = saved.slice(0, nIn);
      const savedConstants = saved.slice(nIn);
      // tfjs keeps one tape: this inner gradient would replace the outer one and then clear it
      const state = engineState();
      const outerTape = state.activeTape;
      const after = getRngState();
      setRngState(seed);
      let grads: (tf.Tensor | null)[];
      try {
        const res = tf.engine().gradients(() => fn(...savedInputs, ...savedConstants), [...savedInputs, ...params], dy, true);
        res.value.dispose();
        grads = res.grads as (tf.Tensor | null)[];
      } finally {
        state.activeTape = outerTape;
        setRngState(after);
      }
      const all = [...savedInputs, ...params];
      return grads.map((g, i) => g ?? tf.zerosLike(all[i]));
    };
    return { value, gradFunc };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(...inputs, ...params);
}
