// Who is here, across instances (issue 26): GET /rooms, GET /rooms/<room>/presence and the
// Server-Sent Events of /rooms/<room>/presence/events, on two relays sharing one database, with
// real y-websocket clients signed in as different principals; and the page's list of other rooms
// in a real browser.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { hs256, tampered } from './tokens.mjs'
import { env, startRelay, connect, destroyAll, waitFor, withTimeout, subscribePresence } from './harness.mjs'

const secret = 'who-secret-0123456789abcdef-0123456789'
const leaseMs = 3000
const pruneMs = 250
const mint = hs256(secret)
const token = (principal, ttlSeconds = 3600) => mint(principal, { iss: undefined, aud: undefined }, { ttl: ttlSeconds })
const as = async (principal) => ({ params: { token: await token(principal) } })
const start = (name, options = {}) => startRelay({
  name,
  databaseUrl: env('RELAY_DB_URL_WHO'),
  pruneInterval: `${pruneMs}ms`,
  extra: ['--lease', `${leaseMs}ms`],
  env: { SYNCKIT_RELAY_AUTH_SECRET: secret },
  ...options
})

const get = async (relay, path, { principal = 'reader', headers = {} } = {}) => {
  const query = principal ? `${path.includes('?') ? '&' : '?'}token=${await token(principal)}` : ''
  const res = await fetch(`${relay.http}${path}${query}`, { headers })
  return { status: res.status, body: res.headers.get('content-type')?.includes('json') ? await res.json() : await res.text() }
}

const presence = async (relay, room) => (await get(relay, `/rooms/${encodeURIComponent(room)}/presence`)).body
const roomCounts = async (relay) => Object.fromEntries((await get(relay, '/rooms')).body.rooms.map((r) => [r.document_id, r.participants]))

/** The events of a room's SSE stream as they arrive; resolves once the stream is open. */
const subscribe = async (relay, room, principal = 'watcher') => subscribePresence(relay, room, await token(principal))

const of = (events, name, client) => events.filter((e) => e.name === name && e.client_id === String(client.id))

