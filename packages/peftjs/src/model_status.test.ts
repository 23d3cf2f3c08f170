// HF PeftModel features on top of the methods: lasting enable/disable switches, getLayerStatus /
// getModelStatus (HF's fields), setRequiresGrad, loadAdapter from a subfolder as HF saves several adapters.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoModelForCausalLM, LNTuningConfig, LoraConfig, PeftModel, PromptTuningConfig, TaskType, getPeftModel, type PreTrainedModel } from 'peftjs';

const FIX = fileURLToPath(new URL('../../../fixtures/hf-peft/', import.meta.url));
const BASE = `${FIX}llama_lora_qv/base`;
const tmp = mkdtempSync(join(tmpdir(), 'peftjs-status-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const ids = [[5, 6, 7, 8, 9]];

async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  tf.dispose([d, a, b]);
  return v;
}
const logits = (m: { forward(i: { inputIds: number[][] }): { logits: tf.Tensor } }) => m.forward({ inputIds: ids }).logits;
/** LoRA with B random so the adapter changes the output (HF's init would be the identity). */
const lora = (targets = ['q_proj', 'v_proj']) => new LoraConfig({ r: 4, loraAlpha: 8, targetModules: targets, initLoraWeights: 'gaussian' });
async function loraModel(): Promise<{ base: PreTrainedModel; peft: PeftModel }> {
  const base = await AutoModelForCausalLM.fromPretrained(BASE);
  const peft = getPeftModel(base, lora());
  for (const [k, p] of peft.namedParameters()) if (k.includes('lora_B')) p.assign(tf.tidy(() => tf.randomNormal(p.shape, 0, 0.5, 'float32', 7)));
  return { base, peft };
}
const trainableNames = (peft: PeftModel) => [...peft.namedParameters()].filter(([, p]) => p.trainable).map(([k]) => k);

describe('enableAdapterLayers / disableAdapterLayers', () => {
  it('a lasting switch: base output and frozen adapters until enabled; disableAdapter(fn) inside keeps it off; merged adapters are unmerged', async () => {
    const { peft } = await loraModel();
    const baseT = peft.disableAdapter(() => logits(peft));
    const baseOut = await baseT.data();
    baseT.dispose();
    const adapted = logits(peft);
    expect(await maxAbsDiff(tf.tensor(baseOut, adapted.shape), adapted.clone())).toBeGreaterThan(1e-3); // the adapter matters
    const trainable = trainableNames(peft);
    expect(trainable.length).toBeGreaterThan(0);
    peft.disableAdapterLayers();
    expect(peft.adapterLayersDisabled).toBe(true);
    expect(trainableNames(peft)).toEqual([]);
    expect(await maxAbsDiff(logits(peft), tf.tensor(baseOut, adapted.shape))).toBe(0);
    peft.disableAdapter(() => peft.forward({ inputIds: ids }).logits.dispose());
    expect(peft.adapterLayersDisabled).toBe(true); // the context restored the lasting state, not "enabled"
    expect(await maxAbsDiff(logits(peft), tf.tensor(baseOut, adapted.shape))).toBe(0);
    // an adapter added and activated while disabled stays off
    peft.addAdapter('late', lora(['k_proj']));
    peft.setAdapter('late');
    expect(await maxAbsDiff(logits(peft), tf.tensor(baseOut, adapted.shape))).toBe(0);
    expect(peft.getModelStatus().enabled).toBe(false);
    peft.setAdapter('default');
    peft.enableAdapterLayers();
    expect(peft.getModelStatus().enabled).toBe(true);
    expect(trainableNames(peft)).toEqual(trainable);
    expect(await maxAbsDiff(logits(peft), adapted.clone())).toBe(0);
    // disabling unmerges what was merged (as HF)
    peft.mergeAdapter();
    expect(peft.getModelStatus().merged_adapters).toEqual(['default']);
    peft.disableAdapterLayers();
    expect(peft.getModelStatus().merged_adapters).toEqual([]);
    expect(await maxAbsDiff(logits(peft), tf.tensor(baseOut, adapted.shape))).toBeLessThan(1e-5);
    peft.enableAdapterLayers();
    expect(await maxAbsDiff(logits(peft), adapted)).toBeLessThan(1e-5);
  });

  it('prompt learning: the lasting switch turns the virtual tokens off', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(BASE);
    const before = logits(base);
    const peft = getPeftModel(base, new PromptTuningConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 3 }));
    expect(logits(peft).shape[1]).toBe(ids[0].length + 3);
    peft.disableAdapterLayers();
    expect(await maxAbsDiff(logits(peft), before.clone())).toBe(0);
    expect(trainableNames(peft)).toEqual([]);
    peft.enableAdapterLayers();
    expect(logits(peft).shape[1]).toBe(ids[0].length + 3);
    expect(trainableNames(peft).length).toBe(1);
    expect(() => peft.getLayerStatus()).toThrow(/prompt-learning adapters .* have no adapter layers/);
    expect(() => peft.setRequiresGrad('default', false)).toThrow(/not supported for prompt-learning/);
    before.dispose();
  });
});

