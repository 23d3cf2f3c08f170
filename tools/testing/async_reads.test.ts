// The user paths that used to read tensors synchronously (safe merge, the prompt-encoder check on load,
// the evaluator's classifier argmax, rawToArray), on the test backend and, when an adapter is there, on
// WebGPU (where a synchronous read throws in Node).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftModel, PROMPT_ENCODER_NAME, TaskType, getPeftModel, initBackend, parseSafetensors, rawToArray, rawToTensor, serializeSafetensors, type RawTensor } from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { IA3Config } from '@peftjs/ia3';
import { PromptEncoderConfig } from '@peftjs/ptuning';
import { PrefixTuningConfig } from '@peftjs/prefix';
import { evaluatePeftModel } from '@peftjs/evaluator';
import { tinyLlama } from '../../packages/trainer/src/__fixtures__/tiny';

const home = tf.getBackend();
const gpu = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).then(
  () => true,
  () => false,
);
await tf.setBackend(home);
const BACKENDS = gpu ? [home, 'webgpu'] : [home];

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-async-reads-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let dirN = 0;
const outDir = () => join(tmp, `d${dirN++}`);
const ids = { inputIds: [[3, 4, 5, 6, 7]] };

async function values(t: tf.Tensor): Promise<number[]> {
  return Array.from(await t.data());
}
async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}

describe.each(BACKENDS.map((backend) => ({ backend })))('asynchronous reads on $backend', ({ backend }) => {
  beforeAll(async () => {
    await tf.setBackend(backend);
  });
  afterAll(async () => {
    await tf.setBackend(home);
  });

  it.each([
    ['LoRA', () => new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] }), 'lora_B'],
    ['IA3', () => new IA3Config({ taskType: TaskType.CAUSAL_LM }), 'ia3_l'],
  ] as const)('%s: safeMerge checks on the GPU side and merges (a Promise); a broken adapter is refused and the base weights stay as they were', async (_name, config, key) => {
    const make = () => {
      const m = getPeftModel(tinyLlama(1), config());
      for (const [k, v] of m.adapterTensorMap('default')) if (k.includes(key)) v.assign(tf.randomNormal(v.shape, 1, 0.1, 'float32', 5));
      return m;
    };
    const good = make();
    const want = good.forward(ids).logits;
    const p = good.mergeAdapter(undefined, { safeMerge: true });
    expect(p).toBeInstanceOf(Promise);
    await p;
    const merged = good.forward(ids).logits;
    expect(await maxAbsDiff(merged, want)).toBeLessThan(1e-4);
    const unloaded = await make().mergeAndUnload({ safeMerge: true });
    const plain = unloaded.forward(ids).logits;
    expect(await maxAbsDiff(plain, want)).toBeLessThan(1e-4);
    tf.dispose([want, merged, plain]);

    const bad = make();
    const [[firstKey, firstVar]] = [...bad.adapterTensorMap('default')].filter(([k]) => k.includes(key));
    firstVar.assign(tf.fill(firstVar.shape, NaN));
    const before = bad.stateDict();
    const snapshot = await Promise.all(Object.values(before).map(values));
    await expect(bad.mergeAdapter(undefined, { safeMerge: true }), firstKey).rejects.toThrow(/would put NaN or Inf into the base weights/);
    const after = await Promise.all(Object.values(bad.stateDict()).map(values));
    // the first layer checked is the broken one: nothing was merged anywhere
    expect(after).toEqual(snapshot);
    await expect(make().mergeAndUnload({ safeMerge: false }).forward(ids).logits.data()).resolves.toBeDefined();
    good.dispose();
    bad.dispose();
  });

  it.each([
    ['P-tuning', () => new PromptEncoderConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 4, encoderHiddenSize: 8 })],
    ['prefix tuning', () => new PrefixTuningConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 4, prefixProjection: true, encoderHiddenSize: 8 })],
  ] as const)("%s: loading checks that the encoder reproduces prompt_embeddings (an asynchronous read), and says so when it doesn't", async (_name, config) => {
    const peft = getPeftModel(tinyLlama(2), config());
    const out = outDir();
    await peft.savePretrained(out);
    const ok = await PeftModel.fromPretrained(tinyLlama(2), out, { isTrainable: true });
    const a = peft.forward(ids).logits;
    const b = ok.forward(ids).logits;
    expect(await maxAbsDiff(a, b)).toBe(0);
    tf.dispose([a, b]);
    // another save's encoder next to this adapter
    const other = getPeftModel(tinyLlama(2), config());
    for (const [, v] of other.namedParameters()) if (v.trainable) v.assign(tf.randomNormal(v.shape, 0, 1, 'float32', 9));
    const otherDir = outDir();
    await other.savePretrained(otherDir);
    writeFileSync(join(out, PROMPT_ENCODER_NAME), readFileSync(join(otherDir, PROMPT_ENCODER_NAME)));
    await expect(PeftModel.fromPretrained(tinyLlama(2), out, { isTrainable: true })).rejects.toThrow(/do not reproduce "prompt_embeddings"/);
    peft.dispose();
    ok.dispose();
    other.dispose();
  });

  it("the evaluator's classifier path reads its argmax asynchronously", async () => {
    const model = {
      // class 0 ('even') when the last character code is even (the batch is left-padded)
      forward: ({ inputIds }: { inputIds: number[][] }) => ({ logits: tf.tensor2d(inputIds.map((r) => [1 - (r.at(-1)! % 2), r.at(-1)! % 2])) }),
    };
    const tok = { encode: (s: string) => Array.from(s, (c) => c.charCodeAt(0)), decode: (x: number[]) => String.fromCharCode(...x), padTokenId: 0 };
    const before = tf.memory().numTensors;
    const r = await evaluatePeftModel(model as never, tok, [{ input: 'ab', label: 'odd' }, { input: 'abc', label: 'even' }, { input: 'abcd', label: 'even' }], { taskType: 'classification', labels: ['even', 'odd'], progress: false });
    expect(r.predictions.map((p) => p.prediction)).toEqual(['even', 'odd', 'even']);
    expect(r.metrics.accuracy).toBeCloseTo(1 / 3, 10);
    expect(tf.memory().numTensors).toBe(before);
  });
});

it('rawToArray decodes every dtype on the host exactly as rawToTensor', async () => {
  const f32 = new Float32Array([1.5, -2.25, 3e-8, Infinity, NaN, -0]);
  const bytes = serializeSafetensors({
    f32: { dtype: 'F32', shape: [6], data: f32 },
    bf16: { dtype: 'BF16', shape: [6], data: f32 },
    f16: { dtype: 'F16', shape: [3], data: new Uint16Array([0x3c00, 0xc000, 0x0001]) },
    i32: { dtype: 'I32', shape: [3], data: new Int32Array([-7, 0, 2147483647]) },
    i8: { dtype: 'I8', shape: [2], data: new Uint8Array([0xff, 0x7f]) },
    i16: { dtype: 'I16', shape: [2], data: new Uint8Array([0xff, 0xff, 0x01, 0x00]) },
    u8: { dtype: 'U8', shape: [2], data: new Uint8Array([200, 3]) },
    bool: { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
  });
  const file = parseSafetensors(bytes);
  for (const [name, raw] of Object.entries(file.tensors) as [string, RawTensor][]) {
    const t = rawToTensor(name, raw);
    const want = Array.from(await t.data(), Number);
    t.dispose();
    expect(Array.from(rawToArray(raw)), name).toEqual(want);
  }
  expect(Array.from(rawToArray(file.tensors.i8))).toEqual([-1, 127]);
});
