import type { Client, ClientConfig, QueryResult } from 'pg';

export interface Target {
  /** A host name (verified against the certificate) or a Unix socket directory. */
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** PEM of the CA to verify the server against; absent only for Unix sockets. */
  ca?: string;
  applicationName?: string;
}

let loading: Promise<typeof import('pg').default> | undefined;

/**
 * Loads pg. When loaded, pg asks whether it runs in a Cloudflare Worker: where `navigator` is
 * missing (Node 20) it finds out by constructing a fetch Response, which loads undici, about 35 ms
 * of every task that connects (seen with --cpu-prof). Node 21+ defines `navigator` and pg reads its
 * userAgent instead; on Node 20 pg is shown the same for the length of its load, and nothing after.
 */
function driver(): Promise<typeof import('pg').default> {
  loading ??= (async () => {
    const g = globalThis as { navigator?: unknown };
    const lend = g.navigator === undefined;
    if (lend) Object.defineProperty(g, 'navigator', { value: { userAgent: `Node.js/${process.versions.node.split('.')[0]}` }, configurable: true, writable: true });
    try {
      return (await import('pg')).default;
    } finally {
      if (lend) delete g.navigator;
    }
  })();
  return loading;
}

/**
 * Opens a connection: TLS with full verification (CA and host name, libpq's verify-full) for TCP,
 * no TLS on a Unix socket. The password goes to the driver in memory, never into a URL or argv.
 */
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
    // `host` is what Node checks the certificate against; pg sets SNI only for names, and an IP
    // target would otherwise be checked as 'localhost'.
    ssl: socket ? false : { ca: t.ca, rejectUnauthorized: true, host: t.host },
  };
  const client = new pg.Client(cfg);
  client.on('error', () => {}); // a server that goes away mid-session surfaces in the next query, not as a crash
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => {});
    throw e;
  }
  return client;
}

/** Runs `fn` with a connection and always closes it. */
export async function withClient<T>(t: Target, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = await connect(t);
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

/** Quotes an identifier for SQL text (identifiers cannot be bound as parameters). */
export function ident(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"';
}

/**
 * Quotes a string literal for SQL text sent where parameters cannot go (DDL, psql on stdin).
 * standard_conforming_strings is on (the default since 9.1), so a backslash is an ordinary character.
 */
export function literal(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** The result of the last statement of a multi-statement query (undefined for an empty one). */
export function lastResult<R = QueryResult>(res: R | R[]): R {
  return Array.isArray(res) ? res[res.length - 1] : res;
}
