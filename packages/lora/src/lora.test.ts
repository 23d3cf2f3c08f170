import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, writeFileSync, cpSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftModel, PeftError, getPeftModel, parseSafetensors, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig, LoraLinear } from './index';
import { caseTensors, hfCase, keptDiff } from '../../../tools/testing/fixtures';

const TOL = Number(process.env.LORA_TOL ?? 1e-4);
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-lora-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const CASES = ['llama_lora_qv', 'llama_lora_all_rslora', 'llama_dora', 'qwen2_lora', 'gpt2_lora_cattn'];

async function logitsOf(run: () => { logits: tf.Tensor }) {
  return run().logits;
}

describe.each(CASES)('LoRA parity with HF PEFT: %s', (name) => {
  it('adapted, disabled and merged logits match HF; save → load is exact', async () => {
    const dir = hfCase(name);
    const t = await caseTensors(name);
    const inputIds = t.input_ids;
    const attentionMask = t.attention_mask;
    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    const peft = await PeftModel.fromPretrained(base, `${dir}adapter`);

    const adapted = await logitsOf(() => peft.forward({ inputIds, attentionMask }));
    const a = await keptDiff(adapted, t.logits_adapted, attentionMask);
    expect(a.rel, `adapted: max diff ${a.diff} of ${a.scale}`).toBeLessThan(TOL);

    const disabled = peft.disableAdapter(() => peft.forward({ inputIds, attentionMask })).logits;
    const d = await keptDiff(disabled, t.logits_base, attentionMask);
    expect(d.rel, `disabled: ${d.diff}`).toBeLessThan(TOL);

    // save what we loaded, compare with HF's files, reload on a fresh base: identical logits
    const out = join(tmp, name);
    await peft.savePretrained(out);
    const hfCfg = JSON.parse(readFileSync(`${dir}adapter/adapter_config.json`, 'utf8'));
    const ourCfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(Object.keys(ourCfg).sort()).toEqual(Object.keys(hfCfg).sort());
    for (const k of ['r', 'lora_alpha', 'use_rslora', 'use_dora', 'fan_in_fan_out', 'peft_type', 'task_type', 'inference_mode']) {
      expect(ourCfg[k], k).toEqual(hfCfg[k]);
    }
    expect([...ourCfg.target_modules].sort()).toEqual([...hfCfg.target_modules].sort());
    const hfFile = parseSafetensors(readFileSync(`${dir}adapter/adapter_model.safetensors`));
    const ourFile = parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors')));
    expect(ourFile.metadata).toEqual({ format: 'pt' });
    expect(Object.keys(ourFile.tensors).sort()).toEqual(Object.keys(hfFile.tensors).sort());
    for (const [k, v] of Object.entries(hfFile.tensors)) {
      expect(ourFile.tensors[k].shape, k).toEqual(v.shape);
      expect(Buffer.compare(Buffer.from(ourFile.tensors[k].bytes), Buffer.from(v.bytes)), k).toBe(0);
    }
    const base2 = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    const again = await PeftModel.fromPretrained(base2, out);
    const reloaded = again.forward({ inputIds, attentionMask }).logits;
    expect(tf.max(tf.abs(tf.sub(reloaded, adapted))).dataSync()[0]).toBe(0);

    const merged = peft.mergeAndUnload();
    const m = await keptDiff(merged.forward({ inputIds, attentionMask }).logits, t.logits_merged, attentionMask);
    expect(m.rel, `merged: ${m.diff}`).toBeLessThan(TOL);
    expect([...merged.namedParameters()].some(([k]) => k.includes('lora_'))).toBe(false);
    tf.dispose([adapted, disabled, reloaded, ...Object.values(t)]);
  });
});

