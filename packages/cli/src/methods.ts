// `peft methods`: the guide's comparison table, with the trainable-parameter share and the estimated
// training memory of every method peftjs ships measured on a model (real injection, no training).
import { getPeftModel, LoraConfig, IA3Config, PromptTuningConfig, PrefixTuningConfig, PromptEncoderConfig, AdaLoraConfig, SeqBnConfig, DoubleSeqBnConfig, ParBnConfig, TaskType, type PeftConfig, type CausalLMBase } from 'peftjs';
import { loadModel } from './run';

/** The guide's comparison table, verbatim. */
export const GUIDE_TABLE = [
  { method: 'Full Fine-tune', paramsAdded: '100%', memory: 'Highest', quality: 'Best', useCase: 'Unlimited resources' },
  { method: 'LoRA', paramsAdded: '~0.1%', memory: 'Medium', quality: 'High', useCase: 'General purpose' },
  { method: 'QLoRA', paramsAdded: '~0.1%', memory: 'Low', quality: 'Good', useCase: 'Limited GPU memory' },
  { method: 'Adapters', paramsAdded: '~1-5%', memory: 'Medium', quality: 'High', useCase: 'Multi-task' },
  { method: 'Prefix Tuning', paramsAdded: '~0.1%', memory: 'Low', quality: 'Good', useCase: 'NLU tasks' },
  { method: 'Prompt Tuning', paramsAdded: '<0.1%', memory: 'Lowest', quality: 'Moderate', useCase: 'Simple classification' },
  { method: 'IA3', paramsAdded: '<0.01%', memory: 'Lowest', quality: 'Good', useCase: 'Memory constrained' },
] as const;

export interface MethodMeasure {
  /** The guide's row (or a peftjs method the guide lacks). */
  method: string;
  guide?: (typeof GUIDE_TABLE)[number];
  /** What peftjs ships for it (the config measured), or why it is not measured. */
  peftjs: string;
  trainable?: number;
  total?: number;
  /** trainable / base parameters, in percent. */
  sharePercent?: number;
  /** Estimated training memory in bytes (see estimateTrainingBytes). */
  trainingBytes?: number;
}

/**
 * Training memory estimate: the base weights (fp32 on the tfjs backends; 4-bit + absmax for QLoRA), and for
 * the trainable parameters their value, gradient and AdamW's two moments (16 B each). Activations depend on
 * batch and length and are left out (they are the same for every method but prompt-learning's extra tokens).
 */
export function estimateTrainingBytes(baseParams: number, trainable: number, opts: { quantized?: boolean; full?: boolean } = {}): number {
  if (opts.full) return 16 * baseParams;
  const weights = opts.quantized ? 0.5625 * baseParams : 4 * baseParams;
  return weights + 16 * trainable;
}

