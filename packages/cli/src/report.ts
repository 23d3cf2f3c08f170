// `peft report RUN_DIR`: one self-contained HTML file (no scripts, no external resources) with the run's
// charts as inline SVG rendered by Vega-Lite + Vega on the server (no browser), the before/after table,
// the config, the trainable-parameter share, sample predictions beside references, throughput and memory.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { compile, type TopLevelSpec } from 'vega-lite';
import { parse as parseVega, View } from 'vega';
import { stringify as toYaml } from 'yaml';
import { readRunRecord, REPORT_FILE, type RunRecord, type TaskScore } from './run';

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** Renders a Vega-Lite spec to an SVG string without a browser (Vega's headless view, renderer 'none'). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const vg = compile(spec).spec;
  const view = new View(parseVega(vg), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

type Row = Record<string, number | string>;

function lineSpec(title: string, rows: Row[], x: string, y: string, yTitle: string, opts: { color?: string; logY?: boolean } = {}): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 420,
    height: 200,
    data: { values: rows },
    mark: { type: 'line', point: false, interpolate: 'linear' },
    encoding: {
      x: { field: x, type: 'quantitative', title: 'step' },
      y: { field: y, type: 'quantitative', title: yTitle, scale: { zero: false, ...(opts.logY ? { type: 'log' } : {}) } },
      ...(opts.color ? { color: { field: opts.color, type: 'nominal', title: null } } : {}),
    },
    config: { font: 'sans-serif', view: { stroke: null } },
  } as TopLevelSpec;
}

function barSpec(title: string, rows: Row[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 320,
    height: 160,
    data: { values: rows },
    mark: 'bar',
    encoding: {
      x: { field: 'when', type: 'nominal', title: null, sort: ['before', 'after'] },
      y: { field: 'value', type: 'quantitative', title: null },
      color: { field: 'when', type: 'nominal', legend: null, sort: ['before', 'after'] },
      column: { field: 'metric', type: 'nominal', title: null },
    },
    config: { font: 'sans-serif', view: { stroke: null } },
  } as TopLevelSpec;
}

export interface ReportCharts {
  /** name → the SVG, and the number of points the chart's line draws (loss, learningRate, eval). */
  [name: string]: { svg: string; points: number };
}

export async function reportCharts(rec: RunRecord): Promise<ReportCharts> {
  const train = rec.logHistory.filter((e) => typeof e.loss === 'number' && Number.isFinite(e.loss) && e.trainLoss === undefined);
  const charts: ReportCharts = {};
  if (train.length) {
    charts.loss = { svg: await renderSvg(lineSpec('Training loss', train.map((e) => ({ step: e.step, loss: e.loss! })), 'step', 'loss', 'loss')), points: train.length };
    const lr = train.filter((e) => typeof e.learningRate === 'number');
    if (lr.length) charts.learningRate = { svg: await renderSvg(lineSpec('Learning rate', lr.map((e) => ({ step: e.step, lr: e.learningRate! })), 'step', 'lr', 'learning rate')), points: lr.length };
    const tps = train.filter((e) => typeof e.tokensPerSecond === 'number' && Number.isFinite(e.tokensPerSecond));
    if (tps.length) charts.throughput = { svg: await renderSvg(lineSpec('Throughput', tps.map((e) => ({ step: e.step, tps: e.tokensPerSecond! })), 'step', 'tps', 'tokens / s')), points: tps.length };
  }
  const evals: Row[] = [];
  for (const e of rec.logHistory) for (const [k, v] of Object.entries(e)) if (k.startsWith('eval_') && typeof v === 'number' && Number.isFinite(v) && !/runtime|per_second|PerSecond/.test(k)) evals.push({ step: e.step, metric: k, value: v });
  if (evals.length) charts.eval = { svg: await renderSvg(lineSpec('Evaluation during training', evals, 'step', 'value', 'value', { color: 'metric' })), points: evals.length };
  if (rec.before && rec.after) {
    const rows: Row[] = [];
    for (const s of rec.after) {
      const b = rec.before.find((x) => x.task === s.task);
      if (!b) continue;
      rows.push({ metric: `${s.task} ${s.metric}`, when: 'before', value: b.value }, { metric: `${s.task} ${s.metric}`, when: 'after', value: s.value });
    }
    if (rows.length) charts.beforeAfter = { svg: await renderSvg(barSpec('Held-out test split: base model vs adapter', rows)), points: rows.length };
  }
  return charts;
}

const fmt = (m: string, v: number) => (!Number.isFinite(v) ? '–' : m === 'perplexity' ? v.toFixed(2) : m === 'accuracy' || m === 'rougeL' || m === 'rouge1' || m === 'f1' ? `${(100 * v).toFixed(1)}` : v.toFixed(2));
const bytes = (b?: number) => (b === undefined ? '–' : b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`);

function scoreTable(before?: TaskScore[], after?: TaskScore[]): string {
  const tasks = (after ?? before ?? []).map((s) => s.task);
  if (!tasks.length) return '<p>No held-out evaluation in this run.</p>';
  const rows: string[] = [];
  for (const t of tasks) {
    const b = before?.find((x) => x.task === t);
    const a = after?.find((x) => x.task === t);
    for (const m of Object.keys((a ?? b)!.metrics)) {
      const bv = b?.metrics[m];
      const av = a?.metrics[m];
      rows.push(`<tr><td>${esc(t)}</td><td>${esc(m)}</td><td>${bv === undefined ? '–' : fmt(m, bv)}</td><td>${av === undefined ? '–' : fmt(m, av)}</td></tr>`);
    }
  }
  return `<table><thead><tr><th>task</th><th>metric</th><th>before (base model)</th><th>after (adapter)</th></tr></thead><tbody>${rows.join('')}</tbody></table><p class="note">accuracy, F1 and ROUGE in percent; BLEU and chrF on sacrebleu's 0–100 scale.</p>`;
}