describe('getLayerStatus / getModelStatus', () => {
  it("HF's fields for each layer and the model; irregular where layers disagree", async () => {
    const { base, peft } = await loraModel();
    peft.addAdapter('other', lora(['v_proj']));
    const layers = peft.getLayerStatus();
    const n = base.config.numHiddenLayers;
    expect(layers.length).toBe(2 * n);
    expect(layers[0]).toEqual({
      name: 'model.model.layers.0.self_attn.q_proj',
      module_type: 'lora.Linear',
      enabled: true,
      active_adapters: ['default'],
      merged_adapters: [],
      requires_grad: { default: true },
      available_adapters: ['default'],
      devices: { default: [tf.getBackend()] },
      quantization_backend: null,
    });
    const v = layers.find((s) => s.name === 'model.model.layers.0.self_attn.v_proj')!;
    expect(v.available_adapters).toEqual(['default', 'other']);
    expect(v.requires_grad).toEqual({ default: true, other: false });
    const [trainable, total] = peft.getNbTrainableParameters();
    expect(peft.getModelStatus()).toEqual({
      base_model_type: base.constructor.name,
      adapter_model_type: 'TunerModel',
      peft_types: { default: 'LORA', other: 'LORA' },
      trainable_params: trainable,
      total_params: total,
      num_adapter_layers: 2 * n,
      enabled: true,
      active_adapters: ['default'],
      merged_adapters: [],
      requires_grad: { default: true, other: false },
      available_adapters: ['default', 'other'],
      devices: { default: [tf.getBackend()], other: [tf.getBackend()] },
      quantization_backend: null,
    });
    // one layer merged and one adapter's gradient switched on in one layer only: irregular
    peft.model.getSubmodule<any>('model.layers.0.self_attn.q_proj').merge(['default']);
    for (const [k, p] of peft.namedParameters()) if (k.startsWith('base_model.model.model.layers.0.self_attn.v_proj.lora_A.other')) p.trainable = true;
    const st = peft.getModelStatus();
    expect(st.merged_adapters).toBe('irregular');
    expect(st.requires_grad.other).toBe('irregular');
    expect(peft.getLayerStatus().find((s) => s.name === v.name)!.requires_grad.other).toBe('irregular');
  });

  it("LN tuning layers report HF's module type (ln_tuning.LNTuningLayer); modules_to_save wrappers are listed", async () => {
    const { AutoModelForSequenceClassification } = await import('peftjs');
    const base = await AutoModelForSequenceClassification.fromPretrained(`${FIX}llama_seqcls_lora/base`);
    const peft = getPeftModel(base, new LNTuningConfig({ taskType: TaskType.SEQ_CLS, targetModules: ['norm'] }));
    const layers = peft.getLayerStatus();
    expect(layers.map((s) => [s.name, s.module_type])).toEqual([
      ['model.model.norm', 'ln_tuning.LNTuningLayer'],
      ['model.score', 'ModulesToSaveWrapper'],
    ]);
    expect(layers[1].active_adapters).toEqual(['default']);
    expect(layers[1].requires_grad).toEqual({ default: true });
  });
});

describe('setRequiresGrad', () => {
  it('switches the named adapters\' parameters, whichever is active; unknown names are refused', async () => {
    const { peft } = await loraModel();
    peft.addAdapter('other', lora(['v_proj']));
    peft.setRequiresGrad('other');
    expect(peft.getModelStatus().requires_grad).toEqual({ default: true, other: true });
    expect(peft.activeAdapters).toEqual(['default']);
    peft.setRequiresGrad(['default', 'other'], false);
    expect(trainableNames(peft)).toEqual([]);
    peft.setRequiresGrad(['default']);
    expect(trainableNames(peft).every((k) => k.includes('.default.'))).toBe(true);
    expect(trainableNames(peft).length).toBe(2 * 2 * 2); // q and v, A and B, 2 layers
    expect(() => peft.setRequiresGrad(['nope'])).toThrow(/no adapter named "nope"; adapters: default, other/);
  });
});

describe('loadAdapter from a subfolder', () => {
  it('reads adapters/a and adapters/b as savePretrained writes several adapters; a subfolder outside is refused', async () => {
    const { peft } = await loraModel();
    peft.addAdapter('a', lora(['q_proj']));
    peft.addAdapter('b', lora(['v_proj']));
    for (const [k, p] of peft.namedParameters()) if (k.includes('lora_B.a') || k.includes('lora_B.b')) p.assign(tf.tidy(() => tf.randomNormal(p.shape, 0, 0.5, 'float32', 11)));
    const dir = join(tmp, 'adapters');
    await peft.savePretrained(dir, { selectedAdapters: ['a', 'b'] });
    expect(existsSync(join(dir, 'a', 'adapter_config.json')) && existsSync(join(dir, 'b', 'adapter_model.safetensors'))).toBe(true);
    peft.setAdapter('a');
    const outA = logits(peft);
    peft.setAdapter('b');
    const outB = logits(peft);

    const fresh = getPeftModel(await AutoModelForCausalLM.fromPretrained(BASE), lora());
    await fresh.loadAdapter(dir, 'a', { subfolder: 'a' });
    await fresh.loadAdapter(dir, 'b', { subfolder: 'b' });
    expect(Object.keys(fresh.peftConfig)).toEqual(['default', 'a', 'b']);
    fresh.setAdapter('a');
    expect(await maxAbsDiff(logits(fresh), outA)).toBe(0);
    fresh.setAdapter('b');
    expect(await maxAbsDiff(logits(fresh), outB)).toBe(0);
    const n0 = tf.memory().numTensors;
    await expect(fresh.loadAdapter(dir, 'c', { subfolder: '../adapters/a' })).rejects.toThrow(/loadAdapter: subfolder "\.\.\/adapters\/a" leaves its folder/);
    await expect(fresh.loadAdapter(dir, 'c', { subfolder: 'missing' })).rejects.toThrow(/no adapter_config\.json in .*adapters\/missing/);
    expect(Object.keys(fresh.peftConfig)).toEqual(['default', 'a', 'b']);
    expect(tf.memory().numTensors).toBe(n0);
  });
});
