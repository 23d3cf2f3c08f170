// Gradient checkpointing (HF's gradient_checkpointing): core's checkpoint() in the LLaMA decoder layers
// and GPT-2 blocks gives the gradients of the plain forward (bit-identical on cpu and wasm), keeps fewer
// bytes between forward and backward, leaks nothing, and replays the same dropout masks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkpoint, getPeftModel, manualSeed, nextSeed, type PreTrainedModel, type PeftModel } from '@peftjs/core';
import { GPT2LMHeadModel, LlamaForCausalLM, parseModelConfig, type GPT2Config, type LlamaConfig } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { Trainer } from './index';
import { randomExamples } from './__fixtures__/tiny';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-ckpt-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let dirN = 0;

function llama(dropout: number): LlamaForCausalLM {
  manualSeed(11);
  const config = parseModelConfig({
    model_type: 'llama',
    vocab_size: 64,
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 128,
    rms_norm_eps: 1e-6,
    attention_dropout: dropout,
    tie_word_embeddings: false,
  }) as LlamaConfig;
  return new LlamaForCausalLM(config);
}

function gpt2(dropout: number): GPT2LMHeadModel {
  manualSeed(12);
  const config = parseModelConfig({ model_type: 'gpt2', vocab_size: 64, n_embd: 32, n_layer: 3, n_head: 4, n_positions: 64, resid_pdrop: dropout, embd_pdrop: dropout, attn_pdrop: dropout }) as GPT2Config;
  return new GPT2LMHeadModel(config);
}

const batch = {
  inputIds: [
    [5, 6, 7, 8, 9, 10, 11, 12],
    [0, 0, 13, 14, 15, 16, 17, 18],
  ],
  attentionMask: [
    [1, 1, 1, 1, 1, 1, 1, 1],
    [0, 0, 1, 1, 1, 1, 1, 1],
  ],
  labels: [
    [5, 6, 7, 8, 9, 10, 11, 12],
    [-100, -100, 13, 14, 15, 16, 17, 18],
  ],
};

