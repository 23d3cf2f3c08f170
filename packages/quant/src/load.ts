import * as tf from '@tensorflow/tfjs';
import {
  Linear,
  PeftError,
  clipName,
  modelWeightFiles,
  parseSafetensors,
  rawToArray,
  rawToTensor,
  readFileChecked,
  type FileSystem,
  type RawTensor,
} from '@peftjs/core';
import { ParamSource, type AnyModelConfig, type CausalLMBase } from '@peftjs/models';
import { BLOCKSIZE, NESTED_BLOCKSIZE, codeTable, type QuantType } from './bnb';
import type { BitsAndBytesConfig } from './config';
import { Linear4bit, type Linear4bitState } from './linear4bit';

/** What `AutoModelForCausalLM.fromPretrained` hands a quantizationConfig (packages/models/src/auto.ts). */
export interface QuantizedLoadArgs {
  dir: string;
  fs: FileSystem;
  cfg: AnyModelConfig;
  /** Builds the model from a parameter source (the loader's own: placeholders for the 4-bit weights). */
  build: (src: ParamSource) => CausalLMBase;
  maxBytes: number;
}

/** The names transformers' bitsandbytes serialisation adds after `<module>.weight` (QuantState.as_dict(packed=True)). */
export const BNB_SUFFIXES = ['absmax', 'quant_map', 'nested_absmax', 'nested_quant_map', 'quant_state.bitsandbytes__nf4', 'quant_state.bitsandbytes__fp4'];

const IGNORED = [/\.rotary_emb\.inv_freq$/];

/**
 * A ParamSource over the checkpoint's raw tensors: each parameter is converted when the model asks
 * for it (so the file's tensors are never all converted at once), and the weights that will be 4-bit
 * get a shared 1×1 placeholder instead (replaced by Linear4bit layers right after the build).
 */
class RawSource extends ParamSource {
  constructor(
    private readonly raws: Record<string, RawTensor>,
    private readonly placeholderFor: (key: string) => boolean,
    private readonly shared: { placeholder: tf.Tensor; temps: tf.Tensor[]; source: string; given: Set<string> },
    private readonly at = '',
  ) {
    super(undefined, at);
  }
  override scope(name: string): ParamSource {
    return new RawSource(this.raws, this.placeholderFor, this.shared, this.at ? `${this.at}.${name}` : name);
  }
  override get(name: string, shape: number[], init: () => tf.Tensor): tf.Tensor {
    const key = this.at ? `${this.at}.${name}` : name;
    if (this.placeholderFor(key)) return this.shared.placeholder;
    const raw = Object.hasOwn(this.raws, key) ? this.raws[key] : undefined;
    // strict, and nothing is made at a size only config.json claims: a parameter the file lacks is an error
    if (!raw) throw new PeftError('INVALID_FILE', `${this.shared.source}: does not match the model built from config.json: missing tensor ${clipName(key)} [${shape}]`);
    void init;
    const t = rawToTensor(key, raw, this.shared.source);
    this.shared.given.add(key);
    if (!tf.util.arraysEqual(t.shape, shape)) {
      t.dispose();
      throw new PeftError('SHAPE_MISMATCH', `${this.shared.source}: tensor "${key}" has shape [${raw.shape}] but the model expects [${shape}] (config.json and the weights disagree)`);
    }
    this.shared.temps.push(t);
    return t;
  }
  override release(): void {}
}

function quantTypeOf(raws: Record<string, RawTensor>, w: string): QuantType | undefined {
  if (Object.hasOwn(raws, `${w}.quant_state.bitsandbytes__nf4`)) return 'nf4';
  if (Object.hasOwn(raws, `${w}.quant_state.bitsandbytes__fp4`)) return 'fp4';
  return undefined;
}

const f32 = (t: RawTensor) => Float32Array.from(rawToArray(t));

/**
 * One layer's state from transformers' bitsandbytes layout: `weight` uint8 [n/2, 1], `weight.absmax`
 * (float32, or uint8 codes when nested), `weight.quant_map`, `weight.nested_absmax`,
 * `weight.nested_quant_map`, `weight.quant_state.bitsandbytes__<type>` (uint8 bytes of JSON).
 */
