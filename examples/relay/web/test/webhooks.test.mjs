// Webhooks on join and leave (issue 39), end to end: relays on one PostgreSQL database POST
// `presence.joined` / `presence.left` to a receiver on loopback, signed per Standard Webhooks.
// Every request is checked with the `standardwebhooks` package (a verifier no one here wrote).
// What is proved, each block with its own receiver (one URL each) and its own relays:
//   e) a receiver that never answers: the queue stays bounded (--webhook-max-pending), the
//      oldest are dropped and counted, and the relay still serves;
//   a) real y-websocket clients on two instances: each join and leave is sent once across the
//      cluster, in order per room, with the principal, the instance and a consistent count;
//   b) an instance SIGKILLed with a client in a room: the other instance's pruning of the
//      lapsed lease sends that client's `presence.left`, once;
//   c) a receiver failing with 500 for 2 s: every event still arrives, retried under the same
//      webhook-id, with the documented backoff, and the next event of a room waits its turn;
//   d) events pending when the relay is stopped (SIGTERM) are delivered after a restart.
// Block e) runs first so that its bounded queue is the only one on the fresh database.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { Webhook } from 'standardwebhooks'
import { hs256 } from './tokens.mjs'
import { env, startRelay, connect, destroyAll, waitFor, health } from './harness.mjs'

// --- settings ------------------------------------------------------------------------------

const authSecret = 'hooks-secret-0123456789abcdef-0123456789'
const webhookSecret = `whsec_${randomBytes(32).toString('base64')}`
const leaseMs = 3000
const pruneMs = 250
const retryMinMs = 200
const retryMaxMs = 1000
const pollMs = 100
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const mint = hs256(authSecret)
/** Connection params with a token for `principal` (every room writable, no `user` claim). */
const as = async (principal) => ({ params: { token: await mint(principal, { iss: undefined, aud: undefined }) } })

/** A relay on the hooks database posting to `url` with short retry, poll and lease settings. */
const start = (name, url, extra = []) => startRelay({
  name,
  databaseUrl: env('RELAY_DB_URL_HOOKS'),
  pruneInterval: `${pruneMs}ms`,
  extra: [
    '--lease', `${leaseMs}ms`,
    '--webhook-url', url,
    '--webhook-secret', webhookSecret,
    '--webhook-retry-min', `${retryMinMs}ms`,
    '--webhook-retry-max', '1s',
    '--webhook-poll', `${pollMs}ms`,
    '--webhook-timeout', '2s',
    ...extra
  ],
  env: { SYNCKIT_RELAY_AUTH_SECRET: authSecret }
})

// --- the receiver --------------------------------------------------------------------------

/**
 * A webhook endpoint on loopback. Records every request (arrival time, headers, raw body, the
 * body parsed, whether its signature verifies, and the answer given). `mode` is what it answers
 * from now on: 200, 500, or 'hold' (never answers; the request stays open).
 */
