// QLoRA (LoRA on a 4-bit NF4 base, double quantisation) against fp32 LoRA on the same model, in one command:
// peak training memory, resident base weights and training throughput, at the Qwen2-0.5B shape.
//
//   npm run build && node bench/qlora.mjs [--backend webgpu|wasm] [--batch 4x256] [--steps 5] [--warmup 2]
//        [--targets q_proj,v_proj] [--shape qwen|smol|tiny] [--dir /tmp/peftjs-qwen-ckpt] [--variants lora,qlora,lora+ckpt,qlora+ckpt]
//
// On the device machine: `source .device/setup.sh && node bench/qlora.mjs` (GPU) and `… --backend wasm --batch 1x128` (CPU).
//
// The model is a random Qwen2-0.5B-shaped checkpoint (hidden 896, 24 layers, 14 heads / 2 kv, intermediate 4864, vocab
// 151936, tied), written once to --dir as config.json + model.safetensors (fp32, 1.98 GB), and loaded the way a user
// loads a model: `AutoModelForCausalLM.fromPretrained(dir)` for fp32 LoRA, and with
// `quantizationConfig: new BitsAndBytesConfig({ loadIn4bit, nf4, double quant })` then `prepareModelForKbitTraining`
// for QLoRA (which turns gradient checkpointing on, as HF's does; `qlora` here turns it back off so that the two
// variants differ only in the base weights' storage, `qlora+ckpt` keeps it, `lora+ckpt` is fp32 LoRA with it).
// Each variant runs in its own child process, so no memory is shared between them. LoRA r 8, alpha 16 on the
// targets, AdamW (lr 2e-4, wd 0.01), random tokens.
//
// Memory: on webgpu the exact peak of GPU bytes in use (createPeakMemoryTracker, from before loading: base weights,
// adapter, optimizer state, activations) and the pool; on wasm/cpu the tensors' bytes at their peak during one
// profiled training step (tf.profile's peakBytes, everything resident included) and the process's max RSS.
import * as tf from '@tensorflow/tfjs';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
};
const BACKEND = opt('backend', 'webgpu');
const [B, T] = opt('batch', BACKEND === 'webgpu' ? '4x256' : '1x128').split('x').map(Number);
const STEPS = Number(opt('steps', BACKEND === 'webgpu' ? 5 : 3));
const WARMUP = Number(opt('warmup', 2));
const TARGETS = opt('targets', 'q_proj,v_proj').split(',');
const SHAPE = opt('shape', 'qwen');
const DIR = opt('dir', `/tmp/peftjs-${SHAPE}-ckpt`);

const CONFIG = {
  architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', vocab_size: 151936, hidden_size: 896, intermediate_size: 4864,
  num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, max_position_embeddings: 2048, rms_norm_eps: 1e-6,
  rope_theta: 1000000, hidden_act: 'silu', tie_word_embeddings: true, torch_dtype: 'float32',
};
// smol: the SmolLM-135M shape of bench/gpu-train.mjs's w1 (a LLaMA without biases), small enough for fp32 LoRA on wasm
if (SHAPE === 'smol') {
  Object.assign(CONFIG, { architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 49152, hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, rms_norm_eps: 1e-5, rope_theta: 10000 });
}
if (SHAPE === 'tiny') Object.assign(CONFIG, { vocab_size: 512, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 });

/** The checkpoint's tensors in HF Qwen2's names and shapes (the embedding is tied: no lm_head). */
function tensorList(c) {
  const D = c.hidden_size;
  const hd = D / c.num_attention_heads;
  const kv = c.num_key_value_heads * hd;
  const list = [['model.embed_tokens.weight', [c.vocab_size, D]], ['model.norm.weight', [D]]];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    list.push(
      [`${p}.input_layernorm.weight`, [D]], [`${p}.post_attention_layernorm.weight`, [D]],
      [`${p}.self_attn.q_proj.weight`, [D, D]], [`${p}.self_attn.k_proj.weight`, [kv, D]], [`${p}.self_attn.v_proj.weight`, [kv, D]],
      ...(c.model_type === 'qwen2' ? [[`${p}.self_attn.q_proj.bias`, [D]], [`${p}.self_attn.k_proj.bias`, [kv]], [`${p}.self_attn.v_proj.bias`, [kv]]] : []),
      [`${p}.self_attn.o_proj.weight`, [D, D]],
      [`${p}.mlp.gate_proj.weight`, [c.intermediate_size, D]], [`${p}.mlp.up_proj.weight`, [c.intermediate_size, D]],
      [`${p}.mlp.down_proj.weight`, [D, c.intermediate_size]],
    );
  }
  return list;
}

