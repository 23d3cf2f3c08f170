// LoRA and DoRA pass the shared method conformance suite on the WebGPU backend too (its fused LoRA kernels),
// on Mesa's lavapipe in CI. Without any WebGPU adapter the suite is skipped.
import { describe, it } from 'vitest';
import { initBackend } from '@peftjs/core';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const report = await initBackend({ prefer: 'webgpu', allowSoftwareGpu: true }).catch((e: Error) => e);
const available = !(report instanceof Error);
const llama = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);

describe.skipIf(!available)(`on WebGPU${available ? '' : ` (skipped: ${(report as Error).message})`}`, () => {
  registerMethodConformance({ name: 'LoRA', model: llama, config: () => new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] }), promises: { identityAtInit: true, merge: true } }, { describe, it });
  registerMethodConformance({ name: 'DoRA', model: llama, config: () => new LoraConfig({ r: 4, loraAlpha: 8, useDora: true, targetModules: ['q_proj', 'v_proj'] }), promises: { identityAtInit: true, merge: true } }, { describe, it });
});
