import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM tool script (no .d.ts)
import { consumerInstall } from './consumer-install.mjs';

// A registry user's install of the packed tarballs in a project outside the monorepo, then a few LoRA steps on
// wasm with the native addon from its prebuild. Needs the packages built and the npm registry (for tfjs):
// CI has both; elsewhere PEFTJS_TEST_CONSUMER=1 runs it (≈ 1–2 minutes).
const run = process.env.CI === 'true' || process.env.PEFTJS_TEST_CONSUMER === '1';

describe('a consumer install of the packed packages', () => {
  it.runIf(run)(`trains on wasm with @peftjs/native loaded from its prebuild${run ? '' : ' (set PEFTJS_TEST_CONSUMER=1; CI runs it)'}`, async () => {
    const lines: string[] = [];
    const r = await consumerInstall({ log: (s: string) => lines.push(s) });
    console.log(`consumer install: ${lines.join('; ')}; losses ${r.losses.map((l: number) => l.toFixed(3)).join(' → ')}`);
    expect(r.backend).toBe('wasm');
    expect(r.native).toMatchObject({ installed: true, origin: 'prebuild' });
    expect(r.losses[r.losses.length - 1]).toBeLessThan(r.losses[0]);
  }, 600_000);
});
