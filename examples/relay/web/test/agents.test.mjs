// Agents over HTTP (issue 39), end to end: a participant with no WebSocket (a bot, a server-side
// job) PUTs its presence to one relay and is seen by real y-websocket clients on another one,
// in the awareness of the room (client id >= 2^32, never a Yjs clientID), in GET
// /rooms/{room}/presence and in the room's event stream; renewed from any instance, deleted
// only by its owner, gone by itself when its TTL runs out. Bad input is a 400 with a reason
// and changes nothing; tokens are checked as for a WebSocket connection (401, 403).
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { hs256 } from './tokens.mjs'
import { env, startRelay, connect, destroyAll, waitFor, subscribePresence } from './harness.mjs'

// --- settings and helpers ------------------------------------------------------------------

const secret = 'agents-secret-0123456789abcdef-0123456789'
const leaseMs = 3000
const pruneMs = 250
const maxStateBytes = 1024
const TWO_32 = 2 ** 32
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const mint = hs256(secret)
/** A token for `principal`: every room writable unless `claims.rooms` says otherwise; no `user` claim unless given. */
const token = (principal, claims = {}) => mint(principal, { iss: undefined, aud: undefined, ...claims })
const as = async (principal) => ({ params: { token: await token(principal) } })

const start = (name) => startRelay({
  name,
  databaseUrl: env('RELAY_DB_URL_AGENTS'),
  pruneInterval: `${pruneMs}ms`,
  extra: ['--lease', `${leaseMs}ms`, '--max-state-bytes', String(maxStateBytes)],
  env: { SYNCKIT_RELAY_AUTH_SECRET: secret }
})

const path = (room, participant) => `/rooms/${encodeURIComponent(room)}/presence/${encodeURIComponent(participant)}`

/**
 * An HTTP call: `auth` is a token (sent as `?token=`), `{ bearer }` (an Authorization header)
 * or null (none). Answers { status, text, json }; a connection error is status 'error: …'.
 */
const call = async (method, relay, url, { auth = null, body, contentType = 'application/json' } = {}) => {
  const headers = {}
  let query = ''
  if (typeof auth === 'string') query = `?token=${auth}`
  else if (auth?.bearer) headers.authorization = `Bearer ${auth.bearer}`
  if (body !== undefined && contentType) headers['content-type'] = contentType
  try {
    const res = await fetch(`${relay.http}${url}${query}`, { method, headers, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) })
    const text = await res.text()
    let json
    try { json = JSON.parse(text) } catch {}
    return { status: res.status, text, json }
  } catch (error) {
    return { status: `error: ${error.cause?.code ?? error.message}`, text: '' }
  }
}
/** A response for an assertion's message. */
const show = (res) => `${res.status} ${res.text.slice(0, 300)}`
const put = (relay, room, participant, body, auth) => call('PUT', relay, path(room, participant), { auth, body })
const del = (relay, room, participant, auth) => call('DELETE', relay, path(room, participant), { auth })

/** GET /rooms/{room}/presence on `relay`. */
const presence = async (relay, room) => {
  const res = await call('GET', relay, `/rooms/${encodeURIComponent(room)}/presence`, { auth: await token('auditor') })
  assert.equal(res.status, 200, `GET presence of ${room}: ${show(res)}`)
  return res.json
}
const listed = async (relay, room, clientId) => (await presence(relay, room)).participants.find((p) => p.client_id === String(clientId))
/** What presence says about a room, without clocks (they move with renewals): [client, principal, state]. */
const snapshot = async (relay, room) => (await presence(relay, room)).participants
  .map((p) => [p.client_id, p.principal, p.state]).sort((a, b) => (a[0] < b[0] ? -1 : 1))

/** The events of a room's SSE stream as they arrive; resolves once it is open. */
const subscribe = async (relay, room) => subscribePresence(relay, room, await token('watcher'))

/** A y-websocket client that also records the client ids its awareness saw removed. */
const watch = async (relay, room, name) => {
  const client = connect(relay, room, { user: { name } }, await as(name))
  client.removed = []
  client.awareness.on('change', ({ removed }) => client.removed.push(...removed))
  await waitFor(() => client.connected() && client.provider.synced, 10000, `${name} connected to ${room}`)
  return client
}

// --- the tests -----------------------------------------------------------------------------

