// Property-based fuzzing (fast-check) of what peftjs reads from files (issue 14): safetensors, adapter
// configs, model configs, tokenizer files and paths. Every input either loads (and then satisfies the
// format's invariants) or fails with a PeftError; never another error, a hang or silent garbage.
//
// CI runs 1000 cases per property (seconds; each property stops after 8 s); `npm run fuzz` runs many (and 20 kill -9 runs):
//   FUZZ_RUNS=<cases per property> FUZZ_SEED=<seed> npx vitest run --project wasm tools/fuzz
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  PeftError,
  configFromHfJson,
  fullMatch,
  findPatternKey,
  insidePath,
  isTargetModule,
  modelWeightFiles,
  parseSafetensors,
  rawToArray,
  serializeSafetensors,
  type FileSystem,
} from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { AutoModelForCausalLM, MODEL_CONFIG_CAPS, PreTrainedTokenizer, parseModelConfig } from '@peftjs/models';
import { PeftModel } from '@peftjs/core';
import * as tf from '@tensorflow/tfjs';
import { folderInMemory, memoryFs } from '../../packages/models/src/test-helpers';

/** Like typed(), for a promise. */
async function typedAsync<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
  const t0 = performance.now();
  try {
    return await fn();
  } catch (e) {
    if (!PeftError.isInstance(e)) throw new Error(`${what}: untyped ${(e as Error)?.name}: ${String((e as Error)?.message).slice(0, 300)}`);
    return undefined;
  } finally {
    const ms = performance.now() - t0;
    if (ms > CASE_MS) throw new Error(`${what}: ${ms.toFixed(0)} ms for one case`);
  }
}

const RUNS = Number(process.env.FUZZ_RUNS ?? 1000);
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined;
/** Each property stops after this long (CI budget); a long run (`npm run fuzz`) lifts it. */
const TIME_LIMIT_MS = Number(process.env.FUZZ_TIME_LIMIT_MS ?? (process.env.FUZZ_RUNS ? 3_600_000 : 8_000));
/** One case may take at most this long: a slower one is a hang. */
const CASE_MS = 5_000;
const params = { numRuns: RUNS, seed: SEED, interruptAfterTimeLimit: TIME_LIMIT_MS, markInterruptAsFailure: false };

/** Runs `fn`; passes when it returns or throws a PeftError (then returns undefined); anything else fails the property. */
function typed<T>(what: string, fn: () => T): T | undefined {
  const t0 = performance.now();
  try {
    return fn();
  } catch (e) {
    if (!PeftError.isInstance(e)) throw new Error(`${what}: untyped ${(e as Error)?.name}: ${String((e as Error)?.message).slice(0, 300)}`);
    if (e.message.length > 2000) throw new Error(`${what}: a ${e.message.length}-character message (unbounded input quoted?)`);
    return undefined;
  } finally {
    const ms = performance.now() - t0;
    if (ms > CASE_MS) throw new Error(`${what}: ${ms.toFixed(0)} ms for one case`);
  }
}

// ---------------------------------------------------------------------------------------------
// safetensors

const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'];
const SIZE: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

