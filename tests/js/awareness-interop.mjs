// Interop harness for the Rust y-protocols awareness codec.
//
//   node awareness-interop.mjs gen    -> prints JSON cases [{name, hex, expected | expectError}]
//   node awareness-interop.mjs check  <- reads JSON cases [{name, hex, expected, exactBytes?}]
//
// `gen` builds updates with the real y-protocols encodeAwarenessUpdate; `check` applies
// Rust-encoded updates with the real applyAwarenessUpdate and also re-encodes them with the real
// encoder to compare bytes. Any mismatch exits non-zero with a message.
import * as Y from 'yjs'
import {
  Awareness,
  encodeAwarenessUpdate,
  applyAwarenessUpdate,
  removeAwarenessStates
} from 'y-protocols/awareness'
import { equalityDeep } from 'lib0/function'

const toHex = (u8) => Buffer.from(u8).toString('hex')
const fromHex = (hex) => new Uint8Array(Buffer.from(hex, 'hex'))
const all = [] // every Awareness created, destroyed at the end so their timers stop

const makeAwareness = (clientID) => {
  const doc = new Y.Doc()
  if (clientID !== undefined) doc.clientID = clientID // deterministic ids for reproducible bytes
  const awareness = new Awareness(doc)
  all.push(awareness)
  return awareness
}

/** Expected entries for `clients`, read back from the awareness instance itself. */
const expectedFor = (awareness, clients) => clients.map((clientID) => ({
  clientID,
  clock: awareness.meta.get(clientID).clock,
  state: awareness.states.get(clientID) ?? null
}))

const caseFor = (name, awareness, clients) => ({
  name,
  hex: toHex(encodeAwarenessUpdate(awareness, clients)),
  expected: expectedFor(awareness, clients)
})

const gen = () => {
  const cases = []

  const alice = makeAwareness(1001)
  alice.setLocalState({ user: { name: 'Alice', color: '#ff0000' }, cursor: { anchor: 5, head: 9 } })
  cases.push(caseFor('single local state', alice, [alice.clientID]))
  cases.push(caseFor('empty update', alice, []))

  // Several clients join a hub through real update messages.
  const hub = makeAwareness(1)
  const peers = [7, 300, 16384].map((id, i) => {
    const peer = makeAwareness(id)
    peer.setLocalState({ user: { name: `peer-${i}`, color: ['#00f', '#0f0', '#f00'][i] }, online: true, idx: i })
    applyAwarenessUpdate(hub, encodeAwarenessUpdate(peer, [peer.clientID]), 'test')
    return peer
  })
  cases.push(caseFor('several clients joined', hub, [hub.clientID, ...peers.map((p) => p.clientID)]))

  // State changes bump the clock; the hub relays the newest state.
  for (let i = 0; i < 5; i++) peers[1].setLocalState({ ...peers[1].getLocalState(), cursor: { anchor: i, head: i * 2 } })
  applyAwarenessUpdate(hub, encodeAwarenessUpdate(peers[1], [peers[1].clientID]), 'test')
  cases.push(caseFor('state changes with higher clock', hub, [peers[1].clientID]))

  // A client leaves itself (clock bumped) and the hub learns about it.
  removeAwarenessStates(peers[0], [peers[0].clientID], 'test')
  applyAwarenessUpdate(hub, encodeAwarenessUpdate(peers[0], [peers[0].clientID]), 'test')
  cases.push(caseFor('client left via removeAwarenessStates (own)', peers[0], [peers[0].clientID]))
  // The hub marks a remote client offline (clock unchanged, state null).
  removeAwarenessStates(hub, [peers[2].clientID], 'timeout')
  cases.push(caseFor('remote client removed by hub', hub, [...hub.meta.keys()]))
  // setLocalState(null) is the other way to leave.
  const leaver = makeAwareness(4242)
  leaver.setLocalState({ bye: true })
  leaver.setLocalState(null)
  cases.push(caseFor('client left via setLocalState(null)', leaver, [leaver.clientID]))

  const uni = makeAwareness(2 ** 31)
  uni.setLocalState({
    emoji: '😀👩‍👩‍👧‍👦🏳️‍🌈',
    cjk: '共同編集 협업 共同作業',
    combining: 'e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937',
    rtl: 'مرحبا שלום',
    escapes: 'quote " backslash \\ slash / nl \n tab \t nul \u0000 us \u001f del \u007f ls \u2028 ps \u2029 bom \ufeff',
    'ключ 🔑': ['ä', 'ß', { '名前': '太郎' }],
    astral: '\u{1F600}\u{10FFFF}'
  })
  cases.push(caseFor('unicode states', uni, [uni.clientID]))

  const ordered = makeAwareness(99)
  ordered.setLocalState({ zeta: 1, alpha: { yank: [3, 2, 1], beta: null }, mid: 'm', b: false, a: true, 10: 'ten', 2: 'two' })
  cases.push(caseFor('non-sorted keys (insertion order, integer keys first)', ordered, [ordered.clientID]))

  const nums = makeAwareness(5)
  nums.setLocalState({
    ints: [0, 1, -1, 127, 128, 2 ** 31, -(2 ** 31), 2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 60, 1e20],
    floats: [1.5, -0.25, 0.1 + 0.2, 123456789.125, 1e21, 1e-6, 1e-7, 1.5e-7, 5e-324, Number.MAX_VALUE, 2 ** 70, -0, 3.0, Math.PI, 1 / 3]
  })
  cases.push(caseFor('number formatting', nums, [nums.clientID]))

  // Deterministic random doubles (random bit patterns and random magnitudes) to pin down
  // Number#toString layout and float parsing exactness.
  let seed = 0x9e3779b97f4a7c15n
  const next64 = () => {
    seed ^= (seed << 13n) & 0xffffffffffffffffn
    seed ^= seed >> 7n
    seed ^= (seed << 17n) & 0xffffffffffffffffn
    return seed
  }
  const view = new DataView(new ArrayBuffer(8))
  const doubles = []
  while (doubles.length < 400) {
    view.setBigUint64(0, next64())
    const bits = view.getFloat64(0)
    if (Number.isFinite(bits)) doubles.push(bits)
    const scaled = (Number(next64() % 1000000n) / 997) * 10 ** (Number(next64() % 60n) - 30)
    doubles.push(scaled)
  }
  const rnd = makeAwareness(6)
  rnd.setLocalState({ doubles })
  cases.push(caseFor('random doubles', rnd, [rnd.clientID]))

  const big = makeAwareness(123456)
  const rows = []
  for (let i = 0; rows.length < 700; i++) rows.push({ i, text: `row ${i} ✓ ${'x'.repeat(40)}` })
  big.setLocalState({ rows })
  const bigCase = caseFor('large ~50KB state', big, [big.clientID])
  const bigLen = JSON.stringify(big.getLocalState()).length
  if (bigLen < 45000 || bigLen > 60000) throw new Error(`large state is ${bigLen} bytes, want ~50KB`)
  cases.push(bigCase)

  // varUint boundaries for ids and clocks (clock set through meta, which the encoder reads).
  const edgeIds = [0, 127, 128, 16383, 16384, 2 ** 32, 2 ** 53 - 1]
  const edge = makeAwareness(2 ** 53 - 1)
  edge.setLocalState({ edge: true })
  for (const id of edgeIds) {
    if (id !== edge.clientID) edge.states.set(id, { id })
    edge.meta.set(id, { clock: id === 0 ? 2 ** 53 - 1 : id, lastUpdated: 0 })
  }
  cases.push(caseFor('varUint boundary ids and clocks', edge, edgeIds))

  // Documented divergence: JS lets a lone surrogate through (JSON.stringify escapes it as
  // "\ud800"); serde_json cannot represent it in a Rust String and must reject the state.
  const lone = makeAwareness(77)
  lone.setLocalState({ s: 'broken \ud800 surrogate' })
  cases.push({ name: 'lone surrogate (rejected by Rust)', hex: toHex(encodeAwarenessUpdate(lone, [77])), expectError: 'InvalidJson' })

  process.stdout.write(JSON.stringify(cases))
}

