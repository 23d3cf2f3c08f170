// A process that saves in a loop, for the kill -9 tests (bundled by kill.test.ts with esbuild).
//   node kill-child.mjs save <dir>    savePretrained in a loop, alternating two adapters (A: lora_alpha 8,
//                                     every weight 1; B: lora_alpha 16, every weight 2); prints "saved <i>"
//   node kill-child.mjs train <dir>   a Trainer that checkpoints every step; prints "saved <step>"
import * as tf from '@tensorflow/tfjs';
import { getPeftModel } from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { Trainer } from '../index';
import { randomExamples, tinyLlama } from './tiny';

const [mode, dir] = process.argv.slice(2);
await tf.setBackend('cpu');
const model = getPeftModel(tinyLlama(7), new LoraConfig({ r: 16, loraAlpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] }));
if (mode === 'save') {
  const vars = [...model.adapterTensorMap('default').values()];
  for (let i = 0; ; i++) {
    const b = i % 2 === 1;
    (model.peftConfig.default as unknown as { loraAlpha: number }).loraAlpha = b ? 16 : 8;
    for (const v of vars) v.assign(tf.fill(v.shape, b ? 2 : 1));
    await model.savePretrained(dir);
    process.stdout.write(`saved ${i}\n`);
  }
} else {
  const trainer = new Trainer({
    model,
    args: { outputDir: dir, maxSteps: 100000, perDeviceTrainBatchSize: 2, learningRate: 1e-2, saveSteps: 1, saveTotalLimit: 2, loggingSteps: 1, progressBar: false },
    trainDataset: randomExamples(8, 5),
    callbacks: [{ onSave: (_a, state) => void process.stdout.write(`saved ${state.globalStep}\n`) }],
  });
  await trainer.train({ resumeFromCheckpoint: true });
}