function fileOf(headerText: string, data: Uint8Array, headerLenDelta = 0): Uint8Array {
  const json = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(Math.max(0, json.length + headerLenDelta)), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const validFile = fc
  .array(fc.record({ dtype: fc.constantFrom(...DTYPES), shape: fc.array(fc.nat(4), { maxLength: 3 }) }), { minLength: 0, maxLength: 5 })
  .map((specs) => {
    const tensors: Record<string, { dtype: any; shape: number[]; data: Uint8Array }> = {};
    specs.forEach((s, i) => {
      const n = s.shape.reduce((a, b) => a * b, 1) * SIZE[s.dtype];
      tensors[`t${i}`] = { dtype: s.dtype, shape: s.shape, data: new Uint8Array(n).map((_, j) => (j * 37 + i) & 0x7f) };
    });
    return serializeSafetensors(tensors, { format: 'pt' });
  });

/** Mutations of a valid file: byte flips, truncation, appended bytes, a header length off by a little. */
const mutatedFile = fc.tuple(validFile, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.integer({ min: -3, max: 3 }), fc.integer({ min: -4, max: 4 })).map(
  ([f, flips, lenDelta, sizeDelta]) => {
    let b = f.slice();
    for (const [pos, v] of flips) if (b.length) b[pos % b.length] = v;
    if (lenDelta) {
      const dv = new DataView(b.buffer);
      const n = Number(dv.getBigUint64(0, true));
      dv.setBigUint64(0, BigInt(Math.max(0, n + lenDelta)), true);
    }
    if (sizeDelta < 0) b = b.slice(0, Math.max(0, b.length + sizeDelta));
    else if (sizeDelta > 0) b = Uint8Array.from([...b, ...new Uint8Array(sizeDelta)]);
    return b;
  },
);

/** Hostile headers: any JSON value for each field, names like __proto__, deep values. */
const hostileEntry = fc.oneof(
  fc.record({
    dtype: fc.oneof(fc.constantFrom(...DTYPES), fc.jsonValue({ maxDepth: 3 })),
    shape: fc.oneof(fc.array(fc.integer({ min: -2, max: 2 ** 40 }), { maxLength: 4 }), fc.jsonValue({ maxDepth: 3 })),
    data_offsets: fc.oneof(fc.tuple(fc.nat(64), fc.nat(64)), fc.array(fc.integer(), { maxLength: 3 }), fc.jsonValue({ maxDepth: 3 })),
  }),
  fc.jsonValue({ maxDepth: 3 }),
);
const hostileName = fc.oneof(fc.constantFrom('__proto__', 'constructor', '__metadata__', 'toString', ''), fc.string({ maxLength: 12 }));
const hostileHeader = fc.tuple(fc.array(fc.tuple(hostileName, hostileEntry), { maxLength: 6 }), fc.nat(64), fc.nat(40)).map(([entries, dataLen, deep]) => {
  const parts = entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
  if (deep > 30) parts.push(`"deep":${'['.repeat(deep * 500)}${']'.repeat(deep * 500)}`);
  return fileOf(`{${parts.join(',')}}`, new Uint8Array(dataLen));
});

/** What an accepted file must satisfy: the reference implementation's invariants. */
function checkParsed(bytes: Uint8Array, f: ReturnType<typeof parseSafetensors>): void {
  expect(Object.getPrototypeOf(f.tensors)).toBe(null);
  expect(Object.getPrototypeOf(f.metadata)).toBe(null);
  for (const v of Object.values(f.metadata)) expect(typeof v).toBe('string');
  const headerLen = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const dataLen = bytes.byteLength - 8 - headerLen;
  const spans = Object.values(f.tensors)
    .map((t) => {
      expect(t.bytes.byteLength).toBe(t.shape.reduce((a, b) => a * b, 1) * SIZE[t.dtype]);
      return [t.bytes.byteOffset - bytes.byteOffset - 8 - headerLen, t.bytes.byteLength] as const;
    })
    .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let pos = 0;
  for (const [start, len] of spans) {
    expect(start).toBe(pos); // contiguous: no gap, no overlap
    pos += len;
  }
  expect(pos).toBe(dataLen); // the data section covered exactly
  for (const t of Object.values(f.tensors)) rawToArray(t);
}

describe('fuzz: safetensors', () => {
  for (const [name, arb] of [['mutated valid files', mutatedFile], ['hostile headers', hostileHeader]] as const) {
    it(name, () => {
      fc.assert(
        fc.property(arb, (bytes) => {
          const f = typed('parseSafetensors', () => parseSafetensors(bytes, 'fuzz.safetensors'));
          if (f) checkParsed(bytes, f);
        }),
        params,
      );
    });
  }
});

// ---------------------------------------------------------------------------------------------
// adapter configs and patterns

const HF = fileURLToPath(new URL('../../fixtures/hf-peft/', import.meta.url));
const ADAPTER = JSON.parse(readFileSync(`${HF}llama_lora_qv/adapter/adapter_config.json`, 'utf8'));
const extreme = fc.constantFrom(0, -1, 1e308, -1e308, 1e39, 2 ** 53, 1e7, 0.5, NaN, '', '(.*)*x', '[', null, [], {}, true);
const configValue = fc.oneof(fc.jsonValue({ maxDepth: 3 }), extreme);
const regexLike = fc.oneof(
  fc.stringMatching(/^[a-z_.*+?()|\[\]{}\\^$0-9]{0,30}$/),
  fc.constantFrom('(.*)*x', '((a+)+)+b', '(?=x)', '(a)\\1', '.*\\.(q|v)_proj', 'x'.repeat(5000), '[', '\\'),
);

describe('fuzz: adapter configs', () => {
  it('adapter_config.json with fields replaced by any JSON value', () => {
    const keys = Object.keys(ADAPTER);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.oneof(fc.constantFrom(...keys), fc.string({ maxLength: 8 })), configValue), { maxLength: 4 }), (edits) => {
        const json = { ...ADAPTER };
        for (const [k, v] of edits) json[k] = v;
        const c = typed('configFromHfJson', () => configFromHfJson(LoraConfig, json, 'adapter_config.json'));
        if (c) {
          // accepted: no number float32 cannot hold (NaN logits), r a positive integer
          expect(Math.abs(c.loraAlpha)).toBeLessThanOrEqual(3.4028234663852886e38);
          expect(Number.isInteger(c.r) && c.r > 0).toBe(true);
        }
      }),
      params,
    );
  });

  it('target_modules, layers_pattern and rank_pattern keys: linear time, typed errors', () => {
    const names = ['model.layers.0.self_attn.q_proj', 'model.layers.11.mlp.down_proj', `${'a'.repeat(40)}.layers.3.x`, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!'];
    fc.assert(
      fc.property(regexLike, regexLike, (p, q) => {
        for (const key of names) {
          typed('fullMatch', () => fullMatch(p, key));
          typed('layers_pattern', () => isTargetModule({ targetModules: ['q_proj', 'x'], layersToTransform: [3], layersPattern: p }, key));
          typed('rank_pattern', () => findPatternKey({ [p]: 1, [q]: 2 }, key));
        }
      }),
      params,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// model configs

const MODEL = JSON.parse(readFileSync(`${HF}llama_lora_qv/base/config.json`, 'utf8'));
const GPT2 = { model_type: 'gpt2', vocab_size: 64, n_embd: 32, n_layer: 2, n_head: 4, n_positions: 64 };
const modelValue = fc.oneof(configValue, fc.integer({ min: -5, max: 2 ** 31 }), fc.double(), fc.record({ rope_type: fc.constantFrom('default', 'linear', 'llama3', 'yarn', 5), factor: configValue, rope_theta: configValue, low_freq_factor: configValue, high_freq_factor: configValue }, { requiredKeys: [] }));

describe('fuzz: model configs', () => {
  it('config.json with fields replaced by any value', () => {
    fc.assert(
      fc.property(fc.boolean(), fc.array(fc.tuple(fc.oneof(fc.constantFrom(...Object.keys(MODEL), 'rope_scaling', 'rope_theta', 'n_inner', 'layer_norm_epsilon'), fc.string({ maxLength: 6 })), modelValue), { maxLength: 4 }), (gpt2, edits) => {
        const raw: Record<string, unknown> = structuredClone(gpt2 ? GPT2 : MODEL);
        for (const [k, v] of edits) raw[k] = v;
        const c = typed('parseModelConfig', () => parseModelConfig(raw, 'config.json'));
        if (!c) return;
        // accepted: sizes within the caps, no value that can only give NaN
        for (const [field, v] of [['hidden_size', c.hiddenSize], ['num_hidden_layers', c.numHiddenLayers], ['vocab_size', c.vocabSize]] as const) {
          expect(v, field).toBeLessThanOrEqual(MODEL_CONFIG_CAPS[field]);
          expect(v, field).toBeGreaterThan(0);
        }
        if (c.modelType !== 'gpt2') {
          expect(c.rmsNormEps).toBeGreaterThanOrEqual(0);
          expect(c.rope.theta).toBeGreaterThan(0);
          expect(c.rope.factor).toBeGreaterThan(0);
          if (c.rope.type === 'llama3') expect(c.rope.highFreqFactor).toBeGreaterThan(c.rope.lowFreqFactor);
        } else expect(c.layerNormEpsilon).toBeGreaterThanOrEqual(0);
      }),
      params,
    );
  });
});

describe('fuzz: loading models and adapters from mutated files', () => {
  const slow = { ...params, numRuns: Math.max(8, Math.floor(RUNS / 6)) };
  it('a model folder with a mutated config.json: loads, or a PeftError; nothing leaks', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom(...Object.keys(MODEL), 'rope_scaling'), modelValue), { minLength: 1, maxLength: 3 }), async (edits) => {
        const { files, dir } = folderInMemory(`${HF}llama_lora_qv/base`);
        const raw = structuredClone(MODEL);
        for (const [k, v] of edits) raw[k] = v;
        files.set(`${dir}/config.json`, new TextEncoder().encode(JSON.stringify(raw)));
        const before = tf.memory().numTensors;
        const m = await typedAsync('fromPretrained', () => AutoModelForCausalLM.fromPretrained(dir, { fs: memoryFs(files) }));
        if (m) {
          const out = typed('forward', () => m.forward({ inputIds: [[1, 2, 3]] }));
          if (out) {
            const v = await out.logits.data();
            tf.dispose(out.logits);
            // a config that loads must not give NaN logits (an Inf/NaN-only value would have been refused)
            expect(v.every((x) => Number.isFinite(x))).toBe(true);
          }
          m.dispose();
        }
        expect(tf.memory().numTensors).toBe(before);
      }),
      slow,
    );
  });

  it('an adapter folder with a mutated adapter_config.json: loads, or a PeftError', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${HF}llama_lora_qv/base`);
    const adapter = folderInMemory(`${HF}llama_lora_qv/adapter`, 'adapter');
    const keys = ['r', 'lora_alpha', 'target_modules', 'layers_pattern', 'layers_to_transform', 'rank_pattern', 'alpha_pattern', 'use_rslora', 'exclude_modules', 'modules_to_save'];
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom(...keys), fc.oneof(configValue, regexLike, fc.array(regexLike, { maxLength: 2 }))), { minLength: 1, maxLength: 3 }), async (edits) => {
        const json = { ...ADAPTER };
        for (const [k, v] of edits) json[k] = v;
        const files = new Map(adapter.files);
        files.set(`${adapter.dir}/adapter_config.json`, new TextEncoder().encode(JSON.stringify(json)));
        const p = await typedAsync('PeftModel.fromPretrained', () => PeftModel.fromPretrained(base, adapter.dir, { fs: memoryFs(files) }));
        if (p) p.unload();
      }),
      slow,
    );
    base.dispose();
  });
});

// ---------------------------------------------------------------------------------------------
// tokenizer files

const TOK_DIR = fileURLToPath(new URL('../../packages/models/test-data/tiny-bpe/', import.meta.url));
const TOKENIZER = JSON.parse(readFileSync(`${TOK_DIR}tokenizer.json`, 'utf8'));
const TOK_CONFIG = JSON.parse(readFileSync(`${TOK_DIR}tokenizer_config.json`, 'utf8'));

describe('fuzz: tokenizer files', () => {
  it('tokenizer.json and tokenizer_config.json with parts replaced', () => {
    const paths = ['model', 'model.type', 'model.vocab', 'model.merges', 'added_tokens', 'normalizer', 'pre_tokenizer', 'post_processor', 'decoder', 'truncation', 'padding'];
    const token = fc.record({ id: fc.oneof(fc.nat(400), fc.constantFrom(1e9, -1, 2 ** 24, 0.5, '7')), content: fc.oneof(fc.string({ maxLength: 6 }), fc.constant(5)), special: fc.boolean() });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(...paths), fc.oneof(configValue, fc.array(token, { maxLength: 3 }))), { maxLength: 3 }),
        fc.array(fc.tuple(fc.constantFrom('bos_token', 'eos_token', 'pad_token', 'padding_side', 'model_max_length'), configValue), { maxLength: 2 }),
        fc.string({ maxLength: 20 }),
        (edits, cfgEdits, text) => {
          const j = structuredClone(TOKENIZER);
          for (const [path, v] of edits) {
            const parts = path.split('.');
            let o = j;
            for (const p of parts.slice(0, -1)) o = o[p] && typeof o[p] === 'object' ? o[p] : (o[p] = {});
            o[parts.at(-1)!] = v;
          }
          const cfg = { ...TOK_CONFIG };
          for (const [k, v] of cfgEdits) cfg[k] = v;
          const tok = typed('PreTrainedTokenizer', () => new PreTrainedTokenizer(j, cfg, 'tokenizer.json'));
          if (!tok) return;
          typed('vocabSize', () => tok.vocabSize);
          const ids = typed('encode', () => tok.encode(text));
          if (ids) typed('decode', () => tok.decode(ids));
          typed('decode', () => tok.decode([0, 1, 5000, -1]));
        },
      ),
      { ...params, numRuns: Math.max(10, Math.floor(RUNS / 3)) },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// paths

describe('fuzz: paths', () => {
  const segment = fc.oneof(fc.constantFrom('..', '.', '', 'a', 'model.safetensors', '%2e%2e', '..\\x', '/', 'C:', 'file:', '\0'), fc.string({ maxLength: 6 }));
  const relPath = fc.array(segment, { maxLength: 5 }).map((s) => s.join('/'));
  it('weight_map file names either stay inside the model folder or are refused', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(relPath, { minLength: 1, maxLength: 3 }), async (names) => {
        for (const n of names) {
          const p = typed('insidePath', () => insidePath('/models/m', n, 'weight_map file'));
          if (p !== undefined) {
            expect(p.startsWith('/models/m/')).toBe(true);
            expect(p.split('/')).not.toContain('..');
          }
        }
        const index = JSON.stringify({ weight_map: Object.fromEntries(names.map((n, i) => [`w${i}`, n])) });
        const fs: FileSystem = {
          readFile: async (path) => {
            if (path === '/models/m/model.safetensors.index.json') return new TextEncoder().encode(index);
            throw new PeftError('FILE_NOT_FOUND', `file not found: ${path}`);
          },
          exists: async (path) => path === '/models/m/model.safetensors.index.json',
          writeFileAtomic: async () => undefined,
          mkdirp: async () => undefined,
          readdir: async () => [],
          remove: async () => undefined,
          rename: async () => undefined,
        };
        try {
          const files = await modelWeightFiles('/models/m', fs);
          for (const f of files) expect(f.startsWith('/models/m/') && !f.split('/').includes('..')).toBe(true);
        } catch (e) {
          if (!PeftError.isInstance(e)) throw e;
        }
      }),
      params,
    );
  });
});