/** The configs measured, as `peft train` would take them on a causal LM. */
export function shippedConfigs(): { row: string; label: string; make: () => PeftConfig; quantized?: boolean }[] {
  const t = TaskType.CAUSAL_LM;
  return [
    { row: 'LoRA', label: 'LORA r=8 q_proj,v_proj', make: () => new LoraConfig({ taskType: t, r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'] }) },
    { row: 'LoRA', label: 'LORA r=16 all-linear', make: () => new LoraConfig({ taskType: t, r: 16, loraAlpha: 32, targetModules: 'all-linear' }) },
    { row: 'LoRA', label: 'DoRA r=8 q_proj,v_proj', make: () => new LoraConfig({ taskType: t, r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], useDora: true }) },
    { row: 'QLoRA', label: 'LORA r=8 q_proj,v_proj on 4-bit weights', make: () => new LoraConfig({ taskType: t, r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'] }), quantized: true },
    { row: 'AdaLoRA', label: 'ADALORA r=8 q_proj,v_proj', make: () => new AdaLoraConfig({ taskType: t, initR: 12, targetR: 8, targetModules: ['q_proj', 'v_proj'], totalStep: 100 }) },
    { row: 'Prefix Tuning', label: 'PREFIX_TUNING 20 tokens', make: () => new PrefixTuningConfig({ taskType: t, numVirtualTokens: 20 }) },
    { row: 'Prefix Tuning', label: 'PREFIX_TUNING 20 tokens + projection', make: () => new PrefixTuningConfig({ taskType: t, numVirtualTokens: 20, prefixProjection: true, encoderHiddenSize: 128 }) },
    { row: 'Prompt Tuning', label: 'PROMPT_TUNING 20 tokens', make: () => new PromptTuningConfig({ taskType: t, numVirtualTokens: 20 }) },
    { row: 'P-Tuning', label: 'P_TUNING 20 tokens, MLP 128', make: () => new PromptEncoderConfig({ taskType: t, numVirtualTokens: 20, encoderHiddenSize: 128 }) },
    { row: 'IA3', label: 'IA3 k_proj,v_proj,down_proj', make: () => new IA3Config({ taskType: t, targetModules: ['k_proj', 'v_proj', 'down_proj'], feedforwardModules: ['down_proj'] }) },
    { row: 'Adapters', label: 'BOTTLENECK SeqBn (pfeiffer) reduction 16', make: () => new SeqBnConfig({ taskType: t }) },
    { row: 'Adapters', label: 'BOTTLENECK DoubleSeqBn (houlsby) reduction 16', make: () => new DoubleSeqBnConfig({ taskType: t }) },
    { row: 'Adapters', label: 'BOTTLENECK ParBn (parallel) reduction 2', make: () => new ParBnConfig({ taskType: t }) },
  ];
}

function baseCount(model: CausalLMBase): number {
  let n = 0;
  for (const [, p] of model.namedParameters()) n += p.size;
  return n;
}

/** Injects each shipped method into `model` in turn (then unloads it) and counts its parameters. */
export function measureMethods(model: CausalLMBase): MethodMeasure[] {
  const base = baseCount(model);
  const rows: MethodMeasure[] = [{ method: 'Full Fine-tune', guide: GUIDE_TABLE[0], peftjs: 'every base parameter (Trainer on the bare model)', trainable: base, total: base, sharePercent: 100, trainingBytes: estimateTrainingBytes(base, base, { full: true }) }];
  for (const c of shippedConfigs()) {
    let config: PeftConfig;
    try {
      config = c.make();
    } catch (e) {
      rows.push({ method: c.row, guide: GUIDE_TABLE.find((g) => g.method === c.row), peftjs: `${c.label}: ${(e as Error).message}` });
      continue;
    }
    const peft = getPeftModel(model, config);
    try {
      const [trainable] = peft.getNbTrainableParameters();
      rows.push({
        method: c.row,
        guide: GUIDE_TABLE.find((g) => g.method === c.row),
        peftjs: c.label,
        trainable,
        total: base + trainable,
        sharePercent: (100 * trainable) / base,
        trainingBytes: estimateTrainingBytes(base, trainable, { quantized: c.quantized }),
      });
    } finally {
      peft.unload();
    }
  }
  // guide order, then the ones the guide lacks
  const order = [...GUIDE_TABLE.map((g) => g.method as string), 'P-Tuning', 'AdaLoRA'];
  return rows.sort((a, b) => order.indexOf(a.method) - order.indexOf(b.method));
}

export async function methodsTable(modelSpec = 'tiny-llama'): Promise<{ rows: MethodMeasure[]; base: number }> {
  const { model } = await loadModel(modelSpec);
  try {
    return { rows: measureMethods(model), base: baseCount(model) };
  } finally {
    model.dispose();
  }
}

const pct = (x?: number) => (x === undefined ? '' : x >= 1 ? `${x.toFixed(1)}%` : x >= 0.01 ? `${x.toFixed(3)}%` : `${x.toFixed(4)}%`);
const mib = (b?: number) => (b === undefined ? '' : b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`);

/** The table as Markdown: the guide's columns, then peftjs' measured ones. */
export function formatMethodsTable(rows: MethodMeasure[], modelName: string, base: number): string {
  const head = `| Method | Params Added | Memory | Quality | Use Case | peftjs config | trainable params | trainable share | est. training memory |\n|---|---|---|---|---|---|---|---|---|`;
  const lines = rows.map((r) => {
    const g = r.guide;
    return `| ${r.method} | ${g?.paramsAdded ?? ''} | ${g?.memory ?? ''} | ${g?.quality ?? ''} | ${g?.useCase ?? ''} | ${r.peftjs} | ${r.trainable?.toLocaleString('en-US') ?? ''} | ${pct(r.sharePercent)} | ${mib(r.trainingBytes)} |`;
  });
  return `Measured on ${modelName} (${base.toLocaleString('en-US')} parameters); the first five columns are the guide's.\n\n${head}\n${lines.join('\n')}\n`;
}
