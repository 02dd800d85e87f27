// sdk.mjs - the official MCP TypeScript SDK client against vramd: over Streamable HTTP (/mcp) or stdio (vramctl mcp).
// usage: node sdk.mjs http|stdio
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VRAMCTL, check, cleanEnv, eq, finish, getJson, startVramd } from './lib.mjs';
import { startMember, waitNode } from '../support/node_member.mjs';

const mode = process.argv[2];
if (mode !== 'http' && mode !== 'stdio') {
  console.error('usage: node sdk.mjs http|stdio');
  process.exit(2);
}

// a node socket, and a second process (the Python package) that joins it
const nodeDir = mkdtempSync(join(tmpdir(), 'vram-mcp-node-'));
const d = await startVramd(['Llasa-8B=synthetic:32M', 'XCodec2=synthetic:8M:2,immediate_offload=1'],
  ['--node-socket', join(nodeDir, 'node.sock')]);
let member = null;
const status = () => getJson(`${d.url}/api/gpu/status`);
let stderr = '';
try {
  const transport = mode === 'http'
    ? new StreamableHTTPClientTransport(new URL(`${d.url}/mcp`))
    : new StdioClientTransport({ command: VRAMCTL, args: ['--url', d.url, 'mcp'], env: cleanEnv(), stderr: 'pipe' });
  if (mode === 'stdio') transport.stderr?.on('data', (c) => { stderr += c; });
  const client = new Client({ name: 'vram-sdk-test', version: '0.0.1' });
  await client.connect(transport); // initialize + notifications/initialized

  eq(client.getServerVersion()?.name, 'vramd', 'serverInfo.name');
  check(client.getServerCapabilities()?.tools, 'server declares tools', client.getServerCapabilities());
  check(typeof client.getInstructions() === 'string', 'instructions given');
  if (mode === 'http') check(transport.sessionId && /^[\x21-\x7e]+$/.test(transport.sessionId), 'session id issued', transport.sessionId);

  eq(await client.ping(), {}, 'ping');

  const { tools } = await client.listTools();
  eq(tools.map((t) => t.name).sort(),
    ['configure_model', 'get_gpu_status', 'load_model', 'node_status', 'offload_gpu', 'register_model', 'release_gpu',
      'reopen_model', 'run_model', 'unregister_model', 'update_gpu_timeout'], 'tools/list');
  eq(tools.find((t) => t.name === 'node_status').annotations.readOnlyHint, true, 'node_status is read-only');
  for (const name of ['offload_gpu', 'release_gpu', 'update_gpu_timeout', 'configure_model'])
    check(/NAME@PID/.test(tools.find((t) => t.name === name).inputSchema.properties.model.description),
      `${name}: 'model' documents node-wide ids`);
  for (const t of tools) {
    check(t.description && t.description.length > 20, `${t.name}: description`);
    eq(t.inputSchema.type, 'object', `${t.name}: inputSchema type`);
    check(t.annotations && typeof t.annotations.readOnlyHint === 'boolean', `${t.name}: annotations`, t.annotations);
  }

  // the seed's four calls, as its Python example makes them
  let r = await client.callTool({ name: 'get_gpu_status', arguments: {} });
  check(!r.isError, 'get_gpu_status', r);
  eq(JSON.parse(r.content[0].text)['Llasa-8B'].location, '未加载', 'get_gpu_status text is the status JSON');
  eq(r.structuredContent.XCodec2.model_name, 'XCodec2', 'get_gpu_status structuredContent');

  r = await client.callTool({ name: 'load_model', arguments: { model: 'Llasa-8B' } });
  check(!r.isError, 'load_model', r);
  eq((await status())['Llasa-8B'].location, 'GPU', 'load_model put it on the GPU');

  r = await client.callTool({ name: 'run_model', arguments: { model: 'XCodec2' } });
  check(!r.isError && /^0x[0-9a-f]{16}$/.test(r.structuredContent.checksum), 'run_model checksum', r);
  eq(r.structuredContent.location, 'CPU', 'run_model with immediate offload ends on the CPU');

  r = await client.callTool({ name: 'offload_gpu', arguments: {} });
  check(!r.isError, 'offload_gpu {}', r);
  eq((await status())['Llasa-8B'].location, 'CPU', 'offload_gpu moved it to the CPU');

  r = await client.callTool({ name: 'release_gpu', arguments: {} });
  check(!r.isError, 'release_gpu {}', r);
  const st = await status();
  check(Object.values(st).every((m) => m.location === '未加载'), 'release_gpu freed everything', st);

  r = await client.callTool({ name: 'update_gpu_timeout', arguments: { timeout_seconds: 300 } });
  check(!r.isError, 'update_gpu_timeout 300', r);
  eq((await status())['Llasa-8B'].idle_timeout_seconds, 300, 'timeout applied');

  // offload_gpu of one model acts on a model on the GPU, and on that one only
  r = await client.callTool({ name: 'load_model', arguments: { model: 'Llasa-8B' } });
  check(!r.isError, 'load_model before offload_gpu with a model', r);
  r = await client.callTool({ name: 'run_model', arguments: { model: 'XCodec2' } });
  check(!r.isError, 'run_model before offload_gpu with a model', r);
  let before = await status();
  eq([before['Llasa-8B'].location, before.XCodec2.location], ['GPU', 'CPU'],
    'before offload_gpu with a model: Llasa-8B on the GPU, XCodec2 on the CPU');
  r = await client.callTool({ name: 'offload_gpu', arguments: { model: 'Llasa-8B' } });
  check(!r.isError, 'offload_gpu with a model', r);
  eq(r.structuredContent.models.map((m) => [m.model, m.result]), [['Llasa-8B', 'offloaded']],
    'offload_gpu with a model reports that one model offloaded');
  let after = await status();
  eq(after['Llasa-8B'].location, 'CPU', 'offload_gpu with a model moved it to the CPU');
  eq(after['Llasa-8B'].offloads, before['Llasa-8B'].offloads + 1, 'one more offload counted');
  eq(after.XCodec2.offloads, before.XCodec2.offloads, 'the other model was not touched');
  // release_gpu of one model: from the CPU, that one only
  r = await client.callTool({ name: 'release_gpu', arguments: { model: 'XCodec2' } });
  check(!r.isError, 'release_gpu with a model', r);
  after = await status();
  eq([after['Llasa-8B'].location, after.XCodec2.location], ['CPU', '未加载'],
    'release_gpu with a model freed that one only');

  // bad arguments: results with isError, nothing changed
  for (const [name, args] of [['update_gpu_timeout', { timeout_seconds: -1 }],
    ['update_gpu_timeout', { timeout_seconds: 'soon' }], ['update_gpu_timeout', {}],
    ['release_gpu', { model: 'nope' }], ['run_model', {}], ['load_model', { model: 42 }]]) {
    r = await client.callTool({ name, arguments: args });
    check(r.isError === true && r.content[0].type === 'text' && r.content[0].text.length > 0,
      `${name} ${JSON.stringify(args)}: isError with a message`, r);
  }
  eq((await status())['Llasa-8B'].idle_timeout_seconds, 300, 'bad calls changed nothing');

  // models at run time
  r = await client.callTool({ name: 'register_model', arguments: { name: 'extra', source: 'synthetic:4M', options: { idle_timeout: '10m' } } });
  check(!r.isError && r.structuredContent.status.idle_timeout_seconds === 600, 'register_model', r);
  r = await client.callTool({ name: 'register_model', arguments: { name: 'extra', source: 'synthetic:4M' } });
  check(r.isError && /EEXIST/.test(r.content[0].text), 'register_model of a taken name is a tool error', r);
  r = await client.callTool({ name: 'reopen_model', arguments: { model: 'extra' } });
  check(!r.isError, 'reopen_model', r);
  r = await client.callTool({ name: 'unregister_model', arguments: { model: 'extra' } });
  check(!r.isError && !('extra' in (await status())), 'unregister_model', r);

  // the node: another process's models, acted on through their owner
  member = await startMember(join(nodeDir, 'node.sock'), 'svc-b', { b: 1 << 20, held: 1 << 16 }, ['--hold', 'held']);
  const bid = `b@${member.pid}`, hid = `held@${member.pid}`;
  const remote = (v, id) => v.members.flatMap((mb) => mb.models).find((x) => x.id === id);
  await waitNode(d.url, (v) => remote(v, bid)?.state === 'gpu' && remote(v, hid));
  r = await client.callTool({ name: 'node_status', arguments: {} });
  check(!r.isError, 'node_status', r);
  const mine = r.structuredContent.members.find((mb) => mb.self);
  const other = r.structuredContent.members.find((mb) => mb.pid === member.pid);
  check(mine && mine.models.some((x) => x.name === 'Llasa-8B'), 'node_status lists vramd itself with its models', r.structuredContent);
  check(other && other.name === 'svc-b' && other.models.some((x) => x.id === bid && x.owner === 'svc-b'),
    'node_status lists the other process with its model and node-wide id', r.structuredContent);
  r = await client.callTool({ name: 'offload_gpu', arguments: { model: bid } });
  check(!r.isError && r.structuredContent.remote === true, 'offload_gpu of a remote model', r);
  await waitNode(d.url, (v) => remote(v, bid)?.state === 'cpu');
  check(true, 'its owner offloaded it');
  r = await client.callTool({ name: 'update_gpu_timeout', arguments: { model: bid, timeout_seconds: 123 } });
  check(!r.isError, 'update_gpu_timeout of a remote model', r);
  r = await client.callTool({ name: 'configure_model', arguments: { model: bid, release_timeout: 456, immediate_offload: true } });
  check(!r.isError, 'configure_model of a remote model', r);
  await waitNode(d.url, (v) => remote(v, bid)?.idle_timeout === 123 && remote(v, bid)?.release_timeout === 456 &&
    remote(v, bid)?.immediate_offload === true);
  check(true, 'its owner applied the timeouts');
  r = await client.callTool({ name: 'offload_gpu', arguments: { model: hid } });
  check(r.isError && /EBUSY/.test(r.content[0].text), 'offload_gpu of a remote model in use: EBUSY', r);
  r = await client.callTool({ name: 'release_gpu', arguments: { model: `nope@${member.pid}` } });
  check(r.isError, 'release_gpu of a remote model that does not exist is a tool error', r);
  r = await client.callTool({ name: 'release_gpu', arguments: { model: bid } });
  check(!r.isError, 'release_gpu of a remote model', r);
  await waitNode(d.url, (v) => remote(v, bid)?.state === 'unloaded');
  check(true, 'its owner released it');
  eq(remote(await getJson(`${d.url}/api/v1/node`), hid).state, 'gpu', 'the model in use stayed');

  // an unknown tool is a protocol error
  try {
    await client.callTool({ name: 'no_such_tool', arguments: {} });
    check(false, 'unknown tool throws');
  } catch (e) {
    eq(e.code, -32602, 'unknown tool: -32602');
  }

  if (mode === 'http') {
    const sid = transport.sessionId;
    await transport.terminateSession(); // DELETE
    const res = await fetch(`${d.url}/mcp`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', 'Mcp-Session-Id': sid },
      body: JSON.stringify({ jsonrpc: '2.0', id: 99, method: 'ping' }),
    });
    eq(res.status, 404, 'a terminated session answers 404');
  }
  await client.close();
  if (mode === 'stdio') check(stderr.includes('vramctl mcp'), 'the bridge logs to stderr', stderr);
} catch (e) {
  check(false, `unexpected exception: ${e?.stack || e}`);
}
if (member) await member.stop();
const code = await d.stop();
rmSync(nodeDir, { recursive: true, force: true });
eq(code, 0, 'vramd exits 0 on SIGTERM');
finish();
