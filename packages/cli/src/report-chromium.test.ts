// The report in a real browser: headless Chromium (Debian's `chromium`) loads the HTML file offline, takes
// a screenshot and dumps the rendered DOM, whose loss curve must have one point per logged step. Runs where
// chromium is installed (apt-get install chromium); skipped elsewhere.
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from 'peftjs';
import { main, readRunRecord } from '@peftjs/cli';

const chromium = ['chromium', 'chromium-browser', 'google-chrome'].find((c) => spawnSync('which', [c]).status === 0);
const EXAMPLES = fileURLToPath(new URL('../../../examples/configs/', import.meta.url));

describe.skipIf(!chromium)('report in headless Chromium', () => {
  it('renders the charts: a screenshot, and SVG paths with one loss point per logged step', async () => {
    await initBackend({ prefer: process.env.PEFTJS_TEST_BACKEND as never });
    const d = mkdtempSync(join(tmpdir(), 'peft-report-'));
    const sets = ['training.maxSteps=4', 'training.loggingSteps=1', 'training.perDeviceTrainBatchSize=4', 'data.limit.train=8', 'data.maxLength=48', 'evaluation.limit=4', `training.outputDir=${d}`];
    const code = await main(['train', join(EXAMPLES, 'lora.yaml'), ...sets.flatMap((s) => ['--set', s])], { out: () => undefined, err: (s) => console.error(s) });
    expect(code).toBe(0);
    const html = join(d, 'report.html');
    const png = join(d, 'shot.png');
    const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--window-size=1200,2400'];
    execFileSync(chromium!, [...flags, `--screenshot=${png}`, `file://${html}`], { stdio: 'ignore', timeout: 60_000 });
    expect(existsSync(png) && statSync(png).size).toBeGreaterThan(20_000);
    const dom = execFileSync(chromium!, [...flags, '--dump-dom', `file://${html}`], { timeout: 60_000 }).toString();
    const fig = /<figure data-chart="loss"[^>]*>([\s\S]*?)<\/figure>/.exec(dom);
    expect(fig).not.toBeNull();
    const d0 = /class="mark-line role-mark[^"]*"[^>]*>\s*<path[^>]* d="([^"]+)"/.exec(fig![1]);
    expect(d0).not.toBeNull();
    const logged = (await readRunRecord(d)).logHistory.filter((e) => e.loss !== undefined && e.trainLoss === undefined).length;
    expect(logged).toBe(4);
    expect(d0![1].match(/[ML]/g)!.length).toBe(logged);
    expect(readFileSync(html, 'utf8')).toContain('<svg');
  });
});
