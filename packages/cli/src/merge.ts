// `peft merge ADAPTER --out DIR`: the adapter merged into its base model, written as an HF model folder
// (config.json + model.safetensors in float32, plus the base's tokenizer and generation files) that
// AutoModelForCausalLM and transformers load.
import { copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { PeftModel, readAdapterConfig, tensorsToSafetensors, type PreTrainedModel } from 'peftjs';
import { CliError } from './config';
import { loadModel, modelDir } from './run';

const COPIED = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'chat_template.jinja'];

/** The base model an adapter names (base_model_name_or_path), when it is 'tiny-llama' or an existing folder. */
export async function adapterBaseModel(adapterDir: string): Promise<string | undefined> {
  const cfg = await readAdapterConfig(adapterDir);
  const b = cfg.baseModelNameOrPath;
  if (!b) return undefined;
  if (b === 'tiny-llama' || existsSync(join(b, 'config.json'))) return b;
  return undefined;
}

/** Writes `model`'s parameters (HF state-dict names, float32) and `config.json` into `out`, all or nothing. */
export async function writeModelFolder(model: PreTrainedModel, baseDir: string, out: string): Promise<void> {
  const tmp = `${out}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    // HF state-dict names; read back asynchronously; float32
    const bytes = await tensorsToSafetensors(Object.fromEntries(model.namedParameters()), { metadata: { format: 'pt' }, floatDtype: 'F32' });
    await writeFile(join(tmp, 'model.safetensors'), bytes);
    const cfg = JSON.parse(await readFile(join(baseDir, 'config.json'), 'utf8'));
    cfg.dtype = 'float32';
    if ('torch_dtype' in cfg) cfg.torch_dtype = 'float32';
    await writeFile(join(tmp, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
    for (const f of COPIED) if (existsSync(join(baseDir, f))) await copyFile(join(baseDir, f), join(tmp, f));
    await rm(out, { recursive: true, force: true });
    await rename(tmp, out);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

export async function mergeAdapter(adapterDir: string, opts: { model?: string; out: string }): Promise<{ out: string; base: string; parameters: number }> {
  const dir = resolve(adapterDir);
  if (!existsSync(join(dir, 'adapter_config.json'))) throw new CliError(`${join(dir, 'adapter_config.json')}: not found (ADAPTER is a folder saved by savePretrained / peft train)`);
  const spec = opts.model ?? (await adapterBaseModel(dir));
  if (!spec) throw new CliError(`${join(dir, 'adapter_config.json')}: field "base_model_name_or_path" names no local model folder; pass --model DIR`);
  const { model, dir: baseDir } = await loadModel(spec);
  const peft = await PeftModel.fromPretrained(model, dir);
  const merged = await peft.mergeAndUnload();
  let parameters = 0;
  for (const [, p] of merged.namedParameters()) parameters += p.size;
  const out = resolve(opts.out);
  await writeModelFolder(merged, baseDir, out);
  merged.dispose();
  return { out, base: spec === 'tiny-llama' ? modelDir(spec) : baseDir, parameters };
}
