// `peft inspect DIR`: what an adapter or model folder holds, read from the files' headers (no tensor is
// loaded): method, targets, parameter counts, dtypes, file sizes, and whether HF PEFT can load it.
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CliError } from './config';

export interface SafetensorsSummary {
  file: string;
  bytes: number;
  tensors: number;
  parameters: number;
  dtypes: Record<string, number>;
  names: string[];
}

/** Reads a safetensors file's header only (8-byte length + JSON). */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsSummary> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const len = Number(lenBuf.readBigUInt64LE(0));
    if (size < 8 || !(len > 0 && len <= Math.min(size - 8, 100 * 2 ** 20))) throw new CliError(`${path}: not a safetensors file (header length ${len} in a file of ${size} bytes)`);
    const hb = Buffer.alloc(len);
    await fh.read(hb, 0, len, 8);
    let header: Record<string, { dtype: string; shape: number[] }>;
    try {
      header = JSON.parse(hb.toString('utf8'));
    } catch {
      throw new CliError(`${path}: not a safetensors file (header is not JSON)`);
    }
    const out: SafetensorsSummary = { file: path, bytes: size, tensors: 0, parameters: 0, dtypes: {}, names: [] };
    for (const [name, t] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      if (!t || typeof t.dtype !== 'string' || !Array.isArray(t.shape)) throw new CliError(`${path}: tensor "${name}": no dtype/shape in the header`);
      const n = t.shape.reduce((a, b) => a * b, 1);
      out.tensors++;
      out.parameters += n;
      out.dtypes[t.dtype] = (out.dtypes[t.dtype] ?? 0) + n;
      out.names.push(name);
    }
    return out;
  } finally {
    await fh.close();
  }
}

/** peft_types HF PEFT 0.21 loads (the ones peftjs writes in HF's format). */
const HF_PEFT_TYPES = new Set(['LORA', 'ADALORA', 'IA3', 'PROMPT_TUNING', 'PREFIX_TUNING', 'P_TUNING', 'LOHA', 'LOKR', 'OFT', 'BOFT', 'VERA', 'LN_TUNING', 'POLY', 'FOURIERFT', 'HRA', 'BONE', 'ADAPTION_PROMPT', 'MULTITASK_PROMPT_TUNING', 'XLORA', 'CPT', 'VBLORA', 'RANDLORA', 'SHIRA', 'C3A', 'MISS', 'ROAD', 'WAVEFT', 'DELORA', 'TRAINABLE_TOKENS', 'OSF', 'GRALORA']);
const HF_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL', 'F8_E4M3', 'F8_E5M2']);

export interface InspectResult {
  kind: 'adapter' | 'model';
  dir: string;
  files: { name: string; bytes: number }[];
  method?: string;
  targets?: unknown;
  details: Record<string, unknown>;
  parameters: number;
  dtypes: Record<string, number>;
  hfLoadable: boolean;
  hfNotes: string[];
}

