// End-to-end, failover (issue 29): two relays on a multi-host URL (primary and streaming standby,
// `target_session_attrs=read-write`); four real y-websocket clients, two per relay, each typing
// a unique token into one Y.Text and moving its cursor 10 times a second. Four seconds in, the
// primary is crash-stopped (`pg_ctl stop -m immediate`) and the standby promoted. Asserted: every
// client ends with every token; after both relays are SIGKILLed and one restarted, a new client
// reads every token (what the relays relayed is on the new primary); every client sees every
// other one's moves again within 5 s of the promotion; at most a few reconnects per client.
// Run by examples/relay/tests/failover.rs (make test): RELAY_FAILOVERS rounds, one failover each,
// the standby rebuilt from the new primary in between.
import { describe, test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { writeFileSync, mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { startRelay, connect, destroyAll, waitFor, metric, env } from './harness.mjs'

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const run = promisify(execFile)
/** tests/support/pg-pair.sh <command> on the test's pair; its output, trimmed. */
const pair = async (command, ...args) => (await run(env('RELAY_PAIR'), [command, env('RELAY_PAIR_DIR'), ...args])).stdout.trim()

const report = { rounds: [] }
const save = () => {
  const path = process.env.RELAY_FAILOVER_REPORT
  if (path) { mkdirSync(dirname(path), { recursive: true }); writeFileSync(path, JSON.stringify(report, null, 2)) }
}

const TYPE_MS = 14000
const FAIL_AT_MS = 4000
const EVERY_MS = 25

/** Types a token and moves the cursor every EVERY_MS until TYPE_MS; returns the tokens typed. */
const typeAndMove = async (client, tag, until) => {
  const text = client.doc.getText('t')
  const typed = []
  for (let k = 0; performance.now() < until; k++) {
    const content = text.toString()
    const boundaries = [0]
    for (let i = 0; i < content.length; i++) if (content[i] === '>') boundaries.push(i + 1)
    const token = `<${tag}${k}>`
    text.insert(boundaries[Math.floor(Math.random() * boundaries.length)], token)
    typed.push(token)
    client.moves = k + 1
    client.awareness.setLocalStateField('moved', k + 1)
    await sleep(EVERY_MS)
  }
  return typed
}

const missing = (client, tokens) => {
  const content = client.doc.getText('t').toString()
  return tokens.filter((t) => !content.includes(t))
}

describe('a PostgreSQL failover under two relays', () => {
  const relays = []
  after(async () => {
    destroyAll()
    await Promise.all(relays.map((r) => r.stop('SIGKILL')))
  })
  const start = async (name, port = 0) => {
    const relay = await startRelay({ name, port, databaseUrl: env('RELAY_DB_URL_FAILOVER'), extra: ['--listener-reconnect-delay', '200ms'] })
    relays.push(relay)
    return relay
  }

  const rounds = Number(process.env.RELAY_FAILOVERS || 1)
  for (let r = 1; r <= rounds; r++) {
    test(`failover ${r} of ${rounds}: no token lost, presence back within 5 s, few reconnects`, async () => {
      const [A, B] = await Promise.all([start('A'), start('B')])
      const room = `failover-${r}`
      const tags = ['a', 'b', 'c', 'd']
      const clients = tags.map((tag, i) => {
        const client = connect(i < 2 ? A : B, room, { name: tag, moved: 0 })
        client.tag = tag
        client.moves = 0
        client.drops = 0
        client.provider.on('status', ({ status }) => { if (status === 'disconnected') client.drops++ })
        return client
      })
      // A reader on each relay types nothing: its room stays open through the failover (a room
      // whose every connection closed would be reloaded from the new primary).
      const readers = [A, B].map((relay) => connect(relay, room))
      await waitFor(() => [...clients, ...readers].every((c) => c.provider.synced), 10000, 'every client synced')
      const began = performance.now()
      const typing = Promise.all(clients.map((c) => typeAndMove(c, c.tag, began + TYPE_MS)))

      await sleep(FAIL_AT_MS)
      const failoverSeconds = Number(await pair('failover', process.env.RELAY_FAILOVER_PAUSE || '2'))
      const promotedAt = performance.now()
      // A move each client makes after the promotion: everyone must see it.
      const target = new Map(clients.map((c) => [c, c.moves + 1]))
      const stale = () => clients.flatMap((x) => clients.filter((y) => y !== x && !((x.stateOf(y)?.moved ?? 0) >= target.get(y))).map((y) => `${x.tag} sees ${y.tag} at ${x.stateOf(y)?.moved} < ${target.get(y)}`))
      await waitFor(() => stale().length === 0, 20000, () => `presence not back: ${stale().join('; ')}`)
      const presenceBackMs = Math.round(performance.now() - promotedAt)

      const typed = (await typing).flat()
      const lastEdit = performance.now()
      await waitFor(() => [...clients, ...readers].every((c) => missing(c, typed).length === 0), 30000,
        () => [...clients, ...readers].map((c) => `${c.tag ?? 'reader'} misses ${missing(c, typed).length} of ${typed.length}`).join('; '))
      const convergedMs = Math.round(performance.now() - lastEdit)
      const drops = clients.map((c) => c.drops)

      const repairs = (await Promise.all([A, B].map((relay) => metric(relay, 'relay_document_repairs_total')))).reduce((x, y) => x + y, 0)

      // What the relays serve after both die: only what is stored on the new primary.
      destroyAll()
      await Promise.all([A.stop('SIGKILL'), B.stop('SIGKILL')])
      const C = await start('C', A.port)
      const reader = connect(C, room)
      await waitFor(() => reader.provider.synced, 10000, 'the new client synced')
      const lost = missing(reader, typed)
      reader.destroy()
      await C.stop()

      const round = { round: r, failover_s: failoverSeconds, presence_back_ms: presenceBackMs, converged_after_last_edit_ms: convergedMs, tokens: typed.length, lost_after_restart: lost.length, repairs, disconnects_per_client: drops }
      report.rounds.push(round)
      save()
      console.log(`# ${JSON.stringify(round)}`)
      assert.deepEqual(lost, [], `${lost.length} of ${typed.length} tokens are missing after a restart`)
      assert.ok(presenceBackMs <= 5000, `presence back ${presenceBackMs} ms after the promotion (limit 5000 ms)`)
      assert.ok(drops.every((d) => d <= 3), `disconnects per client: ${drops} (limit 3)`)
      // The next round fails over onto a standby of this primary.
      if (r < rounds) await pair('rebuild')
    })
  }
})
