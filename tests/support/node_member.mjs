// node_member.mjs - starts node_holder (a libvram process joined to a node socket) for the MCP and browser tests.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

// The member: node_holder (tests/support/node_holder.c, built with the tests;
// CMake passes VRAM_NODE_MEMBER), with none of the test's VRAM_* settings.
function memberEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('VRAM_') && k !== 'GPU_IDLE_TIMEOUT') env[k] = v;
  return env;
}
const source = process.env.VRAM_SOURCE_DIR || join(here, '..', '..');
const MEMBER = process.env.VRAM_NODE_MEMBER || join(source, 'build', 'node_holder');

// Starts a member named name on socket with models ({model: bytes}); resolves
// to { pid, proc, stop() } once it has loaded them (within 60 s).
export function startMember(socket, name, models, extra = []) {
  const args = [socket, name, ...Object.entries(models).map(([m, b]) => `${m}=${b}`), ...extra];
  const proc = spawn(MEMBER, args, { env: memberEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '', err = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (c) => { err += c; });
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); fail(new Error('member did not start:\n' + err)); }, 60000);
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (c) => {
      out += c;
      const m = /^ready (\d+)$/m.exec(out);
      if (m && !proc.ready) {
        proc.ready = true;
        clearTimeout(timer);
        ok({
          pid: Number(m[1]), proc, log: () => err,
          stop: () => new Promise((done) => {
            if (proc.exitCode !== null) return done(proc.exitCode);
            proc.on('exit', (code) => done(code));
            proc.stdin.end();
            setTimeout(() => proc.kill('SIGKILL'), 15000).unref();
          }),
        });
      }
    });
    proc.on('exit', (code) => { clearTimeout(timer); if (!proc.ready) fail(new Error(`member exited ${code}:\n${err}`)); });
  });
}

// Polls url (GET /api/v1/node) until pred(view) holds; resolves to the view,
// rejects after 60 s.
export async function waitNode(url, pred, headers = {}) {
  const deadline = Date.now() + 60000;
  let last = null;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`${url}/api/v1/node`, { headers });
      last = await r.json();
      if (pred(last)) return last;
    } catch (e) { last = String(e); }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the node never showed what was waited for: ' + JSON.stringify(last).slice(0, 800));
}
