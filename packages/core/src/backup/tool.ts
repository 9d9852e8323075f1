import { CommandError, type Failure } from '../errors.ts';
import type { RunResult } from '../exec.ts';
import type { Runtime } from '../runtime/runtime.ts';
import type { PgTool, PgToolIo } from '../runtime/tools.ts';

/** A client tool run through the runtime, failing as exec's `failure` does: CommandError, `message: last stderr line`, hint. */
export async function runTool(
  rt: Pick<Runtime, 'pgTool'>,
  tool: PgTool,
  args: readonly string[],
  io: PgToolIo,
  failure: Failure | ((r: RunResult) => Failure),
): Promise<RunResult> {
  const r = await rt.pgTool(tool, args, io);
  if (r.code !== 0) throw new CommandError(tool, args, r.code, r.stderr, typeof failure === 'function' ? failure(r) : failure);
  return r;
}

export function dumpHint(stderr: string): string {
  if (/password authentication failed/i.test(stderr)) {
    return 'the superuser password in database/infra/secrets/postgres_password does not match the server; put the right file back';
  }
  if (/No space left on device/i.test(stderr)) return 'free disk space where DB_BACKUP_DIR points, or point it elsewhere';
  if (/could not connect|No such file or directory|Connection refused|is the server running/i.test(stderr))
    return 'is PostgreSQL running? pnpm db:up';
  return 'see the message above; pnpm db:logs shows the server side';
}

/** What a failed pg_dump or pg_dumpall says: `<what> failed (exit N): <last line>`, and the fix. */
export const dumpFailure =
  (what: string) =>
  (r: RunResult): Failure => ({ message: `${what} failed (exit ${r.code})`, hint: dumpHint(r.stderr) });
