import { UserError } from '../errors.ts';

/** How many daily, weekly and monthly backups to keep (DB_BACKUP_KEEP=7/4/6). */
export interface BackupKeep {
  daily: number;
  weekly: number;
  monthly: number;
}

export const DEFAULT_KEEP: BackupKeep = { daily: 7, weekly: 4, monthly: 6 };

export function parseKeep(raw: string | undefined): BackupKeep {
  if (raw === undefined || raw.trim() === '') return { ...DEFAULT_KEEP };
  const m = /^\s*(\d{1,4})\s*\/\s*(\d{1,4})\s*\/\s*(\d{1,4})\s*$/.exec(raw);
  if (!m) {
    throw new UserError(
      `DB_BACKUP_KEEP=${raw} is not daily/weekly/monthly counts`,
      'write three whole numbers, e.g. DB_BACKUP_KEEP=7/4/6 (the default)',
    );
  }
  const [daily, weekly, monthly] = m.slice(1).map(Number);
  if (daily < 1)
    throw new UserError(
      `DB_BACKUP_KEEP=${raw} keeps no daily backup, so a new backup would be removed at once`,
      'keep at least one daily backup, e.g. DB_BACKUP_KEEP=1/0/0',
    );
  return { daily, weekly, monthly };
}

export interface Dated {
  name: string;
  createdAt: Date;
  verified: boolean;
}

const day = (d: Date) => d.toISOString().slice(0, 10);
const month = (d: Date) => d.toISOString().slice(0, 7);

/** The ISO 8601 week (Monday first, in UTC) a moment falls in, as `YYYY-Www`. */
export function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const dow = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - dow); // the Thursday of this week decides the year
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((t.getTime() - yearStart) / 86_400_000 + 1) / 7);
  return `${t.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}

/** The newest backup of each of the last N days (weeks, months) that have one, as restic's --keep-*, plus the newest verified. */
export function retained<T extends Dated>(backups: readonly T[], keep: BackupKeep): Set<T> {
  const newestFirst = [...backups].sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime());
  const keepSet = new Set<T>();
  for (const [count, period] of [
    [keep.daily, day],
    [keep.weekly, isoWeek],
    [keep.monthly, month],
  ] as const) {
    const seen = new Set<string>();
    for (const b of newestFirst) {
      if (seen.size >= count) break;
      const key = period(b.createdAt);
      if (seen.has(key)) continue;
      seen.add(key);
      keepSet.add(b);
    }
  }
  const newestVerified = newestFirst.find((b) => b.verified);
  if (newestVerified) keepSet.add(newestVerified);
  return keepSet;
}