const readStdin = async () => {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return Buffer.concat(chunks).toString('utf8')
}

const check = async () => {
  const cases = JSON.parse(await readStdin())
  if (!Array.isArray(cases) || cases.length === 0) throw new Error('check: expected a non-empty JSON array on stdin')
  const failures = []
  for (const c of cases) {
    const fail = (msg) => failures.push(`[${c.name}] ${msg}`)
    const ids = new Set(c.expected.map((e) => e.clientID))
    let own = 0x7fffffff // a clientID for the receiving awareness that the case does not use
    while (ids.has(own)) own--
    const awareness = makeAwareness(own)
    try {
      applyAwarenessUpdate(awareness, fromHex(c.hex), 'rust')
    } catch (e) {
      fail(`applyAwarenessUpdate threw: ${e && e.message}`)
      continue
    }
    for (const { clientID, clock, state } of c.expected) {
      const meta = awareness.meta.get(clientID)
      if (clock === 0) {
        // A fresh awareness only accepts clocks greater than 0 (currClock < clock).
        if (meta !== undefined) fail(`client ${clientID}: clock 0 entry should be ignored but meta is ${JSON.stringify(meta)}`)
        continue
      }
      if (meta === undefined) { fail(`client ${clientID}: no meta after apply`); continue }
      if (meta.clock !== clock) fail(`client ${clientID}: clock ${meta.clock} !== expected ${clock}`)
      if (state === null) {
        if (awareness.states.has(clientID)) fail(`client ${clientID}: expected removed, has ${JSON.stringify(awareness.states.get(clientID))}`)
      } else if (!equalityDeep(awareness.states.get(clientID), state)) {
        fail(`client ${clientID}: state ${JSON.stringify(awareness.states.get(clientID))} !== expected ${JSON.stringify(state)}`)
      }
    }
    if (c.exactBytes !== false) {
      // Re-encode with the real encoder from a fresh awareness whose states/meta are exactly
      // the case's entries; JS must produce the same bytes Rust did.
      const mirror = makeAwareness(own)
      mirror.states.delete(own)
      for (const { clientID, clock, state } of c.expected) {
        mirror.meta.set(clientID, { clock, lastUpdated: 0 })
        if (state === null) mirror.states.delete(clientID)
        else mirror.states.set(clientID, JSON.parse(JSON.stringify(state)))
      }
      const jsHex = toHex(encodeAwarenessUpdate(mirror, c.expected.map((e) => e.clientID)))
      if (jsHex !== c.hex) fail(`bytes differ from JS encodeAwarenessUpdate:\n  rust ${c.hex.slice(0, 400)}\n  js   ${jsHex.slice(0, 400)}`)
    }
  }
  if (failures.length > 0) {
    console.error(`awareness-interop check: ${failures.length} mismatch(es)\n${failures.join('\n')}`)
    process.exitCode = 1
  } else {
    console.error(`awareness-interop check: ${cases.length} cases OK`)
  }
}

const mode = process.argv[2]
try {
  if (mode === 'gen') gen()
  else if (mode === 'check') await check()
  else { console.error('usage: node awareness-interop.mjs gen|check'); process.exitCode = 2 }
} catch (e) {
  console.error(`awareness-interop ${mode} failed: ${e && e.stack}`)
  process.exitCode = 1
} finally {
  for (const a of all) a.destroy()
}