export function readBnbState(raws: Record<string, RawTensor>, w: string, outF: number, inF: number, source: string): Linear4bitState {
  const qt = quantTypeOf(raws, w)!;
  const get = (suffix: string) => {
    const k = suffix ? `${w}.${suffix}` : w;
    if (!Object.hasOwn(raws, k)) throw new PeftError('INVALID_FILE', `${source}: ${clipName(k)} is missing (a bitsandbytes 4-bit layer needs it)`);
    return raws[k];
  };
  const qsName = `${w}.quant_state.bitsandbytes__${qt}`;
  const qsRaw = get(`quant_state.bitsandbytes__${qt}`);
  if (qsRaw.dtype !== 'U8') throw new PeftError('INVALID_FILE', `${source}: ${clipName(qsName)} must be uint8 (JSON bytes), got ${qsRaw.dtype}`);
  let qs: Record<string, unknown>;
  try {
    qs = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(qsRaw.bytes));
  } catch {
    throw new PeftError('INVALID_FILE', `${source}: ${clipName(qsName)} is not UTF-8 JSON`);
  }
  if (!qs || typeof qs !== 'object' || Array.isArray(qs)) throw new PeftError('INVALID_FILE', `${source}: ${clipName(qsName)} must hold a JSON object`);
  if (qs.quant_type !== qt) throw new PeftError('INVALID_FILE', `${source}: ${clipName(qsName)}: quant_type ${JSON.stringify(qs.quant_type)} does not match its name`);
  if (qs.blocksize !== BLOCKSIZE) throw new PeftError('UNSUPPORTED', `${source}: ${clipName(qsName)}: blocksize ${JSON.stringify(qs.blocksize)} (peftjs reads blocksize 64, transformers' default)`);
  const shape = qs.shape;
  if (!Array.isArray(shape) || shape.length !== 2 || shape[0] !== outF || shape[1] !== inF) {
    throw new PeftError('SHAPE_MISMATCH', `${source}: ${clipName(qsName)}: shape ${JSON.stringify(shape)} but the model expects [${outF}, ${inF}]`);
  }
  const n = outF * inF;
  const blocks = Math.ceil(n / BLOCKSIZE);
  const weight = get('');
  if (weight.dtype !== 'U8' || weight.bytes.length !== (n + 1) >> 1) {
    throw new PeftError('INVALID_FILE', `${source}: ${clipName(w)} must be uint8 with ${(n + 1) >> 1} bytes for a [${outF}, ${inF}] 4-bit weight (got ${weight.dtype} [${weight.shape}])`);
  }
  const qmap = f32(get('quant_map'));
  const table = codeTable(qt);
  if (qmap.length !== 16 || !qmap.every((v, i) => v === table[i])) {
    throw new PeftError('INVALID_FILE', `${source}: ${clipName(`${w}.quant_map`)} is not bitsandbytes' ${qt} table`);
  }
  const absmax = get('absmax');
  const nested = Object.hasOwn(raws, `${w}.nested_absmax`);
  if (!nested) {
    if (absmax.dtype !== 'F32' || absmax.shape.reduce((a, b) => a * b, 1) !== blocks) {
      throw new PeftError('INVALID_FILE', `${source}: ${clipName(`${w}.absmax`)} must be float32 with ${blocks} values (got ${absmax.dtype} [${absmax.shape}])`);
    }
    return { quantType: qt, packed: Uint8Array.from(weight.bytes), absmax: f32(absmax) };
  }
  if (absmax.dtype !== 'U8' || absmax.bytes.length !== blocks) {
    throw new PeftError('INVALID_FILE', `${source}: ${clipName(`${w}.absmax`)} must be uint8 codes, ${blocks} of them, when nested (got ${absmax.dtype} [${absmax.shape}])`);
  }
  if (qs.nested_blocksize !== NESTED_BLOCKSIZE) throw new PeftError('UNSUPPORTED', `${source}: ${clipName(qsName)}: nested_blocksize ${JSON.stringify(qs.nested_blocksize)} (peftjs reads 256)`);
  const offset = qs.nested_offset;
  if (typeof offset !== 'number' || !Number.isFinite(offset)) throw new PeftError('INVALID_FILE', `${source}: ${clipName(qsName)}: nested_offset must be a finite number`);
  const nestedAbsmax = f32(get('nested_absmax'));
  if (nestedAbsmax.length !== Math.ceil(blocks / NESTED_BLOCKSIZE)) throw new PeftError('INVALID_FILE', `${source}: ${clipName(`${w}.nested_absmax`)} has ${nestedAbsmax.length} values, not ${Math.ceil(blocks / NESTED_BLOCKSIZE)}`);
  const nestedMap = f32(get('nested_quant_map'));
  if (nestedMap.length !== 256) throw new PeftError('INVALID_FILE', `${source}: ${clipName(`${w}.nested_quant_map`)} has ${nestedMap.length} values, not 256`);
  return { quantType: qt, packed: Uint8Array.from(weight.bytes), nested: { codes: Uint8Array.from(absmax.bytes), nestedAbsmax, nestedMap, offset } };
}

/**
 * Loads a causal LM with its Linear layers (but the output head and skipped modules) in 4 bits. A
 * checkpoint in transformers' bitsandbytes layout is read as it is (its codes used unchanged); an
 * fp32/fp16/bf16 checkpoint is quantised layer by layer: each Linear's fp32 weight exists only on
 * the host while its layer is quantised, never as a tensor, and never all of them at once.
 */
