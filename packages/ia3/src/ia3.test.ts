import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftModel, getPeftModel, parseSafetensors, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { IA3Config, IA3Linear } from './index';
import { caseTensors, hfCase, keptDiff } from '../../../tools/testing/fixtures';
import { expectOnlyMethodChanged, snapshot, trainStep } from '../../../tools/testing/prompt_learning';

const TOL = Number(process.env.PEFTJS_TOL ?? 1e-4);
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-ia3-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const NAME = 'llama_ia3';

describe('IA3 parity with HF PEFT', () => {
  it('adapted, disabled and merged logits match HF; files and save → load are exact', async () => {
    const dir = hfCase(NAME);
    const t = await caseTensors(NAME);
    const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
    const peft = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), `${dir}adapter`);
    const adapted = peft.forward(inputs).logits;
    const a = await keptDiff(adapted, t.logits_adapted, t.attention_mask);
    console.log(`${NAME}: adapted max rel diff ${a.rel.toExponential(3)}`);
    expect(a.rel).toBeLessThan(TOL);
    const off = peft.disableAdapter(() => peft.forward(inputs).logits);
    expect((await keptDiff(off, t.logits_base, t.attention_mask)).rel).toBeLessThan(TOL);

    const out = join(tmp, NAME);
    await peft.savePretrained(out);
    const hfCfg = JSON.parse(readFileSync(`${dir}adapter/adapter_config.json`, 'utf8'));
    const ourCfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(Object.keys(ourCfg).sort()).toEqual(Object.keys(hfCfg).sort());
    for (const k of Object.keys(hfCfg)) {
      if (Array.isArray(hfCfg[k])) expect([...ourCfg[k]].sort(), k).toEqual([...hfCfg[k]].sort());
      else expect(ourCfg[k], k).toEqual(hfCfg[k]);
    }
    const hfFile = parseSafetensors(readFileSync(`${dir}adapter/adapter_model.safetensors`));
    const ourFile = parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors')));
    expect(Object.keys(ourFile.tensors).sort()).toEqual(Object.keys(hfFile.tensors).sort());
    for (const [k, v] of Object.entries(hfFile.tensors)) {
      expect(ourFile.tensors[k].shape, k).toEqual(v.shape);
      expect(Buffer.compare(Buffer.from(ourFile.tensors[k].bytes), Buffer.from(v.bytes)), k).toBe(0);
    }
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(`${dir}base`), out);
    const reloaded = again.forward(inputs).logits;
    expect(tf.max(tf.abs(tf.sub(reloaded, adapted))).dataSync()[0]).toBe(0);

    // merge then unmerge (HF divides by l + 1e-8: close, not exact)
    const w0 = peft.model.getParameter('model.layers.0.mlp.down_proj.base_layer.weight').clone();
    peft.mergeAdapter();
    const m1 = await keptDiff(peft.forward(inputs).logits, t.logits_merged, t.attention_mask);
    expect(m1.rel).toBeLessThan(TOL);
    peft.unmergeAdapter();
    const w1 = peft.model.getParameter('model.layers.0.mlp.down_proj.base_layer.weight');
    expect(tf.max(tf.abs(tf.sub(w0, w1))).dataSync()[0]).toBeLessThan(1e-5);

    const merged = peft.mergeAndUnload();
    const m = await keptDiff(merged.forward(inputs).logits, t.logits_merged, t.attention_mask);
    console.log(`${NAME}: merged max rel diff ${m.rel.toExponential(3)}`);
    expect(m.rel).toBeLessThan(TOL);
    expect([...merged.namedParameters()].some(([k]) => k.includes('ia3_'))).toBe(false);
  });
});

describe('IA3 model management', () => {
  it('defaults per model type: vectors start at 1 (the base output), [out,1] for attention and [1,in] for feed-forward', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${hfCase(NAME)}base`);
    const ids = [[1, 2, 3, 4, 5]];
    const before = base.forward({ inputIds: ids }).logits;
    const peft = getPeftModel(base, new IA3Config({ taskType: TaskType.CAUSAL_LM }));
    const cfg = peft.peftConfig.default as IA3Config;
    expect(cfg.targetModules).toEqual(['k_proj', 'v_proj', 'down_proj']);
    expect(cfg.feedforwardModules).toEqual(['down_proj']);
    expect(tf.max(tf.abs(tf.sub(before, peft.forward({ inputIds: ids }).logits))).dataSync()[0]).toBe(0);
    const keys = Object.keys(peft.adapterStateDict());
    expect(keys).toContain('base_model.model.model.layers.0.self_attn.k_proj.ia3_l');
    const k = peft.model.getSubmodule<IA3Linear>('model.layers.0.self_attn.k_proj');
    const d = peft.model.getSubmodule<IA3Linear>('model.layers.0.mlp.down_proj');
    expect(k.ia3L.get('default')!.shape).toEqual([k.outFeatures, 1]);
    expect(d.ia3L.get('default')!.shape).toEqual([1, d.inFeatures]);
    for (const [name, p] of peft.namedParameters()) expect(p.trainable, name).toBe(name.includes('ia3_l'));
  });

  it('a training step changes only the IA3 vectors (base bit-identical); steps and forwards do not leak', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${hfCase(NAME)}base`);
    const peft = getPeftModel(base, new IA3Config({ targetModules: ['k_proj', 'v_proj', 'down_proj'], feedforwardModules: ['down_proj'] }));
    peft.train();
    const batch = { inputIds: [[5, 6, 7, 8, 9], [1, 2, 3, 4, 5]], attentionMask: [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], labels: [[5, 6, 7, 8, 9], [-100, 2, 3, 4, 5]] };
    const before = snapshot(peft);
    trainStep(peft, batch);
    const changed = expectOnlyMethodChanged(before, snapshot(peft), (n) => n.includes('.ia3_l.'));
    expect(changed).toBe(3 * base.config.numHiddenLayers);
    const n0 = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) trainStep(peft, batch);
    for (let i = 0; i < 3; i++) {
      const o = peft.forward(batch);
      tf.dispose([o.logits, o.loss!]);
    }
    expect(tf.memory().numTensors).toBe(n0);
  });

  it('errors name the field', () => {
    expect(() => new IA3Config({ targetModules: ['k_proj'], feedforwardModules: ['down_proj'] })).toThrow(/feedforwardModules.*subset.*"down_proj"/);
    expect(() => new IA3Config({ initIa3Weight: true } as never)).toThrow(/unknown field "initIa3Weight"/);
  });
});

describe('IA3 SEQ_CLS', () => {
  it('the score head is trained through modules_to_save and saved under its HF name', async () => {
    const { AutoModelForSequenceClassification } = await import('@peftjs/models');
    const base = await AutoModelForSequenceClassification.fromPretrained(`${hfCase('llama_seqcls_lora')}base`);
    const peft = getPeftModel(base, new IA3Config({ taskType: TaskType.SEQ_CLS }));
    const keys = Object.keys(peft.adapterStateDict());
    expect(keys).toContain('base_model.model.score.weight');
    expect(keys).toContain('base_model.model.model.layers.0.mlp.down_proj.ia3_l');
    expect(peft.forward({ inputIds: [[4, 5, 6]] }).logits.shape).toEqual([1, 3]);
  });
});