export async function inspectDir(dir: string): Promise<InspectResult> {
  if (!existsSync(dir)) throw new CliError(`${dir}: folder not found`);
  if (!(await stat(dir)).isDirectory()) throw new CliError(`${dir}: not a folder (inspect takes an adapter or model folder)`);
  const files = await Promise.all((await readdir(dir, { withFileTypes: true })).filter((d) => d.isFile()).map(async (d) => ({ name: d.name, bytes: (await stat(join(dir, d.name))).size })));
  files.sort((a, b) => a.name.localeCompare(b.name));
  const readJsonFile = async (name: string): Promise<Record<string, unknown>> => {
    try {
      const v = JSON.parse(await readFile(join(dir, name), 'utf8'));
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('expected an object');
      return v;
    } catch (e) {
      throw new CliError(`${join(dir, name)}: not valid JSON (${(e as Error).message})`);
    }
  };
  const notes: string[] = [];
  if (existsSync(join(dir, 'adapter_config.json'))) {
    const cfg = await readJsonFile('adapter_config.json');
    const weights = join(dir, 'adapter_model.safetensors');
    if (!existsSync(weights)) throw new CliError(`${weights}: not found (an adapter folder holds adapter_config.json and adapter_model.safetensors)`);
    const st = await readSafetensorsHeader(weights);
    const peftType = typeof cfg.peft_type === 'string' ? cfg.peft_type : undefined;
    if (!peftType) notes.push('adapter_config.json has no "peft_type"');
    else if (!HF_PEFT_TYPES.has(peftType)) notes.push(`peft_type ${peftType} is not one of HF PEFT's`);
    const bad = st.names.filter((n) => !n.startsWith('base_model.model.') && !/^(prompt_embeddings|prefix_task_cols|prefix_task_rows)$/.test(n));
    if (bad.length) notes.push(`tensor names outside HF's "base_model.model." layout: ${bad.slice(0, 3).join(', ')}`);
    for (const d of Object.keys(st.dtypes)) if (!HF_DTYPES.has(d)) notes.push(`dtype ${d} is not one torch's safetensors reads`);
    const pick = ['r', 'lora_alpha', 'lora_dropout', 'use_rslora', 'use_dora', 'init_r', 'target_r', 'num_virtual_tokens', 'token_dim', 'num_layers', 'prefix_projection', 'encoder_hidden_size', 'encoder_reparameterization_type', 'feedforward_modules', 'modules_to_save', 'task_type', 'base_model_name_or_path', 'peft_version'];
    const details = Object.fromEntries(pick.filter((k) => cfg[k] !== undefined && cfg[k] !== null).map((k) => [k, cfg[k]]));
    return { kind: 'adapter', dir, files, method: peftType, targets: cfg.target_modules ?? null, details, parameters: st.parameters, dtypes: st.dtypes, hfLoadable: notes.length === 0, hfNotes: notes };
  }
  if (existsSync(join(dir, 'config.json'))) {
    const cfg = await readJsonFile('config.json');
    const shards = files.filter((f) => f.name.endsWith('.safetensors')).map((f) => join(dir, f.name));
    if (!shards.length) throw new CliError(`${dir}: config.json but no *.safetensors weights`);
    let parameters = 0;
    const dtypes: Record<string, number> = {};
    for (const s of shards) {
      const h = await readSafetensorsHeader(s);
      parameters += h.parameters;
      for (const [d, n] of Object.entries(h.dtypes)) dtypes[d] = (dtypes[d] ?? 0) + n;
    }
    if (typeof cfg.model_type !== 'string') notes.push('config.json has no "model_type"');
    if (!existsSync(join(dir, 'tokenizer.json'))) notes.push('no tokenizer.json beside the weights');
    const pick = ['model_type', 'architectures', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'intermediate_size', 'vocab_size', 'max_position_embeddings', 'tie_word_embeddings', 'dtype', 'torch_dtype'];
    const details = Object.fromEntries(pick.filter((k) => cfg[k] !== undefined).map((k) => [k, cfg[k]]));
    return { kind: 'model', dir, files, method: undefined, details, parameters, dtypes, hfLoadable: notes.length === 0, hfNotes: notes };
  }
  throw new CliError(`${dir}: neither adapter_config.json nor config.json (inspect takes an adapter or model folder)`);
}

const size = (b: number) => (b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(2)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`);

export function formatInspect(r: InspectResult): string {
  const lines = [`${r.kind}: ${r.dir}`];
  if (r.kind === 'adapter') {
    lines.push(`method: ${r.method ?? '?'}`);
    lines.push(`targets: ${r.targets === null || r.targets === undefined ? '(prompt learning: virtual tokens, no target modules)' : Array.isArray(r.targets) ? r.targets.join(', ') : String(r.targets)}`);
  }
  for (const [k, v] of Object.entries(r.details)) lines.push(`${k}: ${Array.isArray(v) ? v.join(', ') : typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
  lines.push(`parameters: ${r.parameters.toLocaleString('en-US')}`);
  lines.push(`dtypes: ${Object.entries(r.dtypes).map(([d, n]) => `${d} (${n.toLocaleString('en-US')})`).join(', ')}`);
  lines.push('files:');
  for (const f of r.files) lines.push(`  ${f.name}  ${size(f.bytes)}`);
  lines.push(`HF ${r.kind === 'adapter' ? 'PEFT (PeftModel.from_pretrained)' : 'transformers (from_pretrained)'} can load it: ${r.hfLoadable ? 'yes' : `no (${r.hfNotes.join('; ')})`}`);
  return lines.join('\n');
}
