// BitFit: only biases train; save → load is exact; merging puts the trained biases into the model bit for bit.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Linear, PeftModel, getPeftModel, parseSafetensors, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { BitFitConfig, BitFitLayer } from './index';
import { hfCase } from '../../../tools/testing/fixtures';
import { expectOnlyMethodChanged, snapshot, trainStep } from '../../../tools/testing/prompt_learning';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-bitfit-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const QWEN = `${hfCase('qwen2_lora')}base`; // Qwen2: q/k/v have biases, nothing else does
const GPT2 = `${hfCase('gpt2_lora_cattn')}base`; // GPT-2: Conv1D and LayerNorm biases everywhere
const batch = { inputIds: [[5, 6, 7, 8, 9], [1, 2, 3, 4, 5]], attentionMask: [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], labels: [[5, 6, 7, 8, 9], [-100, 2, 3, 4, 5]] };

async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0];
  d.dispose();
  return v;
}
async function bytes(t: tf.Tensor): Promise<Buffer> {
  const a = (await t.data()) as Float32Array;
  return Buffer.from(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

describe('BitFit on Qwen2 (q/k/v biases)', () => {
  it('defaults to the biased modules; the model is unchanged at init; only the biases are trainable', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(QWEN);
    const before = model.forward({ inputIds: batch.inputIds }).logits;
    const peft = getPeftModel(model, new BitFitConfig({ taskType: TaskType.CAUSAL_LM }));
    expect((peft.peftConfig.default as BitFitConfig).targetModules).toEqual(['q_proj', 'k_proj', 'v_proj']);
    expect(await maxAbsDiff(before, peft.forward({ inputIds: batch.inputIds }).logits)).toBe(0);
    const cfg = model.config;
    expect(peft.getNbTrainableParameters()[0]).toBe(cfg.numHiddenLayers * (cfg.numAttentionHeads + 2 * cfg.numKeyValueHeads) * cfg.headDim);
    for (const [name, p] of peft.namedParameters()) expect(p.trainable, name).toBe(name.endsWith('.bitfit_bias.default'));
  });

  it('a training step changes only the biases (base bit-identical); save → load is exact; merge is the trained biases; no leaks', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(QWEN);
    const peft = getPeftModel(model, new BitFitConfig({ targetModules: ['q_proj', 'k_proj', 'v_proj'] }));
    peft.train();
    const s0 = snapshot(peft);
    trainStep(peft, batch);
    const changed = expectOnlyMethodChanged(s0, snapshot(peft), (k) => k.includes('.bitfit_bias.'));
    expect(changed).toBe(3 * model.config.numHiddenLayers);
    const n0 = tf.memory().numTensors;
    for (let i = 0; i < 2; i++) trainStep(peft, batch);
    for (let i = 0; i < 2; i++) {
      const o = peft.forward(batch);
      tf.dispose([o.logits, o.loss!]);
    }
    expect(tf.memory().numTensors).toBe(n0);
    peft.eval();
    const adapted = peft.forward({ inputIds: batch.inputIds }).logits;
    const q = 'model.layers.0.self_attn.q_proj';
    const trained = peft.model.getParameter(`${q}.bitfit_bias.default`);
    const original = await bytes(peft.model.getParameter(`${q}.base_layer.bias`));
    expect(Buffer.compare(await bytes(trained), original)).not.toBe(0);

    const out = join(tmp, 'qwen');
    await peft.savePretrained(out);
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(cfg.peft_type).toBe('BITFIT');
    expect(Object.keys(cfg).sort()).toEqual(['auto_mapping', 'base_model_name_or_path', 'exclude_modules', 'inference_mode', 'modules_to_save', 'peft_type', 'peft_version', 'revision', 'target_modules', 'task_type']);
    const file = parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors')));
    expect(Object.keys(file.tensors).length).toBe(3 * model.config.numHiddenLayers);
    expect(Buffer.compare(Buffer.from(file.tensors[`base_model.model.${q}.bitfit_bias`].bytes), await bytes(trained))).toBe(0);
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(QWEN), out);
    expect(await maxAbsDiff(again.forward({ inputIds: batch.inputIds }).logits, adapted)).toBe(0);

    // merge: the base bias becomes the trained bias bit for bit; unmerge restores the original bit for bit
    const trainedBytes = await bytes(trained);
    const n1 = tf.memory().numTensors;
    peft.mergeAdapter();
    expect(Buffer.compare(await bytes(peft.model.getParameter(`${q}.base_layer.bias`)), trainedBytes)).toBe(0);
    const mergedLogits = peft.forward({ inputIds: batch.inputIds }).logits;
    expect(await maxAbsDiff(mergedLogits, adapted)).toBe(0);
    mergedLogits.dispose();
    peft.unmergeAdapter();
    expect(Buffer.compare(await bytes(peft.model.getParameter(`${q}.base_layer.bias`)), original)).toBe(0);
    expect(Buffer.compare(await bytes(peft.model.getParameter(`${q}.bitfit_bias.default`)), trainedBytes)).toBe(0);
    expect(tf.memory().numTensors).toBe(n1);
    await peft.mergeAdapter(undefined, { safeMerge: true });
    expect(Buffer.compare(await bytes(peft.model.getParameter(`${q}.base_layer.bias`)), trainedBytes)).toBe(0);
    peft.unmergeAdapter();

    const merged = again.mergeAndUnload();
    expect(merged.getSubmodule(q)).toBeInstanceOf(Linear);
    expect(Buffer.compare(await bytes(merged.getParameter(`${q}.bias`)), trainedBytes)).toBe(0);
    expect(await maxAbsDiff(merged.forward({ inputIds: batch.inputIds }).logits, adapted)).toBe(0);
    expect([...merged.namedParameters()].some(([k]) => k.includes('bitfit'))).toBe(false);
  });

  it('one adapter at a time; delete frees its tensors', async () => {
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(QWEN), new BitFitConfig({ targetModules: ['q_proj'] }));
    const n0 = tf.memory().numTensors;
    peft.addAdapter('b', new BitFitConfig({ targetModules: ['q_proj'] }));
    peft.setAdapter(['default', 'b']);
    expect(() => peft.forward({ inputIds: [[1, 2, 3]] })).toThrow(/one adapter at a time.*default, b/);
    expect(() => peft.mergeAdapter(['default', 'b'])).toThrow(/merge 2 BitFit adapters/);
    peft.setAdapter('default');
    peft.deleteAdapter('b');
    expect(tf.memory().numTensors).toBe(n0);
  });

  it('errors name the module or the field', async () => {
    const llama = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
    expect(() => getPeftModel(llama, new BitFitConfig())).toThrow(/no Linear, Conv1D or LayerNorm with a bias/);
    expect(() => getPeftModel(llama, new BitFitConfig({ targetModules: ['q_proj'] }))).toThrow(/"model\.layers\.0\.self_attn\.q_proj" \(Linear\) has no bias/);
    expect(() => new BitFitConfig({ targetModule: ['q_proj'] } as never)).toThrow(/unknown field "targetModule"/);
  });
});

describe('BitFit on GPT-2 (Conv1D and LayerNorm)', () => {
  it('every bias but the head trains; identity at init; a step changes only biases', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(GPT2);
    const before = model.forward({ inputIds: batch.inputIds }).logits;
    const peft = getPeftModel(model, new BitFitConfig());
    expect([...(peft.peftConfig.default as BitFitConfig).targetModules!].sort()).toEqual(['c_attn', 'c_fc', 'c_proj', 'ln_1', 'ln_2', 'ln_f']);
    expect(peft.model.getSubmodule('transformer.ln_f')).toBeInstanceOf(BitFitLayer);
    expect(await maxAbsDiff(before, peft.forward({ inputIds: batch.inputIds }).logits)).toBe(0);
    peft.train();
    const s0 = snapshot(peft);
    trainStep(peft, batch);
    const changed = expectOnlyMethodChanged(s0, snapshot(peft), (k) => k.includes('.bitfit_bias.'));
    expect(changed).toBe(6 * model.config.numHiddenLayers + 1);
  });
});
