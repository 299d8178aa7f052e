// Helpers for the relay's end-to-end tests: relay processes, real y-websocket providers, polling.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

export const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run these tests through \`cargo test -p synckit-relay --test e2e\` (make test)`)
  return value
}

/** Starts a relay; resolves once it listens. `port` 0 picks a free one. */
export const startRelay = async ({ name, port = 0, databaseUrl, timeout = '30s', pruneInterval = '500ms', extra = [], env: extraEnv = {} }) => {
  const args = ['--port', String(port), '--instance', name, '--timeout', timeout, '--prune-interval', pruneInterval, ...extra]
  const proc = spawn(env('RELAY_BIN'), args, {
    env: { ...process.env, DATABASE_URL: databaseUrl, RUST_LOG: process.env.RELAY_LOG || 'warn', ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const logs = []
  proc.stderr.on('data', (d) => logs.push(d.toString()))
  let out = ''
  const listening = new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      out += d.toString()
      const m = out.match(/listening on [^:\s]+:(\d+)/)
      if (m) resolve(Number(m[1]))
    })
    proc.on('exit', (code, signal) => reject(new Error(`relay ${name} exited (${code ?? signal}) before listening:\n${logs.join('')}`)))
  })
  const boundPort = await withTimeout(listening, 30000, `relay ${name} did not start`)
  const relay = {
    name,
    port: boundPort,
    http: `http://127.0.0.1:${boundPort}`,
    ws: `ws://127.0.0.1:${boundPort}`,
    proc,
    logs,
    exited: once(proc, 'exit'),
    async stop (signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill(signal)
      await withTimeout(relay.exited, 15000, `relay ${name} did not exit on ${signal}`)
    }
  }
  return relay
}

export const withTimeout = (promise, ms, message) => {
  let timer
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`${message} (after ${ms} ms)`)), ms) })
  ])
}

/** Polls `predicate` every 5 ms until it holds; fails with `message` after `ms`. */
export const waitFor = async (predicate, ms, message) => {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await predicate()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${typeof message === 'function' ? message() : message}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

// Every Node.js WebsocketProvider adds a process 'exit' listener; the crowd test has 200.
process.setMaxListeners(0)

const clients = new Set()

/** A real y-websocket client in `room` on `relay`, with `state` set once connected. */
export const connect = (relay, room, state, { params } = {}) => {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(relay.ws, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true, params })
  if (state !== undefined) provider.awareness.setLocalState(state)
  const client = {
    doc,
    provider,
    awareness: provider.awareness,
    id: doc.clientID,
    get clock () { return provider.awareness.meta.get(doc.clientID)?.clock },
    sees: (other) => provider.awareness.getStates().has(other.id ?? other),
    stateOf: (other) => provider.awareness.getStates().get(other.id ?? other),
    connected: () => provider.wsconnected,
    // Destroying the doc also stops its Awareness's timer, which would keep Node.js running.
    destroy () { clients.delete(client); provider.destroy(); doc.destroy() }
  }
  clients.add(client)
  return client
}

export const destroyAll = () => { for (const client of [...clients]) client.destroy() }

/** A counter or gauge from the relay's /metrics (with labels: the first series). */
export const metric = async (relay, name) => {
  const text = await (await fetch(`${relay.http}/metrics`)).text()
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm'))
  return m ? Number(m[1]) : 0
}

export const health = async (relay) => (await fetch(`${relay.http}/healthz`)).json()

export const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]

/** The events of `room`'s SSE stream (`/rooms/<room>/presence/events`, read with `token`) as they
 * arrive, parsed; resolves once the stream is open. */
export const subscribePresence = async (relay, room, token) => {
  const controller = new AbortController()
  const events = []
  const res = await fetch(`${relay.http}/rooms/${encodeURIComponent(room)}/presence/events?token=${token}`, { signal: controller.signal })
  if (res.status !== 200 || !res.headers.get('content-type')?.includes('text/event-stream')) {
    throw new Error(`the event stream of ${room} did not open: ${res.status} ${await res.text()}`)
  }
  ;(async () => {
    const decoder = new TextDecoder()
    let buffer = ''
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk, { stream: true })
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        let name = 'message'
        let data = ''
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim()
          else if (line.startsWith('data:')) data += line.slice(5).trim()
        }
        if (data) events.push({ name, ...JSON.parse(data) })
      }
    }
  })().catch((error) => { if (error.name !== 'AbortError') events.push({ name: 'error', error: String(error) }) })
  return { events, close: () => controller.abort() }
}
