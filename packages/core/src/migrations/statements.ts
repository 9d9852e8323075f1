// SQL text as PostgreSQL's lexer sees it: statements, transaction control, error positions.

export interface Statement {
  offset: number; // where `text` begins (JS string indexes, as every offset here)
  start: number; // its first significant character
  text: string;
}

/**
 * Splits SQL at semicolons outside quotes, dollar quotes, quoted identifiers and comments; undefined
 * where that is not certain (`BEGIN ATOMIC` bodies hold semicolons), so callers use the whole file.
 */
export function splitStatements(sql: string): Statement[] | undefined {
  const out: Statement[] = [];
  let begin = 0; // where the current statement's text starts
  let first = -1; // its first significant character
  let i = 0;
  const n = sql.length;
  const identChar = (ch: string | undefined) => ch !== undefined && /[A-Za-z0-9_$\u0080-\uffff]/.test(ch);
  const mark = () => {
    if (first < 0) first = i;
  };
  while (i < n) {
    const ch = sql[i];
    const next = sql[i + 1];
    if (ch === '-' && next === '-') {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? n : nl + 1;
    } else if (ch === '/' && next === '*') {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          depth--;
          i += 2;
        } else i++;
      }
    } else if (ch === "'") {
      mark();
      const escapes = /[eE]/.test(sql[i - 1] ?? '') && !identChar(sql[i - 2]);
      i++;
      while (i < n) {
        if (escapes && sql[i] === '\\') i += 2;
        else if (sql[i] === "'" && sql[i + 1] === "'") i += 2;
        else if (sql[i] === "'") {
          i++;
          break;
        } else i++;
      }
    } else if (ch === '"') {
      mark();
      i++;
      while (i < n) {
        if (sql[i] === '"' && sql[i + 1] === '"') i += 2;
        else if (sql[i] === '"') {
          i++;
          break;
        } else i++;
      }
    } else if (ch === '$' && !identChar(sql[i - 1])) {
      mark();
      const tag = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(i, i + 64));
      if (tag) {
        const end = sql.indexOf(tag[0], i + tag[0].length);
        i = end < 0 ? n : end + tag[0].length;
      } else i++;
    } else if (ch === ';') {
      if (first >= 0) out.push({ offset: begin, start: first, text: sql.slice(begin, i + 1) });
      begin = i + 1;
      first = -1;
      i++;
    } else if (/\s/.test(ch)) {
      i++;
    } else {
      mark();
      if (/[Bb]/.test(ch) && !identChar(sql[i - 1]) && /^begin\s+atomic\b/i.test(sql.slice(i, i + 32))) return undefined;
      i++;
    }
  }
  if (first >= 0) out.push({ offset: begin, start: first, text: sql.slice(begin) });
  return out;
}

/** SQL without comments, quoted text and dollar-quoted bodies: keywords and names. */
export function codeOnly(sql: string): string {
  return sql.replace(/--[^\n]*|\/\*[\s\S]*?\*\/|'(?:[^']|'')*'|"(?:[^"]|"")*"|(\$[A-Za-z_]*\$)[\s\S]*?\1/g, ' ');
}

/** Whether a file runs outside a transaction, as golang-migrate runs every file (refused in one, or its own BEGIN/COMMIT). */
export function needsOwnTransaction(sql: string): boolean {
  const code = codeOnly(sql).replace(/\s+/g, ' ');
  if (/\bCONCURRENTLY\b|\bVACUUM\b|\b(CREATE|DROP)\s+(DATABASE|TABLESPACE)\b|\bALTER\s+SYSTEM\b/i.test(code)) return true;
  if (/(^|;)\s*(BEGIN(?!\s+ATOMIC)|START\s+TRANSACTION|COMMIT|ROLLBACK|ABORT)\b/i.test(code)) return true;
  // END closes a transaction, unless it closes a SQL-standard function body.
  return !/\bBEGIN\s+ATOMIC\b/i.test(code) && /(^|;)\s*END\s*(;|$)/i.test(code);
}

export function mustBeAlone(sql: string, code: string): string | undefined {
  const m =
    /\b(CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY|DROP\s+INDEX\s+CONCURRENTLY|REINDEX\b[^;]*\bCONCURRENTLY|VACUUM|(?:CREATE|DROP)\s+(?:DATABASE|TABLESPACE)|ALTER\s+SYSTEM)\b/i.exec(
      code,
    );
  if (!m) return undefined;
  if (/(^|;)\s*(BEGIN|COMMIT|START\s+TRANSACTION)\b/i.test(code)) return undefined; // the file manages its transactions itself
  const stmts = splitStatements(sql);
  return stmts && stmts.length > 1 ? m[1].replace(/\s+/g, ' ').toUpperCase() : undefined;
}

/** JS string index of a PostgreSQL error position (1-based, counted in characters, not UTF-16 units). */
export function indexOfPosition(sql: string, position: number): number {
  let index = 0;
  for (let chars = 1; chars < position && index < sql.length; chars++) index += sql.codePointAt(index)! > 0xffff ? 2 : 1;
  return index;
}

export function lineAt(sql: string, index: number): number {
  let line = 1;
  for (let i = 0; i < index && i < sql.length; i++) if (sql.charCodeAt(i) === 10) line++;
  return line;
}

export function lineOf(sql: string, position: number): number {
  return lineAt(sql, indexOfPosition(sql, position));
}
