// The batch lifecycle and its error cases through the official `openai`
// Node SDK, unchanged, against `batchkit serve`: a second client that holds
// the shapes (the Python SDK is the first, lifecycle.py).
//
// usage: node lifecycle.cjs BASE_URL API_KEY REQUESTS OUT_DIR
// (with NODE_PATH naming the node_modules that has `openai`)
//
// Prints one JSON object with what it saw; exits non-zero on any surprise.

'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const OpenAI = require('openai');
const { toFile } = require('openai');

const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

async function wait(client, id, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const b = await client.batches.retrieve(id);
    if (TERMINAL.has(b.status)) return b;
    if (Date.now() > deadline) throw new Error(`batch ${id} still ${b.status}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The error a call must end in; every one carries a request id. */
async function refused(call, status) {
  try {
    await call();
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIError, `not an API error: ${e}`);
    assert.equal(e.status, status, e.message);
    assert.match(e.requestID ?? '', /^req_/);
    return e;
  }
  throw new Error(`expected a ${status}`);
}

async function main() {
  const [baseURL, apiKey, requests, outDir] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 2 });
  const seen = {};

  const uploaded = await client.files.create({
    file: fs.createReadStream(requests),
    purpose: 'batch',
  });
  assert.equal(uploaded.object, 'file');
  assert.equal(uploaded.filename, path.basename(requests));
  assert.match(uploaded._request_id, /^req_/);

  const create = {
    input_file_id: uploaded.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  };
  const batch = await client.batches.create({ ...create, metadata: { job: 'node' } });
  assert.equal(batch.status, 'validating');
  const done = await wait(client, batch.id);
  assert.equal(done.status, 'completed', JSON.stringify(done));
  assert.deepEqual(done.metadata, { job: 'node' });
  const c = done.request_counts;
  assert.equal(c.completed + c.failed, c.total);
  seen.counts = c;

  const output = await client.files.content(done.output_file_id);
  assert.match(output.headers.get('content-disposition') ?? '', /^attachment; filename=/);
  fs.writeFileSync(path.join(outDir, 'node-output.jsonl'), Buffer.from(await output.arrayBuffer()));
  seen.output = done.output_file_id;

  // Auto-paging over every batch.
  const listed = [];
  for await (const b of client.batches.list({ limit: 1 })) listed.push(b.id);
  assert.ok(listed.includes(batch.id), listed.join());

  // The error cases, shaped as OpenAI's.
  let e = await refused(
    () => client.batches.create({ ...create, endpoint: '/v1/invalid/endpoint' }),
    400,
  );
  assert.ok(e instanceof OpenAI.BadRequestError);
  assert.deepEqual([e.code, e.param, e.type], ['invalid_value', 'endpoint', 'invalid_request_error']);
  assert.match(e.message, /Supported values are: /);
  seen.bad_endpoint = e.code;

  e = await refused(() => client.batches.create({ ...create, completion_window: '48h' }), 400);
  assert.deepEqual([e.code, e.param], ['invalid_value', 'completion_window']);

  e = await refused(
    () => client.batches.create({ ...create, metadata: { tags: ['a', 'b'] } }),
    400,
  );
  assert.deepEqual([e.code, e.param], ['invalid_type', 'metadata.tags']);

  e = await refused(() => client.batches.retrieve('batch-nonexistent-xyz'), 404);
  assert.ok(e instanceof OpenAI.NotFoundError);
  assert.match(e.message.toLowerCase(), /not found/);

  e = await refused(() => client.batches.cancel(batch.id), 409);
  assert.ok(e instanceof OpenAI.ConflictError);
  assert.match(e.message, /Cannot cancel a batch with status 'completed'\./);
  seen.conflict = e.status;

  e = await refused(
    async () => client.files.create({ file: await toFile(Buffer.from(''), 'empty.jsonl'), purpose: 'batch' }),
    400,
  );
  assert.match(e.message, /Invalid file format for Batch API/);

  const missing = await client.batches.create({ ...create, input_file_id: 'file-nonexistent-xyz' });
  const failed = await wait(client, missing.id);
  assert.equal(failed.status, 'failed');
  assert.equal(failed.errors.data.length, 1);
  const [error] = failed.errors.data;
  assert.deepEqual([error.code, error.param, error.line], ['invalid_request', 'file_id', null]);
  assert.match(error.message, /Cannot find file/);
  seen.missing_file = error.code;

  const deleted = await client.files.delete(uploaded.id);
  assert.equal(deleted.deleted, true);
  console.log(JSON.stringify(seen));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