const receiver = async () => {
  const verifier = new Webhook(webhookSecret)
  const requests = []
  const held = new Set()
  const server = createServer((req, res) => {
    const record = { at: performance.now(), wall: Date.now(), method: req.method, path: req.url, headers: req.headers, status: hook.mode }
    const chunks = []
    req.on('data', (chunk) => chunks.push(chunk))
    req.on('end', () => {
      record.raw = Buffer.concat(chunks).toString('utf8')
      record.id = req.headers['webhook-id']
      try { record.body = JSON.parse(record.raw) } catch (error) { record.parseError = String(error) }
      try { verifier.verify(record.raw, req.headers); record.verified = true } catch (error) { record.verified = false; record.verifyError = String(error) }
      requests.push(record)
      if (record.status === 'hold') { held.add(res); res.on('close', () => held.delete(res)); return }
      res.writeHead(record.status, { 'content-type': 'text/plain' })
      res.end(record.status === 200 ? 'ok' : 'failing on purpose')
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const hook = {
    mode: 200,
    requests,
    url: `http://127.0.0.1:${server.address().port}/hooks/presence`,
    async close () {
      for (const res of held) res.destroy()
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    }
  }
  return hook
}

// --- reading what arrived ------------------------------------------------------------------

/**
 * The messages the receiver got (requests grouped by webhook-id), in order of first arrival;
 * `attempts` are that id's requests in order. Only bodies that `filter` accepts.
 */
const messages = (hook, filter = () => true) => {
  const byId = new Map()
  for (const request of hook.requests) {
    if (!request.body || !filter(request.body)) continue
    let message = byId.get(request.id)
    if (!message) byId.set(request.id, (message = { id: request.id, body: request.body, attempts: [] }))
    message.attempts.push(request)
  }
  return [...byId.values()]
}
const inRoom = (hook, room) => messages(hook, (body) => body.data?.room === room)
const about = (hook, type, room, client) => messages(hook, (b) => b.type === type && b.data?.room === room && b.data?.clientId === String(client.id ?? client))
const delivered = (message) => message.attempts.some((a) => a.status === 200)
const firstDelivery = (message) => message.attempts.find((a) => a.status === 200)
const summary = (hook, room) => JSON.stringify(inRoom(hook, room).map((m) => ({ id: m.id, type: m.body.type, client: m.body.data.clientId, count: m.body.data.count, answers: m.attempts.map((a) => a.status) })))

/** Waits until `type` about `client` in `room` arrived (and was answered 200 unless `answered: false`). */
const arrival = (hook, type, room, client, { ms = 10000, answered = true } = {}) => waitFor(
  () => about(hook, type, room, client).find((m) => !answered || delivered(m)),
  ms,
  () => `${type} of ${client.id ?? client} in ${room}${answered ? ', answered 200' : ''}; the room's messages: ${summary(hook, room)}`
)

/** Every request is a signed Standard Webhooks POST of a presence event. */
const assertWellFormed = (requests) => {
  for (const r of requests) {
    const what = `request ${r.id} ${r.raw?.slice(0, 200)}`
    assert.equal(r.method, 'POST', what)
    assert.equal(r.path, '/hooks/presence', what)
    assert.match(r.headers['content-type'] ?? '', /^application\/json/, what)
    assert.match(r.id ?? '', /^msg_\d+$/, `webhook-id of ${what}`)
    assert.equal(r.verified, true, `signature of ${what}: ${r.verifyError}`)
    const stamp = Number(r.headers['webhook-timestamp'])
    assert.ok(Math.abs(stamp - r.wall / 1000) <= 5, `webhook-timestamp ${stamp} is the attempt's time (received at ${r.wall / 1000})`)
    assert.equal(r.parseError, undefined, what)
    assert.ok(['presence.joined', 'presence.left'].includes(r.body.type), what)
    assert.ok(!Number.isNaN(Date.parse(r.body.timestamp)) && /^\d{4}-\d\d-\d\dT/.test(r.body.timestamp), `ISO 8601 timestamp in ${what}`)
    assert.equal(typeof r.body.data.room, 'string', what)
    assert.match(r.body.data.clientId, /^\d+$/, what)
    assert.ok(Number.isInteger(r.body.data.count) && r.body.data.count >= 0, `count in ${what}`)
  }
}

/** Every attempt of one message carried the same body (retries resend the same message). */
const assertSameBody = (message) => {
  for (const attempt of message.attempts) assert.equal(attempt.raw, message.attempts[0].raw, `attempts of ${message.id} differ`)
}

/** Sum of every series of a metric on /metrics (with labels: those whose labels match `labels`). */
const metricSum = async (relay, name, labels = '') => {
  const text = await (await fetch(`${relay.http}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'gm'))) {
    if (!labels || (m[1] ?? '').includes(labels)) sum += Number(m[2])
  }
  return sum
}

// --- e) backpressure -----------------------------------------------------------------------

describe('webhooks: a receiver that never answers (--webhook-max-pending 5)', () => {
  let hook, E
  before(async () => {
    hook = await receiver()
    hook.mode = 'hold'
    E = await start('HE', hook.url, ['--webhook-max-pending', '5'])
  })
  after(async () => {
    destroyAll()
    await E?.stop()
    await hook?.close()
  })

  test('e) 20 clients join and leave in 4 rooms: the oldest events are dropped and counted, at most 5 (+ in flight) wait, the relay still serves', async () => {
    const rooms = ['hooks-e-1', 'hooks-e-2', 'hooks-e-3', 'hooks-e-4']
    const crowd = []
    for (let i = 0; i < 20; i++) crowd.push(connect(E, rooms[i % 4], { user: { name: `guest-${i}` } }, await as(`guest-${i}`)))
    const count = async (room) => (await (await fetch(`${E.http}/rooms/${room}/presence?token=${(await as('auditor')).params.token}`)).json()).count
    for (const room of rooms) await waitFor(async () => (await count(room)) === 5, 15000, `5 in ${room}`)
    for (const client of crowd) client.destroy()
    for (const room of rooms) await waitFor(async () => (await count(room)) === 0, 15000, `nobody left in ${room}`)

    await waitFor(async () => (await metricSum(E, 'synckit_relay_webhook_dropped_total', 'reason="max_pending"')) > 0, 15000,
      'synckit_relay_webhook_dropped_total{reason="max_pending"} > 0')
    // One message per room may be in flight (held by the receiver) beside the 5 waiting.
    const samples = []
    for (let i = 0; i < 10; i++) { samples.push(await metricSum(E, 'synckit_relay_webhook_pending')); await sleep(300) }
    console.log(`# pending samples ${JSON.stringify(samples)}, dropped ${await metricSum(E, 'synckit_relay_webhook_dropped_total')}, requests ${hook.requests.length}`)
    assert.ok(Math.max(...samples) <= 5 + rooms.length, `synckit_relay_webhook_pending stays <= 5 + ${rooms.length} in flight: ${JSON.stringify(samples)}`)
    // Nothing was delivered (the receiver never answered): each of the 40 events is either still
    // pending (or in flight, one per room) or dropped and counted.
    let accounted
    await waitFor(async () => {
      accounted = (await metricSum(E, 'synckit_relay_webhook_dropped_total')) + (await metricSum(E, 'synckit_relay_webhook_pending'))
      return accounted >= 40 - rooms.length && accounted <= 40
    }, 5000, () => `dropped + pending = ${accounted}, expected 40 (less up to ${rooms.length} in flight)`)
    assert.equal(await metricSum(E, 'synckit_relay_webhook_delivered_total'), 0, 'nothing delivered')

    // Still serving: healthy, and a new client's presence goes through.
    const healthz = await fetch(`${E.http}/healthz`)
    assert.equal(healthz.status, 200)
    assert.equal((await healthz.json()).status, 'ok')
    const late = connect(E, 'hooks-e-5', { user: { name: 'late' } }, await as('late'))
    await waitFor(async () => (await count('hooks-e-5')) === 1, 10000, 'a new client joins while webhooks are stuck')
    late.destroy()
    assert.ok(hook.requests.length > 0, 'the relay tried to deliver')
    assertWellFormed(hook.requests)
  })
})

// --- a), b), c) two instances, one receiver ------------------------------------------------

describe('webhooks: two instances, one receiver (3 s lease, 250 ms prune, 200 ms..1 s retries, separate database)', () => {
  let hook, A, B, idA, idB
  before(async () => {
    hook = await receiver()
    ;[A, B] = await Promise.all([start('HA', hook.url), start('HB', hook.url)])
    ;[idA, idB] = [(await health(A)).instance_id, (await health(B)).instance_id]
  })
  after(async () => {
    destroyAll()
    await Promise.all([A?.stop(), B?.stop()])
    await hook?.close()
  })

  test('a) joins and leaves on both instances: each sent once across the cluster, in order per room, signed, with principal, instance and count', async () => {
    hook.mode = 200
    const plan = [
      { relay: A, room: 'hooks-a-1', principal: 'alice' },
      { relay: B, room: 'hooks-a-1', principal: 'bob' },
      { relay: A, room: 'hooks-a-1', principal: 'carol' },
      { relay: B, room: 'hooks-a-2', principal: 'dave' }
    ]
    // One after another: each join waits for the previous one's webhook, so counts are known.
    for (const p of plan) {
      p.client = connect(p.relay, p.room, { user: { name: p.principal } }, await as(p.principal))
      p.instance = p.relay === A ? idA : idB
      await arrival(hook, 'presence.joined', p.room, p.client)
    }
    for (const p of plan) {
      p.client.destroy()
      await arrival(hook, 'presence.left', p.room, p.client)
    }
    await sleep(1500) // room for a duplicate to show up

    const expected = {
      'hooks-a-1': [['presence.joined', 'alice', 1], ['presence.joined', 'bob', 2], ['presence.joined', 'carol', 3],
        ['presence.left', 'alice', 2], ['presence.left', 'bob', 1], ['presence.left', 'carol', 0]],
      'hooks-a-2': [['presence.joined', 'dave', 1], ['presence.left', 'dave', 0]]
    }
    const byPrincipal = Object.fromEntries(plan.map((p) => [p.principal, p]))
    for (const [room, sequence] of Object.entries(expected)) {
      const got = inRoom(hook, room)
      // After grouping by webhook-id: one message per (type, client), in the order they happened.
      assert.deepEqual(got.map((m) => [m.body.type, m.body.data.principal, m.body.data.count]), sequence, `messages of ${room}: ${summary(hook, room)}`)
      let previous = 0
      for (const m of got) {
        const p = byPrincipal[m.body.data.principal]
        assert.equal(m.body.data.clientId, String(p.client.id), `clientId of ${m.body.type} of ${p.principal}`)
        assert.equal(m.body.data.instance, p.instance, `instance of ${m.body.type} of ${p.principal}`)
        if (m.body.type === 'presence.joined') assert.deepEqual(m.body.data.user, { name: p.principal }, `user of ${p.principal}'s join`)
        // The receiver always answered 200 at once: each message was sent exactly once.
        assert.equal(m.attempts.length, 1, `${m.id} (${m.body.type} of ${p.principal}) was sent ${m.attempts.length} times`)
        const at = Date.parse(m.body.timestamp)
        assert.ok(at >= previous, `timestamps in order in ${room}`)
        previous = at
      }
    }
    const ids = [...inRoom(hook, 'hooks-a-1'), ...inRoom(hook, 'hooks-a-2')].map((m) => m.id)
    assert.equal(new Set(ids).size, ids.length, 'webhook-ids are unique')
    assertWellFormed(hook.requests)
  })

  test('b) an instance SIGKILLed with a client in a room: its presence.left arrives once, from the other instances\' pruning', async () => {
    hook.mode = 200
    const C = await start('HC', hook.url)
    const idC = (await health(C)).instance_id
    const frank = connect(C, 'hooks-b', { user: { name: 'frank' } }, await as('frank'))
    await arrival(hook, 'presence.joined', 'hooks-b', frank)
    const killedAt = performance.now()
    await C.stop('SIGKILL')
    frank.destroy()
    await arrival(hook, 'presence.left', 'hooks-b', frank, { ms: leaseMs + pruneMs + 10000 })
    console.log(`# presence.left ${Math.round(performance.now() - killedAt)} ms after the kill`)
    await sleep(2000) // room for a duplicate to show up

    const left = about(hook, 'presence.left', 'hooks-b', frank)
    assert.equal(left.length, 1, `one presence.left message: ${summary(hook, 'hooks-b')}`)
    assert.equal(left[0].attempts.filter((a) => a.status === 200).length, 1, 'answered 200 once')
    assert.equal(left[0].body.data.principal, 'frank')
    assert.equal(left[0].body.data.instance, idC, 'the instance it was on')
    assert.equal(left[0].body.data.count, 0)
    assert.equal(about(hook, 'presence.joined', 'hooks-b', frank).length, 1, 'one presence.joined message')
    assertWellFormed(hook.requests)
  })

  test('c) the receiver answers 500 for 2 s, then 200: nothing lost, retried under the same webhook-id with the documented backoff, rooms in order and independent', async () => {
    hook.mode = 500
    const xavier = connect(A, 'hooks-c-1', { user: { name: 'xavier' } }, await as('xavier'))
    await arrival(hook, 'presence.joined', 'hooks-c-1', xavier, { answered: false })
    xavier.destroy() // its leave waits behind its join
    const yvonne = connect(B, 'hooks-c-2', { user: { name: 'yvonne' } }, await as('yvonne'))
    await sleep(2000)
    hook.mode = 200
    const recoveredAt = performance.now()
    const joined = await arrival(hook, 'presence.joined', 'hooks-c-1', xavier)
    const left = await arrival(hook, 'presence.left', 'hooks-c-1', xavier)
    const other = await arrival(hook, 'presence.joined', 'hooks-c-2', yvonne)
    yvonne.destroy()
    await arrival(hook, 'presence.left', 'hooks-c-2', yvonne)
    await sleep(1000)

    // Each event one message (one webhook-id), answered 200 once, after failed attempts.
    for (const [type, room, client] of [['presence.joined', 'hooks-c-1', xavier], ['presence.left', 'hooks-c-1', xavier], ['presence.joined', 'hooks-c-2', yvonne], ['presence.left', 'hooks-c-2', yvonne]]) {
      const found = about(hook, type, room, client)
      assert.equal(found.length, 1, `one message for ${type} in ${room}: ${summary(hook, room)}`)
      assert.equal(found[0].attempts.filter((a) => a.status === 200).length, 1, `${type} in ${room} answered 200 once: ${summary(hook, room)}`)
      assert.equal(found[0].attempts.at(-1).status, 200, `no attempt after the 200 (${type} in ${room})`)
      assertSameBody(found[0])
    }
    assert.ok(joined.attempts.length >= 3, `xavier's join was retried: ${summary(hook, 'hooks-c-1')}`)
    assert.ok(joined.attempts.slice(0, -1).every((a) => a.status === 500 && a.at < recoveredAt + 50), 'the attempts before the last failed (500)')
    assert.ok(other.attempts.length >= 2 && other.attempts[0].status === 500, `yvonne's join was retried: ${summary(hook, 'hooks-c-2')}`)
    // Rooms are independent: hooks-c-2 was tried while hooks-c-1's join kept failing.
    assert.ok(other.attempts[0].at < recoveredAt, 'hooks-c-2 did not wait for hooks-c-1')
    // In order within a room: the leave was first tried only after the join was answered 200.
    assert.ok(left.attempts[0].at >= firstDelivery(joined).at, 'presence.left of xavier was sent only after his join was delivered')

    // Backoff: the delay before attempt n+1 is min(max, min * 2^(n-1)), found within a poll.
    const gaps = joined.attempts.slice(1).map((a, i) => a.at - joined.attempts[i].at)
    console.log(`# retry gaps (ms) ${JSON.stringify(gaps.map(Math.round))}`)
    gaps.forEach((gap, i) => {
      const due = Math.min(retryMaxMs, retryMinMs * 2 ** i)
      assert.ok(gap >= due - 50, `gap ${i + 1} is ${Math.round(gap)} ms, the backoff says ${due}`)
      assert.ok(gap <= retryMaxMs + pollMs + 500, `gap ${i + 1} is ${Math.round(gap)} ms, over retry-max + poll + slack`)
    })

    const failed = hook.requests.filter((r) => r.status === 500).length
    assert.ok(failed >= 3)
    assert.ok(await metricSum(A, 'synckit_relay_webhook_attempts_failed_total') + await metricSum(B, 'synckit_relay_webhook_attempts_failed_total') >= failed,
      `every one of the ${failed} failed attempts is counted`)
    assert.ok(await metricSum(A, 'synckit_relay_webhook_delivered_total') + await metricSum(B, 'synckit_relay_webhook_delivered_total') >= 4, 'deliveries counted')
    assertWellFormed(hook.requests)
  })
})

// --- d) pending across a restart -----------------------------------------------------------

describe('webhooks: pending events survive a restart (SIGTERM)', () => {
  let hook, D
  before(async () => {
    hook = await receiver()
    D = await start('HD', hook.url)
  })
  after(async () => {
    destroyAll()
    await D?.stop()
    await hook?.close()
  })

  test('d) a join and a leave undelivered (500) when the relay stops are delivered after it restarts', async () => {
    hook.mode = 500
    const oldId = (await health(D)).instance_id
    const gina = connect(D, 'hooks-d', { user: { name: 'gina' } }, await as('gina'))
    await arrival(hook, 'presence.joined', 'hooks-d', gina, { answered: false })
    gina.destroy()
    const token = (await as('auditor')).params.token
    await waitFor(async () => (await (await fetch(`${D.http}/rooms/hooks-d/presence?token=${token}`)).json()).count === 0, 10000, 'gina left')
    await sleep(300)
    await D.stop('SIGTERM')
    const beforeRestart = hook.requests.length
    assert.ok(hook.requests.every((r) => r.status === 500), 'nothing was delivered before the stop')

    hook.mode = 200
    D = await start('HD', hook.url)
    const joined = await arrival(hook, 'presence.joined', 'hooks-d', gina, { ms: 15000 })
    const left = await arrival(hook, 'presence.left', 'hooks-d', gina, { ms: 15000 })
    await sleep(1000)

    assert.equal(about(hook, 'presence.joined', 'hooks-d', gina).length, 1, `the join kept its webhook-id across the restart: ${summary(hook, 'hooks-d')}`)
    assert.equal(about(hook, 'presence.left', 'hooks-d', gina).length, 1, `one leave message: ${summary(hook, 'hooks-d')}`)
    assert.ok(joined.attempts.some((a) => a.status === 500) && hook.requests.indexOf(firstDelivery(joined)) >= beforeRestart,
      'the join failed before the stop and was delivered after the restart')
    assert.equal(joined.attempts.filter((a) => a.status === 200).length, 1)
    assert.equal(left.attempts.filter((a) => a.status === 200).length, 1)
    assert.ok(left.attempts[0].at >= firstDelivery(joined).at, 'the leave after the join')
    assertSameBody(joined)
    for (const m of [joined, left]) {
      assert.equal(m.body.data.principal, 'gina')
      assert.equal(m.body.data.instance, oldId, 'the instance gina was on (before the restart)')
    }
    assert.equal(left.body.data.count, 0)
    assert.ok(await metricSum(D, 'synckit_relay_webhook_delivered_total') >= 2, 'the restarted relay counts its deliveries')
    assertWellFormed(hook.requests)
  })
})
