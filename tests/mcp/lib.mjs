// lib.mjs - helpers for the MCP client tests: start vramd (host backend, free port), checks that count failures.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const source = process.env.VRAM_SOURCE_DIR || resolve(here, '..', '..');
export const VRAMD = resolve(process.env.VRAMD || join(source, 'build', 'vramd'));
export const VRAMCTL = resolve(process.env.VRAMCTL || join(source, 'build', 'vramctl'));

let failures = 0;
export function check(cond, what, got) {
  if (cond) return true;
  failures++;
  console.log(`FAIL ${what}${got === undefined ? '' : `\n     got: ${JSON.stringify(got).slice(0, 500)}`}`);
  return false;
}
export function eq(got, want, what) {
  return check(JSON.stringify(got) === JSON.stringify(want), `${what}: expected ${JSON.stringify(want)}`, got);
}
export function finish() {
  if (failures) {
    console.log(`${failures} check(s) failed`);
    process.exit(1);
  }
  console.log('ok');
  process.exit(0);
}

// The environment of a child: no VRAM_* settings of the developer leak in.
export function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('VRAM_') && k !== 'GPU_IDLE_TIMEOUT') env[k] = v;
  // no test joins or listens on the machine's node socket unless it names one
  return { ...env, VRAM_LOG_LEVEL: 'info', VRAM_NODE_SOCKET: process.env.VRAM_NODE_SOCKET || 'off', ...extra };
}

// Starts vramd on a free port; resolves to { url, port, proc, log, stop() }.
export function startVramd(models, extraArgs = [], env = {}) {
  // no node socket unless the test names one (cleanEnv drops VRAM_NODE_SOCKET=off)
  const node = extraArgs.includes('--node-socket') ? [] : ['--node-socket', 'off'];
  const args = ['--backend', 'host', '--port', '0', ...node, ...extraArgs];
  for (const m of models) args.push('--model', m);
  const cwd = mkdtempSync(join(tmpdir(), 'vramd-mcp-'));
  const proc = spawn(VRAMD, args, { cwd, env: cleanEnv({ VRAM_HOST_MEMORY: '256M', ...env }),
                                    stdio: ['ignore', 'ignore', 'pipe'] });
  const log = [];
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('vramd did not start:\n' + log.join('\n'))), 20000);
    let buf = '';
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        log.push(line);
        const m = /listening on http:\/\/\S+:(\d+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          const port = Number(m[1]);
          ok({
            port, url: `http://127.0.0.1:${port}`, proc, log,
            stop: () => new Promise((done) => {
              if (proc.exitCode !== null) return done(proc.exitCode);
              proc.on('exit', (code) => done(code));
              proc.kill('SIGTERM');
            }),
          });
        }
      }
    });
    proc.on('exit', (code) => fail(new Error(`vramd exited ${code}:\n${log.join('\n')}`)));
  });
}

export async function getJson(url) {
  const r = await fetch(url);
  return r.json();
}
