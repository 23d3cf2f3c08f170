// Interrupting a run in process: an AbortSignal the caller owns, and SIGINT / SIGTERM with handleSignals
// (emitted to the process's listeners). The Trainer writes a checkpoint after the step, rejects with a
// TrainingInterruptedError naming it, never exits the process and leaves no listener behind; resuming from
// the checkpoint reaches the adapter an uninterrupted run does, bit for bit.
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getPeftModel, PeftError } from '@peftjs/core';
import { LoraConfig } from '@peftjs/lora';
import { Trainer, TrainingInterruptedError, type TrainerCallback } from './index';
import { randomExamples, tinyLlama } from './__fixtures__/tiny';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-interrupt-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function trainer(outputDir: string, opts: { handleSignals?: boolean; callbacks?: TrainerCallback[] } = {}): Trainer {
  const model = getPeftModel(tinyLlama(7), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], loraDropout: 0.1 }));
  return new Trainer({
    model,
    args: { outputDir, maxSteps: 6, perDeviceTrainBatchSize: 2, learningRate: 1e-2, saveSteps: 100, loggingSteps: 1, seed: 5, progressBar: false, metricsLog: false, handleSignals: opts.handleSignals ?? false },
    trainDataset: randomExamples(8, 5),
    callbacks: opts.callbacks ?? [],
  });
}

/** Every trainable value of the trainer's model, in name order (the adapter a run ends with). */
async function adapterValues(t: Trainer): Promise<Float32Array[]> {
  const params = [...t.model.namedParameters()].filter(([, p]) => p.trainable).sort(([a], [b]) => (a < b ? -1 : 1));
  return Promise.all(params.map(async ([, p]) => (await p.data()) as Float32Array));
}

const listeners = () => ({ SIGINT: process.listenerCount('SIGINT'), SIGTERM: process.listenerCount('SIGTERM') });

describe('interrupting Trainer.train', () => {
  it('an AbortSignal: checkpoint after the step, a TrainingInterruptedError naming it; resuming gives the uninterrupted adapter', async () => {
    const full = trainer(join(tmp, 'full'));
    await full.train();
    const want = await adapterValues(full);

    const dir = join(tmp, 'abort');
    const controller = new AbortController();
    const cut = trainer(dir, { callbacks: [{ onStepEnd: (_a, state) => void (state.globalStep === 3 && controller.abort()) }] });
    const err = await cut.train({ signal: controller.signal }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TrainingInterruptedError);
    expect(PeftError.isInstance(err) && err.code).toBe('INTERRUPTED');
    const e = err as TrainingInterruptedError;
    expect([e.reason, e.globalStep, e.exitCode, e.checkpoint]).toEqual(['aborted', 3, 1, join(dir, 'checkpoint-3')]);
    expect(e.message).toMatch(/checkpoint-3.*resumeFromCheckpoint/);
    expect(JSON.parse(readFileSync(join(dir, 'checkpoint-3', 'trainer_state.json'), 'utf8')).global_step).toBe(3);

    const again = trainer(dir);
    const out = await again.train({ resumeFromCheckpoint: true });
    expect(out.globalStep).toBe(6);
    const got = await adapterValues(again);
    expect(got.length).toBe(want.length);
    got.forEach((v, i) => expect(Buffer.compare(Buffer.from(v.buffer), Buffer.from(want[i].buffer)), `parameter ${i}`).toBe(0));
    for (const t of [full, cut, again]) t.model.dispose();
  });

  it('an AbortSignal aborted before train(): no step runs, nothing is written, the reason is the signal’s', async () => {
    const dir = join(tmp, 'pre');
    const t = trainer(dir);
    const err = (await t.train({ signal: AbortSignal.abort('user cancelled') }).catch((e: unknown) => e)) as TrainingInterruptedError;
    expect(err).toBeInstanceOf(TrainingInterruptedError);
    expect([err.reason, err.globalStep, err.checkpoint]).toEqual(['user cancelled', 0, null]);
    expect(existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith('checkpoint-')) : []).toEqual([]);
  });

  it.each([['SIGINT', 130], ['SIGTERM', 143]] as const)('handleSignals: %s checkpoints and rejects with exitCode %i; its listeners live only while training', async (sig, code) => {
    const before = listeners();
    const dir = join(tmp, sig);
    let during: ReturnType<typeof listeners> | undefined;
    let afterSignal: ReturnType<typeof listeners> | undefined;
    const t = trainer(dir, {
      handleSignals: true,
      callbacks: [{
        onStepEnd: (_a, state) => {
          if (state.globalStep !== 2) return;
          during = listeners();
          process.emit(sig as never); // what the process receives on kill -INT / -TERM
          afterSignal = listeners(); // removed at the first signal: a second one would end the process
        },
      }],
    });
    const err = (await t.train().catch((e: unknown) => e)) as TrainingInterruptedError;
    expect(err).toBeInstanceOf(TrainingInterruptedError);
    expect([err.reason, err.exitCode, err.globalStep, err.checkpoint]).toEqual([sig, code, 2, join(dir, 'checkpoint-2')]);
    expect(during).toEqual({ SIGINT: before.SIGINT + 1, SIGTERM: before.SIGTERM + 1 });
    expect(afterSignal).toEqual(before);
    expect(listeners()).toEqual(before);
    t.model.dispose();
  });

  it('without handleSignals (the default) the Trainer adds no process listener', async () => {
    const before = listeners();
    let during: ReturnType<typeof listeners> | undefined;
    const t = trainer(join(tmp, 'quiet'), { callbacks: [{ onStepEnd: () => void (during = listeners()) }] });
    await t.train();
    expect(during).toEqual(before);
    t.model.dispose();
  });
});
