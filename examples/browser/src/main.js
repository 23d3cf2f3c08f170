// The page: starts the training Worker, draws the loss as it comes, shows a generation, offers the
// adapter as a download. URL parameters: steps (30), seed (0), backend (a comma list, e.g. wasm),
// saveSteps (10), stopAfter (stop at that step), resume (1: from the last checkpoint in OPFS), autorun (1).
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const losses = [];
globalThis.exampleLosses = losses; // for the example's test

function drawChart() {
  const canvas = $('loss');
  const g = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  const pad = { l: 44, r: 12, t: 12, b: 24 };
  g.fillStyle = '#fff';
  g.fillRect(0, 0, w, h);
  g.strokeStyle = '#999';
  g.lineWidth = 1;
  g.strokeRect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
  canvas.dataset.points = String(losses.length);
  if (!losses.length) return;
  const lo = Math.min(...losses.map((p) => p.loss));
  const hi = Math.max(...losses.map((p) => p.loss));
  const span = hi - lo || 1;
  const maxStep = Math.max(Number($('steps').value) || 1, losses[losses.length - 1].step);
  const x = (s) => pad.l + ((s - 1) / Math.max(1, maxStep - 1)) * (w - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (v - lo) / span) * (h - pad.t - pad.b);
  g.fillStyle = '#333';
  g.font = '11px sans-serif';
  g.fillText(hi.toFixed(2), 4, pad.t + 8);
  g.fillText(lo.toFixed(2), 4, h - pad.b);
  g.fillText(`step ${losses[losses.length - 1].step}`, w - pad.r - 52, h - 6);
  g.strokeStyle = '#d9480f';
  g.lineWidth = 2;
  g.beginPath();
  losses.forEach((p, i) => (i ? g.lineTo(x(p.step), y(p.loss)) : g.moveTo(x(p.step), y(p.loss))));
  g.stroke();
  g.fillStyle = '#d9480f';
  for (const p of losses) g.fillRect(x(p.step) - 2, y(p.loss) - 2, 4, 4);
}

function start(resume = params.get('resume') === '1') {
  losses.length = 0;
  drawChart();
  $('train').disabled = $('resume').disabled = true;
  $('download').disabled = true;
  document.body.dataset.state = 'training';
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  const status = (s) => ($('status').textContent = s);
  status('loading the model…');
  worker.onmessage = ({ data: m }) => {
    if (m.type === 'backend') $('backend').textContent = `${m.backend}: ${m.reason}`;
    else if (m.type === 'storage') status(`${m.resume ? 'resuming' : 'training'} (checkpoints and metrics in ${m.kind})…`);
    else if (m.type === 'log') {
      losses.push({ step: m.step, loss: m.loss });
      $('last').textContent = `step ${m.step}: loss ${m.loss.toFixed(4)}`;
      drawChart();
    } else if (m.type === 'trained') status(`trained ${m.steps} steps in ${m.seconds.toFixed(1)} s; run folder: ${m.files.join(', ')}`);
    else if (m.type === 'generated') $('generated').textContent = `${m.prompt}${m.text}   (the address was given by ${m.expected})`;
    else if (m.type === 'adapter') {
      const blob = new Blob([m.bytes], { type: 'application/zip' });
      const url = URL.createObjectURL(blob);
      const a = $('download');
      a.disabled = false;
      a.onclick = () => Object.assign(document.createElement('a'), { href: url, download: 'tiny-llama-sotu-lora.zip' }).click();
      $('train').disabled = $('resume').disabled = false;
      $('size').textContent = `${(blob.size / 1024).toFixed(0)} KB: adapter_config.json + adapter_model.safetensors (HF PEFT's folder, zipped)`;
      document.body.dataset.state = 'done';
      worker.terminate();
    } else if (m.type === 'error') {
      status(`error: ${m.message}`);
      document.body.dataset.state = 'error';
      $('train').disabled = $('resume').disabled = false;
      worker.terminate();
    }
  };
  worker.onerror = (e) => {
    status(`worker error: ${e.message}`);
    document.body.dataset.state = 'error';
  };
  const backend = params.get('backend');
  worker.postMessage({
    type: 'train',
    steps: Number($('steps').value),
    seed: Number(params.get('seed') ?? 0),
    saveSteps: Number(params.get('saveSteps') ?? 10),
    stopAfter: Number(params.get('stopAfter') ?? 0),
    resume,
    // WebGPU where the adapter is hardware, else wasm (initBackend passes over software adapters)
    prefer: backend ? backend.split(',') : ['webgpu', 'wasm', 'cpu'],
    modelUrl: new URL('./model/', location.href).href,
    taskUrl: new URL('./task.json', location.href).href,
  });
}

$('steps').value = params.get('steps') ?? '30';
$('train').onclick = () => start(false);
$('resume').onclick = () => start(true);
drawChart();
document.body.dataset.state = 'ready';
if (params.get('autorun') === '1') start();
