import path from 'node:path';
import { ensureTls, inspectTls, requiredNames } from '@dbkit/core/tls';
import { selectRuntime } from '@dbkit/core/runtime/select';
import type { Task } from './task.ts';

export const task: Task = {
  name: 'db:secure',
  summary: 'Make the local CA and the server certificate (EC P-256, subjectAltNames); keeps valid ones.',
  flags: {
    force: { type: 'boolean', description: 'make a new CA and server certificate even if the current ones are valid' },
    renew: { type: 'boolean', description: 'issue a new server certificate from the same CA' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  async run(ctx, { flags }) {
    const names = requiredNames(ctx.cfg.tlsHostnames);
    const r = await ensureTls(ctx, {
      sslDir: ctx.cfg.sslDir,
      names,
      days: ctx.cfg.tlsDays,
      forceCa: Boolean(flags.force),
      forceServer: Boolean(flags.renew),
    });
    const st = await inspectTls(ctx, ctx.cfg.sslDir, names);
    // A running server gets the new certificate now, by reload: open sessions survive.
    let reloaded = false;
    if (r.madeServer) {
      const rt = await selectRuntime(ctx);
      if (await rt.running()) {
        await rt.reloadTls();
        reloaded = true;
      }
    }
    const where = path.relative(ctx.cfg.root, ctx.cfg.sslDir) || ctx.cfg.sslDir;
    const what = r.madeCa
      ? 'made a new CA and server certificate'
      : r.madeServer
        ? 'issued a new server certificate from the existing CA'
        : 'certificates are valid; kept them';
    ctx.log.result(
      `${what} in ${where} (covers ${names.join(', ')}; expires ${st.notAfter?.toISOString().slice(0, 10)})${reloaded ? '; the running server reloaded it' : ''}`,
      { madeCa: r.madeCa, madeServer: r.madeServer, reloaded, names, notAfter: st.notAfter?.toISOString() },
    );
  },
};
