// LN tuning against HF PEFT 0.21's own outputs (packages/ln-tuning/fixtures, made by HF with make_fixtures2.py):
// adapted, disabled and merged logits, HF's file names and config keys, save → load, training, leaks.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PeftModel, RMSNorm, getPeftModel, loadSafetensors, parseSafetensors, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LNTuningConfig, LNTuningLayer } from './index';
import { hfCase, keptDiff } from '../../../tools/testing/fixtures';
import { expectOnlyMethodChanged, snapshot, trainStep } from '../../../tools/testing/prompt_learning';

const TOL = 1e-4;
const ROOT = process.env.PEFTJS_FIXTURES_HF2 ? process.env.PEFTJS_FIXTURES_HF2.replace(/\/?$/, '/') : fileURLToPath(new URL('../fixtures/', import.meta.url));
const NAME = 'llama_ln_tuning';
const dir = `${ROOT}${NAME}/`;
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-ln-tuning-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}

const base = () => AutoModelForCausalLM.fromPretrained(`${dir}base`);

describe('LN tuning parity with HF PEFT: llama_ln_tuning', () => {
  it('adapted, disabled and merged logits match HF; save writes HF files; save → load is exact', async () => {
    const t = await loadSafetensors(`${dir}tensors.safetensors`);
    const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
    const peft = await PeftModel.fromPretrained(await base(), `${dir}adapter`);
    const adapted = peft.forward(inputs).logits;
    const a = await keptDiff(adapted, t.logits_adapted, t.attention_mask);
    console.log(`${NAME}: adapted rel ${a.rel.toExponential(2)}`);
    expect(a.rel).toBeLessThan(TOL);
    // the fixture's adapter is far from the base: the comparison can fail
    expect((await keptDiff(t.logits_base, t.logits_adapted, t.attention_mask)).rel).toBeGreaterThan(100 * TOL);
    const off = peft.disableAdapter(() => peft.forward(inputs).logits);
    const b = await keptDiff(off, t.logits_base, t.attention_mask);
    console.log(`${NAME}: disabled rel ${b.rel.toExponential(2)}`);
    expect(b.rel).toBeLessThan(TOL);

    const out = join(tmp, NAME);
    await peft.savePretrained(out);
    const hfCfg = JSON.parse(readFileSync(`${dir}adapter/adapter_config.json`, 'utf8'));
    const ourCfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(Object.keys(ourCfg).sort()).toEqual(Object.keys(hfCfg).sort());
    for (const k of Object.keys(hfCfg)) expect(ourCfg[k], k).toEqual(hfCfg[k]);
    const hfFile = parseSafetensors(readFileSync(`${dir}adapter/adapter_model.safetensors`));
    const ourFile = parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors')));
    expect(ourFile.metadata).toEqual({ format: 'pt' });
    expect(Object.keys(ourFile.tensors).sort()).toEqual(Object.keys(hfFile.tensors).sort());
    expect(Object.keys(ourFile.tensors)).toContain('base_model.model.model.layers.0.input_layernorm.ln_tuning_layers.weight');
    for (const [k, v] of Object.entries(hfFile.tensors)) {
      expect(ourFile.tensors[k].shape, k).toEqual(v.shape);
      expect(Buffer.compare(Buffer.from(ourFile.tensors[k].bytes), Buffer.from(v.bytes)), k).toBe(0);
    }
    const again = await PeftModel.fromPretrained(await base(), out);
    expect(await maxAbsDiff(again.forward(inputs).logits, adapted)).toBe(0);

    // merge swaps the tuned copy in: exact; unmerge swaps it back: the base norm is bit-identical
    const w0 = (await peft.model.getParameter('model.norm.base_layer.weight').data()).slice();
    peft.mergeAdapter();
    const layer = peft.model.getSubmodule<LNTuningLayer>('model.norm');
    expect(layer.mergedAdapters).toEqual(['default']);
    expect(await maxAbsDiff(peft.forward(inputs).logits, adapted)).toBe(0);
    const m1 = await keptDiff(peft.forward(inputs).logits, t.logits_merged, t.attention_mask);
    expect(m1.rel).toBeLessThan(TOL);
    peft.unmergeAdapter();
    expect(await peft.model.getParameter('model.norm.base_layer.weight').data()).toEqual(w0);

    const merged = peft.mergeAndUnload();
    const m = await keptDiff(merged.forward(inputs).logits, t.logits_merged, t.attention_mask);
    console.log(`${NAME}: merged rel ${m.rel.toExponential(2)}`);
    expect(m.rel).toBeLessThan(TOL);
    expect([...merged.namedParameters()].some(([k]) => k.includes('ln_tuning') || k.includes('base_layer'))).toBe(false);
    expect(merged.getSubmodule('model.norm')).toBeInstanceOf(RMSNorm);
  });
});