describe(`agents over HTTP on two instances (signed tokens, 3 s lease, --max-state-bytes ${maxStateBytes}, separate database)`, () => {
  let A, B
  before(async () => {
    ;[A, B] = await Promise.all([start('GA'), start('GB')])
  })
  after(async () => {
    destroyAll()
    await Promise.all([A?.stop(), B?.stop()])
  })

  test('an agent PUT on A is seen on B (awareness, presence, events); renewed on B; DELETE by another principal is 403, by its owner 204', async () => {
    const room = 'agents-1'
    const owner = await token('summariser-service')
    const watcher = await watch(B, room, 'watcher')
    const stream = await subscribe(B, room)
    try {
      const state = { name: 'Summariser', status: 'summarising…' }
      const created = await put(A, room, 'summariser', { state, ttl: 30 }, owner)
      assert.equal(created.status, 200, show(created))
      const { clientId, clock } = created.json
      assert.equal(created.json.room, room)
      assert.equal(created.json.participant, 'summariser')
      assert.ok(Number.isSafeInteger(clientId) && clientId >= TWO_32, `clientId ${clientId} is >= 2^32 (never a Yjs clientID)`)
      assert.equal(typeof clock, 'number')
      assert.equal(created.json.expiresInMs, 30000)

      // A client on the other instance has it in its awareness, with the state as sent.
      await waitFor(() => watcher.sees(clientId), 10000, () => `the watcher on B sees the agent; states: ${JSON.stringify([...watcher.awareness.getStates()])}`)
      assert.deepEqual(watcher.stateOf(clientId), state)
      // A client that connects afterwards gets it in its first sync.
      const late = await watch(A, room, 'late')
      await waitFor(() => late.sees(clientId), 10000, 'a later client sees the agent')
      assert.deepEqual(late.stateOf(clientId), state)
      late.destroy()
      // Both instances list it with its owner.
      for (const relay of [A, B]) {
        const entry = await waitFor(() => listed(relay, room, clientId), 5000, `${relay.name} lists the agent`)
        assert.equal(entry.principal, 'summariser-service')
        assert.deepEqual(entry.state, state)
      }
      await waitFor(() => stream.events.some((e) => e.name === 'joined' && e.client_id === String(clientId)), 5000, () => `the stream on B tells the agent joined: ${JSON.stringify(stream.events)}`)
      assert.equal(stream.events.find((e) => e.name === 'joined' && e.client_id === String(clientId)).principal, 'summariser-service')

      // Renewed on B with a new state: same client id, a later clock, the watcher sees the change.
      const renewedState = { name: 'Summariser', status: 'done' }
      const renewed = await put(B, room, 'summariser', { state: renewedState, ttl: 30 }, { bearer: owner })
      assert.equal(renewed.status, 200, show(renewed))
      assert.equal(renewed.json.clientId, clientId, 'the client id is the same for the same room and participant')
      assert.ok(renewed.json.clock > clock, `the clock moved on (${clock} -> ${renewed.json.clock})`)
      await waitFor(() => watcher.stateOf(clientId)?.status === 'done', 10000, 'the watcher sees the renewed state')
      assert.deepEqual(watcher.stateOf(clientId), renewedState)
      assert.deepEqual((await listed(A, room, clientId)).state, renewedState)

      // Another principal may neither take it over nor delete it; nothing changes.
      const intruder = await token('intruder')
      const takeover = await put(A, room, 'summariser', { state: { name: 'Evil' }, ttl: 30 }, intruder)
      assert.equal(takeover.status, 403, `another principal's PUT: ${show(takeover)}`)
      const refused = await del(B, room, 'summariser', intruder)
      assert.equal(refused.status, 403, `another principal's DELETE: ${show(refused)}`)
      await sleep(500)
      assert.deepEqual(watcher.stateOf(clientId), renewedState, 'the watcher still sees the agent as it was')
      assert.deepEqual((await listed(B, room, clientId))?.state, renewedState, 'still listed as it was')
      assert.ok(!watcher.removed.includes(clientId))

      // Its owner deletes it: 204, gone from the awareness, the answers and the stream.
      const deleted = await del(B, room, 'summariser', owner)
      assert.equal(deleted.status, 204, show(deleted))
      await waitFor(() => !watcher.sees(clientId), 10000, 'the watcher sees the agent removed')
      assert.ok(watcher.removed.includes(clientId), 'the awareness reported it removed')
      for (const relay of [A, B]) assert.equal(await listed(relay, room, clientId), undefined, `${relay.name} no longer lists it`)
      await waitFor(() => stream.events.some((e) => e.name === 'left' && e.client_id === String(clientId)), 5000, () => `the stream tells the agent left: ${JSON.stringify(stream.events)}`)
      assert.equal(stream.events.filter((e) => e.name === 'joined' && e.client_id === String(clientId)).length, 1, 'joined once (the renewal is no new join)')
      assert.equal(stream.events.filter((e) => e.name === 'left' && e.client_id === String(clientId)).length, 1, 'left once')
      // Gone: a second DELETE is a 404 on either instance (A hosted it before the renewal on B).
      const again = [await del(B, room, 'summariser', owner), await del(A, room, 'summariser', owner)]
      assert.deepEqual(again.map((r) => r.status), [404, 404], `DELETE of a participant no longer there, on B then A: ${again.map(show).join(' | ')}`)
    } finally {
      stream.close()
      watcher.destroy()
    }
  })

  test('without renewal an agent leaves by itself when its TTL runs out; renewals keep it', async () => {
    const room = 'agents-ttl'
    const owner = await token('ttl-service')
    const watcher = await watch(B, room, 'watcher')
    try {
      // Renewed every second with a 2 s TTL for 4 s: still there.
      const kept = await put(A, room, 'kept', { state: { name: 'Kept' }, ttl: 2 }, owner)
      assert.equal(kept.status, 200, show(kept))
      await waitFor(() => watcher.sees(kept.json.clientId), 10000, 'the watcher sees the kept agent')
      for (let i = 0; i < 4; i++) {
        await sleep(1000)
        const renewal = await put(i % 2 ? A : B, room, 'kept', { state: { name: 'Kept', beat: i }, ttl: 2 }, owner)
        assert.equal(renewal.status, 200, show(renewal))
      }
      assert.ok(watcher.sees(kept.json.clientId) && !watcher.removed.includes(kept.json.clientId), 'the renewed agent never left')
      await waitFor(() => watcher.stateOf(kept.json.clientId)?.beat === 3, 5000, () => `the watcher sees the last renewal's state: ${JSON.stringify(watcher.stateOf(kept.json.clientId))}`)
      const stopped = await del(B, room, 'kept', owner)
      assert.equal(stopped.status, 204, show(stopped))
      await waitFor(() => !watcher.sees(kept.json.clientId), 5000, 'the kept agent is deleted')

      // Not renewed: gone within ttl + a few seconds, and not before its TTL.
      const brief = await put(A, room, 'brief', { state: { name: 'Brief' }, ttl: 2 }, owner)
      const putAt = performance.now()
      assert.equal(brief.status, 200, show(brief))
      assert.equal(brief.json.expiresInMs, 2000)
      await waitFor(() => watcher.sees(brief.json.clientId), 10000, 'the watcher sees the brief agent')
      await waitFor(() => !watcher.sees(brief.json.clientId), 2000 + pruneMs + 4000, 'the brief agent leaves by itself')
      const goneMs = performance.now() - putAt
      console.log(`# a 2 s agent left ${Math.round(goneMs)} ms after its PUT`)
      assert.ok(goneMs >= 1800, `not before its TTL (${Math.round(goneMs)} ms)`)
      assert.ok(watcher.removed.includes(brief.json.clientId))
      for (const relay of [A, B]) assert.equal(await listed(relay, room, brief.json.clientId), undefined, `${relay.name} no longer lists it`)
      const late = await del(A, room, 'brief', owner)
      assert.equal(late.status, 404, `DELETE after the TTL lapsed: ${show(late)}`)
    } finally {
      watcher.destroy()
    }
  })

  test('the token\'s user claim replaces state.user, as for a WebSocket client', async () => {
    const room = 'agents-user'
    const user = { name: 'Summary Bot', color: '#0af' }
    const owner = await token('bot-with-user', { user })
    const watcher = await watch(B, room, 'watcher')
    try {
      const res = await put(A, room, 'bot', { state: { user: { name: 'Someone Else' }, status: 'reading' }, ttl: 30 }, owner)
      assert.equal(res.status, 200, show(res))
      await waitFor(() => watcher.sees(res.json.clientId), 10000, 'the watcher sees the bot')
      assert.deepEqual(watcher.stateOf(res.json.clientId), { user, status: 'reading' })
      assert.deepEqual((await listed(A, room, res.json.clientId)).state, { user, status: 'reading' })
      assert.equal((await del(A, room, 'bot', owner)).status, 204)
    } finally {
      watcher.destroy()
    }
  })

  test('bad bodies and participant names are 400 with a reason, and change nothing', async () => {
    const room = 'agents-bad'
    const owner = await token('careful-service')
    const steadyState = { name: 'Steady' }
    const steady = await put(A, room, 'steady', { state: steadyState, ttl: 60 }, owner)
    assert.equal(steady.status, 200, show(steady))
    const before = await snapshot(B, room)
    assert.equal(before.length, 1)

    // Just under the state limit is accepted (the limit is the one given, not smaller).
    const small = await put(A, room, 'small', { state: { blob: 'x'.repeat(maxStateBytes - 100) }, ttl: 60 }, owner)
    assert.equal(small.status, 200, `a state under --max-state-bytes: ${show(small)}`)
    assert.equal((await del(A, room, 'small', owner)).status, 204)

    // [what, body, what the reason names]
    const bodies = [
      ['not JSON', 'this is not json', /json/i],
      ['truncated JSON', '{"state":{"name":"x"},"ttl":3', /json/i],
      ['state missing', { ttl: 30 }, /state/],
      ['state null', { state: null, ttl: 30 }, /state/],
      ['state a string', { state: 'Steady', ttl: 30 }, /state/],
      ['state an array', { state: [1, 2], ttl: 30 }, /state/],
      ['ttl missing', { state: { name: 'x' } }, /ttl/],
      ['ttl -1', { state: { name: 'x' }, ttl: -1 }, /ttl/],
      ['ttl 0', { state: { name: 'x' }, ttl: 0 }, /ttl/],
      ['ttl "x"', { state: { name: 'x' }, ttl: 'x' }, /ttl/],
      ['ttl over a day', { state: { name: 'x' }, ttl: 86401 }, /ttl/],
      [`state of 1.5 KB (over --max-state-bytes ${maxStateBytes})`, { state: { blob: 'x'.repeat(1536) }, ttl: 30 }, /state|bytes|large/],
      ['state of 5 KB', { state: { blob: 'x'.repeat(5 * 1024) }, ttl: 30 }, /state|bytes|large/],
      ['a 2 MB body', { state: { blob: 'x'.repeat(2 * 1024 * 1024) }, ttl: 30 }, /state|bytes|large/]
    ]
    for (const participant of ['steady', 'fresh']) {
      for (const [what, body, reason] of bodies) {
        const res = await put(A, room, participant, body, owner)
        assert.equal(res.status, 400, `${what} (${participant}): ${show(res)}`)
        assert.match(res.text, reason, `${what}: the reason says what is wrong`)
      }
    }
    assert.deepEqual(await snapshot(B, room), before, 'presence unchanged after the bad bodies')

    const names = [
      ['65 characters', 'a'.repeat(65)],
      ['a space', 'bad name'],
      ['a slash', 'a/b'],
      ['a colon', 'agent:1'],
      ['a star', '*'],
      ['non-ASCII', 'agént'],
      ['an emoji', '🤖']
    ]
    for (const [what, name] of names) {
      const res = await put(A, room, name, { state: { name: 'x' }, ttl: 30 }, owner)
      assert.equal(res.status, 400, `participant name with ${what}: ${show(res)}`)
      assert.match(res.text, /participant/, `${what}: the reason says what is wrong`)
    }
    assert.deepEqual(await snapshot(B, room), before, 'presence unchanged after the bad names')
    // The edges of the allowed names: 64 characters, and each of . _ -.
    for (const name of ['b'.repeat(64), 'agent.v1_x-Y9']) {
      const res = await put(A, room, name, { state: { name }, ttl: 30 }, owner)
      assert.equal(res.status, 200, `participant "${name}": ${show(res)}`)
      assert.equal((await del(B, room, name, owner)).status, 204)
    }
    assert.equal((await del(A, room, 'steady', owner)).status, 204)
  })

  test('a read-only token or one for other rooms is 403, no or a bad token 401; nothing changes', async () => {
    const room = 'agents-auth'
    const owner = await token('auth-service')
    const body = { state: { name: 'x' }, ttl: 30 }
    const existing = await put(A, room, 'existing', body, owner)
    assert.equal(existing.status, 200, show(existing))
    const before = await snapshot(B, room)

    const readOnly = await token('reader', { rooms: { [room]: 'read' } })
    const elsewhere = await token('elsewhere', { rooms: { 'other-*': 'write' } })
    for (const [what, auth, status] of [
      ['a read-only token', readOnly, 403],
      ['a read-only bearer token', { bearer: readOnly }, 403],
      ['a token for other rooms', elsewhere, 403],
      ['no token', null, 401],
      ['a malformed token', 'not.a.jwt', 401],
      ['a token signed with another secret', await hs256('another-secret-0123456789abcdef-0123')('auth-service', { iss: undefined, aud: undefined }), 401]
    ]) {
      const created = await put(A, room, 'newcomer', body, auth)
      assert.equal(created.status, status, `PUT with ${what}: ${show(created)}`)
      const renewed = await put(B, room, 'existing', { state: { name: 'changed' }, ttl: 30 }, auth)
      assert.equal(renewed.status, status, `PUT over an existing agent with ${what}: ${show(renewed)}`)
      const deleted = await del(A, room, 'existing', auth)
      assert.equal(deleted.status, status, `DELETE with ${what}: ${show(deleted)}`)
    }
    assert.deepEqual(await snapshot(B, room), before, 'presence unchanged')
    assert.equal((await del(A, room, 'existing', owner)).status, 204)
  })
})
