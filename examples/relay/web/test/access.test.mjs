// Who may do what (issue 35), end to end: two relays on one database verifying JWTs minted by
// jose — HS256 with a shared secret, RS256 / ES256 / EdDSA from a JWKS served on loopback and
// rotated during the test — with real y-websocket clients: rooms per token (403), read-only
// connections (their edits reach no one and are not stored, checked after a restart), the
// identity others see taken from the token, connections closed when their token expires
// (4401, and a provider with refreshed params back in), every forged kind refused (401), and
// limits per principal (429) while another principal still gets in.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as Y from 'yjs'
import * as syncProtocol from 'y-protocols/sync'
import { env, startRelay, connect, destroyAll, waitFor, withTimeout, metric } from './harness.mjs'
import { hs256, unsigned, tampered, identityProvider, ISSUER, AUDIENCE } from './tokens.mjs'

const secret = 'access-secret-0123456789abcdef-0123456789'
const hs = hs256(secret)

/** A WebSocket upgrade: its status (101 when it opened) and the refusal's body. */
const attempt = (url) => new Promise((resolve) => {
  const ws = new WebSocket(url)
  ws.once('open', () => { ws.close(); resolve({ status: 101, body: '' }) })
  ws.once('unexpected-response', (_req, res) => {
    let body = ''
    res.on('data', (d) => { body += d })
    res.on('end', () => { resolve({ status: res.statusCode, body }); ws.terminate() })
  })
  ws.once('error', (error) => resolve({ status: 'error', body: String(error) }))
})

/** An open raw WebSocket (the messages it receives are collected). */
const open = async (url) => {
  const ws = new WebSocket(url)
  ws.binaryType = 'nodebuffer'
  ws.received = []
  ws.on('message', (data) => ws.received.push(new Uint8Array(data)))
  ws.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('unexpected-response', (_q, res) => reject(new Error(`refused: ${res.statusCode}`))) }), 5000, 'open')
  return ws
}

/** The permission-denied reasons (y-websocket message type 2) a raw socket received. */
const denials = (ws) => ws.received.filter((m) => m[0] === 2).map((m) => {
  const decoder = decoding.createDecoder(m)
  decoding.readVarUint(decoder)
  decoding.readVarUint(decoder)
  return decoding.readVarString(decoder)
})

