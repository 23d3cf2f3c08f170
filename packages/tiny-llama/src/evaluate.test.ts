// The evaluator on a real model: perplexity against HF's on the bundled tiny LLaMA, and an end-to-end
// evaluatePeftModel run (generation scored with BLEU/ROUGE, language modelling) on a LoRA model.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { getPeftModel } from '@peftjs/core';
import { AutoModelForCausalLM, AutoTokenizer } from '@peftjs/models';
import { LoraConfig } from '@peftjs/lora';
import { evaluatePeftModel, perplexity } from '@peftjs/evaluator';
import { tinyLlamaDir } from './index';

const REF = fileURLToPath(new URL('../../../fixtures/tiny-llama/', import.meta.url));
const texts: string[] = JSON.parse(readFileSync(`${REF}ppl_texts.json`, 'utf8'));
const hf = JSON.parse(readFileSync(`${REF}ppl_reference.json`, 'utf8'));

describe('evaluator on peftjs-tiny-llama', () => {
  it('perplexity equals HF transformers (batched with padding)', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(tinyLlamaDir());
    const tok = await AutoTokenizer.fromPretrained(tinyLlamaDir());
    const r = await perplexity(model, tok, texts, { batchSize: 2, progress: false });
    expect(r.tokenCount).toBe(hf.per_text.reduce((a: number, t: { tokens: number }) => a + t.tokens, 0));
    r.perSequence.forEach((s, i) => expect(Math.abs(s.nll - hf.per_text[i].nll) / hf.per_text[i].nll, `text ${i}`).toBeLessThan(1e-5));
    expect(Math.abs(r.perplexity - hf.perplexity) / hf.perplexity).toBeLessThan(1e-5);
  });

  it('evaluatePeftModel scores a LoRA model on generation and language modelling', async () => {
    const model = await AutoModelForCausalLM.fromPretrained(tinyLlamaDir());
    const tok = await AutoTokenizer.fromPretrained(tinyLlamaDir());
    const peft = getPeftModel(model, new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] }));
    const data = [
      { input: 'The state of the Union is', target: 'strong.' },
      { input: 'Call me Ishmael.', target: 'Some years ago' },
      { input: 'We must continue to work together to', target: 'build a better future.' },
    ];
    const gen = await evaluatePeftModel(peft, tok, data, { taskType: 'generation', maxNewTokens: 6, batchSize: 2, progress: false });
    expect(gen.predictions).toHaveLength(3);
    expect(gen.predictions[0].prediction).toMatch(/\S/);
    expect(gen.metrics.bleu!.score).toBeGreaterThanOrEqual(0);
    expect(gen.metrics.rouge).toBeDefined();
    const lm = await evaluatePeftModel(peft, tok, texts.map((text) => ({ text })), { taskType: 'language-modeling', batchSize: 3, progress: false });
    // LoRA's B starts at zero: the adapted model's perplexity is the base model's, HF's figure
    expect(Math.abs(lm.metrics.perplexity! - hf.perplexity) / hf.perplexity).toBeLessThan(1e-5);
  });
});
