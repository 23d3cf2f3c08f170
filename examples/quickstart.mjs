#!/usr/bin/env node
// The quickstart: a LoRA adapter on the bundled tiny LLaMA, end to end. Uses the built packages.
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoModelForCausalLM, getPeftModel, PeftModel, LoraConfig, TaskType, initBackend } from 'peftjs';

const backend = await initBackend();
console.log(`backend: ${backend.backend} (${backend.reason})`);
const dir = fileURLToPath(new URL('../fixtures/hf-peft/llama_lora_qv/base', import.meta.url));
const model = await AutoModelForCausalLM.fromPretrained(dir);
const peft = getPeftModel(model, new LoraConfig({ r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], taskType: TaskType.CAUSAL_LM, initLoraWeights: false }));  // random B so the untrained adapter visibly changes the output
peft.printTrainableParameters();
const inputIds = [[1, 5, 9, 22, 7, 3]];
const before = peft.disableAdapter(() => peft.forward({ inputIds }).logits);
const after = peft.forward({ inputIds }).logits;
console.log(`max |logit change| from the (untrained) adapter: ${tf.max(tf.abs(tf.sub(after, before))).dataSync()[0].toFixed(6)}`);
console.log('greedy continuation:', (await peft.generate({ inputIds, maxNewTokens: 8 }))[0].join(' '));
const out = join(mkdtempSync(join(tmpdir(), 'peftjs-')), 'adapter');
await peft.savePretrained(out);
const again = await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(dir), out);
const reloaded = again.forward({ inputIds }).logits;
console.log(`saved to ${out}; reloaded logits differ by ${tf.max(tf.abs(tf.sub(reloaded, after))).dataSync()[0]}`);
const merged = again.mergeAndUnload();
console.log(`merged: max |diff| vs adapter ${tf.max(tf.abs(tf.sub(merged.forward({ inputIds }).logits, after))).dataSync()[0].toExponential(2)}`);