describe('access: JWTs from an identity provider, rooms, read-only, identity, expiry, limits (two relays, separate database)', () => {
  let idp, A, B
  const extra = () => [
    '--jwks', idp.url, '--jwt-issuer', ISSUER, '--jwt-audience', AUDIENCE, '--jwt-leeway', '0s',
    '--jwks-refetch-interval', '1s', '--max-connections-per-principal', '3', '--max-streams-per-principal', '1'
  ]
  const start = (name, port = 0) => startRelay({
    name,
    port,
    databaseUrl: env('RELAY_DB_URL_ACCESS'),
    extra: extra(),
    env: { SYNCKIT_RELAY_AUTH_SECRET: secret }
  })
  const get = async (relay, path, token) => {
    const res = await fetch(`${relay.http}${path}${path.includes('?') ? '&' : '?'}token=${token}`)
    return { status: res.status, body: res.headers.get('content-type')?.includes('json') ? await res.json() : await res.text() }
  }

  before(async () => {
    idp = await identityProvider()
    await idp.addKey('rsa-1', 'RS256')
    await idp.addKey('ec-1', 'ES256')
    await idp.addKey('ed-1', 'EdDSA')
    ;[A, B] = await Promise.all([start('A'), start('B')])
  })
  after(async () => {
    destroyAll()
    await Promise.all([A, B].map((r) => r?.stop()))
    await idp?.close()
  })

  test('1. RS256, ES256 and EdDSA tokens from the JWKS and an HS256 one open the rooms their claim names; others are 403 with a reason', async () => {
    const teamA = { rooms: { 'a-*': 'write' } }
    for (const token of [await idp.sign('rsa-1', 'alice', teamA), await idp.sign('ec-1', 'alice', teamA), await idp.sign('ed-1', 'alice', teamA), await hs('alice', teamA)]) {
      assert.equal((await attempt(`${A.ws}/a-1?token=${token}`)).status, 101, 'a-1')
      const refused = await attempt(`${B.ws}/b-1?token=${token}`)
      assert.equal(refused.status, 403, 'b-1')
      assert.match(refused.body, /does not give access to room "b-1"/)
    }
    // Secure by default: a valid token without the rooms claim opens nothing.
    const noClaim = await attempt(`${A.ws}/a-1?token=${await hs('alice', { rooms: null })}`)
    assert.equal(noClaim.status, 403)
    assert.ok(await metric(A, 'synckit_relay_refusals_total') > 0, 'refusals are counted')
  })

  test('2. every forged kind is refused with 401 and its reason, before the upgrade and with nothing written', async () => {
    const attacker = await idp.addKey('rsa-attacker', 'RS256', { published: false })
    const rsaPublicPem = Buffer.from(await (await import('jose')).exportSPKI(idp.key('rsa-1').publicKey))
    const confused = await hs256(rsaPublicPem.toString())('mallory')
    const rsaAsEc = (await idp.sign('ec-1', 'mallory', {}, { headerKid: 'rsa-1' }))
    const cases = [
      ['alg none', unsigned('mallory'), /malformed token, or an algorithm never accepted/],
      ['HS256 keyed with the RSA public key', confused, /invalid token signature/],
      ['ES256 under the RSA key\'s kid', rsaAsEc, /key "rsa-1" is for \[RS256\], not ES256/],
      ['another key under a known kid', await idp.sign('rsa-attacker', 'mallory', {}, { headerKid: 'rsa-1' }), /invalid token signature/],
      ['an unknown kid', await idp.sign('rsa-attacker', 'mallory'), /no key "rsa-attacker"/],
      ['expired', await hs('mallory', {}, { ttl: -60 }), /expired token/],
      ['not yet valid', await hs('mallory', { nbf: Math.floor(Date.now() / 1000) + 600 }), /not valid yet/],
      ['another issuer', await hs('mallory', { iss: 'https://evil.example/' }), /another issuer/],
      ['another audience', await hs('mallory', { aud: 'someone-else' }), /another audience/],
      ['no audience', await hs('mallory', { aud: undefined }), /no aud claim/],
      ['tampered payload', tampered(await hs('alice'), 'mallory'), /invalid token signature/],
      ['malformed', 'not.a.jwt', /malformed token/],
      ['oversized', await hs('mallory', { padding: 'x'.repeat(20000) }), /over the limit of 16384/],
      ['a malformed rooms claim', await hs('mallory', { rooms: { 'a-*': 'admin' } }), /rooms claim gives/]
    ]
    assert.ok(attacker)
    for (const [kind, token, reason] of cases) {
      const upgrade = await attempt(`${A.ws}/forged-room?token=${token}`)
      assert.equal(upgrade.status, 401, `${kind}: ${upgrade.body}`)
      assert.match(upgrade.body, reason, kind)
      const read = await get(B, '/rooms/forged-room/presence', token)
      assert.equal(read.status, 401, `${kind} (presence)`)
    }
    assert.equal((await attempt(`${A.ws}/forged-room`)).status, 401, 'no token')
    const seen = await get(A, '/rooms/forged-room/presence', await hs('auditor'))
    assert.equal(seen.status, 200)
    assert.equal(seen.body.count, 0, 'nothing was written')
  })

  test('3. the identity others see comes from the token, whatever the client claims', async () => {
    const user = { name: 'Alice', color: '#f80' }
    const alice = connect(A, 'a-2', { user: { name: 'Mallory', color: '#000' }, cursor: 1 }, { params: { token: await hs('auth0|alice', { rooms: { 'a-*': 'write' }, user }) } })
    const bob = connect(B, 'a-2', { user: { name: 'Bob' } }, { params: { token: await hs('bob', { rooms: { 'a-2': 'write' } }) } })
    await waitFor(() => bob.sees(alice), 10000, 'bob sees alice')
    assert.deepEqual(bob.stateOf(alice), { user, cursor: 1 })
    alice.awareness.setLocalStateField('cursor', 2)
    await waitFor(() => bob.stateOf(alice)?.cursor === 2, 10000, 'alice moves')
    assert.deepEqual(bob.stateOf(alice).user, user)
    const listed = await get(B, '/rooms/a-2/presence', await hs('auditor'))
    const entry = listed.body.participants.find((p) => p.principal === 'auth0|alice')
    assert.deepEqual(entry?.state?.user, user, JSON.stringify(listed.body))
    alice.destroy(); bob.destroy()
  })

  test('4. a read-only client syncs the document and shows up in presence; its edits reach no one and are not stored', async () => {
    const writer = connect(A, 'a-doc', { user: { name: 'writer' } }, { params: { token: await hs('writer', { rooms: { 'a-*': 'write' } }) } })
    await waitFor(() => writer.provider.synced, 10000, 'writer synced')
    writer.doc.getText('t').insert(0, 'hello')
    const viewer = connect(B, 'a-doc', { user: { name: 'viewer' } }, { params: { token: await hs('viewer', { rooms: { 'a-doc': 'read' } }) } })
    await waitFor(() => viewer.doc.getText('t').toString() === 'hello', 10000, 'the viewer reads the text')
    await waitFor(() => writer.sees(viewer), 10000, 'the viewer shows up in presence')
    viewer.doc.getText('t').insert(5, ' (edited by the viewer)')
    // A raw read-only socket: its update is refused with a reason it can read, and it stays open.
    const raw = await open(`${A.ws}/a-doc?token=${await hs('viewer', { rooms: { 'a-doc': 'read' } })}`)
    const evil = new Y.Doc()
    evil.getText('t').insert(0, 'injected ')
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, 0)
    syncProtocol.writeUpdate(encoder, Y.encodeStateAsUpdate(evil))
    raw.send(encoding.toUint8Array(encoder))
    await waitFor(() => denials(raw).length > 0, 5000, 'a permission-denied message')
    assert.match(denials(raw)[0], /read-only access to room "a-doc"/)
    await new Promise((resolve) => setTimeout(resolve, 500))
    assert.equal(raw.readyState, WebSocket.OPEN, 'the read-only connection stays open')
    assert.equal(writer.doc.getText('t').toString(), 'hello', 'no read-only edit reached the writer')
    raw.close(); viewer.destroy(); writer.destroy()
    // After a restart of both relays, a new client reads what was stored: the writer's text only.
    await Promise.all([A.stop(), B.stop()])
    ;[A, B] = await Promise.all([start('A'), start('B')])
    const reader = connect(B, 'a-doc', undefined, { params: { token: await hs('reader', { rooms: { 'a-doc': 'read' } }) } })
    await waitFor(() => reader.provider.synced, 10000, 'the reader synced')
    assert.equal(reader.doc.getText('t').toString(), 'hello')
    reader.destroy()
  })

  test('5. GET /rooms lists only the rooms a token may read; presence and events of other rooms are 403', async () => {
    const inA = connect(A, 'a-list', { user: { name: 'x' } }, { params: { token: await hs('x', { rooms: { 'a-*': 'write' } }) } })
    const inB = connect(B, 'b-list', { user: { name: 'y' } }, { params: { token: await hs('y', { rooms: { 'b-*': 'write' } }) } })
    const all = await hs('auditor')
    await waitFor(async () => {
      const rooms = (await get(A, '/rooms', all)).body.rooms.map((r) => r.document_id)
      return rooms.includes('a-list') && rooms.includes('b-list')
    }, 10000, 'both rooms listed')
    const names = async (token) => (await get(B, '/rooms', token)).body.rooms.map((r) => r.document_id)
    assert.deepEqual(await names(await hs('r', { rooms: { 'a-list': 'read' } })), ['a-list'])
    assert.deepEqual(await names(await hs('r', { rooms: { 'b-*': 'read' } })), ['b-list'])
    assert.deepEqual(await names(await hs('r', { rooms: { 'a-*': 'read', 'b-list': 'read' } })), ['a-list', 'b-list'])
    assert.deepEqual(await names(await hs('r', { rooms: {} })), [])
    const onlyA = await hs('r', { rooms: { 'a-*': 'read' } })
    assert.equal((await get(A, '/rooms/b-list/presence', onlyA)).status, 403)
    assert.equal((await get(A, '/rooms/b-list/presence/events', onlyA)).status, 403)
    assert.equal((await get(A, '/rooms/a-list/presence', onlyA)).status, 200)
    inA.destroy(); inB.destroy()
  })

  test('6. a 3-second token\'s connection is closed (4401) when it expires; a provider with refreshed params comes back', async () => {
    const short = await open(`${A.ws}/a-expiry?token=${await hs('brief', { rooms: { 'a-*': 'write' } }, { ttl: 3 })}`)
    const started = Date.now()
    const closed = await withTimeout(short.closed, 10000, 'the expired connection was not closed')
    assert.equal(closed.code, 4401)
    assert.match(closed.reason, /token expired/)
    console.log(`# closed ${Date.now() - started} ms after opening a 3 s token`)
    const client = connect(A, 'a-expiry', { user: { name: 'refreshing' } }, { params: { token: await hs('refreshing', { rooms: { 'a-*': 'write' } }, { ttl: 2 }) } })
    const codes = []
    client.provider.on('connection-close', (event) => codes.push(event?.code))
    await waitFor(() => client.connected(), 10000, 'connected')
    // What an application does before its token runs out: the next reconnect carries this one.
    client.provider.params = { token: await hs('refreshing', { rooms: { 'a-*': 'write' } }) }
    await waitFor(() => codes.includes(4401), 10000, 'closed at expiry')
    await waitFor(() => client.connected(), 10000, 'back with the fresh token')
    client.destroy()
  })

  test('7. one principal past its connection and stream limits is refused (429) while another still gets in', async () => {
    const greedy = await hs('greedy', { rooms: { 'a-*': 'write' } })
    const sockets = []
    for (let i = 0; i < 3; i++) sockets.push(await open(`${A.ws}/a-limit?token=${greedy}`))
    const fourth = await attempt(`${A.ws}/a-limit?token=${greedy}`)
    assert.equal(fourth.status, 429)
    assert.match(fourth.body, /this principal holds the most connections allowed \(3\)/)
    assert.equal((await attempt(`${A.ws}/a-limit?token=${await hs('modest', { rooms: { 'a-*': 'write' } })}`)).status, 101)
    const controller = new AbortController()
    const stream = await fetch(`${A.http}/rooms/a-limit/presence/events?token=${greedy}`, { signal: controller.signal })
    assert.equal(stream.status, 200)
    const second = await fetch(`${A.http}/rooms/a-limit/presence/events?token=${greedy}`)
    assert.equal(second.status, 429)
    assert.match(await second.text(), /most event streams allowed \(1\)/)
    const other = new AbortController()
    assert.equal((await fetch(`${A.http}/rooms/a-limit/presence/events?token=${await hs('modest', { rooms: { 'a-*': 'read' } })}`, { signal: other.signal })).status, 200)
    controller.abort(); other.abort()
    for (const ws of sockets) ws.close()
    // Places come back when connections close.
    await waitFor(async () => (await attempt(`${A.ws}/a-limit?token=${greedy}`)).status === 101, 5000, 'a place back')
  })

  test('8. a key added to the JWKS is accepted without a restart; unknown kids refetch at most once per interval', async () => {
    await idp.addKey('rsa-2', 'RS256')
    const before = idp.fetches
    assert.equal((await attempt(`${A.ws}/a-rotated?token=${await idp.sign('rsa-2', 'rotated', { rooms: { 'a-*': 'write' } })}`)).status, 101)
    assert.ok(idp.fetches > before, 'the relay refetched the JWKS')
    await idp.addKey('rsa-ghost', 'RS256', { published: false })
    const ghost = await idp.sign('rsa-ghost', 'ghost')
    const burst = idp.fetches
    for (let i = 0; i < 5; i++) assert.equal((await attempt(`${A.ws}/a-rotated?token=${ghost}`)).status, 401)
    assert.ok(idp.fetches - burst <= 1, `${idp.fetches - burst} fetches for 5 unknown kids within the interval`)
  })
})
