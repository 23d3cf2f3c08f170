import { describe, expect, it } from 'vitest';
import { z as classic } from 'zod';
import * as z from './schema';
import { PeftError } from './errors';
import { parseFields } from './config';

type Build = (zz: typeof z) => { safeParse(v: unknown): { success: boolean; data?: unknown; error?: { issues: unknown[] } } };

/** Each schema built with the facade (zod/mini) and with classic zod: the same data, the same issues. */
const cases: [string, Build, unknown[]][] = [
  ['int positive', (zz) => zz.number().int().positive(), [3, 0, -1, 2.5, 'x', null, Infinity, NaN]],
  ['nullable default', (zz) => zz.number().int().nonnegative().nullable().default(null), [undefined, null, 4, -1]],
  ['min max number', (zz) => zz.number().min(0).max(1).default(0), [undefined, 0.5, 1.5, -0.1]],
  ['gt lt', (zz) => zz.number().gt(0).lt(1), [0, 0.5, 1]],
  ['string min', (zz) => zz.string().min(1), ['', 'a', 3]],
  ['array min', (zz) => zz.array(zz.enum(['weight', 'bias'])).min(1).default(['weight']), [undefined, [], ['bias'], ['x']]],
  ['union literal', (zz) => zz.union([zz.boolean(), zz.literal('gaussian')]).default(true), [undefined, false, 'gaussian', 'pissa']],
  ['record', (zz) => zz.record(zz.string(), zz.number().int().positive()).default({}), [undefined, { a: 2 }, { a: 0 }, []]],
  ['tuple', (zz) => zz.tuple([zz.number(), zz.number()]).default([-0.1, 1.1]), [undefined, [1, 2], [1], [1, 'a']]],
  ['optional', (zz) => zz.array(zz.string()).optional(), [undefined, ['a'], [1]]],
  ['strict object', (zz) => zz.object({ r: zz.number().int(), name: zz.string().default('x') }).strict(), [{ r: 1 }, { r: 1, extra: 2 }, { r: 'a' }, null]],
  ['passthrough object', (zz) => zz.object({ peftType: zz.string().min(1) }).passthrough(), [{ peftType: 'LORA', r: 8 }, { peftType: '' }]],
  ['plain object strips', (zz) => zz.object({ a: zz.number().optional() }), [{ a: 1, b: 2 }, {}]],
];

describe('z (the chaining API over zod/mini)', () => {
  for (const [name, build, inputs] of cases) {
    it(`${name}: the same results and issues as classic zod`, () => {
      const mini = build(z);
      const full = build(classic as unknown as typeof z); // the same calls, classic's implementation
      for (const v of inputs) {
        const a = mini.safeParse(v);
        const b = full.safeParse(v);
        expect({ v, success: a.success, data: a.data }).toEqual({ v, success: b.success, data: b.data });
        const strip = (e?: { issues: unknown[] }) => (e ? JSON.parse(JSON.stringify(e.issues)) : undefined);
        expect(strip(a.error)).toEqual(strip(b.error));
      }
    });
  }

  it('config errors still name the field and say what was expected', () => {
    const shape = { r: z.number().int().positive().default(8), loraDropout: z.number().min(0).max(1).default(0) };
    const err = (input: unknown) => {
      try {
        parseFields(shape, input, 'adapter_config.json', true);
      } catch (e) {
        expect(PeftError.isInstance(e)).toBe(true);
        return (e as Error).message;
      }
      throw new Error('no error');
    };
    expect(err({ r: 'eight' })).toBe('adapter_config.json: field "r": Invalid input: expected number, received string');
    expect(err({ loraDropout: 2 })).toBe('adapter_config.json: field "lora_dropout": Too big: expected number to be <=1');
    expect(err({ r: 8, loraAlfa: 16 })).toBe('adapter_config.json: unknown field "lora_alfa"');
    expect(parseFields(shape, {}, 'x', false)).toEqual({ r: 8, loraDropout: 0 });
  });
});