/** Writes config.json + model.safetensors (fp32): norms 1, biases 0, weights uniform with std 0.02 (HF's init scale). */
function writeCheckpoint(dir) {
  if (existsSync(join(dir, 'model.safetensors'))) return;
  mkdirSync(dir, { recursive: true });
  const list = tensorList(CONFIG);
  const header = {};
  let off = 0;
  for (const [name, shape] of list) {
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'F32', shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  header.__metadata__ = { format: 'pt' };
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const tmp = join(dir, 'model.safetensors.tmp');
  const fd = openSync(tmp, 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeSync(fd, len);
  writeSync(fd, Buffer.from(json));
  let s = 0x9e3779b9;
  const a = 0.02 * Math.sqrt(3);
  const chunk = new Float32Array(1 << 20);
  for (const [name, shape] of list) {
    let n = shape.reduce((x, y) => x * y, 1);
    const fill = name.endsWith('norm.weight') ? 1 : name.endsWith('.bias') ? 0 : null;
    while (n > 0) {
      const m = Math.min(n, chunk.length);
      for (let i = 0; i < m; i++) {
        if (fill !== null) chunk[i] = fill;
        else {
          s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
          chunk[i] = ((s >>> 0) / 4294967296 * 2 - 1) * a;
        }
      }
      writeSync(fd, new Uint8Array(chunk.buffer, 0, 4 * m));
      n -= m;
    }
  }
  closeSync(fd);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(CONFIG, null, 2));
  spawnSync('mv', [tmp, join(dir, 'model.safetensors')]);
}

async function child(variant) {
  const core = await import('@peftjs/core');
  const { AutoModelForCausalLM } = await import('@peftjs/models');
  const { LoraConfig } = await import('@peftjs/lora');
  const { AdamW } = await import('@peftjs/trainer');
  const { BitsAndBytesConfig, prepareModelForKbitTraining, Linear4bit } = await import('@peftjs/quant');
  await core.initBackend({ prefer: BACKEND });
  const backend = tf.getBackend();
  const watch = core.createPeakMemoryTracker();
  watch.sample();
  const quant = variant.startsWith('qlora');
  const ckpt = variant.endsWith('+ckpt');
  const t0 = performance.now();
  let base;
  if (quant) {
    const quantizationConfig = new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: 'float32' });
    base = prepareModelForKbitTraining(await AutoModelForCausalLM.fromPretrained(DIR, { quantizationConfig, maxBytes: 8 * 2 ** 30 }), { useGradientCheckpointing: ckpt });
  } else {
    base = await AutoModelForCausalLM.fromPretrained(DIR, { maxBytes: 8 * 2 ** 30 });
    if (ckpt) base.gradientCheckpointingEnable();
  }
  watch.sample();
  const loadMs = performance.now() - t0;
  let linBytes = 0;
  let linParams = 0;
  for (const [name, m] of base.namedModules()) {
    if (/(^|\.)(lm_head|score)$/.test(name)) continue; // the output head stays fp32 (tied to the embedding here), as in transformers
    if (m instanceof Linear4bit) {
      linBytes += m.storageBytes();
      linParams += m.inFeatures * m.outFeatures;
    } else if (m instanceof core.Linear && m.inFeatures && m.maybeParam('weight')) {
      linBytes += 4 * m.inFeatures * m.outFeatures;
      linParams += m.inFeatures * m.outFeatures;
    }
  }
  const residentBytes = tf.memory().numBytes;
  const model = core.getPeftModel(base, new LoraConfig({ r: 8, loraAlpha: 16, targetModules: TARGETS, loraDropout: 0 }));
  model.train();
  const params = [...model.namedParameters()].filter(([, p]) => p.trainable);
  const vars = params.map(([, p]) => p);
  const opt = new AdamW(params, { weightDecay: 0.01 });
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296);
  const ids = () => Array.from({ length: B }, () => Array.from({ length: T }, () => Math.floor(rand() * CONFIG.vocab_size)));
  const sync = async () => {
    const t = tf.slice(vars[0].reshape([-1]), 0, 1);
    await t.data();
    t.dispose();
  };
  const losses = [];
  const step = async () => {
    const inputIds = ids();
    const { value, grads } = tf.variableGrads(() => model.forward({ inputIds, labels: inputIds }).loss, vars);
    const named = {};
    params.forEach(([n, p]) => (named[n] = grads[p.name]));
    opt.step(named, 2e-4);
    watch.sample();
    losses.push(value);
    tf.dispose(Object.values(grads));
  };
  let profiled = null;
  let t1 = 0;
  for (let s = 0; s < WARMUP + STEPS; s++) {
    if (s === WARMUP) {
      await sync();
      t1 = performance.now();
    }
    await step();
  }
  await sync();
  const stepMs = (performance.now() - t1) / STEPS;
  if (!watch.onGpu) profiled = await tf.profile(step);
  let gpuProfile = null;
  if (argv.includes('--profile') && watch.onGpu) {
    const profiler = new core.GpuProfiler();
    profiler.start();
    await step();
    await sync();
    const p = await profiler.stop();
    console.error(`profile of one ${variant} step:\n${core.formatGpuProfile(p, 25)}`);
    gpuProfile = { dispatches: p.dispatches, gpuMs: Number(p.gpuMs.toFixed(1)), top: p.kernels.slice(0, 12).map((k) => [k.name, k.count, Number(k.ms.toFixed(2))]) };
  }
  const lossValues = [];
  for (const l of losses) lossValues.push((await l.data())[0]);
  tf.dispose(losses);
  const mem = tf.memory();
  return {
    bench: 'qlora', variant, backend, batch: `${B}x${T}`, steps: STEPS, targets: TARGETS.join(','), gradientCheckpointing: ckpt,
    loadSeconds: Number((loadMs / 1000).toFixed(1)),
    baseLinearBitsPerParam: Number(((8 * linBytes) / linParams).toFixed(3)), baseLinearBytes: linBytes, residentBytes,
    meanStepMs: Number(stepMs.toFixed(1)), tokensPerSecond: Number(((B * T) / (stepMs / 1000)).toFixed(1)),
    peakBytes: watch.onGpu ? watch.peakBytes : profiled.peakBytes, poolBytes: mem.numBytesAllocatedInGPU ?? null,
    maxRssBytes: process.resourceUsage().maxRSS * 1024, gpuProfile, losses: lossValues.map((v) => Number(v.toFixed(4))),
  };
}

