// The guide's recommend_peft_method, exactly: its six scenarios with their method and reasoning, and the
// string "LoRA as default choice" for anything else. Beyond the guide, recommendForModel picks from a
// model's size and the user's constraints (GPU memory, number of tasks, kind of task) and says why.

export interface Recommendation {
  method: string;
  reasoning: string;
}

/** The guide's table (scenario → method, reasoning), verbatim. */
export const GUIDE_RECOMMENDATIONS: Readonly<Record<string, Readonly<Recommendation>>> = Object.freeze({
  limited_gpu_memory: { method: 'QLoRA', reasoning: '4-bit quantization minimizes memory' },
  multiple_tasks: { method: 'Adapters', reasoning: 'Easy to swap task-specific adapters' },
  simple_classification: { method: 'Prompt Tuning', reasoning: 'Minimal parameters, fast training' },
  generation_task: { method: 'LoRA', reasoning: 'Good balance of quality and efficiency' },
  instruction_following: { method: 'LoRA or QLoRA', reasoning: 'Well-suited for instruction tuning' },
  knowledge_intensive: { method: 'Full fine-tune or LoRA with high rank', reasoning: 'Need more capacity for new knowledge' },
});

export const DEFAULT_RECOMMENDATION = 'LoRA as default choice';

/**
 * The guide's `recommend_peft_method(scenario)`: `{ method, reasoning }` for a known scenario, else the
 * string "LoRA as default choice" (as the guide's `dict.get(scenario, default)` returns).
 */
export function recommendPeftMethod(scenario: string): Recommendation | typeof DEFAULT_RECOMMENDATION {
  const r = Object.hasOwn(GUIDE_RECOMMENDATIONS, scenario) ? GUIDE_RECOMMENDATIONS[scenario] : undefined;
  return r ? { method: r.method, reasoning: r.reasoning } : DEFAULT_RECOMMENDATION;
}

export type TaskKind = 'classification' | 'generation' | 'instruction';

export interface ModelFacts {
  /** Parameters of the model (config.json's estimate or the weights counted). */
  parameters: number;
  /** Bytes per weight as stored (2 for bf16/fp16, 4 for fp32). */
  bytesPerWeight?: number;
  modelType?: string;
}

export interface Constraints {
  /** GPU (or accelerator) memory in bytes; undefined: no limit given. */
  gpuMemoryBytes?: number;
  tasks?: number;
  task?: TaskKind;
}

export interface ModelRecommendation extends Recommendation {
  /** The guide's scenario the pick rests on, when one. */
  scenario?: string;
  /** How peftjs configures it (`peft train`'s method section). */
  peftjs: string;
  /** Why, one line each. */
  why: string[];
  /** The memory estimates the choice compared (bytes). */
  memory: { fullFineTune: number; lora: number; qlora: number };
}

/**
 * Training memory estimates (bytes) for a model of `p` parameters: full fine-tuning holds fp32 weights,
 * gradients and AdamW's two moments (16 B a parameter); LoRA the weights as stored plus ~1% for the
 * adapter, its optimizer state and activations; QLoRA 4-bit weights (0.5 B + absmax ≈ 0.56 B) plus the same.
 */
export function memoryEstimates(p: number, bytesPerWeight = 2): { fullFineTune: number; lora: number; qlora: number } {
  const overhead = 0.2 * p * bytesPerWeight; // activations, adapter and its optimizer state (rough)
  return { fullFineTune: 16 * p, lora: p * bytesPerWeight + overhead, qlora: 0.5625 * p + overhead };
}

export function parseBytes(text: string, where = '--gpu-memory'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$/i.exec(text);
  if (!m) throw new Error(`${where}: "${text}" is not a size (e.g. 8GB, 512MiB, 24gb)`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const pow = { b: 0, kb: 1, kib: 1, mb: 2, mib: 2, gb: 3, gib: 3, tb: 4, tib: 4 }[unit]!;
  return Number(m[1]) * 1024 ** pow;
}

const fmtBytes = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(1)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`);

/** Picks a method from the model's size and the constraints, with the guide's scenarios as the rules. */
export function recommendForModel(model: ModelFacts, c: Constraints = {}): ModelRecommendation {
  const mem = memoryEstimates(model.parameters, model.bytesPerWeight ?? 2);
  const why: string[] = [];
  const gpu = c.gpuMemoryBytes;
  const fits = (b: number) => gpu === undefined || b <= gpu;
  why.push(
    `${(model.parameters / 1e6).toFixed(1)}M parameters: about ${fmtBytes(mem.fullFineTune)} to fine-tune fully, ${fmtBytes(mem.lora)} with LoRA, ${fmtBytes(mem.qlora)} with QLoRA` +
      (gpu === undefined ? ' (no --gpu-memory given)' : `; ${fmtBytes(gpu)} available`),
  );
  const from = (scenario: string, peftjs: string, extra: string[] = []): ModelRecommendation => {
    const g = GUIDE_RECOMMENDATIONS[scenario];
    return { method: g.method, reasoning: g.reasoning, scenario, peftjs, why: [...why, `guide, ${scenario}: ${g.method}: ${g.reasoning}`, ...extra], memory: mem };
  };
  if (gpu !== undefined && !fits(mem.lora)) {
    if (!fits(mem.qlora)) why.push(`even QLoRA's ${fmtBytes(mem.qlora)} is above the memory given: expect to need gradientCheckpointing and batch size 1, or a smaller model`);
    else why.push(`LoRA's ${fmtBytes(mem.lora)} does not fit, QLoRA's ${fmtBytes(mem.qlora)} does`);
    return from('limited_gpu_memory', "method: { peftType: LORA, r: 16, targetModules: all-linear } with quantization: { loadIn4bit: true } (@peftjs/quant's BitsAndBytesConfig)");
  }
  if ((c.tasks ?? 1) > 1) {
    return from('multiple_tasks', `one adapter per task on the same base (PeftModel.addAdapter / setAdapter; bottleneck adapters: @peftjs/adapters' SeqBnConfig, ~1 % of the parameters each): ${c.tasks} small adapter files, swapped without reloading the base`);
  }
  if (c.task === 'classification') return from('simple_classification', 'method: { peftType: PROMPT_TUNING, numVirtualTokens: 20 } (learningRate 1e-3)');
  if (c.task === 'instruction') {
    const q = gpu !== undefined && !fits(mem.lora * 2);
    return from('instruction_following', q ? 'QLoRA here: LoRA fits only with little headroom' : 'method: { peftType: LORA, r: 16, loraAlpha: 32, targetModules: all-linear }', [
      q ? `LoRA's ${fmtBytes(mem.lora)} leaves under half the memory free: QLoRA` : 'memory is enough for LoRA on the unquantized weights',
    ]);
  }
  if (c.task === 'generation') return from('generation_task', 'method: { peftType: LORA, r: 16, loraAlpha: 32, targetModules: all-linear }');
  return { method: 'LoRA', reasoning: DEFAULT_RECOMMENDATION, peftjs: 'method: { peftType: LORA, r: 8, loraAlpha: 16, targetModules: [q_proj, v_proj] }', why: [...why, `no task given: ${DEFAULT_RECOMMENDATION}`], memory: mem };
}
