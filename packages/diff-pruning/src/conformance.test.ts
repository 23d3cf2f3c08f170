// Diff pruning passes the shared method conformance suite (@peftjs/core/testing) on the tiny random LLaMA,
// Qwen2 (biases) and GPT-2 (Conv1D) of the HF fixtures: projected adapters (what every saved file holds) through
// every check, and gated ones through all but save → load (a gated adapter saves as its projection, on purpose:
// diff_pruning.test.ts checks that the reload is the projection, bit for bit).
import { describe, it } from 'vitest';
import { registerMethodConformance } from '@peftjs/core/testing';
import { AutoModelForCausalLM } from '@peftjs/models';
import { DiffPruningConfig } from './index';
import { hfCase } from '../../../tools/testing/fixtures';

const llama = () => AutoModelForCausalLM.fromPretrained(`${hfCase('llama_lora_qv')}base`);
const qwen = () => AutoModelForCausalLM.fromPretrained(`${hfCase('qwen2_lora')}base`);
const gpt2 = () => AutoModelForCausalLM.fromPretrained(`${hfCase('gpt2_lora_cattn')}base`);
const t = { describe, it };
// the suite's "method parameters" are the ones that train: a projected adapter's indices are its mask's
// structure, frozen like the base (and checked unchanged by the training step as the base is)
const isMethodParameter = (k: string) => k.includes('.diff_pruning_') && !k.includes('.diff_pruning_indices.');

registerMethodConformance({ name: 'diff pruning, projected (all-linear, density 0.05)', model: llama, config: () => new DiffPruningConfig({ density: 0.05, projected: true }), promises: { identityAtInit: true, merge: true }, isMethodParameter }, t);
registerMethodConformance(
  { name: 'diff pruning, projected (Qwen2 q/k/v weights and biases)', model: qwen, config: () => new DiffPruningConfig({ targetModules: ['q_proj', 'k_proj', 'v_proj'], diffParameters: ['weight', 'bias'], density: 0.1, projected: true }), promises: { identityAtInit: true, merge: true }, isMethodParameter },
  t,
);
registerMethodConformance({ name: 'diff pruning, projected (GPT-2 Conv1D)', model: gpt2, config: () => new DiffPruningConfig({ targetModules: ['c_attn', 'c_fc'], density: 0.05, projected: true }), promises: { identityAtInit: true, merge: true }, isMethodParameter }, t);
registerMethodConformance(
  {
    name: 'diff pruning, gated (all-linear)',
    model: llama,
    config: () => new DiffPruningConfig({ density: 0.05 }),
    promises: { identityAtInit: true, merge: true },
    // δ = 0 at init gives log α no task gradient until δ has moved (∂L/∂z = δ·∂L/∂W)
    untrained: (name) => name.includes('.diff_pruning_log_alpha.'),
    skip: { 'save → load is exact': 'a gated adapter is saved as its projection (checked in diff_pruning.test.ts)' },
  },
  t,
);
registerMethodConformance(
  {
    name: 'diff pruning, gated and structured (q_proj, v_proj, down_proj)',
    model: llama,
    config: () => new DiffPruningConfig({ targetModules: ['q_proj', 'v_proj', 'down_proj'], structured: true, density: 0.05 }),
    promises: { identityAtInit: true, merge: true },
    untrained: (name) => name.includes('log_alpha.'),
    skip: { 'save → load is exact': 'a gated adapter is saved as its projection (checked in diff_pruning.test.ts)' },
  },
  t,
);
