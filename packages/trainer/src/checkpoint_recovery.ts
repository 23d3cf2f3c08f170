import { type FileSystem, joinPath, recoverFolder } from '@peftjs/core';

/** saveCheckpoint's temp folders: `.tmp-checkpoint-<step>-<id>`, and `<that>-old` while a checkpoint is replaced. */
const TMP_CHECKPOINT_RE = /^\.tmp-(checkpoint-\d+)-[a-z0-9]+(-old)?$/;

/**
 * Leftovers of a save or checkpoint that a killed process left in `outputDir`, handled at the next
 * train start: a checkpoint caught between its two renames (the old one moved aside, the new one not
 * yet in place) is put back (the complete new one if it is there, else the old one); every other
 * `.tmp-checkpoint-*` folder is removed, as are writeFileAtomic temp files and interrupted adapter
 * commits (io/commit.ts). Only names peftjs makes are touched.
 */
export async function recoverCheckpoints(fs: FileSystem, outputDir: string, trainerStateFile: string): Promise<void> {
  if (!(await fs.exists(outputDir))) return;
  const names = await fs.readdir(outputDir);
  for (const old of names) {
    const m = TMP_CHECKPOINT_RE.exec(old);
    if (!m || !m[2]) continue;
    const final = joinPath(outputDir, m[1]);
    const tmp = old.slice(0, -'-old'.length);
    if (!(await fs.exists(final))) {
      const fresh = joinPath(outputDir, tmp);
      if (names.includes(tmp) && (await fs.exists(joinPath(fresh, trainerStateFile)))) await fs.rename(fresh, final);
      else await fs.rename(joinPath(outputDir, old), final);
    }
  }
  for (const name of await fs.readdir(outputDir)) if (TMP_CHECKPOINT_RE.test(name)) await fs.remove(joinPath(outputDir, name));
  await recoverFolder(fs, outputDir);
}
