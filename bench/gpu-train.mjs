// GPU training and generation on the webgpu backend against PyTorch + HF PEFT on the same GPU, in one command.
//
//   npm run build && node bench/gpu-train.mjs [w1] [qwen] [gen] [--steps 10] [--profile] [--no-torch]
//        [--loop trainer|manual] [--no-fast-paths] [--backend webgpu]
//
// On the device machine (docs/benchmarks.md says how it is set up):
//   source .device/setup.sh && node bench/gpu-train.mjs
//
// Workloads (random init, random tokens; the same in bench/gpu_train_torch.py):
//   w1    SmolLM-135M-shaped LLaMA (hidden 576, 30 layers, 9 heads / 3 kv, intermediate 1536, vocab 49152, tied),
//         LoRA r=8 alpha 16 on q_proj, v_proj, AdamW (lr 2e-4, wd 0.01), clip 1.0, batch 8 × 256, fp32
//   qwen  Qwen2-0.5B-shaped (hidden 896, 24 layers, 14 heads / 2 kv, intermediate 4864, vocab 151936, tied), batch 4 × 256
//   gen   greedy generation on the w1 model, LoRA unmerged: 64 new tokens after 32 random ones, batch 1 and 8
// Training runs the `Trainer` (the user path; --loop manual runs a hand-written step instead: forward, loss,
// variableGrads, AdamW). Steps are timed from the end of the warm-up steps to the end of the last, each end
// marked by an awaited read of a LoRA weight (so GPU work is included). Peak memory: the bytes tfjs-webgpu
// holds in its buffer pool at the end (it never returns buffers, so this is the most it ever held), beside
// PyTorch's max_memory_allocated / max_memory_reserved.
// --profile adds one profiled step per training workload: every dispatch's GPU time from timestamps, by kernel.
import * as tf from '@tensorflow/tfjs';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as core from '@peftjs/core';
import { Session } from 'node:inspector/promises';
import { writeFileSync } from 'node:fs';
import { LlamaForCausalLM, parseModelConfig } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { Trainer, AdamW } from '@peftjs/trainer';

const { initBackend, getPeftModel, manualSeed, setFastPathsEnabled } = core;
const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
};
const STEPS = Number(opt('steps', 10));
const WARMUP = Number(opt('warmup', 2));
const LOOP = opt('loop', 'trainer');
const PROFILE = argv.includes('--profile');
// --gradient-checkpointing: HF's gradient_checkpointing (each decoder layer recomputed in backward)
const CHECKPOINTING = argv.includes('--gradient-checkpointing');
// --cpu-profile FILE: a V8 CPU profile of the timed steps only (not model building), for chrome://inspect
const CPU_PROFILE = opt('cpu-profile', '');
let inspector = null;
async function cpuProfileStart() {
  if (!CPU_PROFILE || inspector) return;
  inspector = new Session();
  inspector.connect();
  await inspector.post('Profiler.enable');
  await inspector.post('Profiler.setSamplingInterval', { interval: 200 });
  await inspector.post('Profiler.start');
}
async function cpuProfileStop(name) {
  if (!inspector) return;
  const { profile } = await inspector.post('Profiler.stop');
  writeFileSync(CPU_PROFILE.replace(/(\.cpuprofile)?$/, `-${name}.cpuprofile`), JSON.stringify(profile));
  inspector.disconnect();
  inspector = null;
}
const work = argv.filter((a) => ['w1', 'qwen', 'gen'].includes(a));
if (!work.length) work.push('w1', 'qwen', 'gen');
const here = dirname(fileURLToPath(import.meta.url));

const W1 = {
  model_type: 'llama', vocab_size: 49152, hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9,
  num_key_value_heads: 3, max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 10000, hidden_act: 'silu', tie_word_embeddings: true,
  eos_token_id: null, bos_token_id: null,
};
const QWEN = {
  model_type: 'qwen2', vocab_size: 151936, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14,
  num_key_value_heads: 2, max_position_embeddings: 2048, rms_norm_eps: 1e-6, rope_theta: 1000000, hidden_act: 'silu', tie_word_embeddings: true,
  eos_token_id: null, bos_token_id: null,
};

// --tiny: a smoke test of the script itself on small shapes (e.g. on lavapipe), not a measurement
const TINY = argv.includes('--tiny');
if (TINY) {
  for (const c of [W1, QWEN]) Object.assign(c, { vocab_size: 512, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 });
}
const SHAPES = TINY ? { w1: [2, 16], qwen: [2, 16], prompt: 8, newTokens: 4 } : { w1: [8, 256], qwen: [4, 256], prompt: 32, newTokens: 64 };

