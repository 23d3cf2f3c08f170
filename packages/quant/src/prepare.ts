import { Linear, PeftError, type PreTrainedModel } from '@peftjs/core';
import { Linear4bit } from './linear4bit';

export interface PrepareKbitOptions {
  /** Turns gradient checkpointing on (HF's default true). */
  useGradientCheckpointing?: boolean;
}

/**
 * HF PEFT's prepare_model_for_kbit_training: freezes every parameter of the base; keeps the norms (and
 * every other non-quantised parameter) in float32 — in peftjs they already are: TensorFlow.js computes
 * in float32 only; turns input gradients on (`inputRequireGrads`: HF needs an embedding-output hook
 * for reentrant checkpointing; peftjs' checkpoint passes gradients to a block's parameters whatever its
 * input, so it is a flag recorded for parity); and turns gradient checkpointing on. Returns the model.
 */
export function prepareModelForKbitTraining<M extends PreTrainedModel>(model: M, opts: PrepareKbitOptions = {}): M {
  const quantized = [...model.namedModules()].some(([, m]) => m instanceof Linear4bit);
  if (!quantized) throw new PeftError('INVALID_ARGUMENT', 'prepareModelForKbitTraining: the model has no 4-bit layers (load it with quantizationConfig)');
  model.requiresGrad(false);
  for (const [name, p] of model.namedParameters()) {
    if (p.dtype !== 'float32') throw new PeftError('UNSUPPORTED', `prepareModelForKbitTraining: parameter ${name} is ${p.dtype}, not float32`);
  }
  (model as unknown as { inputRequireGrads: boolean }).inputRequireGrads = true;
  if (opts.useGradientCheckpointing ?? true) model.gradientCheckpointingEnable();
  return model;
}

/**
 * Packs again every Linear4bit that a merge dequantised (`mergeAndUnload` on a 4-bit base), with HF's
 * warning about rounding; returns how many layers were re-quantised.
 */
export async function requantizeModel(model: PreTrainedModel, opts: { onWarning?: (msg: string) => void } = {}): Promise<number> {
  let n = 0;
  let warned = false;
  const warn = (msg: string) => {
    if (!warned) (opts.onWarning ?? console.warn)(msg);
    warned = true;
  };
  for (const [, m] of model.namedModules()) {
    if (m instanceof Linear4bit && !m.isQuantized) {
      await m.requantize(warn);
      n++;
    }
  }
  return n;
}

/** transformers' model.dequantize(): every Linear4bit becomes an fp32 Linear (one layer's weight made at a time). */
export function dequantizeModel<M extends PreTrainedModel>(model: M): M {
  for (const [name, m] of [...model.namedModules()]) {
    if (!(m instanceof Linear4bit)) continue;
    const w = m.dequantize();
    const b = m.maybeParam('bias');
    const lin = new Linear(m.inFeatures, m.outFeatures, { bias: !!b, weight: w, biasValue: b });
    w.dispose();
    for (const [, p] of lin.namedParameters()) p.trainable = false;
    m.dispose();
    model.setSubmodule(name, lin);
  }
  return model;
}
