/**
 * Asks Dawn (the `webgpu` npm package) for its adapter in a child process, so that initBackend can pass
 * over WebGPU in Node without loading Dawn: once loaded, Dawn writes its own warnings to the process's
 * stderr (two lines about dynamic-buffer limits on every adapter request), and a user who did not get
 * WebGPU should not see them. Node only; nothing here is reached in a browser.
 */
const dynamicImport = (name: string): Promise<any> => import(/* @vite-ignore */ name);

/** The adapter's fields summarizeAdapter reads, as the child saw them. */
export interface ProbedAdapter {
  info: { vendor: string; architecture: string; device: string; description: string };
  isFallbackAdapter: boolean;
}

export type DawnProbe = { adapter: ProbedAdapter } | { adapter: undefined; reason: string };

// The child: load Dawn, request the adapter initBackend would, print what it is as one JSON line.
const CHILD = `
(async () => {
  const { create } = await import(process.argv[1]);
  const a = await create([]).requestAdapter({ powerPreference: 'high-performance' });
  const i = (a && a.info) || {};
  const out = a ? { info: { vendor: String(i.vendor || ''), architecture: String(i.architecture || ''), device: String(i.device || ''), description: String(i.description || '') }, isFallbackAdapter: a.isFallbackAdapter === true } : null;
  process.stdout.write('\\n' + JSON.stringify({ adapter: out }) + '\\n');
  process.exit(0);
})().catch((e) => { process.stdout.write('\\n' + JSON.stringify({ error: String((e && e.message) || e).split('\\n')[0] }) + '\\n'); process.exit(0); });
`;

/** Where this module is, to resolve `webgpu` as an import from here would (ESM build, or CJS). */
function here(): string | undefined {
  try {
    const url = import.meta.url;
    if (url) return url;
  } catch {
    /* CJS */
  }
  return typeof __filename === 'string' ? __filename : undefined;
}

/**
 * The Dawn adapter, asked for in a child process (its stderr discarded); undefined when the child could
 * not be run at all (initBackend then asks in-process, as before).
 */
export async function probeDawnAdapter(timeoutMs = 30_000): Promise<DawnProbe | undefined> {
  let entry: string;
  try {
    const { createRequire } = await dynamicImport('node:module');
    const { pathToFileURL } = await dynamicImport('node:url');
    const base = here() ?? `${process.cwd()}/`;
    entry = pathToFileURL(createRequire(base).resolve('webgpu')).href;
  } catch {
    return { adapter: undefined, reason: 'the `webgpu` package is not installed (an optional peer of @peftjs/core: `npm install webgpu` for WebGPU in Node)' };
  }
  let spawn: typeof import('node:child_process').spawn;
  try {
    ({ spawn } = await dynamicImport('node:child_process'));
  } catch {
    return undefined;
  }
  return new Promise((resolve) => {
    let out = '';
    let done = false;
    const finish = (v: DawnProbe | undefined) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(v);
    };
    const child = spawn(process.execPath, ['-e', CHILD, entry], { stdio: ['ignore', 'pipe', 'ignore'], windowsHide: true });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish({ adapter: undefined, reason: `Dawn did not answer within ${timeoutMs} ms (a GPU driver hung?)` });
    }, timeoutMs);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => (out += d));
    child.on('error', () => finish(undefined));
    child.on('close', (code: number | null) => {
      const line = out.trim().split('\n').pop() ?? '';
      try {
        const r = JSON.parse(line);
        if (r.error) finish({ adapter: undefined, reason: `the \`webgpu\` package failed to start (${r.error})` });
        else if (!r.adapter) finish({ adapter: undefined, reason: 'WebGPU found no adapter (no Vulkan/Metal/D3D12 driver?)' });
        else finish({ adapter: r.adapter as ProbedAdapter });
      } catch {
        finish({ adapter: undefined, reason: `Dawn's probe exited (code ${code}) without an answer (the \`webgpu\` package crashed?)` });
      }
    });
  });
}
