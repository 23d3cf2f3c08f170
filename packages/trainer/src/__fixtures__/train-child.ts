// A training run in its own process, for the kill-and-resume and signal tests (bundled by the test with esbuild).
//   node train-child.mjs <outputDir> <resume: 0|1> [maxSteps]
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { ensureWasmKernels, getPeftModel } from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { Trainer, TrainingInterruptedError } from '../index';
import { randomExamples, tinyLlama } from './tiny';

const [outputDir, resume, maxSteps] = process.argv.slice(2);
const backend = process.env.PEFTJS_TEST_BACKEND ?? 'wasm';
if (backend === 'wasm') ensureWasmKernels();
await tf.setBackend(backend);
const model = getPeftModel(tinyLlama(7), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], loraDropout: 0.1 }));
const trainer = new Trainer({
  model,
  args: {
    outputDir,
    maxSteps: Number(maxSteps ?? 12),
    perDeviceTrainBatchSize: 2,
    gradientAccumulationSteps: 2,
    learningRate: 1e-2,
    warmupSteps: 2,
    lrSchedulerType: 'cosine',
    saveSteps: 2,
    saveTotalLimit: 2,
    loggingSteps: 1,
    seed: 11,
    progressBar: false,
    handleSignals: true, // this process is the entry point: it lets the Trainer checkpoint on SIGINT / SIGTERM
  },
  trainDataset: randomExamples(10, 5),
  callbacks: [
    {
      onStepEnd: (_a, state) => void process.stdout.write(`step ${state.globalStep}\n`),
      onSave: (_a, state) => void process.stdout.write(`saved ${state.globalStep}\n`),
    },
  ],
});
try {
  await trainer.train({ resumeFromCheckpoint: resume === '1' });
} catch (e) {
  // the entry point decides how to leave: the shell's code for the signal
  if (!(e instanceof TrainingInterruptedError)) throw e;
  process.stderr.write(`${e.message}\n`);
  process.exitCode = e.exitCode;
}
if (process.exitCode === undefined) {
  await trainer.saveModel(`${outputDir}/final`);
  process.stdout.write('done\n');
}