function samplesTable(before?: TaskScore[], after?: TaskScore[]): string {
  const out: string[] = [];
  for (const a of after ?? before ?? []) {
    if (!a.samples.length) continue;
    const b = before?.find((x) => x.task === a.task);
    const rows = a.samples.map((s, i) => `<tr><td class="in">${esc(s.input)}</td><td>${esc(s.reference)}</td><td>${esc(b?.samples[i]?.prediction ?? '')}</td><td>${after ? esc(s.prediction) : ''}</td></tr>`);
    out.push(`<h3>${esc(a.task)}</h3><table class="samples"><thead><tr><th>input</th><th>reference</th><th>base model</th><th>adapter</th></tr></thead><tbody>${rows.join('')}</tbody></table>`);
  }
  return out.join('') || '<p>No samples.</p>';
}

/** The report as one HTML string. */
export async function renderReport(rec: RunRecord): Promise<{ html: string; charts: ReportCharts }> {
  const charts = await reportCharts(rec);
  const share = (100 * rec.trainableParams) / Math.max(1, rec.allParams - rec.trainableParams);
  const tm = rec.trainMetrics ?? {};
  const fig = (name: string) => (charts[name] ? `<figure data-chart="${name}" data-points="${charts[name].points}">${charts[name].svg}</figure>` : '');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>peft report: ${esc(rec.name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#f4f4f4}.samples td.in{max-width:420px;font-size:.8rem;color:#444}
.charts{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}
pre{background:#f7f7f7;padding:.75rem;overflow:auto;font-size:.85rem}.note{color:#666;font-size:.85rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}
</style></head><body>
<h1>peft report: ${esc(rec.name)}</h1>
<dl>
<dt>model</dt><dd>${esc(rec.model)}</dd>
<dt>method</dt><dd>${esc(rec.method)}</dd>
<dt>trainable parameters</dt><dd>${rec.trainableParams.toLocaleString('en-US')} of ${rec.allParams.toLocaleString('en-US')} (${share.toFixed(3)}% of the base model)</dd>
<dt>backend</dt><dd>${esc(rec.backend)}</dd>
<dt>data</dt><dd>${rec.data.train} train records (${rec.data.trainExamples} examples), ${rec.data.validation} validation, ${rec.data.test} test</dd>
<dt>steps</dt><dd>${rec.logHistory.length ? rec.logHistory[rec.logHistory.length - 1].step : 0}</dd>
<dt>started / finished</dt><dd>${esc(rec.startedAt)} / ${esc(rec.finishedAt ?? 'not finished')}</dd>
${rec.adapterDir ? `<dt>adapter</dt><dd>${esc(rec.adapterDir)}</dd>` : ''}
</dl>
<h2>Held-out metrics, before and after</h2>
${scoreTable(rec.before, rec.after)}
<div class="charts">${fig('beforeAfter')}</div>
<h2>Training</h2>
<div class="charts">${fig('loss')}${fig('learningRate')}${fig('eval')}${fig('throughput')}</div>
<h2>Throughput and memory</h2>
<table><tbody>
<tr><td>training time</td><td>${tm.trainRuntime !== undefined ? `${tm.trainRuntime.toFixed(1)} s` : '–'}</td></tr>
<tr><td>tokens / s</td><td>${tm.trainTokensPerSecond !== undefined ? tm.trainTokensPerSecond.toFixed(0) : '–'}</td></tr>
<tr><td>samples / s</td><td>${tm.trainSamplesPerSecond !== undefined ? tm.trainSamplesPerSecond.toFixed(2) : '–'}</td></tr>
<tr><td>final training loss (mean over the run)</td><td>${tm.trainLoss !== undefined ? tm.trainLoss.toFixed(4) : '–'}</td></tr>
<tr><td>peak process memory (RSS)</td><td>${bytes(rec.peakRssBytes)}</td></tr>
<tr><td>peak GPU memory</td><td>${tm.trainGpuPeakBytes !== undefined ? bytes(tm.trainGpuPeakBytes) : 'not on a GPU backend'}</td></tr>
</tbody></table>
<h2>Sample predictions</h2>
${samplesTable(rec.before, rec.after)}
<h2>Config</h2>
<pre>${esc(toYaml(rec.config))}</pre>
<h3>adapter_config.json</h3>
<pre>${esc(JSON.stringify(rec.peftConfig, null, 2))}</pre>
<p class="note">Written by @peftjs/cli; charts rendered to SVG by Vega-Lite and Vega without a browser; no scripts or external files.</p>
</body></html>
`;
  return { html, charts };
}

/** `peft report RUN_DIR [--out FILE]`: writes the report (default RUN_DIR/report.html) and returns its path. */
export async function writeReport(runDir: string, out?: string): Promise<{ path: string; charts: ReportCharts }> {
  const rec = await readRunRecord(runDir);
  const { html, charts } = await renderReport(rec);
  const path = out ?? join(runDir, REPORT_FILE);
  await writeFile(path, html);
  return { path, charts };
}
