// Compares with HF transformers outputs recorded by test-data/hf_reference.py (see its docstring).
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AutoModelForCausalLM, AutoTokenizer } from '@peftjs/models';
import { HF } from '../../../tools/testing/fixtures';

const TEST_DATA = fileURLToPath(new URL('../test-data/', import.meta.url));
const ref = JSON.parse(readFileSync(`${TEST_DATA}hf_reference.json`, 'utf8'));

describe('tokenizer matches HF PreTrainedTokenizerFast on the same tokenizer.json', () => {
  const r = ref.tokenizer;
  it('encode / decode', async () => {
    const tok = await AutoTokenizer.fromPretrained(`${TEST_DATA}tiny-bpe`);
    expect([tok.padTokenId, tok.eosTokenId, tok.bosTokenId]).toEqual([r.pad_token_id, r.eos_token_id, r.bos_token_id]);
    expect(r.texts.map((t: string) => tok.encode(t))).toEqual(r.encode);
    expect(r.texts.map((t: string) => tok.encode(t, { addSpecialTokens: false }))).toEqual(r.encode_no_special);
    expect(r.encode.map((ids: number[]) => tok.decode(ids, { skipSpecialTokens: true }))).toEqual(r.decode_skip);
  });
  it('batch padding (left from tokenizer_config.json) and right padding with truncation', async () => {
    const tok = await AutoTokenizer.fromPretrained(`${TEST_DATA}tiny-bpe`);
    const left = tok.batchEncode(r.texts.slice(0, 3), { padding: true });
    expect(left.inputIds).toEqual(r.batch_left);
    expect(left.attentionMask).toEqual(r.batch_left_mask);
    const right = tok.batchEncode(r.texts, { padding: true, truncation: true, maxLength: 6, paddingSide: 'right' });
    expect(right.inputIds).toEqual(r.batch_right_trunc);
    expect(right.attentionMask).toEqual(r.batch_right_trunc_mask);
  });
});

describe('greedy generate matches HF generate on a left-padded batch', () => {
  for (const [name, g] of Object.entries(ref.generate as Record<string, { input_ids: number[][]; attention_mask: number[][]; max_new_tokens: number; generated: number[][] }>)) {
    it(name, async () => {
      const model = await AutoModelForCausalLM.fromPretrained(`${HF}${name}/base`);
      const out = await model.generate({ inputIds: g.input_ids, attentionMask: g.attention_mask, maxNewTokens: g.max_new_tokens, eosTokenId: [], padTokenId: 0 });
      expect(out).toEqual(g.generated);
      model.dispose();
    });
  }
});