describe('LoRA model management', () => {
  it('getPeftModel: B starts at zero so the output is the base output; trainable count is A and B only', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
    const ids = [[1, 2, 3, 4, 5]];
    const before = base.forward({ inputIds: ids }).logits;
    const peft = getPeftModel(base, new LoraConfig({ r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], taskType: TaskType.CAUSAL_LM }));
    const after = peft.forward({ inputIds: ids }).logits;
    expect(tf.max(tf.abs(tf.sub(before, after))).dataSync()[0]).toBeLessThan(1e-6);
    const cfg = base.config;
    const layers = cfg.numHiddenLayers;
    const kv = cfg.numKeyValueHeads * cfg.headDim;
    const expected = layers * (8 * cfg.hiddenSize + cfg.hiddenSize * 8 + 8 * cfg.hiddenSize + kv * 8);
    const [trainable, all] = peft.getNbTrainableParameters();
    expect(trainable).toBe(expected);
    expect(all).toBeGreaterThan(trainable);
    const line = peft.printTrainableParameters(() => {});
    expect(line).toMatch(/^trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}$/);
    // the frozen base: no base parameter is trainable
    for (const [k, p] of peft.namedParameters()) expect(p.trainable, k).toBe(k.includes('lora_'));
  });

  it('adds, switches, disables and deletes adapters without reloading the base model', async () => {
    const dir = hfCase('llama_lora_qv');
    const t = await caseTensors('llama_lora_qv');
    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    const peft = await PeftModel.fromPretrained(base, `${dir}adapter`, { adapterName: 'qv' });
    await peft.loadAdapter(`${hfCase('llama_dora')}adapter`, 'dora');
    expect(peft.activeAdapters).toEqual(['qv']);
    const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
    expect((await keptDiff(peft.forward(inputs).logits, t.logits_adapted, t.attention_mask)).rel).toBeLessThan(TOL);
    peft.setAdapter('dora');
    const dt = await caseTensors('llama_dora');
    expect((await keptDiff(peft.forward(inputs).logits, dt.logits_adapted, t.attention_mask)).rel).toBeLessThan(TOL);
    peft.deleteAdapter('dora');
    expect(peft.activeAdapters).toEqual(['qv']);
    expect(Object.keys(peft.peftConfig)).toEqual(['qv']);
    expect([...peft.namedParameters()].some(([k]) => k.includes('magnitude'))).toBe(false);
    expect((await keptDiff(peft.forward(inputs).logits, t.logits_adapted, t.attention_mask)).rel).toBeLessThan(TOL);
    // merge then unmerge restores the base weights (to float rounding)
    const w0 = peft.model.getParameter('model.layers.0.self_attn.q_proj.base_layer.weight').clone();
    peft.mergeAdapter();
    expect((await keptDiff(peft.forward(inputs).logits, t.logits_adapted, t.attention_mask)).rel).toBeLessThan(TOL);
    peft.unmergeAdapter();
    const w1 = peft.model.getParameter('model.layers.0.self_attn.q_proj.base_layer.weight');
    expect(tf.max(tf.abs(tf.sub(w0, w1))).dataSync()[0]).toBeLessThan(1e-6);
    // a named adapter is saved in its own folder
    const out = join(tmp, 'named');
    await peft.savePretrained(out);
    expect(JSON.parse(readFileSync(join(out, 'qv', 'adapter_config.json'), 'utf8')).peft_type).toBe('LORA');
  });

  it('a forward loop and a merge/unmerge loop leave tf.memory().numTensors unchanged', async () => {
    const dir = hfCase('llama_dora');
    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    const peft = await PeftModel.fromPretrained(base, `${dir}adapter`);
    const ids = [[1, 2, 3, 4], [5, 6, 7, 8]];
    const step = () => tf.dispose(peft.forward({ inputIds: ids, attentionMask: [[1, 1, 1, 1], [0, 1, 1, 1]] }).logits);
    step();
    const n0 = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) step();
    expect(tf.memory().numTensors).toBe(n0);
    peft.mergeAdapter();
    peft.unmergeAdapter();
    const n1 = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) {
      peft.mergeAdapter();
      step();
      peft.unmergeAdapter();
    }
    expect(tf.memory().numTensors).toBe(n1);
    peft.disableAdapter(step);
    expect(tf.memory().numTensors).toBe(n1);
  });

  it('rank and alpha patterns, layersToTransform, excludeModules and modulesToSave', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
    const peft = getPeftModel(
      base,
      new LoraConfig({
        r: 4,
        loraAlpha: 8,
        targetModules: ['q_proj', 'v_proj', 'o_proj'],
        excludeModules: ['o_proj'],
        layersToTransform: [1],
        rankPattern: { 'layers.1.self_attn.v_proj': 2 },
        alphaPattern: { v_proj: 6 },
        modulesToSave: ['lm_head'],
      }),
    );
    const m = peft.model;
    expect(m.getSubmodule('model.layers.0.self_attn.q_proj')).not.toBeInstanceOf(LoraLinear);
    const v1 = m.getSubmodule<LoraLinear>('model.layers.1.self_attn.v_proj');
    expect(v1).toBeInstanceOf(LoraLinear);
    expect(v1.r.default).toBe(2);
    expect(v1.scaling.default).toBe(3);
    expect(m.getSubmodule('model.layers.1.self_attn.o_proj')).not.toBeInstanceOf(LoraLinear);
    const keys = Object.keys(peft.adapterStateDict());
    expect(keys).toContain('base_model.model.lm_head.weight');
    expect(keys).toContain('base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight');
    expect(keys.filter((k) => k.includes('layers.0'))).toEqual([]);
    const saved = join(tmp, 'patterns');
    await peft.savePretrained(saved);
    const cfg = JSON.parse(readFileSync(join(saved, 'adapter_config.json'), 'utf8'));
    expect(cfg.rank_pattern).toEqual({ 'layers.1.self_attn.v_proj': 2 });
    expect(cfg.layers_to_transform).toEqual([1]);
  });
});