const report = await initBackend({ prefer: opt('backend', 'webgpu') });
if (argv.includes('--no-fast-paths')) setFastPathsEnabled(false);
const backend = tf.getBackend();
const fastPaths = core.listOps().filter((o) => o.fastPaths.includes(backend)).map((o) => o.name);
console.error(`backend ${backend}: ${report.reason}; fast paths: ${fastPaths.join(', ') || 'none'}`);

function pool() {
  const m = tf.memory();
  return { inUse: m.numBytesInGPU ?? null, allocated: m.numBytesAllocatedInGPU ?? null };
}

let seed = 12345;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296);
const randomIds = (b, t, v) => Array.from({ length: b }, () => Array.from({ length: t }, () => Math.floor(rand() * v)));

function buildModel(raw) {
  manualSeed(0);
  const base = new LlamaForCausalLM(parseModelConfig(raw));
  return getPeftModel(base, new LoraConfig({ r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], loraDropout: 0 }));
}

function disposeModel(model) {
  for (const [, p] of model.namedParameters?.() ?? []) p.dispose?.();
  model.dispose?.();
}

/** An awaited read of one trainable weight: everything queued before it has run on the GPU. */
async function sync(model) {
  for (const [, p] of model.namedParameters()) {
    if (p.trainable) {
      await tf.slice(p.reshape([-1]), 0, 1).data();
      return;
    }
  }
}

async function trainWorkload(name, raw, B, T) {
  const model = buildModel(raw);
  const vocab = raw.vocab_size;
  const total = WARMUP + STEPS + (PROFILE ? 1 : 0);
  const batches = Array.from({ length: total }, () => randomIds(B, T, vocab));
  let t0 = 0;
  let t1 = 0;
  let profile = null;
  let profiler = null;
  const tensors0 = tf.memory().numTensors;
  const watch = core.createPeakMemoryTracker();
  watch.sample();
  if (LOOP === 'trainer') {
    const out = mkdtempSync(join(tmpdir(), 'peftjs-gpu-bench-'));
    const dataset = batches.flat().map((inputIds) => ({ inputIds }));
    const trainer = new Trainer({
      model,
      args: {
        outputDir: out, maxSteps: total, perDeviceTrainBatchSize: B, learningRate: 2e-4, weightDecay: 0.01, maxGradNorm: 1.0,
        loggingSteps: 1000, saveStrategy: 'no', gradientCheckpointing: CHECKPOINTING, metricsLog: false, progressBar: false, shuffle: false, warmupSteps: 0, lrSchedulerType: 'constant',
      },
      trainDataset: dataset,
      callbacks: [{
        onStepBegin: async (_a, state) => {
          if (PROFILE && state.globalStep === WARMUP + STEPS) {
            await sync(model);
            profiler = new core.GpuProfiler();
            profiler.start();
          }
        },
        onStepEnd: async (_a, state) => {
          const step = state.globalStep;
          if (step === WARMUP) {
            await sync(model);
            await cpuProfileStart();
            t0 = performance.now();
          } else if (step === WARMUP + STEPS) {
            await sync(model);
            t1 = performance.now();
            await cpuProfileStop(name);
          } else if (profiler && step === total) {
            await sync(model);
            profile = await profiler.stop();
          }
        },
      }],
    });
    await trainer.train();
    rmSync(out, { recursive: true, force: true });
  } else {
    const params = [...model.namedParameters()].filter(([, p]) => p.trainable);
    const opt = new AdamW(params, { weightDecay: 0.01 });
    const vars = params.map(([, p]) => p);
    for (let s = 0; s < total; s++) {
      if (PROFILE && s === WARMUP + STEPS) {
        await sync(model);
        profiler = new core.GpuProfiler();
        profiler.start();
      }
      const { value, grads } = tf.variableGrads(() => model.forward({ inputIds: batches[s], labels: batches[s] }).loss, vars);
      const named = {};
      params.forEach(([n, p]) => (named[n] = grads[p.name]));
      opt.step(named, 2e-4);
      tf.dispose([value, ...Object.values(grads)]);
      if (s + 1 === WARMUP) {
        await sync(model);
        t0 = performance.now();
      } else if (s + 1 === WARMUP + STEPS) {
        await sync(model);
        t1 = performance.now();
      }
    }
    if (profiler) {
      await sync(model);
      profile = await profiler.stop();
    }
    opt.dispose();
  }
  const stepMs = (t1 - t0) / STEPS;
  const mem = pool();
  const res = {
    bench: 'gpu-train', workload: name, loop: LOOP, backend, batch: `${B}x${T}`, steps: STEPS, gradientCheckpointing: CHECKPOINTING,
    meanStepMs: Number(stepMs.toFixed(2)), tokensPerSecond: Math.round((B * T) / (stepMs / 1000)),
    peakBytes: watch.onGpu ? watch.peakBytes : null, poolBytes: mem.allocated, inUseBytesAfter: mem.inUse, tensorsHeld: tf.memory().numTensors - tensors0,
  };
  if (profile) {
    res.profile = { dispatches: profile.dispatches, gpuMs: Number(profile.gpuMs.toFixed(2)), top: profile.kernels.slice(0, 40).map((k) => [k.name, k.count, Number(k.ms.toFixed(3))]) };
    console.error(`\nprofile of one ${name} step (${LOOP}):\n${core.formatGpuProfile(profile, 40)}`);
  }
  disposeModel(model);
  return res;
}

