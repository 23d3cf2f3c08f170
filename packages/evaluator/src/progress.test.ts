import { afterEach, describe, expect, it } from 'vitest';
import { createProgress } from './progress';

const stderr = process.stderr as unknown as { isTTY?: boolean; write: (s: string) => boolean };
const saved = { isTTY: stderr.isTTY, write: stderr.write };
afterEach(() => {
  stderr.isTTY = saved.isTTY;
  stderr.write = saved.write;
});

function capture(isTTY: boolean): string[] {
  const out: string[] = [];
  stderr.isTTY = isTTY;
  stderr.write = (s: string) => {
    out.push(s);
    return true;
  };
  return out;
}

describe('progress bar', () => {
  it('draws on a TTY and ends with a newline', () => {
    const out = capture(true);
    const p = createProgress('generate', 3);
    p.tick();
    p.tick(2);
    p.done();
    stderr.write = saved.write;
    const text = out.join('');
    expect(text).toContain('generate █');
    expect(text).toContain('3/3');
    expect(text.endsWith('\n')).toBe(true);
  });
  it('stays quiet when stderr is not a TTY, when disabled, and on short sets', () => {
    const out = capture(false);
    const p = createProgress('x', 10, true);
    p.tick();
    p.done();
    stderr.isTTY = true;
    createProgress('x', 10, false).tick();
    createProgress('x', 1).tick();
    stderr.write = saved.write;
    expect(out).toEqual([]);
  });
  it('calls a callback with (done, total)', () => {
    const seen: [number, number][] = [];
    const p = createProgress('x', 2, (d, t) => seen.push([d, t]));
    p.tick();
    p.tick();
    p.tick();
    expect(seen).toEqual([[1, 2], [2, 2], [2, 2]]);
  });
});