describe('LoRA errors name what is wrong', () => {
  const dir = hfCase('llama_lora_qv');
  it('an unknown config field', () => {
    expect(() => new LoraConfig({ r: 4, loraAlfa: 8 } as never)).toThrow(/unknown field "loraAlfa"/);
    expect(() => new LoraConfig({ r: -1 })).toThrow(/field "r"/);
    const bad = join(tmp, 'unknown-field');
    cpSync(`${dir}adapter`, bad, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(bad, 'adapter_config.json'), 'utf8'));
    writeFileSync(join(bad, 'adapter_config.json'), JSON.stringify({ ...cfg, lora_alfa: 3 }));
    return AutoModelForCausalLM.fromPretrained(`${dir}base`).then((base) =>
      expect(PeftModel.fromPretrained(base, bad)).rejects.toThrow(/adapter_config.json: unknown field "lora_alfa"/),
    );
  });

  it('an unknown peft_type', async () => {
    const bad = join(tmp, 'unknown-type');
    cpSync(`${dir}adapter`, bad, { recursive: true });
    writeFileSync(join(bad, 'adapter_config.json'), JSON.stringify({ peft_type: 'MAGIC', target_modules: ['q_proj'] }));
    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    await expect(PeftModel.fromPretrained(base, bad)).rejects.toThrow(/unknown peft_type "MAGIC"/);
  });

  it('the smallest config HF accepts loads', async () => {
    const small = join(tmp, 'small');
    cpSync(`${dir}adapter`, small, { recursive: true });
    writeFileSync(join(small, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', target_modules: ['q_proj', 'v_proj'], r: 4, lora_alpha: 8 }));
    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    const t = await caseTensors('llama_lora_qv');
    const peft = await PeftModel.fromPretrained(base, small);
    expect((await keptDiff(peft.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask }).logits, t.logits_adapted, t.attention_mask)).rel).toBeLessThan(TOL);
  });

  it('target modules that match nothing', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    expect(() => getPeftModel(base, new LoraConfig({ targetModules: ['query'] }))).toThrow(/matched no module.*q_proj/);
  });

  it('an adapter for another hidden size', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
    // the GPT-2 adapter on a LLaMA: names do not belong
    const llama = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    await expect(PeftModel.fromPretrained(llama, `${hfCase('gpt2_lora_cattn')}adapter`)).rejects.toThrow(/matched no module|do not belong/);
    // same names, other shapes: a LoRA for a wider model
    const wide = join(tmp, 'wide');
    cpSync(`${dir}adapter`, wide, { recursive: true });
    const f = parseSafetensors(readFileSync(join(wide, 'adapter_model.safetensors')));
    const { serializeSafetensors } = await import('@peftjs/core');
    const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    for (const [k, v] of Object.entries(f.tensors)) {
      const shape = k.includes('lora_A') ? [v.shape[0], v.shape[1] * 2] : v.shape;
      tensors[k] = { dtype: 'F32', shape, data: new Float32Array(shape[0] * shape[1]) };
    }
    writeFileSync(join(wide, 'adapter_model.safetensors'), serializeSafetensors(tensors, { format: 'pt' }));
    const err = await PeftModel.fromPretrained(llama, wide).catch((e) => e);
    expect(PeftError.isInstance(err)).toBe(true);
    expect(err.message).toMatch(/lora_A.weight" has shape \[4,64\] but this model needs \[4,32\]/);
    expect(base).toBeDefined();
  });

  it('merging asks for a mergeable method and a missing adapter config is named', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
    await expect(PeftModel.fromPretrained(base, join(tmp, 'nowhere'))).rejects.toThrow(/no adapter_config.json in .*nowhere/);
  });
});
