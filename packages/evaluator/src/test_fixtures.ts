// Test helper: the committed metric fixtures (fixtures/metrics/ at the repo root), or the folder of
// the same shape that PEFTJS_FIXTURES_METRICS names (the acceptance run uses other pairs).
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export interface Pair {
  hyp: string;
  ref: string;
  ref2: string;
}

export interface BleuRef {
  score: number;
  precisions: number[];
  bp: number;
  sys_len: number;
  ref_len: number;
  counts?: number[];
  totals?: number[];
}

export interface MetricsReference {
  sacrebleu: string;
  corpus_bleu_1ref: BleuRef;
  corpus_bleu_2ref: BleuRef;
  corpus_bleu_lowercase: number;
  corpus_bleu_intl: number;
  corpus_bleu_char: number;
  sentence_bleu: number[];
  corpus_chrf: number;
  rouge_per_pair?: Record<string, number>[];
  rouge_mean?: Record<string, number>;
  rouge_per_pair_stem?: Record<string, number>[];
  rouge_mean_stem?: Record<string, number>;
  porter_stems?: Record<string, string>;
  [key: string]: unknown;
}

export const METRICS_DIR = process.env.PEFTJS_FIXTURES_METRICS
  ? process.env.PEFTJS_FIXTURES_METRICS
  : fileURLToPath(new URL('../../../fixtures/metrics/', import.meta.url));

export function loadMetricsFixture(): { pairs: Pair[]; ref: MetricsReference; dir: string } {
  const dir = METRICS_DIR;
  const pairsPath = join(dir, 'pairs.json');
  const refPath = join(dir, 'reference.json');
  if (!existsSync(pairsPath) || !existsSync(refPath)) {
    throw new Error(`metric fixtures: expected pairs.json and reference.json in ${dir}`);
  }
  return {
    pairs: JSON.parse(readFileSync(pairsPath, 'utf8')) as Pair[],
    ref: JSON.parse(readFileSync(refPath, 'utf8')) as MetricsReference,
    dir,
  };
}

/** Largest |a - b| with the index where it occurs, for reporting. */
export function worst(diffs: number[]): { max: number; at: number } {
  let max = 0;
  let at = -1;
  diffs.forEach((d, i) => {
    if (!(d <= max)) {
      max = d;
      at = i;
    }
  });
  return { max, at };
}
