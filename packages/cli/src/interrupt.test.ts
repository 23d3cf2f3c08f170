// `peft train` as an entry point sets the Trainer's handleSignals: SIGINT (emitted to the process's
// listeners, in process) writes a checkpoint after the step and the command fails with exit code 130, a
// message that names the checkpoint and the resume command, and no listener left; --resume continues.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from 'peftjs';
import { loadRunConfig } from './config';
import { runTraining } from './run';

const LORA = fileURLToPath(new URL('../../../examples/configs/lora.yaml', import.meta.url));

describe('peft train interrupted', () => {
  it('SIGINT: a checkpoint at the step, exit code 130 with where it is and how to resume; --resume finishes the run', async () => {
    await initBackend({ prefer: process.env.PEFTJS_TEST_BACKEND as never });
    const d = mkdtempSync(join(tmpdir(), 'peft-interrupt-'));
    const sets = ['training.maxSteps=4', 'training.saveSteps=1000', 'training.loggingSteps=1', 'training.perDeviceTrainBatchSize=2', 'data.limit.train=8', 'data.maxLength=24', 'evaluation.before=false', 'evaluation.after=false', `training.outputDir=${d}`];
    const loaded = await loadRunConfig(LORA, sets);
    const before = process.listenerCount('SIGINT');
    let during = -1;
    const err = await runTraining(loaded, {
      log: () => undefined,
      callbacks: [{
        onStepEnd: (_a, state) => {
          if (state.globalStep !== 2) return;
          during = process.listenerCount('SIGINT');
          process.emit('SIGINT' as never);
        },
      }],
    }).then(
      () => undefined,
      (e: unknown) => e as Error & { exitCode?: number },
    );
    expect(during).toBe(before + 1);
    expect(process.listenerCount('SIGINT')).toBe(before);
    if (!err) throw new Error('runTraining was not interrupted');
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('CliError');
    expect(err.exitCode).toBe(130);
    expect(err.message).toContain(`interrupted (SIGINT) at step 2; checkpoint written in ${join(d, 'checkpoint-2')}`);
    expect(err.message).toContain(`peft train ${LORA} --resume`);
    expect(readdirSync(d).filter((f) => f.startsWith('checkpoint-'))).toEqual(['checkpoint-2']);

    const again = await runTraining(loaded, { resume: true, log: () => undefined });
    const steps = again.record.logHistory.filter((e) => e.loss !== undefined).map((e) => e.step);
    expect(steps).toEqual([1, 2, 3, 4]); // steps 1–2 from the checkpoint's history, 3–4 run after the resume
    expect(again.record.finishedAt).toBeDefined();
    expect(process.listenerCount('SIGINT')).toBe(before);
  });
});
