import { createRequire } from 'node:module';
import type { Client, ClientConfig, QueryResult } from 'pg';

export interface Target {
  /** A host name (verified against the certificate) or a Unix socket directory. */
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  ca?: string; // PEM; absent only for Unix sockets
  applicationName?: string;
}

let loading: Promise<typeof import('pg').default> | undefined;

/** Loads pg; on Node 20 it is lent a `navigator` so that its Cloudflare probe does not load undici. */
function driver(): Promise<typeof import('pg').default> {
  loading ??= (async () => {
    const g = globalThis as { navigator?: unknown };
    const lend = g.navigator === undefined;
    if (lend)
      Object.defineProperty(g, 'navigator', {
        value: { userAgent: `Node.js/${process.versions.node.split('.')[0]}` },
        configurable: true,
        writable: true,
      });
    try {
      return (await import('pg')).default;
    } finally {
      if (lend) delete g.navigator;
    }
  })();
  return loading;
}

/** Opens a connection: verify-full TLS over TCP, none on a Unix socket; the password stays in memory. */
export async function connect(t: Target, timeoutMs = 5000): Promise<Client> {
  const pg = await driver();
  const socket = t.host.startsWith('/');
  const cfg: ClientConfig = {
    host: t.host,
    port: t.port,
    user: t.user,
    password: t.password,
    database: t.database,
    application_name: t.applicationName ?? 'pg-deploy',
    connectionTimeoutMillis: timeoutMs,
    // pg sets SNI only for names: without `host` an IP target would be checked as 'localhost'.
    ssl: socket ? false : { ca: t.ca, rejectUnauthorized: true, host: t.host },
  };
  const client = new pg.Client(cfg);
  client.on('error', () => {}); // a server that goes away mid-session surfaces in the next query, not as a crash
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => {}); // never connected: the connect error is the one to report
    throw e;
  }
  return client;
}

export async function withClient<T>(t: Target, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = await connect(t);
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {}); // a connection that died has nothing left to close
  }
}

type Escapes = Pick<typeof import('pg'), 'escapeIdentifier' | 'escapeLiteral'>;
let escapes: Escapes | undefined;
// pg's utils alone: its entry would load the driver (see driver()) for a string function.
const pgEscapes = (): Escapes => (escapes ??= createRequire(import.meta.url)('pg/lib/utils.js') as Escapes);

/** Quotes an identifier for SQL text (identifiers cannot be bound as parameters). */
export const ident = (name: string): string => pgEscapes().escapeIdentifier(name);

/** Quotes a string literal for SQL text where parameters cannot go (DDL, DO blocks). */
export const literal = (s: string): string => pgEscapes().escapeLiteral(s);

/** The result of a multi-statement query's last statement. */
export function lastResult<R = QueryResult>(res: R | R[]): R {
  return Array.isArray(res) ? res[res.length - 1] : res;
}

/** The SQLSTATE of the server's answer to a query; undefined for anything else (a lost connection, a bug). */
export function sqlState(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}
