import { describe, expect, it } from 'vitest';
import { evaluatePeftModel } from './evaluate';
import { corpusBleu } from './bleu';
import { rougeScore } from './rouge';
import { bigramModel, charTokenizer, echoModel, zClassifier, BIGRAM_P } from './fake_models';

describe('evaluatePeftModel', () => {
  it('generation: generates in batches, strips the prompt and eos, scores with corpus metrics', async () => {
    const data = [
      { input: 'abc', target: 'cba' },
      { input: 'hello', target: 'olleh' },
      { input: 'dog', target: ['cat', 'god'] },
      { input: 'xyz', target: 'zyx w' },
      { input: 'q', target: 'p' },
    ];
    const model = echoModel();
    const ticks: number[] = [];
    const r = await evaluatePeftModel(model, charTokenizer, data, { taskType: 'generation', batchSize: 2, maxNewTokens: 16, seed: 7, doSample: true, progress: (d) => ticks.push(d) });
    const preds = r.predictions.map((p) => p.prediction);
    expect(preds).toEqual(['cba', 'olleh', 'god', 'zyx', 'q']);
    expect(model.seeds).toEqual([7, 8, 9]);
    expect(ticks).toEqual([1, 2, 3]);
    const streams = [data.map((d) => (Array.isArray(d.target) ? d.target[0] : d.target)), data.map((d) => (Array.isArray(d.target) ? d.target[1] : null))];
    expect(r.metrics.bleu!.score).toBe(corpusBleu(preds as string[], streams).score);
    expect(r.metrics.bleu!.signature).toContain('nrefs:var|');
    expect(r.metrics.rouge).toEqual(rougeScore(preds as string[], data.map((d) => d.target)).mean);
    expect(r.metrics.exactMatch).toBeCloseTo(3 / 5, 15);
    expect(r.predictions[2].correct).toBe(true);
    expect(r.predictions[0].sentenceBleu).toBeCloseTo(100, 10);
    expect(r.metrics.chrf!.score).toBeGreaterThan(0);
  });

  it('generation: maxNewTokens cuts the output', async () => {
    const r = await evaluatePeftModel(echoModel(), charTokenizer, [{ input: 'abcdef', target: 'fed' }], { taskType: 'generation', maxNewTokens: 3, metrics: ['exactMatch'] });
    expect(r.predictions[0].prediction).toBe('fed');
    expect(r.metrics.exactMatch).toBe(1);
    expect(r.metrics.bleu).toBeUndefined();
  });

  it('classification with a classifier: argmax of [B, C] logits, named by labels', async () => {
    const data = [
      { input: 'zebra', label: 'z' },
      { input: 'apple', label: 'other' },
      { input: 'pizza', label: 'other' },
      { input: 'quiz', label: 1 },
      { input: 'cat', label: 0 },
    ];
    const r = await evaluatePeftModel(zClassifier(), charTokenizer, data, { taskType: 'classification', labels: ['other', 'z'], batchSize: 2 });
    expect(r.predictions.map((p) => p.prediction)).toEqual(['z', 'other', 'z', 'z', 'other']);
    expect(r.metrics.accuracy).toBeCloseTo(4 / 5, 15);
    expect(r.metrics.precisionRecallF1!.labels).toEqual(['other', 'z']);
    expect(r.metrics.precisionRecallF1!.perClass[1].precision).toBeCloseTo(2 / 3, 15);
    expect(r.metrics.f1).toBeCloseTo(r.metrics.precisionRecallF1!.macro.f1, 15);
  });

  it('classification with a causal LM: generated text mapped to a label', async () => {
    const data = [
      { input: 'sey', label: 'yes' },
      { input: 'on', label: 'no' },
      { input: 'seyyy', label: 'no' },
    ];
    const r = await evaluatePeftModel(echoModel(), charTokenizer, data, { taskType: 'classification', labels: ['yes', 'no'] });
    expect(r.predictions.map((p) => p.prediction)).toEqual(['yes', 'no', 'yyyes']);
    expect(r.metrics.accuracy).toBeCloseTo(2 / 3, 15);
  });

  it('language-modeling: HF token-weighted perplexity, per-example figures', async () => {
    const tok = { encode: (s: string) => Array.from(s).map(Number), decode: () => '', padTokenId: 0 };
    const r = await evaluatePeftModel(bigramModel(), tok, [{ text: '123' }, { input: '31', target: '12' }], { taskType: 'language-modeling' });
    const nll = -Math.log(BIGRAM_P[1][2]) - Math.log(BIGRAM_P[2][3]) - Math.log(BIGRAM_P[1][1]) - Math.log(BIGRAM_P[1][2]);
    expect(r.metrics.lm!.tokenCount).toBe(4);
    expect(r.metrics.perplexity).toBeCloseTo(Math.exp(nll / 4), 5);
    expect(r.predictions[1].tokens).toBe(2);
  });

  it('names what is wrong', async () => {
    await expect(evaluatePeftModel(echoModel(), charTokenizer, [{ input: 'a' }], { taskType: 'generation' })).rejects.toThrow(/testData\[0\]\.target/);
    await expect(evaluatePeftModel(echoModel(), charTokenizer, [], { taskType: 'translation' as 'generation' })).rejects.toThrow(/taskType/);
    await expect(evaluatePeftModel(zClassifier(), charTokenizer, [{ input: 'a', label: 0 }], { taskType: 'generation' as const })).rejects.toThrow(/target/);
    await expect(evaluatePeftModel(zClassifier(), charTokenizer, [{ input: 'a', target: 'b' }], { taskType: 'generation' })).rejects.toThrow(/model\.generate/);
  });
});