describe('who is here across two instances (signed tokens, 3 s lease, 250 ms prune interval, separate database)', () => {
  let A, B
  before(async () => {
    ;[A, B] = await Promise.all([start('WA'), start('WB')])
  })
  after(async () => {
    destroyAll()
    await Promise.all([A?.stop(), B?.stop()])
  })

  test('counts and participants agree on both instances, with principals and instances', async () => {
    const alice = connect(A, 'who-1', { user: { name: 'alice' } }, await as('alice'))
    const bob = connect(B, 'who-1', { user: { name: 'bob' } }, await as('bob'))
    const carol = connect(B, 'who-2', { user: { name: 'carol' } }, await as('carol'))
    for (const relay of [A, B]) {
      await waitFor(async () => (await presence(relay, 'who-1')).count === 2, 10000, `${relay.name} counts 2 in who-1`)
      await waitFor(async () => (await roomCounts(relay))['who-2'] === 1, 10000, `${relay.name} lists who-2 with 1`)
    }
    const [onA, onB] = await Promise.all([presence(A, 'who-1'), presence(B, 'who-1')])
    assert.deepEqual(onA, onB, 'both instances give the same answer')
    const byPrincipal = Object.fromEntries(onA.participants.map((p) => [p.principal, p]))
    assert.equal(byPrincipal.alice.client_id, String(alice.id))
    assert.equal(byPrincipal.alice.instance, (await (await fetch(`${A.http}/healthz`)).json()).instance_id)
    assert.equal(byPrincipal.bob.instance, (await (await fetch(`${B.http}/healthz`)).json()).instance_id)
    assert.deepEqual(byPrincipal.bob.state, { user: { name: 'bob' } })
    const counts = await roomCounts(A)
    assert.equal(counts['who-1'], 2)
    // Paging: one room per page, `next` leads on.
    const page = (await get(A, '/rooms?limit=1')).body
    assert.equal(page.rooms.length, 1)
    assert.equal(page.next, page.rooms[0].document_id)
    const second = (await get(A, `/rooms?limit=1&after=${encodeURIComponent(page.next)}`)).body
    assert.ok(second.rooms[0].document_id > page.next, 'the next page starts after the last room')
    for (const client of [alice, bob, carol]) client.destroy()
    for (const relay of [A, B]) {
      await waitFor(async () => (await presence(relay, 'who-1')).count === 0, 10000, `${relay.name} counts nobody in who-1`)
    }
  })

  test('the event stream delivers a join and a leave on the other instance, each once, with the principal', async () => {
    const stream = await subscribe(A, 'who-3')
    try {
      const dave = connect(B, 'who-3', { user: { name: 'dave' } }, await as('dave'))
      await waitFor(() => of(stream.events, 'joined', dave).length > 0, 10000, () => `dave joins: ${JSON.stringify(stream.events)}`)
      dave.awareness.setLocalStateField('cursor', 1)
      dave.destroy()
      await waitFor(() => of(stream.events, 'left', dave).length > 0, 10000, () => `dave leaves: ${JSON.stringify(stream.events)}`)
      // A marker after: nothing more about dave came before it.
      const erin = connect(B, 'who-3', { user: { name: 'erin' } }, await as('erin'))
      await waitFor(() => of(stream.events, 'joined', erin).length > 0, 10000, 'erin joins')
      assert.equal(of(stream.events, 'joined', dave).length, 1, 'one join')
      assert.equal(of(stream.events, 'left', dave).length, 1, 'one leave')
      assert.equal(of(stream.events, 'joined', dave)[0].principal, 'dave')
      assert.equal(of(stream.events, 'left', dave)[0].principal, 'dave')
      assert.equal(of(stream.events, 'updated', dave).length, 0, 'no updates unless asked for')
      erin.destroy()
    } finally {
      stream.close()
    }
  })

  test('SIGKILL: the dead instance\'s clients leave the answers and the stream within lease + prune', async () => {
    const C = await start('WC')
    const frank = connect(C, 'who-4', { user: { name: 'frank' } }, await as('frank'))
    await waitFor(async () => (await presence(A, 'who-4')).count === 1, 10000, 'A counts frank')
    const stream = await subscribe(A, 'who-4')
    try {
      const killedAt = performance.now()
      C.proc.kill('SIGKILL')
      await withTimeout(C.exited, 5000, 'the killed relay exits')
      frank.destroy()
      for (const relay of [A, B]) {
        await waitFor(async () => (await presence(relay, 'who-4')).count === 0, leaseMs + pruneMs + 3000, `${relay.name} stops counting frank`)
      }
      const goneMs = performance.now() - killedAt
      assert.ok(goneMs <= leaseMs + pruneMs + 2000, `frank left the answers ${Math.round(goneMs)} ms after the kill`)
      assert.equal((await roomCounts(B))['who-4'], undefined, 'who-4 is no longer listed')
      await waitFor(() => of(stream.events, 'left', frank).length > 0, 5000, () => `the stream tells frank left: ${JSON.stringify(stream.events)}`)
      assert.equal(of(stream.events, 'left', frank).length, 1)
      assert.equal(of(stream.events, 'left', frank)[0].principal, 'frank')
    } finally {
      stream.close()
    }
  })

  test('unauthenticated, forged and expired reads are refused (401); bad input is a 400', async () => {
    for (const path of ['/rooms', '/rooms/who-1/presence', '/rooms/who-1/presence/events']) {
      assert.equal((await get(A, path, { principal: null })).status, 401, `${path} without a token`)
      const forged = tampered(await token('reader'), 'mallory')
      assert.equal((await fetch(`${A.http}${path}?token=${forged}`)).status, 401, `${path} with a forged token`)
      assert.equal((await fetch(`${A.http}${path}?token=${await token('mallory', -120)}`)).status, 401, `${path} with an expired token`)
    }
    const bearer = await get(A, '/rooms', { principal: null, headers: { authorization: `Bearer ${await token('reader')}` } })
    assert.equal(bearer.status, 200, 'a bearer token is accepted too')
    assert.equal((await get(A, '/rooms?limit=0')).status, 400)
    assert.equal((await get(A, `/rooms/${'x'.repeat(300)}/presence`)).status, 400)
  })

  test('the page lists the other rooms with their live counts', async () => {
    const { chromium } = await import('playwright-core')
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-quic', '--disable-component-update', '--disable-sync']
    })
    const guests = await Promise.all(['gina', 'hugo', 'ines'].map(async (name) => connect(B, 'who-5', { user: { name } }, await as(name))))
    try {
      const page = await browser.newPage({ viewport: { width: 800, height: 760 } })
      const errors = []
      page.on('pageerror', (e) => errors.push(String(e)))
      await page.goto(`${A.http}/who-page?name=Pat&token=${await token('pat')}`)
      await page.waitForFunction(() => document.querySelector('#rooms li[data-room="who-5"]')?.dataset.count === '3', null, { timeout: 15000 })
      guests.pop().destroy()
      await page.waitForFunction(() => document.querySelector('#rooms li[data-room="who-5"]')?.dataset.count === '2', null, { timeout: 15000 })
      assert.equal(await page.locator('#people li').count(), 1, 'Pat alone in who-page')
      if (process.env.RELAY_WHO_SCREENSHOT) {
        mkdirSync(dirname(process.env.RELAY_WHO_SCREENSHOT), { recursive: true })
        await page.screenshot({ path: process.env.RELAY_WHO_SCREENSHOT })
      }
      assert.deepEqual(errors, [], 'no page errors')
    } finally {
      for (const guest of guests) guest.destroy()
      await browser.close()
    }
  })
})
