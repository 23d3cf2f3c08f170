#!/usr/bin/env node
// Makes LoRA adapters with peftjs for HF PEFT to load (hf_load_check.py): for each case, a new adapter with
// non-trivial weights on a fixture base model, saved with savePretrained, plus our logits on the fixture
// inputs. Runs from the built packages (npm run build first).
// Usage: node tools/interop/save-adapter.mjs OUTDIR
import * as tf from '@tensorflow/tfjs';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { getPeftModel, loadSafetensors, saveSafetensors, initBackend, manualSeed } from '@peftjs/core';
import { AutoModelForCausalLM } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';

const out = process.argv[2] ?? 'interop-out';
const fixtures = fileURLToPath(new URL('../../fixtures/hf-peft/', import.meta.url));
await initBackend({ prefer: ['wasm', 'cpu'] });
manualSeed(42);

const cases = {
  llama_lora: { base: 'llama_lora_qv', config: { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj'], taskType: 'CAUSAL_LM' } },
  llama_dora_rslora: { base: 'llama_lora_qv', config: { r: 4, loraAlpha: 16, useDora: true, useRslora: true, targetModules: ['q_proj', 'v_proj', 'down_proj'], taskType: 'CAUSAL_LM' } },
  gpt2_lora: { base: 'gpt2_lora_cattn', config: { r: 2, loraAlpha: 4, targetModules: ['c_attn', 'c_fc'], fanInFanOut: true, taskType: 'CAUSAL_LM' } },
  qwen2_lora_all_linear: { base: 'qwen2_lora', config: { r: 4, loraAlpha: 8, targetModules: 'all-linear', taskType: 'CAUSAL_LM' } },
};

for (const [name, c] of Object.entries(cases)) {
  const dir = `${out}/${name}`;
  mkdirSync(dir, { recursive: true });
  const base = await AutoModelForCausalLM.fromPretrained(`${fixtures}${c.base}/base`);
  const peft = getPeftModel(base, new LoraConfig({ ...c.config, initLoraWeights: false }));
  // B is random too (initLoraWeights: false) so the adapter changes the logits; perturb DoRA magnitudes
  for (const [k, p] of peft.namedParameters()) {
    if (k.includes('lora_magnitude_vector')) p.assign(tf.tidy(() => p.mul(tf.randomUniform(p.shape, 0.8, 1.2, 'float32', 3))));
    if (k.includes('lora_B')) p.assign(tf.tidy(() => p.mul(0.3)));
  }
  await peft.savePretrained(`${dir}/adapter`);
  const t = await loadSafetensors(`${fixtures}${c.base}/tensors.safetensors`);
  const logits = peft.forward({ inputIds: t.input_ids, attentionMask: t.attention_mask }).logits;
  await saveSafetensors(`${dir}/ours.safetensors`, { logits, input_ids: t.input_ids, attention_mask: t.attention_mask });
  console.log(`${name}: saved adapter and logits ${JSON.stringify(logits.shape)} (base ${c.base})`);
}
