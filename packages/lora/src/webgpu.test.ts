// LoRA on the WebGPU backend (Dawn through the `webgpu` package). In CI this runs on Mesa's lavapipe,
// a software Vulkan: slow but a real WGSL pipeline. Without any WebGPU adapter the suite is skipped.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend, PeftModel } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import './index';
import { caseTensors, hfCase, keptDiff } from '../../../tools/testing/fixtures';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const available = !(report instanceof Error);
const why = available ? '' : (report as Error).message;

describe.skipIf(!available)(`LoRA on WebGPU ${available ? '' : `(skipped: ${why})`}`, () => {
  it('initialises on the adapter it reports', () => {
    if (report instanceof Error) throw report;
    expect(report.backend).toBe('webgpu');
    expect(tf.getBackend()).toBe('webgpu');
    expect(report.adapter).toBeDefined();
  });

  it('a LoRA forward matches HF and the cpu backend', async () => {
    const dir = hfCase('llama_lora_qv');
    const t = await caseTensors('llama_lora_qv');
    // plain arrays: tensors do not move from webgpu to cpu in Node (that needs a synchronous read)
    const inputIds = (await t.input_ids.array()) as number[][];
    const attentionMask = (await t.attention_mask.array()) as number[][];
    const run = async () => {
      const base = await AutoModelForCausalLM.fromPretrained(`${dir}base`);
      const peft = await PeftModel.fromPretrained(base, `${dir}adapter`);
      const logits = peft.forward({ inputIds, attentionMask }).logits;
      const values = await logits.data();
      const shape = logits.shape;
      tf.dispose(logits);
      return { values, shape };
    };
    const gpu = await run();
    await tf.setBackend('cpu');
    const cpu = await run();
    await tf.setBackend('webgpu');
    const g = tf.tensor(gpu.values, gpu.shape);
    const c = tf.tensor(cpu.values, cpu.shape);
    const vsHf = await keptDiff(g, t.logits_adapted, t.attention_mask);
    const vsCpu = await keptDiff(g, c, t.attention_mask);
    expect(vsHf.rel, `webgpu vs HF: ${vsHf.diff}`).toBeLessThan(1e-4);
    expect(vsCpu.rel, `webgpu vs cpu: ${vsCpu.diff}`).toBeLessThan(1e-4);
  });
});
