// Training throughput of the Trainer on the CPU (wasm backend), from the built dist/ of the packages.
//   npx nx run-many -t build && node bench/trainer-cpu.mjs [--steps 5] [--backend wasm] [--no-fast-paths] [--no-native]
// On wasm, matmuls run through @peftjs/native's multi-threaded AVX-512/AVX2 addon when it is built (as
// initBackend does by default; threads: PEFTJS_NUM_THREADS, else all cores); --no-native (or PEFTJS_NATIVE=0)
// measures plain wasm. The output's `native` says what ran.
// Model (DESIGN.md's CPU reference shape = the bundled @peftjs/tiny-llama): LLaMA, hidden 256, 4 layers,
// 4 heads / 2 kv heads (head_dim 64), intermediate 688, vocab 4096, SiLU, RMSNorm, tied embeddings; its
// pretrained weights when @peftjs/tiny-llama is built, else a random init of the same config.
// LoRA r=8 (alpha 16, no dropout) on q_proj, v_proj; AdamW; batch 8 × 128 random tokens.
// PyTorch + HF PEFT on the same shape (DESIGN.md, CPU): 3.9k tokens/s on 1 thread, 7.2k on 2.
import * as tf from '@tensorflow/tfjs';
import { initBackend, getPeftModel, manualSeed, setFastPathsEnabled, listOps } from '@peftjs/core';
import { AutoModelForCausalLM, LlamaForCausalLM, parseModelConfig } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { Trainer } from '../packages/trainer/dist/index.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';

const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
};
const STEPS = Number(opt('steps', 5));
const BATCH = Number(opt('batch', 8));
const SEQ = Number(opt('seq', 128));
const TORCH_1T = 3900;
const TORCH_2T = 7200;

const report = await initBackend({ prefer: opt('backend', 'wasm'), ...(argv.includes('--no-native') ? { native: false } : {}) });
if (argv.includes('--no-fast-paths')) setFastPathsEnabled(false);
manualSeed(0);
let base;
let weights = 'random init';
try {
  const { tinyLlamaDir } = await import('@peftjs/tiny-llama');
  base = await AutoModelForCausalLM.fromPretrained(tinyLlamaDir());
  weights = '@peftjs/tiny-llama (pretrained)';
} catch {
  base = new LlamaForCausalLM(parseModelConfig({
    model_type: 'llama', vocab_size: 4096, hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4,
    num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 512, rms_norm_eps: 1e-6,
    rope_theta: 10000, hidden_act: 'silu', tie_word_embeddings: true,
  }));
}
const c = base.config;
if (c.hiddenSize !== 256 || c.numHiddenLayers !== 4 || c.vocabSize !== 4096) throw new Error(`unexpected model shape ${JSON.stringify(c.raw)}`);
const model = getPeftModel(base, new LoraConfig({ r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], loraDropout: 0 }));

let s = 12345;
const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
const dataset = Array.from({ length: BATCH * (STEPS + 1) }, () => ({ inputIds: Array.from({ length: SEQ }, () => Math.floor(rand() * c.vocabSize)) }));
const out = mkdtempSync(join(tmpdir(), 'peftjs-bench-'));
const times = [];
let t = 0;
const trainer = new Trainer({
  model,
  args: { outputDir: out, maxSteps: STEPS + 1, perDeviceTrainBatchSize: BATCH, learningRate: 2e-4, loggingSteps: 1, saveStrategy: 'no', metricsLog: false, progressBar: false, shuffle: false },
  trainDataset: dataset,
  callbacks: [{ onStepBegin: () => void (t = performance.now()), onStepEnd: () => void times.push(performance.now() - t) }],
});
const mem0 = tf.memory().numTensors;
await trainer.train();
rmSync(out, { recursive: true, force: true });
const measured = times.slice(1); // the first step warms up (kernels, allocation)
const mean = measured.reduce((a, b) => a + b, 0) / measured.length;
const tokPerSec = (BATCH * SEQ) / (mean / 1000);
const fast = listOps().filter((o) => o.fastPaths.includes(tf.getBackend())).map((o) => o.name);
console.log(JSON.stringify({
  bench: 'trainer-cpu',
  date: new Date().toISOString(),
  backend: report.backend,
  backendReason: report.reason,
  native: report.native ?? null,
  cpu: cpus()[0]?.model,
  node: process.version,
  model: `llama h${c.hiddenSize} L${c.numHiddenLayers} heads${c.numAttentionHeads}/kv${c.numKeyValueHeads} ff${c.raw.intermediate_size} vocab${c.vocabSize} tied=${c.tieWordEmbeddings} (${weights}), LoRA r8 q_proj,v_proj, AdamW`,
  batch: `${BATCH}x${SEQ}`,
  fastPathsRegistered: argv.includes('--no-fast-paths') ? [] : fast,
  stepMs: measured.map((x) => Math.round(x)),
  meanStepMs: Math.round(mean),
  tokensPerSecond: Math.round(tokPerSec),
  torchTokensPerSecond1Thread: TORCH_1T,
  ratioToTorch1Thread: Number((tokPerSec / TORCH_1T).toFixed(3)),
  ratioToTorch2Threads: Number((tokPerSec / TORCH_2T).toFixed(3)),
  tensorsHeldAfterTraining: tf.memory().numTensors - mem0, // optimizer moments, caches: flat across steps (tested)
}, null, 1));
