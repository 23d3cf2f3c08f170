import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftModel, getPeftModel, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM, AutoTokenizer } from '@peftjs/models';
import './index';
import { PromptTuningConfig, PromptTuningInit, PromptEmbedding, loadPromptTuningInitText } from './index';
import { hfCase } from '../../../tools/testing/fixtures';
import { TOL, checkPromptCase, checkSaveLoad, expectOnlyMethodChanged, snapshot, trainStep } from '../../../tools/testing/prompt_learning';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-prompt-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const TOKENIZER = new URL('../../models/test-data/tiny-bpe/', import.meta.url).pathname;

describe('prompt tuning parity with HF PEFT', () => {
  it('logits (virtual positions included), greedy generation, files and save → load', async () => {
    const r = await checkPromptCase('llama_prompt_tuning', true);
    console.log(`llama_prompt_tuning: max rel diff ${r.rel.toExponential(3)}; generated ${JSON.stringify(r.generated)}`);
    expect(r.rel).toBeLessThan(TOL);
    expect(r.generated).toEqual(r.expected);
    await checkSaveLoad('llama_prompt_tuning', r.peft, join(tmp, 'pt'));
  });
});