describe('LN tuning model management', () => {
  it('defaults per model type; identity at init; only the copies train', async () => {
    const model = await base();
    const ids = [[1, 2, 3, 4, 5]];
    const before = model.forward({ inputIds: ids }).logits;
    const peft = getPeftModel(model, new LNTuningConfig({ taskType: TaskType.CAUSAL_LM }));
    expect((peft.peftConfig.default as LNTuningConfig).targetModules).toEqual(['input_layernorm', 'post_attention_layernorm', 'norm']);
    expect(await maxAbsDiff(before, peft.forward({ inputIds: ids }).logits)).toBe(0);
    const n = model.config.numHiddenLayers;
    expect(Object.keys(peft.adapterStateDict()).length).toBe(2 * n + 1);
    const [trainable] = peft.getNbTrainableParameters();
    expect(trainable).toBe((2 * n + 1) * model.config.hiddenSize);
    for (const [name, p] of peft.namedParameters()) expect(p.trainable, name).toBe(name.includes('.ln_tuning_layers.default.'));
  });

  it('a training step changes only the LN tuning copies (base bit-identical); steps and forwards do not leak', async () => {
    const model = await base();
    const peft = getPeftModel(model, new LNTuningConfig({ targetModules: ['input_layernorm', 'post_attention_layernorm', 'norm'] }));
    peft.train();
    const batch = { inputIds: [[5, 6, 7, 8, 9], [1, 2, 3, 4, 5]], attentionMask: [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], labels: [[5, 6, 7, 8, 9], [-100, 2, 3, 4, 5]] };
    const before = snapshot(peft);
    trainStep(peft, batch);
    const changed = expectOnlyMethodChanged(before, snapshot(peft), (k) => k.includes('.ln_tuning_layers.'));
    expect(changed).toBe(2 * model.config.numHiddenLayers + 1);
    const n0 = tf.memory().numTensors;
    for (let i = 0; i < 2; i++) trainStep(peft, batch);
    for (let i = 0; i < 2; i++) {
      const o = peft.forward(batch);
      tf.dispose([o.logits, o.loss!]);
    }
    peft.mergeAdapter();
    peft.unmergeAdapter();
    expect(tf.memory().numTensors).toBe(n0);
    // delete disposes the copies
    peft.addAdapter('other', new LNTuningConfig({ targetModules: ['norm'] }));
    const withOther = tf.memory().numTensors;
    expect(withOther).toBe(n0 + 1);
    peft.deleteAdapter('other');
    expect(tf.memory().numTensors).toBe(n0);
  });

  it('one adapter at a time: two active or two merged are refused; the merged one is unmerged before another merges', async () => {
    const peft = getPeftModel(await base(), new LNTuningConfig({ targetModules: ['norm'] }));
    peft.addAdapter('b', new LNTuningConfig({ targetModules: ['norm'] }));
    peft.setAdapter(['default', 'b']);
    expect(() => peft.forward({ inputIds: [[1, 2, 3]] })).toThrow(/one adapter at a time.*default, b/);
    expect(() => peft.mergeAdapter(['default', 'b'])).toThrow(/merge 2 LN tuning adapters/);
    peft.setAdapter('default');
    peft.mergeAdapter(['default']);
    peft.mergeAdapter(['b']);
    expect(peft.model.getSubmodule<LNTuningLayer>('model.norm').mergedAdapters).toEqual(['b']);
  });

  it('generation with the adapter is the merged model\'s generation', async () => {
    const peft = await PeftModel.fromPretrained(await base(), `${dir}adapter`);
    const prompt = { inputIds: [[3, 14, 15, 92, 65]], maxNewTokens: 6 };
    const withAdapter = await peft.generate(prompt);
    const plain = await (await base()).generate(prompt);
    expect(withAdapter).not.toEqual(plain); // the adapter changes what is generated
    expect(await peft.mergeAndUnload().generate(prompt)).toEqual(withAdapter);
  });

  it('GPT-2: LayerNorms (weight and bias) by default; identity at init; HF key names', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
    const ids = [[1, 2, 3, 4, 5]];
    const before = model.forward({ inputIds: ids }).logits;
    const peft = getPeftModel(model, new LNTuningConfig());
    expect((peft.peftConfig.default as LNTuningConfig).targetModules).toEqual(['ln_1', 'ln_2', 'ln_f']);
    expect(await maxAbsDiff(before, peft.forward({ inputIds: ids }).logits)).toBe(0);
    const keys = Object.keys(peft.adapterStateDict());
    expect(keys).toContain('base_model.model.transformer.h.0.ln_1.ln_tuning_layers.weight');
    expect(keys).toContain('base_model.model.transformer.ln_f.ln_tuning_layers.bias');
    expect(keys.length).toBe(2 * (2 * model.config.numHiddenLayers + 1));
  });

  it('errors name the field', async () => {
    expect(() => new LNTuningConfig({ targetModule: ['norm'] } as never)).toThrow(/unknown field "targetModule"/);
    const peft = () => base().then((m) => getPeftModel(m, new LNTuningConfig({ targetModules: ['no_such_norm'] })));
    await expect(peft()).rejects.toThrow(/LN_TUNING: target_modules \["no_such_norm"\] matched no module/);
  });
});