async function genWorkload() {
  const model = buildModel(W1);
  const { prompt, newTokens } = SHAPES;
  const res = { bench: 'gpu-generate', workload: 'gen', backend, newTokens, promptTokens: prompt };
  for (const B of [1, 8]) {
    const inputIds = randomIds(B, prompt, W1.vocab_size);
    const gen = () => model.generate({ inputIds, maxNewTokens: newTokens, eosTokenId: -1, padTokenId: 0 });
    await gen(); // warm-up
    const reps = 3;
    const t = performance.now();
    for (let r = 0; r < reps; r++) {
      const out = await gen();
      if (out[0].length !== prompt + newTokens) throw new Error(`generated ${out[0].length - prompt} tokens, not ${newTokens}`);
    }
    const dt = (performance.now() - t) / reps;
    res[`batch${B}TokensPerSecond`] = Number(((B * newTokens) / (dt / 1000)).toFixed(1));
  }
  disposeModel(model);
  return res;
}

const ours = [];
for (const w of work) {
  const r = w === 'w1' ? await trainWorkload('w1', W1, ...SHAPES.w1) : w === 'qwen' ? await trainWorkload('qwen', QWEN, ...SHAPES.qwen) : await genWorkload();
  console.log(JSON.stringify(r));
  ours.push(r);
}

let torch = [];
if (!argv.includes('--no-torch')) {
  const py = spawnSync('python3', [join(here, 'gpu_train_torch.py'), ...work, '--steps', String(STEPS)], { encoding: 'utf8', env: { ...process.env, PYTHONUNBUFFERED: '1' } });
  if (py.status !== 0) console.error(`PyTorch reference failed (exit ${py.status}):\n${py.stderr.slice(-3000)}`);
  torch = py.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  for (const t of torch) console.log(JSON.stringify(t));
}

const gib = (b) => (b == null ? 'n/a' : `${(b / 2 ** 30).toFixed(2)} GiB`);
console.log('\nworkload            peftjs (webgpu): peak in use (pool)     PyTorch + HF PEFT: max allocated (reserved)  ratio');
for (const r of ours) {
  const t = torch.find((x) => x.workload === r.workload);
  if (r.workload === 'gen') {
    for (const B of [1, 8]) {
      const a = r[`batch${B}TokensPerSecond`];
      const b = t?.[`batch${B}TokensPerSecond`];
      console.log(`gen batch ${B}`.padEnd(20) + `${a} tok/s`.padEnd(27) + `${b ?? 'n/a'} tok/s`.padEnd(27) + (b ? `${(a / b).toFixed(3)}×` : ''));
    }
  } else {
    console.log(
      `${r.workload} ${r.batch}`.padEnd(20) +
        `${r.tokensPerSecond} tok/s, ${gib(r.peakBytes)} (pool ${gib(r.poolBytes)})`.padEnd(40) +
        (t ? `${t.tokensPerSecond} tok/s, ${gib(t.peakBytes)} (reserved ${gib(t.peakReservedBytes)})` : 'n/a').padEnd(44) +
        (t ? `${(r.tokensPerSecond / t.tokensPerSecond).toFixed(3)}× speed, peak ${(r.peakBytes / t.peakBytes).toFixed(2)}×, pool/reserved ${(r.poolBytes / t.peakReservedBytes).toFixed(2)}×` : ''),
    );
  }
}
