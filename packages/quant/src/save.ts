import * as tf from '@tensorflow/tfjs';
import { PeftError, getFileSystem, joinPath, serializeSafetensors, stableJson, type FileSystem, type PreTrainedModel, type TensorToWrite } from '@peftjs/core';
import { codeTable } from './bnb';
import type { BitsAndBytesConfig } from './config';
import { Linear4bit, type Linear4bitState } from './linear4bit';

/**
 * Python's repr of a float (what json.dumps writes): the shortest round-trip digits, like JS, but an
 * exponent below 1e-4 or from 1e16 (two-digit at least, signed) and a ".0" on integral values.
 */
export function pyFloat(x: number): string {
  if (!Number.isFinite(x)) throw new PeftError('INVALID_ARGUMENT', `pyFloat: ${x} is not JSON`);
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const a = Math.abs(x);
  if (a < 1e-4 || a >= 1e16) {
    const [m, e] = x.toExponential().split('e');
    const n = Number(e);
    return `${m}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
  }
  const s = String(x);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** bitsandbytes' pack_dict_to_tensor: json.dumps of the non-tensor quant-state items, as UTF-8 bytes. */
export function quantStateJson(s: Linear4bitState, outF: number, inF: number): string {
  const parts = [`"quant_type": "${s.quantType}"`, '"blocksize": 64', '"dtype": "float32"', `"shape": [${outF}, ${inF}]`];
  if (s.nested) parts.push('"nested_blocksize": 256', '"nested_dtype": "float32"', `"nested_offset": ${pyFloat(s.nested.offset)}`);
  return `{${parts.join(', ')}}`;
}

/** One Linear4bit's tensors in transformers' layout (Linear4bit._save_to_state_dict + QuantState.as_dict(packed=True)). */
export function bnbTensors(name: string, s: Linear4bitState, outF: number, inF: number): Record<string, TensorToWrite> {
  const w = `${name}.weight`;
  const out: Record<string, TensorToWrite> = {};
  out[w] = { dtype: 'U8', shape: [s.packed.length, 1], data: s.packed };
  if (s.nested) {
    out[`${w}.absmax`] = { dtype: 'U8', shape: [s.nested.codes.length], data: s.nested.codes };
  } else {
    out[`${w}.absmax`] = { dtype: 'F32', shape: [s.absmax!.length], data: s.absmax! };
  }
  out[`${w}.quant_map`] = { dtype: 'F32', shape: [16], data: Float32Array.from(codeTable(s.quantType)) };
  if (s.nested) {
    out[`${w}.nested_absmax`] = { dtype: 'F32', shape: [s.nested.nestedAbsmax.length], data: s.nested.nestedAbsmax };
    out[`${w}.nested_quant_map`] = { dtype: 'F32', shape: [256], data: s.nested.nestedMap };
  }
  const json = new TextEncoder().encode(quantStateJson(s, outF, inF));
  out[`${w}.quant_state.bitsandbytes__${s.quantType}`] = { dtype: 'U8', shape: [json.length], data: json };
  return out;
}

/**
 * Saves a 4-bit model as transformers saves a bitsandbytes 4-bit model: model.safetensors with each
 * Linear4bit in bnb's layout and the other parameters in float32, and config.json with
 * `quantization_config`. The tied output head is not written (as transformers).
 */
export async function saveQuantizedPretrained(model: PreTrainedModel, dir: string, opts: { fs?: FileSystem; quantizationConfig?: BitsAndBytesConfig } = {}): Promise<void> {
  const fs = opts.fs ?? getFileSystem();
  const q = opts.quantizationConfig ?? (model as unknown as { quantizationConfig?: BitsAndBytesConfig }).quantizationConfig;
  if (!q) throw new PeftError('INVALID_ARGUMENT', 'saveQuantizedPretrained: the model was not loaded with a quantizationConfig; pass opts.quantizationConfig');
  const tensors: Record<string, TensorToWrite> = {};
  const quantized = new Set<string>();
  for (const [name, m] of model.namedModules()) {
    if (!(m instanceof Linear4bit)) continue;
    if (!m.isQuantized) throw new PeftError('INVALID_ARGUMENT', `saveQuantizedPretrained: ${name} was dequantised (a merge); call requantizeModel first`);
    Object.assign(tensors, bnbTensors(name, await m.state(), m.outFeatures, m.inFeatures));
    quantized.add(name);
  }
  for (const [name, p] of model.namedParameters()) {
    tensors[name] = { dtype: 'F32', shape: [...p.shape], data: Float32Array.from(await (p as tf.Tensor).data()) };
  }
  await fs.mkdirp(dir);
  await fs.writeFileAtomic(joinPath(dir, 'model.safetensors'), serializeSafetensors(tensors, { format: 'pt' }));
  const raw = { ...model.config.raw, quantization_config: q.toDict() };
  await fs.writeFileAtomic(joinPath(dir, 'config.json'), stableJson(raw)); // as PretrainedConfig.to_json_string: keys sorted, indent 2
}
