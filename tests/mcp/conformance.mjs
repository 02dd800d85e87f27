// conformance.mjs - the official MCP conformance suite (0.1.13) against vramd's /mcp, for the scenarios of a tools-only server.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { check, finish, startVramd } from './lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');
const SCENARIOS = ['server-initialize', 'ping', 'tools-list', 'dns-rebinding-protection',
  'server-sse-multiple-streams'];

const d = await startVramd(['Llasa-8B=synthetic:8M', 'XCodec2=synthetic:4M']);
const out = mkdtempSync(join(tmpdir(), 'vram-conformance-'));
for (const s of SCENARIOS) {
  const r = spawnSync(process.execPath, [existsSync(cli) ? cli : join(here, 'node_modules', '.bin', 'conformance'),
    'server', '--url', `${d.url}/mcp`, '--scenario', s, '-o', out], { encoding: 'utf8', timeout: 120000 });
  const text = (r.stdout || '') + (r.stderr || '');
  const m = /Passed: (\d+)\/(\d+), (\d+) failed/.exec(text);
  console.log(`${s}: ${m ? m[0] : 'no summary'} (exit ${r.status})`);
  check(r.status === 0 && m && m[3] === '0' && m[1] === m[2], `conformance ${s}`, text.slice(-1500));
}
// every check the suite recorded
let checks = 0;
for (const dir of readdirSync(out)) {
  const f = join(out, dir, 'checks.json');
  if (!existsSync(f)) continue;
  for (const c of JSON.parse(readFileSync(f, 'utf8'))) {
    checks++;
    check(c.status !== 'FAILURE', `${dir}: ${c.id}`, c);
  }
}
check(checks >= SCENARIOS.length, 'the suite recorded its checks', checks);
const code = await d.stop();
check(code === 0, 'vramd exits 0');
finish();
