// Ctrl-C during `peft train` (the built executable in a child process): the Trainer writes a checkpoint
// after the step it is in and the process exits with 130; `peft train --resume` continues from it.
// Needs dist/ (npm run build; CI builds before testing); skipped without it.
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readRunRecord } from '@peftjs/cli';

const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));
const EXAMPLES = fileURLToPath(new URL('../../../examples/configs/', import.meta.url));

function peft(args: string[], onOut?: (s: string, kill: () => void) => void): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
      onOut?.(out, () => child.kill('SIGINT'));
    });
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

describe.skipIf(!existsSync(BIN))('peft train and SIGINT', () => {
  it('Ctrl-C writes a checkpoint and exits 130; --resume continues from it', async () => {
    const d = mkdtempSync(join(tmpdir(), 'peft-sigint-'));
    const sets = ['training.maxSteps=400', 'training.saveSteps=1000', 'training.loggingSteps=1', 'training.perDeviceTrainBatchSize=2', 'data.limit.train=16', 'data.maxLength=32', 'evaluation.before=false', 'evaluation.after=false', `training.outputDir=${d}`];
    let sent = false;
    const first = await peft(['train', join(EXAMPLES, 'lora.yaml'), ...sets.flatMap((s) => ['--set', s])], (out, kill) => {
      if (!sent && /trainable params/.test(out)) {
        sent = true;
        setTimeout(kill, 3000); // a few steps in
      }
    });
    expect(first.code).toBe(130);
    expect(first.out + first.err).toMatch(/SIGINT/);
    const ckpts = readdirSync(d).filter((f) => /^checkpoint-\d+$/.test(f));
    expect(ckpts.length).toBe(1);
    const step = Number(ckpts[0].split('-')[1]);
    expect(step).toBeGreaterThan(0);
    expect(step).toBeLessThan(400);
    const resumed = await peft(['train', join(EXAMPLES, 'lora.yaml'), ...sets.map((s) => s.replace('maxSteps=400', `maxSteps=${step + 2}`)).flatMap((s) => ['--set', s]), '--resume']);
    expect(resumed.code).toBe(0);
    const steps = (await readRunRecord(d)).logHistory.filter((e) => e.loss !== undefined && e.trainLoss === undefined).map((e) => e.step);
    expect(steps).toEqual(Array.from({ length: step + 2 }, (_, i) => i + 1));
  }, 180_000);
});