export async function loadQuantizedCausalLM(q: BitsAndBytesConfig, args: QuantizedLoadArgs): Promise<CausalLMBase> {
  const { dir, fs, cfg } = args;
  if (cfg.modelType === 'gpt2') throw new PeftError('UNSUPPORTED', `${dir}: 4-bit loading covers the LLaMA family (GPT-2's Conv1D layers are not quantised by peftjs)`);
  const files = await modelWeightFiles(dir, fs);
  const raws: Record<string, RawTensor> = Object.create(null);
  let used = 0;
  for (const f of files) {
    const bytes = await readFileChecked(f, fs, args.maxBytes - used, 'maxBytes (the load budget)');
    used += bytes.byteLength;
    for (const [name, t] of Object.entries(parseSafetensors(bytes, f).tensors)) {
      if (Object.hasOwn(raws, name)) throw new PeftError('INVALID_FILE', `${f}: tensor ${clipName(name)} is also in another shard`);
      if (IGNORED.some((r) => r.test(name)) || (cfg.tieWordEmbeddings && name === 'lm_head.weight')) continue;
      raws[name] = t;
    }
  }
  const source = files.length === 1 ? files[0] : `${dir} (${files.length} shards)`;
  const preQuantized = new Set(Object.keys(raws).filter((k) => quantTypeOf(raws, k) !== undefined));
  const heads = ['lm_head', 'score'];
  const moduleOf = (key: string) => key.slice(0, -'.weight'.length);
  // rank-2 weights of the body (the LLaMA family's Linear layers; embeddings excluded), or bnb layers
  const target = (key: string) =>
    key.endsWith('.weight') &&
    (preQuantized.has(key) || (Object.hasOwn(raws, key) && raws[key].shape.length === 2 && !/embed_tokens\.weight$/.test(key))) &&
    !q.skips(moduleOf(key), heads);
  const placeholder = tf.zeros([1, 1]);
  const shared = { placeholder, temps: [] as tf.Tensor[], source, given: new Set<string>() };
  const before = new Set(Object.keys(tf.engine().registeredVariables));
  let model: CausalLMBase | undefined;
  try {
    model = args.build(new RawSource(raws, target, shared));
    tf.dispose(shared.temps);
    shared.temps.length = 0;
    const used = new Set<string>();
    for (const [name, m] of [...model.namedModules()]) {
      const key = `${name}.weight`;
      if (!(m instanceof Linear) || !target(key)) continue;
      const bias = m.maybeParam('bias');
      let layer: Linear4bit;
      if (preQuantized.has(key)) {
        layer = Linear4bit.fromState(readBnbState(raws, key, m.outFeatures, m.inFeatures, source), m.outFeatures, m.inFeatures, bias);
        for (const s of BNB_SUFFIXES) used.add(`${key}.${s}`);
      } else {
        if (!Object.hasOwn(raws, key)) throw new PeftError('INVALID_FILE', `${source}: missing tensor ${clipName(key)}`);
        const raw = raws[key];
        if (raw.shape[0] !== m.outFeatures || raw.shape[1] !== m.inFeatures) {
          throw new PeftError('SHAPE_MISMATCH', `${source}: tensor "${key}" has shape [${raw.shape}] but the model expects [${m.outFeatures}, ${m.inFeatures}]`);
        }
        // this layer's fp32 weight, on the host only while it is quantised
        const w = Float32Array.from(rawToArray(raw));
        layer = Linear4bit.fromFloat(w, m.outFeatures, m.inFeatures, { quantType: q.bnb4bitQuantType, doubleQuant: q.bnb4bitUseDoubleQuant, bias }, key);
      }
      used.add(key);
      m.dispose(); // the placeholder's variable and the old bias variable (the new layer holds its own reference)
      model.setSubmodule(name, layer);
    }
    // parameters a module made itself (norm weights start at ones) take the file's values, one at a time
    const state = model.stateDict();
    for (const [k, v] of Object.entries(state)) {
      if (shared.given.has(k) || !Object.hasOwn(raws, k)) continue;
      const t = rawToTensor(k, raws[k], source);
      try {
        if (!tf.util.arraysEqual(t.shape, v.shape)) throw new PeftError('SHAPE_MISMATCH', `${source}: tensor "${k}" has shape [${t.shape}] but the model expects [${v.shape}]`);
        v.assign(t);
      } finally {
        t.dispose();
      }
    }
    // every other tensor must be a parameter, and every parameter must have come from the file
    const params = new Set(Object.keys(state));
    const unexpected = Object.keys(raws).filter((k) => !used.has(k) && !params.has(k));
    const missing = [...params].filter((k) => !Object.hasOwn(raws, k));
    if (unexpected.length || missing.length) {
      const list = (xs: string[]) => xs.slice(0, 10).map(clipName).join(', ') + (xs.length > 10 ? ` … (${xs.length} in all)` : '');
      const parts = [];
      if (missing.length) parts.push(`missing tensors ${list(missing)}`);
      if (unexpected.length) parts.push(`unexpected tensors ${list(unexpected)}`);
      throw new PeftError('INVALID_FILE', `${source}: does not match a ${cfg.modelType} model built from config.json: ${parts.join('; ')}`);
    }
    (model as unknown as { quantizationConfig: BitsAndBytesConfig }).quantizationConfig = q;
    return model;
  } catch (e) {
    tf.dispose(shared.temps);
    if (model) model.dispose();
    else for (const [name, v] of Object.entries(tf.engine().registeredVariables)) if (!before.has(name)) v.dispose();
    throw e;
  } finally {
    placeholder.dispose();
  }
}