const gib = (b) => (b == null ? 'n/a' : `${(b / 2 ** 30).toFixed(2)} GiB`);
if (argv.includes('--child')) {
  const r = await child(opt('child'));
  console.log(JSON.stringify(r));
  process.exit(0); // Dawn's device can keep the event loop alive
} else {
  const t0 = performance.now();
  writeCheckpoint(DIR);
  console.error(`checkpoint ${DIR} ready (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  const variants = opt('variants', 'lora,qlora,lora+ckpt,qlora+ckpt').split(',');
  const rows = [];
  const self = fileURLToPath(import.meta.url);
  for (const v of variants) {
    const passthrough = argv.filter((a, i) => !['--variants'].includes(a) && argv[i - 1] !== '--variants');
    const r = spawnSync(process.execPath, ['--max-old-space-size=16384', self, ...passthrough, '--child', v], { encoding: 'utf8', maxBuffer: 1 << 26 });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
    if (!line) {
      console.log(JSON.stringify({ bench: 'qlora', variant: v, failed: true, status: r.status, stderr: r.stderr.slice(-2000) }));
      continue;
    }
    console.log(line);
    rows.push(JSON.parse(line));
  }
  const ref = (ckpt) => rows.find((r) => r.variant === (ckpt ? 'lora+ckpt' : 'lora'));
  console.log(`\nvariant       base bits/param  resident   peak (training)   tok/s       vs fp32 LoRA (same checkpointing): peak, speed`);
  for (const r of rows) {
    const f = ref(r.gradientCheckpointing);
    console.log(
      r.variant.padEnd(14) + String(r.baseLinearBitsPerParam).padEnd(17) + gib(r.residentBytes).padEnd(11) + gib(r.peakBytes).padEnd(18) +
        String(r.tokensPerSecond).padEnd(12) + (f ? `${(r.peakBytes / f.peakBytes).toFixed(3)}×, ${(r.tokensPerSecond / f.tokensPerSecond).toFixed(3)}×` : ''),
    );
  }
}
