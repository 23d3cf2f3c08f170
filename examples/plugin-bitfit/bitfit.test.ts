import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftModel, getPeftModel, listPeftMethods, registerPeftMethod, parseSafetensors } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { BitFitConfig, bitfitMethod } from './index';
import { hfCase } from '../../tools/testing/fixtures';

describe('a third-party method on the public contract (BitFit)', () => {
  it('injects, trains a step, saves, reloads by peft_type, merges', async () => {
    const dir = `${hfCase('qwen2_lora')}base`; // Qwen2: q/k/v have biases to merge into
    const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(dir), new BitFitConfig({ targetModules: ['q_proj', 'k_proj'] }));
    const [trainable] = peft.getNbTrainableParameters();
    const cfg = peft.model.config;
    expect(trainable).toBe(cfg.numHiddenLayers * (cfg.numAttentionHeads + cfg.numKeyValueHeads) * cfg.headDim);
    const ids = [[3, 4, 5, 6, 7, 8]];
    const opt = tf.train.sgd(0.5);
    opt.minimize(() => peft.forward({ inputIds: ids, labels: ids }).loss!, false, peft.trainableParameters());
    const after = peft.forward({ inputIds: ids }).logits;
    const out = join(mkdtempSync(join(tmpdir(), 'bitfit-')), 'a');
    await peft.savePretrained(out);
    expect(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')).peft_type).toBe('PLUGIN_BITFIT');
    const keys = Object.keys(parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors'))).tensors);
    expect(keys).toContain('base_model.model.model.layers.0.self_attn.q_proj.plugin_bitfit_bias');
    const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(dir), out);
    expect(tf.max(tf.abs(tf.sub(again.forward({ inputIds: ids }).logits, after))).dataSync()[0]).toBe(0);
    const merged = again.mergeAndUnload();
    expect(tf.max(tf.abs(tf.sub(merged.forward({ inputIds: ids }).logits, after))).dataSync()[0]).toBeLessThan(1e-5);
  });

  it('the registry refuses a duplicate name or prefix; the plugin lives beside the shipped BITFIT', async () => {
    await import('@peftjs/bitfit'); // registers BITFIT / bitfit_: no clash with the plugin's names
    expect(listPeftMethods().map((m) => m.peftType)).toEqual(expect.arrayContaining(['BITFIT', 'PLUGIN_BITFIT']));
    expect(registerPeftMethod(bitfitMethod)).toBe(bitfitMethod); // the same object again is a no-op
    expect(() => registerPeftMethod({ ...bitfitMethod })).toThrow(/already registered/);
    expect(() => registerPeftMethod({ ...bitfitMethod, peftType: 'PLUGIN_BITFIT2' })).toThrow(/prefix "plugin_bitfit_" .* already used by PLUGIN_BITFIT/);
    expect(() => registerPeftMethod({ ...bitfitMethod, peftType: 'X', prefix: 'x_', specificationVersion: 'v0' as never })).toThrow(/specificationVersion/);
  });
});
