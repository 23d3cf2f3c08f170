import { describe, expect, it } from 'vitest';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoTokenizer, initBackend, tinyLlamaDir, tokenizeRecords, IGNORE_INDEX } from 'peftjs';
import { jinjaChatTemplate, readChatTemplate, main, readRunRecord } from '@peftjs/cli';

// Zephyr's template (HuggingFaceH4/zephyr-7b-beta's tokenizer_config.json)
const ZEPHYR =
  "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

function modelWithTemplate(template: string): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'peft-chat-')), 'model');
  cpSync(tinyLlamaDir(), dir, { recursive: true });
  const cfgPath = join(dir, 'tokenizer_config.json');
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
  cfg.chat_template = template;
  writeFileSync(cfgPath, JSON.stringify(cfg));
  return dir;
}

describe('chat templates from the tokenizer', () => {
  it("renders chat records with the model's chat_template; only the assistant's reply is trained on", async () => {
    const dir = modelWithTemplate(ZEPHYR);
    const src = await readChatTemplate(dir);
    expect(src).toBe(ZEPHYR);
    const tok = await AutoTokenizer.fromPretrained(dir);
    const fn = jinjaChatTemplate(src!, { eosToken: tok.eosToken, where: dir });
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Who gave the address of 1862?' },
      { role: 'assistant', content: 'Abraham Lincoln.' },
    ];
    const segs = fn(messages);
    const eos = tok.eosToken ?? '';
    expect(segs.map((s) => s.text).join('')).toBe(`<|system|>\nBe brief.${eos}\n<|user|>\nWho gave the address of 1862?${eos}\n<|assistant|>\nAbraham Lincoln.${eos}\n`);
    expect(segs.filter((s) => s.train).map((s) => s.text).join('')).toBe(`Abraham Lincoln.${eos}\n`);
    const [ex] = tokenizeRecords([{ messages }], { tokenizer: tok, chatTemplate: fn });
    const trained = ex.inputIds.filter((_, i) => ex.labels![i] !== IGNORE_INDEX);
    expect(tok.decode(trained)).toContain('Abraham Lincoln.');
    expect(tok.decode(trained)).not.toContain('Who gave');
    expect(await readChatTemplate(tinyLlamaDir())).toBeUndefined();
  });

  it('peft train reads chat data through the template', async () => {
    await initBackend({ prefer: process.env.PEFTJS_TEST_BACKEND as never });
    const dir = modelWithTemplate(ZEPHYR);
    const d = mkdtempSync(join(tmpdir(), 'peft-chat-run-'));
    const rows = [1790, 1862, 1933, 1961].map((y) => JSON.stringify({ messages: [{ role: 'user', content: `Who gave the address of ${y}?` }, { role: 'assistant', content: 'A president.' }] }));
    writeFileSync(join(d, 'chat.jsonl'), rows.join('\n') + '\n');
    writeFileSync(join(d, 'cfg.yaml'), `model: ${dir}\nmethod: { peftType: LORA, r: 4, targetModules: [q_proj, v_proj] }\ndata: { train: chat.jsonl, validation: null, test: chat.jsonl }\nevaluation: { after: false }\n`);
    let err = '';
    const code = await main(['train', join(d, 'cfg.yaml'), '--set', `training.outputDir=${d}/out`, '--set', 'training.maxSteps=1'], { out: () => undefined, err: (s) => (err += s) });
    expect(err).toBe('');
    expect(code).toBe(0);
    const rec = await readRunRecord(join(d, 'out'));
    expect(rec.data.trainExamples).toBe(4);
    expect(rec.before![0].metric).toBe('perplexity');
    expect(Number.isFinite(rec.before![0].value)).toBe(true);
  });
});
