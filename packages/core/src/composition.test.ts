// Composition blocks as values: AdapterHub's nesting rules and depth limit, parse_composition's forms, the
// per-layer recursion on a toy state (numbers per row), and composition.json's round trip.
import { describe, expect, it } from 'vitest';
import {
  Average,
  BatchSplit,
  Fuse,
  Parallel,
  Split,
  Stack,
  composeLayer,
  compositionFromJson,
  compositionToJson,
  compositionToString,
  flattenComposition,
  parallelChannels,
  parseComposition,
  validateComposition,
  type ComposeOps,
} from './composition';
import { PeftError } from './errors';

function fails(fn: () => unknown, ...parts: string[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(PeftError.isInstance(err), `expected a PeftError containing ${parts.join(' / ')}`).toBe(true);
  for (const p of parts) expect((err as Error).message).toContain(p);
}

describe('composition blocks', () => {
  it('build typed values with AdapterHub names, weights and batch sizes', () => {
    const s = Stack('a', Fuse('b', Stack('c', 'd')));
    expect(s.type).toBe('Stack');
    expect(compositionToString(s)).toBe('Stack[a, Fuse[b, Stack[c, d]]]');
    expect((s.children[1] as ReturnType<typeof Fuse>).name).toBe('b,d'); // a Stack child: its last adapter
    expect(Average('a', 'b', { weights: [1, 3] }).weights).toEqual([0.25, 0.75]);
    expect(Average('a', 'b', { weights: [1, 3], normalizeWeights: false }).weights).toEqual([1, 3]);
    expect(Average('a', 'b', 'c').weights).toEqual([1 / 3, 1 / 3, 1 / 3]);
    expect(BatchSplit('a', 'b', { batchSizes: 2 }).batchSizes).toEqual([2, 2]);
    expect(flattenComposition(Stack('a', Parallel('b', Stack('a', 'c'))))).toEqual(['a', 'b', 'c']);
    expect(parallelChannels(Stack('a', Parallel('b', 'c', 'd')))).toBe(3);
    expect(parallelChannels(Average('a', 'b'))).toBe(1);
  });

  it('refuse bad arguments, naming the block', () => {
    fails(() => Stack(), 'Stack', 'at least one child');
    fails(() => Parallel('a', 3 as unknown as string), 'Parallel', 'child 1');
    fails(() => Average('a', 'b', { weights: [1] }), 'Average', '2 finite numbers');
    fails(() => Average('a', 'b', { weights: [1, -1] }), 'Average', 'sum to 0');
    fails(() => BatchSplit('a', 'b', { batchSizes: [1, 1.5] }), 'BatchSplit', 'non-negative integers');
    fails(() => (BatchSplit as (...a: unknown[]) => unknown)('a', 'b'), 'BatchSplit', 'batchSizes is required');
  });

  it("enforce AdapterHub's ALLOWED_NESTINGS, naming the block and the offending child", () => {
    // allowed
    for (const ok of [Stack('a', Fuse('b', 'c')), Stack('a', Parallel('b', 'c')), Parallel(Stack('a', 'b'), 'c'), Fuse(Stack('a', 'b'), 'c'), BatchSplit(Average('a', 'b'), 'c', { batchSizes: 1 }), Average(BatchSplit('a', 'b', { batchSizes: 1 }), 'c'), Stack('a', Average('b', 'c'))]) {
      expect(() => validateComposition(ok), compositionToString(ok)).not.toThrow();
    }
    fails(() => validateComposition(Fuse('a', Parallel('b', 'c'))), 'cannot nest Parallel[b, c] in Fuse[a, Parallel[b, c]]', 'Fuse may hold adapter names, Stack');
    fails(() => validateComposition(Parallel('a', Parallel('b', 'c'))), 'cannot nest Parallel[b, c] in Parallel');
    fails(() => validateComposition(Average('a', Fuse('b', 'c'))), 'cannot nest Fuse[b, c] in Average');
    fails(() => validateComposition(Parallel('a', Fuse('b', 'c'))), 'cannot nest Fuse[b, c] in Parallel');
    fails(() => validateComposition(Stack('a', Stack('b', 'c'))), 'cannot nest Stack[b, c] in Stack');
    fails(() => validateComposition(BatchSplit('a', Parallel('b', 'c'), { batchSizes: 1 })), 'cannot nest Parallel[b, c] in BatchSplit');
    fails(() => validateComposition(Fuse('a', 'a')), 'Fuse[a, a]', '"a" is fused twice');
  });

  it("Split (token positions) nests as AdapterHub's: in Stack, Split, BatchSplit and Average, not in Fuse or Parallel", () => {
    for (const ok of [Stack('a', Split('b', 'c', { splits: [2, 3] })), Split('a', Split('b', 'c', { splits: 1 }), { splits: [1, 2] }), Average(Split('a', 'b', { splits: 1 }), 'c'), BatchSplit(Split('a', 'b', { splits: 1 }), 'c', { batchSizes: 1 })]) {
      expect(() => validateComposition(ok), compositionToString(ok)).not.toThrow();
    }
    fails(() => validateComposition(Fuse('a', Split('b', 'c', { splits: 1 }))), 'cannot nest Split[b, c] in Fuse');
    fails(() => validateComposition(Parallel('a', Split('b', 'c', { splits: 1 }))), 'cannot nest Split[b, c] in Parallel');
    fails(() => Split('a', 'b', { splits: [1] }), 'Split: splits must be 2 non-negative integers');
    expect(compositionFromJson(compositionToJson(Split('a', 'b', { splits: [3, 4] })), 'c.json')).toEqual(Split('a', 'b', { splits: [3, 4] }));
  });

  it('limit the depth: below level 1 only Stack blocks and names', () => {
    expect(() => validateComposition(Stack('a', Fuse('b', Stack('c', 'd'))))).not.toThrow(); // Stack at level 2
    fails(() => validateComposition(Stack(Average('a', BatchSplit('b', 'c', { batchSizes: 1 })))), 'too deep', 'BatchSplit[b, c] at level 2');
    fails(() => validateComposition(Parallel(BatchSplit(Average('a', 'b'), 'c', { batchSizes: 1 }), 'd')), 'too deep', 'Average[a, b] at level 2');
  });

  it('require the same width of every Parallel (the batch is replicated once)', () => {
    expect(() => validateComposition(Stack(Parallel('a', 'b'), Parallel('c', 'd')))).not.toThrow();
    fails(() => validateComposition(Stack(Parallel('a', 'b'), Parallel('c', 'd', 'e'))), 'different numbers of branches (2, 3)');
  });

  it("parse AdapterHub's shorthand forms", () => {
    expect(compositionToString(parseComposition('a'))).toBe('Stack[a]');
    expect(compositionToString(parseComposition(['a', 'b']))).toBe('Stack[a, b]');
    expect(compositionToString(parseComposition(['a', ['b', 'c']]))).toBe('Stack[a, Fuse[b, c]]'); // 1.x nested lists
    fails(() => parseComposition(42), 'adapter setup must be');
    fails(() => parseComposition(Fuse('a', Parallel('b', 'c'))), 'cannot nest');
  });

  it('round-trip through composition.json, with errors naming the file', () => {
    const s = Stack('x', Parallel(Average('a', 'b', { weights: [2, 1] }), BatchSplit('c', 'd', { batchSizes: [1, 2] })));
    const back = compositionFromJson(JSON.parse(JSON.stringify(compositionToJson(s))), 'c.json');
    expect(back).toEqual(s);
    expect(compositionToString(back)).toBe(compositionToString(s));
    fails(() => compositionFromJson({ type: 'Mix', children: [] }, 'c.json'), 'c.json', 'unknown composition block type "Mix"');
    fails(() => compositionFromJson({ type: 'Average', children: ['a'], weights: [1, 2] }, 'c.json'), 'c.json', 'Average: weights must be 1');
    fails(() => compositionFromJson({ type: 'Stack' }, 'c.json'), 'c.json', '"children"');
  });
});

describe('composeLayer: the blocks on a toy state (one number per row, adapters add their value)', () => {
  // a state is a list of row values; adapter "k<n>" adds n to every row; Stack composes, Average mixes
  const ops: ComposeOps<number[]> = {
    has: (n) => n.startsWith('k'),
    rows: (s) => s.length,
    slice: (s, b, n) => s.slice(b, b + n),
    concat: (ss) => ss.flat(),
    average: (ss, w) => ss[0].map((_, i) => ss.reduce((acc, s, j) => acc + w[j] * s[i], 0)),
    single: (n, s) => s.map((v) => v * 10 + Number(n.slice(1))),
  };
  it('Stack runs in order, Parallel per replica, BatchSplit per slice, Average weighted; absent adapters pass through', () => {
    expect(composeLayer(Stack('k1', 'k2'), [0, 1], ops)).toEqual([12, 112]); // (v·10+1)·10+2
    expect(composeLayer(Stack('k1', 'zz'), [0], ops)).toEqual([1]);
    expect(composeLayer(Parallel('k1', 'k2'), [0, 0, 0, 0], ops)).toEqual([1, 1, 2, 2]);
    expect(composeLayer(BatchSplit('k1', 'k2', { batchSizes: [1, 2] }), [0, 1, 2], ops)).toEqual([1, 12, 22]);
    expect(composeLayer(Average('k1', 'k3', { weights: [1, 3] }), [0], ops)).toEqual([0.25 * 1 + 0.75 * 3]);
    expect(composeLayer(Average('k1', 'zz'), [2], ops)).toEqual([0.5 * 21 + 0.5 * 2]);
    expect(composeLayer(Stack('k1', Parallel('k2', BatchSplit('k3', 'k4', { batchSizes: 1 }))), [0, 0, 0, 0], ops)).toEqual([12, 12, 13, 14]);
    fails(() => composeLayer(BatchSplit('k1', 'k2', { batchSizes: [1, 1] }), [0, 0, 0], ops), 'batchSizes [1, 1] sum to 2', 'batch has 3 rows');
    fails(() => composeLayer(Parallel('k1', 'k2'), [0, 0, 0], ops), 'not 2 replicas');
    fails(() => composeLayer(Fuse('k1', 'k2'), [0], ops), 'Fuse is not supported');
  });
});
