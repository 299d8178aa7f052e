// End-to-end, documents (issue 20): real y-websocket providers on two relays sharing one
// PostgreSQL database edit one Y.Text; instances are SIGKILLed and restarted, rooms emptied and
// reopened elsewhere, a listener's connection killed. Run by examples/relay/tests/e2e.rs (make
// test), which provides the database (RELAY_DB_URL_DOCS) and the binary.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { writeFileSync, mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { startRelay, connect, destroyAll, waitFor, metric, health, env } from './harness.mjs'

const report = {}
const note = (key, value) => {
  report[key] = value
  const path = process.env.RELAY_DOCS_REPORT
  if (path) { mkdirSync(dirname(path), { recursive: true }); writeFileSync(path, JSON.stringify(report, null, 2)) }
  console.log(`# ${key}: ${JSON.stringify(value)}`)
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** One query through psql (PostgreSQL's client); its output, trimmed. */
const sql = (query) => {
  const out = spawnSync('psql', [env('RELAY_DB_URL_DOCS'), '-XtAc', query], { encoding: 'utf8' })
  if (out.error) throw new Error(`psql missing (${out.error.message}): apt-get install -y postgresql-client`)
  if (out.status !== 0) throw new Error(`psql failed: ${out.stderr}`)
  return out.stdout.trim()
}

/** Types `count` tokens `<tag i>` into `text`, each at a token boundary, pacing 1 ms. */
const type = async (client, tag, count) => {
  const text = client.doc.getText('t')
  for (let i = 0; i < count; i++) {
    const content = text.toString()
    const boundaries = [0]
    for (let k = 0; k < content.length; k++) if (content[k] === '>') boundaries.push(k + 1)
    text.insert(boundaries[Math.floor(Math.random() * boundaries.length)], `<${tag}${i}>`)
    await sleep(1)
  }
  return performance.now()
}

const tokens = (tags, count) => tags.flatMap((tag) => Array.from({ length: count }, (_, i) => `<${tag}${i}>`))
const complete = (content, expected) => expected.every((t) => content.includes(t))

describe('documents shared by two relays in PostgreSQL (separate database)', () => {
  const relays = {}
  const args = ['--compact-after', '200', '--listener-reconnect-delay', '1s']
  const start = (name, port = 0) => startRelay({ name, port, databaseUrl: env('RELAY_DB_URL_DOCS'), extra: args })
  const EDITS = 300
  let finalText

  before(async () => {
    ;[relays.A, relays.B] = await Promise.all([start('A'), start('B')])
  })
  after(async () => {
    destroyAll()
    await Promise.all(Object.values(relays).map((r) => r.stop()))
  })

  test('1. alice on A and bob on B type into one Y.Text at once: identical, every edit, within a second', async () => {
    const alice = connect(relays.A, 'doc-1')
    const bob = connect(relays.B, 'doc-1')
    await waitFor(() => alice.provider.synced && bob.provider.synced, 10000, 'both providers synced')
    const ends = await Promise.all([type(alice, 'a', EDITS), type(bob, 'b', EDITS)])
    const last = Math.max(...ends)
    const expected = tokens(['a', 'b'], EDITS)
    const same = () => {
      const a = alice.doc.getText('t').toString()
      return a === bob.doc.getText('t').toString() && complete(a, expected)
    }
    // Polled with a generous deadline so a failure reports the time it took.
    await waitFor(same, 10000, () => `alice has ${alice.doc.getText('t').length} chars, bob ${bob.doc.getText('t').length}`)
    const converged = performance.now() - last
    note('documents_converged_after_last_edit_ms', Math.round(converged))
    assert.ok(converged <= 1000, `converged ${Math.round(converged)} ms after the last edit (limit: 1000 ms)`)
    finalText = alice.doc.getText('t').toString()
    assert.equal(finalText.length, expected.join('').length, 'every edit exactly once')
    // Compaction ran (more than --compact-after rows) and folded rows into the snapshot.
    await waitFor(() => Number(sql("SELECT count(*) FROM relay_documents WHERE document_id = 'doc-1' AND compacted_through > 0")) === 1, 5000, 'a snapshot exists')
    note('documents_rows_after_600_edits', Number(sql("SELECT count(*) FROM relay_document_updates WHERE document_id = 'doc-1'")))
    alice.destroy()
    bob.destroy()
  })

  test('2. both instances SIGKILLed and restarted: a new client receives the full text', async () => {
    assert.ok(finalText, 'test 1 ran')
    await Promise.all([relays.A.stop('SIGKILL'), relays.B.stop('SIGKILL')])
    ;[relays.A, relays.B] = await Promise.all([start('A', relays.A.port), start('B', relays.B.port)])
    const carol = connect(relays.B, 'doc-1')
    await waitFor(() => carol.provider.synced, 10000, 'carol synced')
    assert.equal(carol.doc.getText('t').toString(), finalText)
    const dave = connect(relays.A, 'doc-1')
    await waitFor(() => dave.provider.synced, 10000, 'dave synced')
    assert.equal(dave.doc.getText('t').toString(), finalText)
    carol.destroy()
    dave.destroy()
  })

  test('3. the room empties (dropped from memory) and is reopened on the other instance: the content is there', async () => {
    const alice = connect(relays.A, 'doc-3')
    await waitFor(() => alice.provider.synced, 10000, 'alice synced')
    await type(alice, 'a', 50)
    const text = alice.doc.getText('t').toString()
    // Nothing is relayed before it is stored; a second client on A proves A has it all.
    const witness = connect(relays.A, 'doc-3')
    await waitFor(() => witness.doc.getText('t').toString() === text, 5000, 'the witness has alice\'s text')
    alice.destroy()
    witness.destroy()
    await waitFor(async () => (await health(relays.A)).documents === 0, 10000, 'A dropped the room from memory')
    assert.equal((await health(relays.B)).documents, 0, 'B never opened it')
    const bob = connect(relays.B, 'doc-3')
    await waitFor(() => bob.provider.synced, 10000, 'bob synced')
    assert.equal(bob.doc.getText('t').toString(), text)
    bob.destroy()
  })

  test('5. a missed notification (the listener\'s connection killed) is caught up', async () => {
    const alice = connect(relays.A, 'doc-5')
    const bob = connect(relays.B, 'doc-5')
    await waitFor(() => alice.provider.synced && bob.provider.synced, 10000, 'both synced')
    alice.doc.getText('t').insert(0, 'before ')
    await waitFor(() => bob.doc.getText('t').toString() === 'before ', 5000, 'bob has the first edit')
    const reconnects = await metric(relays.B, 'relay_documents_listener_reconnects_total')
    const killed = sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'synckit-relay-listener:B'")
    assert.equal(killed, '1', 'B\'s listener backend was terminated')
    // B's listener waits 1 s before reconnecting: this edit's notification reaches no one on B.
    alice.doc.getText('t').insert(7, 'during')
    const started = performance.now()
    await waitFor(() => bob.doc.getText('t').toString() === 'before during', 10000, () => `bob has ${JSON.stringify(bob.doc.getText('t').toString())}`)
    note('documents_missed_notification_caught_up_ms', Math.round(performance.now() - started))
    assert.ok(await metric(relays.B, 'relay_documents_listener_reconnects_total') > reconnects, 'B\'s listener reconnected')
    alice.destroy()
    bob.destroy()
  })

  test('limits: an oversized update and a full document are refused with a reason; the room keeps working', async () => {
    const L = await startRelay({ name: 'L', databaseUrl: env('RELAY_DB_URL_DOCS'), extra: ['--max-update-bytes', '2048', '--max-document-bytes', '8192'] })
    relays.L = L
    const alice = connect(L, 'doc-limits')
    const bob = connect(L, 'doc-limits')
    const warnings = []
    const warn = console.warn
    console.warn = (...a) => { warnings.push(a.join(' ')); }
    try {
      await waitFor(() => alice.provider.synced && bob.provider.synced, 10000, 'both synced')
      alice.doc.getText('t').insert(0, 'x'.repeat(4000))
      await waitFor(() => warnings.some((w) => /exceeds the limit of 2048 bytes/.test(w)), 5000, () => `alice is told why: ${warnings}`)
      alice.doc.getText('t').delete(0, 4000)
      for (let i = 0; i < 20; i++) alice.doc.getText('t').insert(0, 'y'.repeat(1000))
      await waitFor(() => warnings.some((w) => /size limit of 8192 bytes/.test(w)), 5000, () => `alice is told the document is full: ${warnings}`)
      note('documents_refusals', [...new Set(warnings.filter((w) => /limit/.test(w)).map((w) => w.split('\n').pop()))])
      assert.ok(alice.connected() && bob.connected(), 'nobody was disconnected')
      assert.ok(!bob.doc.getText('t').toString().includes('x'), 'the oversized update was not relayed')
      // Reading still works: a new client gets what was stored.
      const carol = connect(L, 'doc-limits')
      await waitFor(() => carol.provider.synced, 5000, 'carol synced')
      assert.equal(carol.doc.getText('t').toString(), bob.doc.getText('t').toString())
      carol.destroy()
    } finally {
      console.warn = warn
      alice.destroy()
      bob.destroy()
    }
  })
})
