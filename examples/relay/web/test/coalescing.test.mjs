// Coalescing for busy rooms (issue 36): in a room of 50 real y-websocket clients, moves that
// come within the relay's awareness tick go out together; every client's last state still
// reaches an observer within tick + 50 ms of being sent, and with the tick off (0s) the same
// run delivers the same final states, one message per move.
import { describe, test, after } from 'node:test'
import assert from 'node:assert/strict'
import { env, startRelay, connect, destroyAll, waitFor, metric, percentile } from './harness.mjs'

const TICK_MS = 30
const MOVERS = 49
const MOVES = 5
const EVERY_MS = 200
const SENT = 'synckit_awareness_presence_messages_sent_total'

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** 49 movers and one observer in `room` on `relay`; each mover moves MOVES times. */
const run = async (relay, room) => {
  const observer = connect(relay, room, { user: 'observer' })
  const movers = Array.from({ length: MOVERS }, (_, i) => connect(relay, room, { user: `m${i}`, n: 0 }))
  await waitFor(() => movers.every((m) => observer.sees(m)), 30000,
    () => `the observer sees ${movers.filter((m) => observer.sees(m)).length} of ${MOVERS} movers`)
  await waitFor(() => movers.every((m) => movers.every((o) => m.sees(o))), 30000, 'every mover sees every other')
  await sleep(500)
  const frames = { count: 0 }
  observer.provider.ws.addEventListener('message', () => { frames.count++ })
  const sentBefore = await metric(relay, SENT)
  const lastSent = new Map()
  const seenLast = new Map()
  observer.awareness.on('change', ({ added, updated }) => {
    const now = performance.now()
    for (const id of [...added, ...updated]) {
      const state = observer.awareness.getStates().get(id)
      if (state?.n === MOVES && !seenLast.has(id)) seenLast.set(id, now)
    }
  })
  await Promise.all(movers.map(async (mover, i) => {
    await sleep((i * EVERY_MS) / MOVERS)
    for (let n = 1; n <= MOVES; n++) {
      mover.awareness.setLocalState({ user: `m${i}`, n, cursor: Math.random() })
      if (n === MOVES) lastSent.set(mover.id, performance.now())
      else await sleep(EVERY_MS)
    }
  }))
  await waitFor(() => movers.every((m) => seenLast.has(m.id)), 10000,
    () => `the observer saw the last state of ${seenLast.size} of ${MOVERS} movers`)
  await sleep(300)
  const delays = movers.map((m) => seenLast.get(m.id) - lastSent.get(m.id)).sort((a, b) => a - b)
  const sent = (await metric(relay, SENT)) - sentBefore
  for (const mover of movers) {
    assert.equal(observer.stateOf(mover).n, MOVES, 'the observer holds every last state')
  }
  return { delays, frames: frames.count, sent, p50: percentile(delays, 50), max: delays[delays.length - 1] }
}

describe('coalescing in a room of 50 (real y-websocket clients, one relay)', () => {
  after(destroyAll)

  test(`with a ${TICK_MS} ms tick every last state arrives within tick + 50 ms, in fewer messages`, async () => {
    const relay = await startRelay({ name: 'tick-on', databaseUrl: env('RELAY_DB_URL'), extra: ['--awareness-tick', `${TICK_MS}ms`, '--awareness-tick-from', '32'] })
    try {
      const on = await run(relay, 'tick-50-on')
      console.log(`tick on: last state seen after p50 ${on.p50.toFixed(1)} ms, max ${on.max.toFixed(1)} ms; ${on.frames} frames to the observer, ${on.sent} messages sent by the relay for ${MOVERS * MOVES} moves`)
      assert.ok(on.max <= TICK_MS + 50, `every last state within ${TICK_MS + 50} ms (slowest ${on.max.toFixed(1)} ms)`)
      // Without the tick the observer would get one frame per move (245); coalesced, far fewer.
      assert.ok(on.frames < MOVERS * MOVES * 0.8, `the observer got ${on.frames} frames for ${MOVERS * MOVES} moves`)
      destroyAll()
    } finally {
      await relay.stop()
    }
  })

  test('with the tick off (0s) the same run delivers every last state, one message per move', async () => {
    const relay = await startRelay({ name: 'tick-off', databaseUrl: env('RELAY_DB_URL'), extra: ['--awareness-tick', '0s'] })
    try {
      const off = await run(relay, 'tick-50-off')
      console.log(`tick off: last state seen after p50 ${off.p50.toFixed(1)} ms, max ${off.max.toFixed(1)} ms; ${off.frames} frames to the observer, ${off.sent} messages sent by the relay for ${MOVERS * MOVES} moves`)
      assert.ok(off.frames >= MOVERS * MOVES, `one frame per move (${off.frames} for ${MOVERS * MOVES})`)
      destroyAll()
    } finally {
      await relay.stop()
    }
  })
})
