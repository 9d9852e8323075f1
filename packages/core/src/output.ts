import { redact } from './redact.ts';

export interface Progress {
  /** Whether ticks reach the screen (a terminal, not quiet): measuring for a hidden spinner is waste. */
  readonly shown: boolean;
  update(done: number, total: number, detail?: string): void;
  end(): void;
}

/** Everything a task says: diagnostics to stderr, results to stdout, all redacted; spinners and colour only on a terminal. */
export interface Log {
  step(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  /** The task's result: JSON on stdout with --json, else the text. */
  result(text: string, data?: unknown): void;
  spinner(label: string): Progress;
  secret(value: string): void; // redacted from everything printed from now on
}

export interface Sink {
  out(s: string): void;
  err(s: string): void;
  tty: boolean;
  color: boolean;
}

export function processSink(env: Record<string, string | undefined>): Sink {
  const tty = Boolean(process.stderr.isTTY) && env.CI !== 'true';
  return {
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
    tty,
    color: tty && !('NO_COLOR' in env) && env.TERM !== 'dumb',
  };
}

export function createLog(sink: Sink, opts: { json?: boolean; quiet?: boolean } = {}): Log {
  const secrets: string[] = [];
  const clean = (s: string) => redact(s, secrets);
  const paint = (code: string, s: string) => (sink.color ? `\x1b[${code}m${s}\x1b[0m` : s);
  let live = false; // a spinner line is on screen and must be cleared before other output
  const clearLive = () => {
    if (live) sink.err('\r\x1b[2K');
    live = false;
  };
  const line = (s: string) => {
    clearLive();
    sink.err(clean(s) + '\n');
  };
  return {
    step: (msg) => !opts.quiet && line(paint('36', '-->') + ' ' + msg),
    info: (msg) => !opts.quiet && line(msg),
    warn: (msg) => line(paint('33', 'warning:') + ' ' + msg),
    result: (text, data) => {
      clearLive();
      if (opts.json) sink.out(clean(JSON.stringify(data ?? { message: text })) + '\n');
      else if (text) sink.out(clean(text) + '\n');
    },
    secret: (v) => {
      if (v && !secrets.includes(v)) secrets.push(v);
    },
    spinner: (label) => {
      const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
      let i = 0;
      let lastPlain = -1;
      return {
        shown: sink.tty && !opts.quiet,
        update(done, total, detail) {
          if (opts.quiet) return;
          const count = total > 0 ? ` ${done}/${total}` : '';
          if (sink.tty) {
            sink.err(`\r\x1b[2K${paint('36', frames[i++ % frames.length])} ${label}${count}${detail ? ` ${detail}` : ''}`);
            live = true;
          } else if (total > 0 && done !== lastPlain && detail) {
            // One plain line per item when piped; waiting loops (total 0) print nothing per tick.
            lastPlain = done;
            sink.err(clean(`${label}${count} ${detail}`) + '\n');
          }
        },
        end: clearLive,
      };
    },
  };
}
