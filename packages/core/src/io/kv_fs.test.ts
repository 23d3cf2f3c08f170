import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeFileSystem } from './fs';
import { fsScenario as scenario } from '../../../../tools/testing/fs_scenario';
import { memoryFileSystem } from './kv_fs';
import { commitFiles, committedView } from './commit';

const tmp = mkdtempSync(join(tmpdir(), 'peftjs-kvfs-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('memoryFileSystem', () => {
  it("behaves as Node's fs on one scenario of every operation", async () => {
    const onDisk = await scenario(nodeFileSystem, join(tmp, 'disk'));
    const inMemory = await scenario(memoryFileSystem(), 'mem');
    expect(inMemory).toEqual(onDisk);
    // and the scenario is not vacuous
    expect(onDisk).toContain('FILE_NOT_FOUND');
    expect(onDisk).toContain('LIMIT_EXCEEDED');
    expect(onDisk).toContain('INVALID_FILE');
  });

  it('names the path in its errors', async () => {
    const fs = memoryFileSystem();
    await expect(fs.readFile('out/adapter_config.json')).rejects.toThrow(/file not found: out\/adapter_config\.json/);
    await expect(fs.writeFileAtomic('out/x.json', '{}')).rejects.toThrow(/out\/x\.json: folder out does not exist/);
    await expect(fs.readFile('../etc/passwd')).rejects.toThrow(/"\.\.\/etc\/passwd": "\.\." is not supported/);
  });

  it('is seeded with files and shows what was written', async () => {
    const fs = memoryFileSystem({ 'm/config.json': '{"a":1}', 'm/w.bin': new Uint8Array([9]) });
    expect(await fs.readdir('m')).toEqual(['config.json', 'w.bin']);
    await fs.writeFileAtomic('m/new.txt', 'n');
    expect([...fs.snapshot().keys()]).toEqual(['m/config.json', 'm/new.txt', 'm/w.bin']);
  });

  it("carries core's all-or-nothing commit (journal, staging folder, renames)", async () => {
    const fs = memoryFileSystem();
    await commitFiles(fs, 'out', { 'adapter_config.json': '{"v":1}', 'adapter_model.safetensors': new Uint8Array([1]) });
    await commitFiles(fs, 'out', { 'adapter_config.json': '{"v":2}' }, ['adapter_model.safetensors']);
    expect(await fs.readdir('out')).toEqual(['adapter_config.json']); // no journal, no staging left
    const view = await committedView(fs, 'out');
    expect(new TextDecoder().decode(await fs.readFile((await view.path('adapter_config.json'))!))).toBe('{"v":2}');
    expect(await view.path('adapter_model.safetensors')).toBeNull();
  });
});
