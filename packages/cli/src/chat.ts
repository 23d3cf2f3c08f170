// Chat records rendered with the tokenizer's own chat_template (tokenizer_config.json's "chat_template", or
// chat_template.jinja beside it) by @huggingface/jinja, instead of a hard-coded ChatML. The rendered text is
// split into turns by rendering the conversation one message longer each time; an assistant turn is
// trained on without its header (the part add_generation_prompt writes), the rest is context.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import type { ChatMessage } from 'peftjs';
import { CliError } from './config';

export type ChatTemplateFn = (messages: ChatMessage[]) => { text: string; train: boolean }[];

/** The model folder's chat template source, or undefined when it has none. */
export async function readChatTemplate(modelDir: string): Promise<string | undefined> {
  const jinjaFile = join(modelDir, 'chat_template.jinja');
  if (existsSync(jinjaFile)) return readFile(jinjaFile, 'utf8');
  const cfgPath = join(modelDir, 'tokenizer_config.json');
  if (!existsSync(cfgPath)) return undefined;
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(await readFile(cfgPath, 'utf8'));
  } catch (e) {
    throw new CliError(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  const t = cfg.chat_template;
  if (t === undefined || t === null) return undefined;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const def = t.find((x) => x && x.name === 'default');
    if (def && typeof def.template === 'string') return def.template;
  }
  throw new CliError(`${cfgPath}: field "chat_template" must be a string or a list of { name, template }`);
}

/**
 * A chatTemplate for tokenizeRecords from a Jinja chat template. `bos_token` renders as '' (tokenizeRecords
 * adds the BOS id itself); `eos_token` as the tokenizer's.
 */
export function jinjaChatTemplate(source: string, tokens: { eosToken?: string; where: string }): ChatTemplateFn {
  let tpl: Template;
  try {
    tpl = new Template(source);
  } catch (e) {
    throw new CliError(`${tokens.where}: chat_template does not parse (${(e as Error).message})`);
  }
  const render = (messages: ChatMessage[], addGenerationPrompt: boolean) => {
    try {
      return tpl.render({ messages, add_generation_prompt: addGenerationPrompt, bos_token: '', eos_token: tokens.eosToken ?? '' });
    } catch (e) {
      throw new CliError(`${tokens.where}: chat_template failed to render (${(e as Error).message})`);
    }
  };
  return (messages) => {
    const segs: { text: string; train: boolean }[] = [];
    let prev = '';
    for (let k = 0; k < messages.length; k++) {
      const next = render(messages.slice(0, k + 1), false);
      if (!next.startsWith(prev)) {
        // a template that rewrites earlier turns (e.g. drops a system prompt): no per-turn masks, train on all
        return [{ text: render(messages, false), train: true }];
      }
      let seg = next.slice(prev.length);
      if (messages[k].role === 'assistant') {
        const header = render(messages.slice(0, k), true).slice(prev.length);
        if (header && seg.startsWith(header)) {
          segs.push({ text: header, train: false });
          seg = seg.slice(header.length);
        }
        segs.push({ text: seg, train: true });
      } else segs.push({ text: seg, train: false });
      prev = next;
    }
    return segs.filter((s) => s.text.length > 0);
  };
}