/** Loss and gradients of one training forward; `kept`: bytes alive when backward starts (after the forward's tidy). */
async function gradsOf(model: PreTrainedModel | PeftModel, seed: number): Promise<{ loss: number; grads: Record<string, Float32Array>; keptBytes: number; keptTensors: number }> {
  const named = [...model.namedParameters()].filter(([, p]) => p.trainable);
  const byId = new Map(named.map(([n, p]) => [p.name, n]));
  let keptBytes = 0;
  let keptTensors = 0;
  const probe = tf.customGrad(((x: tf.Tensor, save: (t: tf.Tensor[]) => void) => {
    save([]);
    return {
      value: tf.clone(x),
      gradFunc: (dy: tf.Tensor) => {
        keptBytes = tf.memory().numBytes;
        keptTensors = tf.memory().numTensors;
        return [dy];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  manualSeed(seed);
  model.train();
  const { value, grads } = tf.variableGrads(() => probe(model.forward(batch).loss!) as tf.Scalar, named.map(([, p]) => p));
  const out: Record<string, Float32Array> = {};
  for (const [id, g] of Object.entries(grads)) out[byId.get(id)!] = (await g.data()) as Float32Array;
  const loss = (await value.data())[0];
  tf.dispose([value, ...Object.values(grads)]);
  return { loss, grads: out, keptBytes, keptTensors };
}

function maxDiff(a: Record<string, Float32Array>, b: Record<string, Float32Array>): number {
  let d = 0;
  for (const k of Object.keys(b)) for (let i = 0; i < b[k].length; i++) d = Math.max(d, Math.abs(a[k][i] - b[k][i]));
  return d;
}

describe.each([{ backend: 'wasm' }, { backend: 'cpu' }])('gradient checkpointing on $backend', ({ backend }) => {
  let home = '';
  beforeAll(async () => {
    home = tf.getBackend();
    await tf.setBackend(backend);
  });
  afterAll(async () => {
    await tf.setBackend(home);
  });

  const cases: [string, () => PreTrainedModel | PeftModel][] = [
    ['LLaMA, full fine-tuning, attention dropout', () => llama(0.2)],
    ['LLaMA + LoRA with dropout', () => getPeftModel(llama(0), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], loraDropout: 0.3 }))],
    ['GPT-2, full fine-tuning, every dropout', () => gpt2(0.2)],
    ['GPT-2 + LoRA (c_attn)', () => getPeftModel(gpt2(0.1), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['c_attn'], loraDropout: 0.2, fanInFanOut: true }))],
  ];

  it.each(cases)('%s: the same gradients (bit-identical), fewer bytes kept for backward, no leak, same dropout masks', async (_name, make) => {
    const model = make();
    const base = ('model' in model ? (model as PeftModel).model : model) as PreTrainedModel;
    const plain = await gradsOf(model, 7);
    const before = tf.memory().numTensors;
    base.gradientCheckpointingEnable();
    expect(base.isGradientCheckpointing).toBe(true);
    const ckpt = await gradsOf(model, 7);
    expect(tf.memory().numTensors).toBe(before);
    expect(Object.keys(ckpt.grads).sort()).toEqual(Object.keys(plain.grads).sort());
    expect(ckpt.loss).toBe(plain.loss);
    expect(maxDiff(ckpt.grads, plain.grads)).toBe(0);
    console.log(`${backend} ${_name}: kept for backward ${plain.keptBytes} → ${ckpt.keptBytes} bytes, ${plain.keptTensors} → ${ckpt.keptTensors} tensors`);
    expect(ckpt.keptBytes, `kept ${ckpt.keptBytes} vs ${plain.keptBytes} bytes`).toBeLessThan(plain.keptBytes);
    expect(ckpt.keptTensors).toBeLessThan(plain.keptTensors);
    // dropout is live (another seed, other masks, other gradients): the equality above needed the same masks in the recomputation
    const other = await gradsOf(model, 8);
    expect(maxDiff(other.grads, ckpt.grads)).toBeGreaterThan(0);
    // the random stream advanced as in a plain step (the recomputation rewinds, then restores it)
    manualSeed(7);
    base.gradientCheckpointingDisable();
    expect(base.isGradientCheckpointing).toBe(false);
    model.dispose();
  });

  it('checkpoint() leaves the random stream where the plain forward leaves it, and replays the masks in backward', async () => {
    const w = tf.variable(tf.randomNormal([4, 4], 0, 1, 'float32', 3), true, `ckpt-w-${backend}`);
    const x = tf.randomNormal([3, 4], 0, 1, 'float32', 4);
    const f = (h: tf.Tensor) => tf.sum(tf.dropout(tf.tanh(tf.matMul(h, w)), 0.5, undefined, nextSeed()));
    const run = (ck: boolean) => {
      manualSeed(21);
      const res = tf.variableGrads(() => (ck ? checkpoint((h) => f(h), [x], [w]) : f(x)) as tf.Scalar, [w]);
      const after = nextSeed();
      return { res, after };
    };
    const a = run(false);
    const b = run(true);
    expect(b.after).toBe(a.after);
    expect(Array.from(await b.res.grads[w.name].data())).toEqual(Array.from(await a.res.grads[w.name].data()));
    expect((await b.res.value.data())[0]).toBe((await a.res.value.data())[0]);
    tf.dispose([a.res.value, b.res.value, ...Object.values(a.res.grads), ...Object.values(b.res.grads), w, x]);
    // outside a tape it is the plain function
    const y = checkpoint((h) => tf.mul(h, 2), [tf.scalar(3)], []);
    expect((await y.data())[0]).toBe(6);
    y.dispose();
  });

  it('Trainer with gradientCheckpointing: true runs the trajectory of the plain run exactly', async () => {
    const run = async (gc: boolean) => {
      const m = getPeftModel(llama(0), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], loraDropout: 0.1 }));
      const t = new Trainer({
        model: m,
        args: { outputDir: join(tmp, `r${dirN++}`), progressBar: false, metricsLog: false, saveStrategy: 'no', maxSteps: 4, perDeviceTrainBatchSize: 2, gradientAccumulationSteps: 2, loggingSteps: 1, learningRate: 1e-2, gradientCheckpointing: gc },
        trainDataset: randomExamples(8),
      });
      await t.train();
      expect((m.model as PreTrainedModel).isGradientCheckpointing).toBe(gc);
      const losses = t.state.logHistory.filter((e) => e.learningRate !== undefined).map((e) => [e.loss, e.gradNorm]);
      t.optimizer?.dispose();
      m.dispose();
      return losses;
    };
    const plain = await run(false);
    const ckpt = await run(true);
    expect(plain).toHaveLength(4);
    expect(ckpt).toEqual(plain);
  });
});
