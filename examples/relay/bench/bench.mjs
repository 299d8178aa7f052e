#!/usr/bin/env node
// Side-by-side presence benchmark: synckit-relay (on PostgreSQL) vs Hocuspocus 4.x (alone and
// scaled out over Redis) vs y-websocket 1.5.4's own server. See README.md beside this file.
//
//   node bench.mjs [--quick] [--rounds N] [--workloads 8x8,16x8,16x16]
//                  [--sides relay2,relay4,relay1,hocuspocus2,hocuspocus4,hocuspocus1,ywebsocket1]
//                  [--duration S] [--warmup S] [--memory | --with-memory | --no-memory]
//
// Env: RELAY_BIN (default <repo>/target/release/synckit-relay), RELAY_ARGS (extra relay flags,
// space-separated; with --auth-secret, or SYNCKIT_RELAY_AUTH_SECRET set, relay clients get signed
// tokens), RELAY_TOKEN (one fixed token for every relay client instead), RELAY_LOG (relay
// RUST_LOG, default warn), DATABASE_URL (PostgreSQL admin URL), REDIS_URL. Writes <repo>/target/bench-relay/results.md and results.json.
import { spawn, execFileSync } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { createServer, connect as tcpConnect } from 'node:net'
import { availableParallelism } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'

const HERE = dirname(fileURLToPath(import.meta.url))
const REPO = resolve(HERE, '../../..')
const OUT_DIR = join(REPO, 'target', 'bench-relay')

// ---------------------------------------------------------------------------------------------
// Options

const ALL_SIDES = ['relay2', 'relay4', 'relay1', 'hocuspocus2', 'hocuspocus4', 'hocuspocus1', 'ywebsocket1']
const MEMORY_SIDES = ['relay1', 'hocuspocus1', 'ywebsocket1', 'ysweet1']

const usage = `usage: node bench.mjs [--quick] [--rounds N] [--workloads 8x8,16x8,16x16]
       [--sides ${ALL_SIDES.join(',')}] [--duration S] [--warmup S] [--drain S]
       [--interval MS]  each client's time between moves (default 250: 4 Hz)
       [--memory] [--with-memory] [--no-memory] [--memory-connections N] [--memory-rooms N]
       [--documents] [--no-documents] [--doc-rooms N] [--doc-interval MS]
  --quick        2 rooms x 2 clients, 2 s (0.5 s warm-up), 1 round, no memory measurement
  --memory       only the memory-per-idle-connection measurement
  --with-memory  latency rounds and then the memory measurement (the default unless --quick)
  --no-memory    latency rounds only
  --documents    only the documents step (cross-instance Y.Text edits, relay2 vs hocuspocus2)
  --no-documents leave the documents step out (it runs by default, tiny under --quick)
env: RELAY_BIN, RELAY_ARGS, RELAY_TOKEN, RELAY_LOG, DATABASE_URL, REDIS_URL`

/** y-sweet's binary: YSWEET_BIN, else y-sweet on PATH or in ~/.cargo/bin; null when absent. */
const ysweetBin = () => {
  if (process.env.YSWEET_BIN) return process.env.YSWEET_BIN
  for (const dir of [...(process.env.PATH || '').split(':'), join(process.env.HOME || '/root', '.cargo', 'bin')]) {
    if (dir && existsSync(join(dir, 'y-sweet'))) return join(dir, 'y-sweet')
  }
  return null
}

/** Every side, y-sweet's when it is installed (said when it is not). */
const defaultSides = () => {
  if (ysweetBin()) return [...ALL_SIDES, 'ysweet1']
  console.log('y-sweet not found (cargo install --locked y-sweet --version 0.9.1, or YSWEET_BIN): its side is left out')
  return ALL_SIDES
}

const parseArgs = (argv) => {
  const flags = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const value = () => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${arg} needs a value\n${usage}`)
      return v
    }
    switch (arg) {
      case '--quick': flags.quick = true; break
      case '--rounds': flags.rounds = Number(value()); break
      case '--workloads': flags.workloads = value(); break
      case '--sides': flags.sides = value(); break
      case '--duration': flags.duration = Number(value()); break
      case '--warmup': flags.warmup = Number(value()); break
      case '--drain': flags.drain = Number(value()); break
      case '--interval': flags.interval = Number(value()); break
      case '--memory': flags.memoryOnly = true; break
      case '--with-memory': flags.memory = true; break
      case '--no-memory': flags.memory = false; break
      case '--memory-connections': flags.memoryConnections = Number(value()); break
      case '--memory-rooms': flags.memoryRooms = Number(value()); break
      case '--documents': flags.documentsOnly = true; break
      case '--no-documents': flags.documents = false; break
      case '--doc-rooms': flags.docRooms = Number(value()); break
      case '--doc-interval': flags.docInterval = Number(value()); break
      case '-h': case '--help': console.log(usage); process.exit(0); break
      default: throw new Error(`unknown argument ${arg}\n${usage}`)
    }
  }
  const quick = !!flags.quick
  const options = {
    quick,
    rounds: flags.rounds ?? (quick ? 1 : 3),
    // ROOMSxCLIENTS[@MS]: MS each client's time between moves (default --interval).
    workloads: (flags.workloads ?? (quick ? '2x2' : '8x8,16x8,16x16,1x150@1000')).split(',').map((w) => {
      const m = w.trim().match(/^(\d+)x(\d+)(?:@(\d+))?$/)
      if (!m || Number(m[1]) < 1 || Number(m[2]) < 2) throw new Error(`bad workload ${w}: ROOMSxCLIENTS[@MS], at least 2 clients a room`)
      return { rooms: Number(m[1]), clients: Number(m[2]), intervalMs: m[3] ? Number(m[3]) : null, name: w.trim() }
    }),
    sides: (flags.sides ?? defaultSides().join(',')).split(',').map((s) => s.trim()).filter(Boolean),
    duration: flags.duration ?? (quick ? 2 : 15),
    warmup: flags.warmup ?? (quick ? 0.5 : 2),
    drain: flags.drain ?? (quick ? 1 : 2),
    latency: !flags.memoryOnly && !flags.documentsOnly,
    memory: flags.documentsOnly ? false : flags.memoryOnly ? true : (flags.memory ?? !quick),
    documents: flags.documentsOnly ? true : flags.memoryOnly ? false : (flags.documents ?? true),
    docRooms: flags.docRooms ?? (quick ? 1 : 4),
    docIntervalMs: flags.docInterval ?? 20,
    memoryConnections: flags.memoryConnections ?? 1000,
    memoryRooms: flags.memoryRooms ?? 50,
    intervalMs: flags.interval ?? 250,
    relayBin: process.env.RELAY_BIN || join(REPO, 'target', 'release', 'synckit-relay'),
    relayArgs: (process.env.RELAY_ARGS || '').split(/\s+/).filter(Boolean),
    databaseUrl: process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable',
    redisUrl: process.env.REDIS_URL || 'redis://127.0.0.1:6379'
  }
  const extra = ['relay2pooler', 'relay1notify', 'relay1notick', 'relay2notick', 'relay1w1', 'relay1w2', 'ysweet1']
  for (const side of options.sides) if (![...ALL_SIDES, ...extra].includes(side)) throw new Error(`unknown side ${side} (known: ${[...ALL_SIDES, ...extra].join(', ')})`)
  if (!(options.intervalMs >= 10)) throw new Error('--interval must be at least 10 (ms)')
  if (!(options.rounds >= 1)) throw new Error('--rounds must be at least 1')
  if (!(options.duration > options.warmup && options.warmup >= 0)) throw new Error('--duration must exceed --warmup')
  return options
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const nowMs = () => performance.timeOrigin + performance.now()

const withTimeout = (promise, ms, message) => {
  let timer
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`${message} (after ${ms} ms)`)), ms) })
  ])
}

const waitFor = async (predicate, ms, message) => {
  const deadline = Date.now() + ms
  for (;;) {
    if (predicate()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${typeof message === 'function' ? message() : message}`)
    await sleep(20)
  }
}

const percentile = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] : null
const median = (values) => {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b)
  if (!v.length) return null
  const mid = Math.floor(v.length / 2)
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2
}
const round = (x, digits = 2) => x === null || x === undefined || !Number.isFinite(x) ? null : Number(x.toFixed(digits))

const sh = (command, args, extra = {}) => execFileSync(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...extra }).toString().trim()
const uptime = () => { try { return sh('uptime', []) } catch { return readFileSync('/proc/loadavg', 'utf8').trim() } }
const CLK_TCK = Number(sh('getconf', ['CLK_TCK'])) || 100

// ---------------------------------------------------------------------------------------------
// /proc: CPU time and RSS

/** utime+stime of a process in clock ticks, or null once it is gone. */
const cpuTicks = (pid) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // fields[0] is field 3 (state)
    return Number(fields[11]) + Number(fields[12]) // utime (14), stime (15)
  } catch { return null }
}

/** pid -> ticks for every process whose comm is one of `names`. */
const ticksByComm = (names) => {
  const result = new Map()
  if (!names.length) return result
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
      if (!names.includes(comm)) continue
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      result.set(Number(entry), Number(fields[11]) + Number(fields[12]))
    } catch { /* gone meanwhile */ }
  }
  return result
}

const rssKb = (pid) => {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)\s+kB/m)
  if (!m) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(m[1])
}

/** A CPU snapshot of the side's server processes and of its database's processes. */
const cpuSnapshot = (side) => ({
  at: nowMs(),
  servers: new Map(side.servers.map((s) => [s.pid, cpuTicks(s.pid)])),
  db: ticksByComm(side.dbComm),
  client: process.cpuUsage()
})

/** CPU milliseconds between two snapshots; a database process that appeared meanwhile counts whole. */
const cpuBetween = (a, b) => {
  const ms = (ticks) => (ticks * 1000) / CLK_TCK
  let server = 0
  for (const [pid, end] of b.servers) if (end !== null && a.servers.get(pid) !== null) server += end - (a.servers.get(pid) ?? 0)
  let db = 0
  for (const [pid, end] of b.db) db += end - (a.db.get(pid) ?? 0)
  const client = process.cpuUsage(a.client)
  return {
    wallMs: b.at - a.at,
    serverMs: ms(server),
    dbMs: ms(db),
    clientMs: (client.user + client.system) / 1000
  }
}

// ---------------------------------------------------------------------------------------------
// Child processes: every one is tracked and killed on exit, errors and signals.

const children = new Set()
const databases = new Set()
const redisPrefixes = new Set()
let options

const killAll = () => {
  for (const child of children) { try { child.kill('SIGKILL') } catch { /* gone */ } }
}

const psql = (sql) => sh('psql', ['-v', 'ON_ERROR_STOP=1', '-qAtX', options.databaseUrl, '-c', sql])

const databaseUrl = (name) => {
  const url = new URL(options.databaseUrl)
  url.pathname = `/${name}`
  url.searchParams.set('sslmode', 'disable')
  return url.toString()
}

const createDatabase = (name) => {
  psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  psql(`CREATE DATABASE ${name}`)
  databases.add(name)
  return databaseUrl(name)
}

const dropDatabase = (name) => {
  try { psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) } catch (error) { console.error(`could not drop database ${name}: ${error.stderr ?? error.message}`) }
  databases.delete(name)
}

const redisCli = (...args) => sh('redis-cli', ['-u', options.redisUrl, ...args])

const deleteRedisKeys = (prefix) => {
  try {
    const keys = redisCli('--scan', '--pattern', `${prefix}*`).split('\n').filter(Boolean)
    for (let i = 0; i < keys.length; i += 500) redisCli('del', ...keys.slice(i, i + 500))
    redisPrefixes.delete(prefix)
  } catch (error) { console.error(`could not delete redis keys ${prefix}*: ${error.stderr ?? error.message}`) }
}

const emergencyCleanup = () => {
  killAll()
  for (const name of [...databases]) dropDatabase(name)
  for (const prefix of [...redisPrefixes]) deleteRedisKeys(prefix)
}

process.on('exit', killAll)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`\n${signal}: stopping every child process and dropping the benchmark databases`)
    emergencyCleanup()
    process.exit(130)
  })
}

/** Starts a server process; resolves once it prints "listening on <host>:<port>". */
const startProcess = async ({ label, command, args = [], env = {}, port: fixedPort = null }) => {
  const proc = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(proc)
  const exited = once(proc, 'exit').catch(() => {})
  proc.on('exit', () => children.delete(proc))
  const logs = []
  const keep = (data) => { logs.push(data.toString()); if (logs.length > 200) logs.shift() }
  proc.stderr.on('data', keep)
  let out = ''
  let port
  try {
    port = await withTimeout(new Promise((resolve, reject) => {
      proc.stdout.on('data', (data) => {
        keep(data)
        if (out === null || fixedPort) return
        out += data.toString()
        const m = out.match(/listening on [^:\s]+:(\d+)/)
        if (m) { out = null; resolve(Number(m[1])) }
      })
      if (fixedPort) portOpen(fixedPort, 60000).then(() => resolve(fixedPort), reject)
      proc.on('error', reject)
      proc.on('exit', (code, signal) => reject(new Error(`${label} exited (${code ?? signal}) before listening:\n${logs.join('')}`)))
    }), 60000, `${label} did not start`)
  } catch (error) {
    proc.kill('SIGKILL')
    throw error
  }
  const server = {
    label,
    pid: proc.pid,
    port,
    url: `ws://127.0.0.1:${port}`,
    logs,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    async stop () {
      if (!server.alive()) return
      proc.kill('SIGTERM')
      try {
        await withTimeout(exited, 15000, `${label} did not exit on SIGTERM`)
      } catch (error) {
        console.error(`${error.message}: killing it`)
        proc.kill('SIGKILL')
        await exited
      }
    }
  }
  return server
}

// ---------------------------------------------------------------------------------------------
// Sides

const SIDES = {
  relay2: { kind: 'relay', instances: 2, client: 'y-websocket', store: 'PostgreSQL', label: 'synckit-relay x2 (PostgreSQL)' },
  relay4: { kind: 'relay', instances: 4, client: 'y-websocket', store: 'PostgreSQL', label: 'synckit-relay x4 (PostgreSQL)' },
  relay1: { kind: 'relay', instances: 1, client: 'y-websocket', store: 'PostgreSQL', label: 'synckit-relay x1 (PostgreSQL)' },
  // Through a transaction-mode PgBouncer on 127.0.0.1:BENCH_POOLER_PORT in front of the same
  // server (`--transaction-pooler`, the listener on the direct URL); its CPU counts with the
  // database's. Not in the default sides (it needs the PgBouncer: benches/pooler.sh's settings).
  relay2pooler: { kind: 'relay', instances: 2, pooler: true, client: 'y-websocket', store: 'PostgreSQL via PgBouncer', label: 'synckit-relay x2 (PostgreSQL through PgBouncer)' },
  // The relay with coalescing off (`--awareness-tick 0s`): every move its own message, as
  // before the tick. Not in the default sides; beside relay1/relay2 it shows what the tick does.
  relay1notick: { kind: 'relay', instances: 1, client: 'y-websocket', store: 'PostgreSQL', label: 'synckit-relay x1, no tick', relayArgs: ['--awareness-tick', '0s'] },
  relay2notick: { kind: 'relay', instances: 2, client: 'y-websocket', store: 'PostgreSQL', label: 'synckit-relay x2, no tick', relayArgs: ['--awareness-tick', '0s'] },
  // One relay that notifies even alone (`--notify-when-alone`), as before: beside relay1 it
  // shows what skipping the NOTIFY while alone saves (measure with --warmup above 5 s: an
  // instance counts as alone 5 s after its listener starts).
  relay1notify: { kind: 'relay', instances: 1, client: 'y-websocket', store: 'PostgreSQL', label: 'synckit-relay x1, NOTIFY when alone', relayArgs: ['--notify-when-alone'] },
  // The relay on one worker thread (`--worker-threads 1`) and on one per core (2 here).
  relay1w1: { kind: 'relay', instances: 1, client: 'y-websocket', store: 'PostgreSQL', label: 'synckit-relay x1, 1 worker thread', relayArgs: ['--worker-threads', '1'] },
  relay1w2: { kind: 'relay', instances: 1, client: 'y-websocket', store: 'PostgreSQL', label: 'synckit-relay x1, 2 worker threads', relayArgs: ['--worker-threads', '2'] },
  hocuspocus2: { kind: 'hocuspocus', instances: 2, client: 'hocuspocus', store: 'Redis', label: 'Hocuspocus x2 (Redis)' },
  hocuspocus4: { kind: 'hocuspocus', instances: 4, client: 'hocuspocus', store: 'Redis', label: 'Hocuspocus x4 (Redis)' },
  hocuspocus1: { kind: 'hocuspocus', instances: 1, client: 'hocuspocus', store: 'memory', label: 'Hocuspocus x1 (memory)' },
  ywebsocket1: { kind: 'ywebsocket', instances: 1, client: 'y-websocket', store: 'memory', label: 'y-websocket 1.5.4 server (memory)' },
  // y-sweet 0.9.1, the Rust Yjs server (`cargo install --locked y-sweet --version 0.9.1`;
  // YSWEET_BIN or y-sweet on PATH), documents in memory, driven by the y-websocket client at
  // ws://…/d/{doc}/ws after `POST /doc/new`. Not in the default sides (it needs the install).
  ysweet1: { kind: 'ysweet', instances: 1, client: 'y-sweet', store: 'memory', label: 'y-sweet 0.9.1 (memory)' }
}

/** A TCP port nobody listens on now. */
const freePort = () => new Promise((resolve, reject) => {
  const server = createServer()
  server.on('error', reject)
  server.listen(0, '127.0.0.1', () => { const { port } = server.address(); server.close(() => resolve(port)) })
})

/** Resolves once something accepts connections on 127.0.0.1:`port`. */
const portOpen = (port, ms) => withTimeout((async () => {
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = tcpConnect(port, '127.0.0.1')
      socket.once('connect', () => { socket.destroy(); resolve(true) })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    await sleep(50)
  }
})(), ms, `nothing listens on ${port}`)

/** y-sweet serves only documents created first: one per room. */
const prepareRooms = async (side, rooms) => {
  if (side.spec.kind !== 'ysweet') return
  for (const room of rooms) {
    const res = await fetch(`http://127.0.0.1:${side.servers[0].port}/doc/new`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ docId: room })
    })
    if (!res.ok) throw new Error(`y-sweet: POST /doc/new ${room}: ${res.status} ${await res.text()}`)
  }
}

let sequence = 0

/** Starts a side's servers (and its database). `instances` overrides the side's count. */
const startSide = async (name, instances = SIDES[name].instances, extraRelayArgs = []) => {
  const spec = SIDES[name]
  const tag = `${process.pid}_${++sequence}`
  const servers = []
  const side = { name, spec, servers, dbComm: [], cleanup: [] }
  side.stop = async () => {
    await Promise.all(servers.map((s) => s.stop()))
    for (const step of side.cleanup.reverse()) step()
  }
  try {
    if (spec.kind === 'relay') {
      const db = `bench_relay_${tag}`
      const url = createDatabase(db)
      side.databaseUrl = url
      side.cleanup.push(() => dropDatabase(db))
      side.dbComm = ['postgres']
      let relayUrl = url
      const poolerArgs = []
      if (spec.pooler) {
        const port = process.env.BENCH_POOLER_PORT
        if (!port) throw new Error(`${name} needs BENCH_POOLER_PORT: a PgBouncer (pool_mode = transaction) on 127.0.0.1 in front of DATABASE_URL's server`)
        const pooled = new URL(url)
        pooled.hostname = '127.0.0.1'
        pooled.port = port
        relayUrl = pooled.toString()
        poolerArgs.push('--transaction-pooler', '--listen-url', url)
        side.dbComm = ['postgres', 'pgbouncer']
      }
      // One after the other: each runs the migrations on start.
      for (let i = 0; i < instances; i++) {
        servers.push(await startProcess({
          label: `${name}/${'ABCD'[i]}`,
          command: options.relayBin,
          args: ['--port', '0', '--instance', `bench-${'abcd'[i]}`, '--timeout', '30s', '--prune-interval', '1s', ...poolerArgs, ...(spec.relayArgs ?? []), ...options.relayArgs, ...extraRelayArgs],
          env: { DATABASE_URL: relayUrl, RUST_LOG: process.env.RELAY_LOG || 'warn' }
        }))
      }
    } else if (spec.kind === 'hocuspocus') {
      const env = {}
      if (spec.store === 'Redis') {
        const prefix = `bench-hocuspocus-${tag}`
        Object.assign(env, { BENCH_REDIS_URL: options.redisUrl, BENCH_REDIS_PREFIX: prefix })
        redisPrefixes.add(prefix)
        side.cleanup.push(() => deleteRedisKeys(prefix))
        side.dbComm = ['redis-server']
      }
      for (let i = 0; i < instances; i++) {
        servers.push(await startProcess({
          label: `${name}/${'ABCD'[i]}`,
          command: process.execPath,
          args: [join(HERE, 'servers', 'hocuspocus.mjs')],
          env: { ...env, PORT: '0', NAME: `bench-${'abcd'[i]}` }
        }))
      }
    } else if (spec.kind === 'ysweet') {
      const port = await freePort()
      servers.push(await startProcess({
        label: name,
        command: ysweetBin() || 'y-sweet',
        args: ['serve', '--host', '127.0.0.1', '--port', String(port)],
        env: { RUST_LOG: 'warn' },
        port
      }))
    } else {
      servers.push(await startProcess({
        label: name,
        command: process.execPath,
        args: [join(HERE, 'servers', 'ywebsocket.cjs')],
        env: { PORT: '0', NAME: 'bench' }
      }))
    }
  } catch (error) {
    await side.stop()
    throw error
  }
  return side
}

// Every Node.js WebsocketProvider adds a process 'exit' listener.
process.setMaxListeners(0)

/** One real client of the side's kind in `room` on the server at `url`. */
const makeClient = (kind, url, room, token = null) => {
  const doc = new Y.Doc()
  if (kind === 'y-websocket' || kind === 'y-sweet') {
    // y-sweet: the document's socket is ws://…/d/{doc}/ws/{doc} (server URL …/d/{doc}/ws, room {doc}).
    const [base, name] = kind === 'y-sweet' ? [`${url}/d/${encodeURIComponent(room)}/ws`, room] : [url, room]
    const provider = new WebsocketProvider(base, name, doc, { WebSocketPolyfill: WebSocket, disableBc: true, params: token ? { token } : {} })
    return {
      id: doc.clientID,
      room,
      doc,
      awareness: provider.awareness,
      connected: () => provider.wsconnected,
      synced: () => provider.synced,
      // Destroying the doc also stops its Awareness's timer.
      destroy () { provider.destroy(); doc.destroy() }
    }
  }
  // Hocuspocus 4: one HocuspocusProviderWebsocket (the connection; `WebSocketPolyfill` lives
  // here) per client, so each client has its own WebSocket like the y-websocket clients. A
  // provider given a `websocketProvider` does not attach itself: attach() it.
  const socket = new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: WebSocket })
  const provider = new HocuspocusProvider({ websocketProvider: socket, name: room, document: doc })
  provider.attach()
  return {
    id: doc.clientID,
    room,
    doc,
    awareness: provider.awareness,
    // Synced: authenticated and through the sync handshake, so awareness flows both ways.
    connected: () => provider.isSynced,
    synced: () => provider.isSynced,
    destroy () { provider.destroy(); socket.destroy(); doc.destroy() }
  }
}

// The relay's HS256 JWTs (examples/relay/src/auth/, README "Access"): every room read-write, a
// day long; HS256 is one HMAC, so the benchmark signs it with node:crypto (the relay's tests mint
// theirs with jose). The secret is the one the relays get:
// --auth-secret in RELAY_ARGS, else SYNCKIT_RELAY_AUTH_SECRET (the relays inherit this env).
const relayAuthSecret = () => {
  const args = options.relayArgs
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--auth-secret') return args[i + 1]
    if (args[i].startsWith('--auth-secret=')) return args[i].slice('--auth-secret='.length)
  }
  return process.env.SYNCKIT_RELAY_AUTH_SECRET || null
}

/** RELAY_ARGS for the report, without the secret. */
const redactedRelayArgs = () => options.relayArgs.map((a, i, all) =>
  all[i - 1] === '--auth-secret' ? '***' : a.replace(/^--auth-secret=.*/, '--auth-secret=***'))

/** The `?token=` for a relay client, or null when the relays run open. */
const relayToken = (principal) => {
  if (process.env.RELAY_TOKEN) return process.env.RELAY_TOKEN
  const secret = relayAuthSecret()
  if (!secret) return null
  const part = (json) => Buffer.from(JSON.stringify(json)).toString('base64url')
  const exp = Math.floor(Date.now() / 1000) + 24 * 3600
  const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: principal, exp, rooms: { '*': 'write' } })}`
  return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`
}

const randomState = (name, t) => ({
  user: { name },
  cursor: { x: Math.round(Math.random() * 1000), y: Math.round(Math.random() * 1000) },
  t
})

// ---------------------------------------------------------------------------------------------
// Latency / CPU run: one side, one workload

const runLatency = async (name, workload, roundIndex) => {
  const started = Date.now()
  const side = await startSide(name)
  const clients = []
  const intervals = new Set()
  try {
    await prepareRooms(side, Array.from({ length: workload.rooms }, (_, r) => `bench-room-${r}`))
    for (let r = 0; r < workload.rooms; r++) {
      for (let c = 0; c < workload.clients; c++) {
        // A room's clients dealt round the instances: half on each of two, a quarter on each of four.
        const server = side.servers[c % side.servers.length]
        const name = `user-${r}-${c}`
        const client = makeClient(side.spec.client, server.url, `bench-room-${r}`, side.spec.kind === 'relay' ? relayToken(name) : null)
        client.name = name
        clients.push(client)
      }
    }
    const connectStart = nowMs()
    await waitFor(() => clients.every((c) => c.connected()), 60000,
      () => `${clients.filter((c) => !c.connected()).length} of ${clients.length} clients not connected on ${name}`)
    const connectMs = nowMs() - connectStart
    await sleep(1000)

    const start = nowMs()
    const warmEnd = start + options.warmup * 1000
    const sendEnd = start + options.duration * 1000
    const latencies = []
    let sentInWindow = 0

    for (const client of clients) {
      const seen = new Set()
      client.awareness.on('change', ({ added, updated }) => {
        const now = nowMs()
        const states = client.awareness.getStates()
        for (const ids of [added, updated]) {
          for (const id of ids) {
            if (id === client.id) continue
            const t = states.get(id)?.t
            if (typeof t !== 'number' || t < warmEnd || t >= sendEnd) continue
            const key = `${id}:${t}`
            if (seen.has(key)) continue
            seen.add(key)
            latencies.push(now - t)
          }
        }
      })
      const tick = () => {
        const t = nowMs()
        if (t >= sendEnd) { clearInterval(client.timer); intervals.delete(client.timer); return }
        client.awareness.setLocalState(randomState(client.name, t))
        if (t >= warmEnd) sentInWindow++
      }
      setTimeout(() => {
        client.timer = setInterval(tick, workload.intervalMs ?? options.intervalMs)
        intervals.add(client.timer)
        tick()
      }, Math.random() * (workload.intervalMs ?? options.intervalMs))
    }

    const LOOP_RESOLUTION_MS = 5
    const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS })
    await sleep(warmEnd - nowMs())
    const cpuStart = cpuSnapshot(side)
    loop.enable()
    await sleep(sendEnd - nowMs())
    const cpuEnd = cpuSnapshot(side)
    loop.disable()
    const cpu = cpuBetween(cpuStart, cpuEnd)
    await sleep(options.drain * 1000)

    const dead = side.servers.filter((s) => !s.alive()).map((s) => s.label)
    if (dead.length) throw new Error(`server process(es) ${dead.join(', ')} died during the run:\n${side.servers.flatMap((s) => s.logs).join('').slice(-4000)}`)

    const sorted = Float64Array.from(latencies).sort()
    const deliveries = sorted.length
    const expected = sentInWindow * (workload.clients - 1)
    const perK = (ms) => deliveries ? (ms * 1000) / deliveries : null
    return {
      side: name,
      workload: workload.name,
      round: roundIndex + 1,
      connectMs: round(connectMs, 0),
      sent: sentInWindow,
      expected,
      deliveries,
      missing: expected - deliveries,
      p50: round(percentile(sorted, 50)),
      p90: round(percentile(sorted, 90)),
      p99: round(percentile(sorted, 99)),
      max: round(sorted[sorted.length - 1] ?? null),
      mean: round(deliveries ? sorted.reduce((a, b) => a + b, 0) / deliveries : null),
      windowMs: round(cpu.wallMs, 0),
      cpuServerMs: round(cpu.serverMs, 0),
      cpuDbMs: round(cpu.dbMs, 0),
      cpuPerK: round(perK(cpu.serverMs + cpu.dbMs)),
      cpuServerPerK: round(perK(cpu.serverMs)),
      cpuDbPerK: round(perK(cpu.dbMs)),
      clientCpuPct: round((100 * cpu.clientMs) / cpu.wallMs, 0),
      // The histogram's samples include the timer's own interval: report the lag past it.
      clientLoopDelayP99Ms: round(Math.max(0, loop.percentile(99) / 1e6 - LOOP_RESOLUTION_MS), 1),
      // What the servers logged at WARN or ERROR during the run (a connection closed by a
      // store error is logged there): a count, and the first such line.
      serverWarnings: warnings(side).length,
      firstServerWarning: warnings(side)[0] ?? null,
      seconds: round((Date.now() - started) / 1000, 1)
    }
  } finally {
    for (const timer of intervals) clearInterval(timer)
    for (const client of clients) { try { client.destroy() } catch { /* already gone */ } }
    await sleep(300)
    await side.stop()
  }
}

/**
 * The servers' log lines at WARN or ERROR so far (the relay logs at `RELAY_LOG`, default warn),
 * without colours and without the start-up notice that the relay runs open (no auth secret).
 */
const warnings = (side) => side.servers.flatMap((s) => (s.logs ?? []).join('').split('\n'))
  .map((line) => line.replace(/\x1b\[[0-9;]*m/g, ''))
  .filter((line) => /\b(WARN|ERROR)\b/.test(line) && !line.includes('SYNCKIT_RELAY_AUTH_SECRET'))

// ---------------------------------------------------------------------------------------------
// Documents: cross-instance Y.Text edits (a writer on instance A, a reader on B, per room)

const DOC_SIDES = ['relay2', 'relay2pooler', 'hocuspocus2']

/** Rows and bytes in the relay's document tables (its side's database). */
const documentTables = (side) => {
  const out = sh('psql', ['-v', 'ON_ERROR_STOP=1', '-qAtX', side.databaseUrl, '-c',
    'SELECT (SELECT count(*) FROM relay_document_updates), (SELECT coalesce(sum(octet_length("update")), 0) FROM relay_document_updates), ' +
    '(SELECT count(*) FROM relay_documents), (SELECT coalesce(sum(octet_length(snapshot)), 0) FROM relay_documents), ' +
    "pg_total_relation_size('relay_document_updates') + pg_total_relation_size('relay_documents')"])
  const [rows, rowBytes, snapshots, snapshotBytes, relationBytes] = out.split('|').map(Number)
  return { rows, rowBytes, snapshots, snapshotBytes, relationBytes }
}

const runDocuments = async (name, roundIndex) => {
  const started = Date.now()
  // The relays never compact by themselves here: the tables are measured before and after
  // `synckit-relay compact` (compaction during appends is tests/compaction.rs's subject).
  const side = await startSide(name, undefined, ['--compact-after', '0'])
  const pairs = []
  const intervals = new Set()
  try {
    for (let r = 0; r < options.docRooms; r++) {
      const room = `bench-doc-${r}`
      const writer = makeClient(side.spec.client, side.servers[0].url, room, side.spec.kind === 'relay' ? relayToken(`writer-${r}`) : null)
      const reader = makeClient(side.spec.client, side.servers[1 % side.servers.length].url, room, side.spec.kind === 'relay' ? relayToken(`reader-${r}`) : null)
      pairs.push({ writer, reader })
    }
    const all = pairs.flatMap((p) => [p.writer, p.reader])
    await waitFor(() => all.every((c) => c.synced()), 60000, () => `${all.filter((c) => !c.synced()).length} of ${all.length} clients not synced on ${name}`)
    await sleep(500)

    const start = nowMs()
    const warmEnd = start + options.warmup * 1000
    const sendEnd = start + options.duration * 1000
    const latencies = []
    let sentInWindow = 0
    let edits = 0
    let updateBytes = 0
    for (const { writer, reader } of pairs) {
      writer.doc.on('update', (update) => { updateBytes += update.length })
      reader.doc.getText('t').observe((event) => {
        const now = nowMs()
        for (const d of event.delta) {
          if (typeof d.insert !== 'string') continue
          for (const m of d.insert.matchAll(/\[(\d+\.\d+)\]/g)) {
            const t = Number(m[1])
            if (t >= warmEnd && t < sendEnd) latencies.push(now - t)
          }
        }
      })
      const text = writer.doc.getText('t')
      const tick = () => {
        const t = nowMs()
        if (t >= sendEnd) { clearInterval(writer.timer); intervals.delete(writer.timer); return }
        text.insert(text.length, `[${t.toFixed(3)}]`)
        edits++
        if (t >= warmEnd) sentInWindow++
      }
      setTimeout(() => {
        writer.timer = setInterval(tick, options.docIntervalMs)
        intervals.add(writer.timer)
        tick()
      }, Math.random() * options.docIntervalMs)
    }
    await sleep(warmEnd - nowMs())
    const cpuStart = cpuSnapshot(side)
    await sleep(sendEnd - nowMs())
    const cpuEnd = cpuSnapshot(side)
    const cpu = cpuBetween(cpuStart, cpuEnd)
    await sleep(options.drain * 1000)
    const dead = side.servers.filter((s) => !s.alive()).map((s) => s.label)
    if (dead.length) throw new Error(`server process(es) ${dead.join(', ')} died during the run:\n${side.servers.flatMap((s) => s.logs).join('').slice(-4000)}`)
    const identical = pairs.every(({ writer, reader }) => writer.doc.getText('t').toString() === reader.doc.getText('t').toString())

    const sorted = Float64Array.from(latencies).sort()
    const deliveries = sorted.length
    const perK = (ms) => deliveries ? (ms * 1000) / deliveries : null
    const result = {
      side: name,
      round: roundIndex + 1,
      edits,
      sent: sentInWindow,
      deliveries,
      missing: sentInWindow - deliveries,
      identical,
      p50: round(percentile(sorted, 50)),
      p99: round(percentile(sorted, 99)),
      max: round(sorted[sorted.length - 1] ?? null),
      cpuServerMs: round(cpu.serverMs, 0),
      cpuDbMs: round(cpu.dbMs, 0),
      cpuPerK: round(perK(cpu.serverMs + cpu.dbMs)),
      cpuServerPerK: round(perK(cpu.serverMs)),
      cpuDbPerK: round(perK(cpu.dbMs)),
      clientUpdateBytesPerK: round((updateBytes * 1000) / edits, 0),
      seconds: null
    }
    if (side.spec.kind === 'relay') {
      const before = documentTables(side)
      const compactStart = nowMs()
      const compacted = sh(options.relayBin, ['compact'].concat([]), { env: { ...process.env, DATABASE_URL: side.databaseUrl } })
      const compactMs = nowMs() - compactStart
      const after = documentTables(side)
      const k = (x) => round((x * 1000) / edits, 1)
      result.tables = {
        before: { rowsPerK: k(before.rows), bytesPerK: k(before.rowBytes + before.snapshotBytes), relationBytesPerK: k(before.relationBytes) },
        after: { rowsPerK: k(after.rows + after.snapshots), bytesPerK: k(after.rowBytes + after.snapshotBytes) },
        compactMs: round(compactMs, 0),
        compactOutput: compacted
      }
    }
    result.seconds = round((Date.now() - started) / 1000, 1)
    return result
  } finally {
    for (const timer of intervals) clearInterval(timer)
    for (const { writer, reader } of pairs) { for (const c of [writer, reader]) { try { c.destroy() } catch { /* already gone */ } } }
    await sleep(300)
    await side.stop()
  }
}

const summarizeDocuments = (runs) => DOC_SIDES.map((side) => {
  const ok = runs.filter((r) => r.side === side && !r.error)
  if (!ok.length) return null
  const pick = (f) => ok.map(f).filter((x) => typeof x === 'number')
  const spread = (f) => { const v = pick(f); return v.length ? [Math.min(...v), Math.max(...v)] : null }
  return {
    side,
    rounds: ok.length,
    p50: round(median(pick((r) => r.p50))),
    p50Spread: spread((r) => r.p50),
    p99: round(median(pick((r) => r.p99))),
    p99Spread: spread((r) => r.p99),
    missing: pick((r) => r.missing).reduce((a, b) => a + b, 0),
    sent: pick((r) => r.sent).reduce((a, b) => a + b, 0),
    identical: ok.every((r) => r.identical),
    cpuPerK: round(median(pick((r) => r.cpuPerK))),
    cpuServerPerK: round(median(pick((r) => r.cpuServerPerK))),
    cpuDbPerK: round(median(pick((r) => r.cpuDbPerK))),
    tables: ok.find((r) => r.tables)?.tables ? {
      beforeRowsPerK: round(median(pick((r) => r.tables?.before.rowsPerK)), 1),
      beforeBytesPerK: round(median(pick((r) => r.tables?.before.bytesPerK)), 0),
      beforeRelationBytesPerK: round(median(pick((r) => r.tables?.before.relationBytesPerK)), 0),
      afterRowsPerK: round(median(pick((r) => r.tables?.after.rowsPerK)), 1),
      afterBytesPerK: round(median(pick((r) => r.tables?.after.bytesPerK)), 0),
      compactMs: round(median(pick((r) => r.tables?.compactMs)), 0)
    } : null
  }
}).filter(Boolean)

// ---------------------------------------------------------------------------------------------
// Memory per idle connection

const runMemory = async (name) => {
  const side = await startSide(name, 1)
  const clients = []
  try {
    const server = side.servers[0]
    await prepareRooms(side, Array.from({ length: options.memoryRooms }, (_, r) => `bench-room-${r}`))
    await sleep(1000)
    const before = rssKb(server.pid)
    const n = options.memoryConnections
    for (let i = 0; i < n; i++) {
      const name = `user-${i}`
      const client = makeClient(side.spec.client, server.url, `bench-room-${i % options.memoryRooms}`, side.spec.kind === 'relay' ? relayToken(name) : null)
      client.awareness.setLocalState(randomState(name, nowMs()))
      clients.push(client)
      if (i % 50 === 49) await sleep(20)
    }
    await waitFor(() => clients.every((c) => c.connected()), 120000,
      () => `${clients.filter((c) => !c.connected()).length} of ${n} clients not connected on ${name}`)
    await sleep(3000)
    if (!server.alive()) throw new Error(`${server.label} died:\n${server.logs.join('').slice(-4000)}`)
    const after = rssKb(server.pid)
    return { side: name, connections: n, rooms: options.memoryRooms, rssBeforeKb: before, rssAfterKb: after, kbPerConnection: round((after - before) / n, 1) }
  } finally {
    for (const client of clients) { try { client.destroy() } catch { /* already gone */ } }
    await sleep(300)
    await side.stop()
  }
}

// ---------------------------------------------------------------------------------------------
// Report

const versionOf = (pkg) => {
  try { return JSON.parse(readFileSync(join(HERE, 'node_modules', pkg, 'package.json'), 'utf8')).version } catch { return null }
}

const summarize = (runs) => {
  const groups = new Map()
  for (const run of runs) {
    const key = `${run.workload}\0${run.side}`
    if (!groups.has(key)) groups.set(key, [])
    groups.get(key).push(run)
  }
  const summary = []
  for (const [key, list] of groups) {
    const [workload, side] = key.split('\0')
    const ok = list.filter((r) => !r.error)
    const pick = (field) => ok.map((r) => r[field]).filter((x) => typeof x === 'number')
    const spread = (field) => { const v = pick(field); return v.length ? [Math.min(...v), Math.max(...v)] : null }
    summary.push({
      workload,
      side,
      rounds: ok.length,
      failed: list.length - ok.length,
      p50: round(median(pick('p50'))),
      p50Spread: spread('p50'),
      p99: round(median(pick('p99'))),
      p99Spread: spread('p99'),
      deliveries: round(median(pick('deliveries')), 0),
      expected: pick('expected').reduce((a, b) => a + b, 0),
      missing: pick('missing').reduce((a, b) => a + b, 0),
      cpuPerK: round(median(pick('cpuPerK'))),
      cpuPerKSpread: spread('cpuPerK'),
      cpuServerPerK: round(median(pick('cpuServerPerK'))),
      cpuDbPerK: round(median(pick('cpuDbPerK'))),
      clientCpuPct: round(median(pick('clientCpuPct')), 0),
      clientLoopDelayP99Ms: round(median(pick('clientLoopDelayP99Ms')), 1)
    })
  }
  return summary
}

const fmt = (x, digits = 1) => x === null || x === undefined ? '–' : Number(x).toFixed(digits)
const fmtSpread = (s, digits = 1) => s ? `${fmt(s[0], digits)}–${fmt(s[1], digits)}` : '–'

const renderMarkdown = (report) => {
  const o = report.options
  const lines = []
  lines.push('# Presence benchmark: synckit-relay vs Hocuspocus vs y-websocket', '')
  lines.push(o.latency
    ? `- Run: ${report.startedAt} to ${report.finishedAt} (${o.quick ? 'quick' : 'full'}), ${o.rounds} round(s), sides interleaved in a rotating order`
    : `- Run: ${report.startedAt} to ${report.finishedAt} (${o.memory ? 'memory only' : `documents only, ${o.quick ? 'quick' : 'full'}, ${o.rounds} round(s), sides interleaved in a rotating order`})`)
  lines.push(`- Machine: ${report.machine.cpus} CPUs, Node.js ${report.machine.node}, CLK_TCK ${CLK_TCK}`)
  lines.push(`- Load at start: \`${report.loadStart}\``)
  lines.push(`- Load at end: \`${report.loadEnd}\``)
  lines.push(`- Versions: ${Object.entries(report.versions).map(([k, v]) => `${k} ${v}`).join(', ')}`)
  if (report.relay) lines.push(`- Relay: \`${report.relay.bin}\` (modified ${report.relay.modified})${report.relay.args.length ? `, RELAY_ARGS \`${report.relay.args.join(' ')}\`` : ''}, ${report.relay.auth}`)
  lines.push('')
  if (o.latency) {
    lines.push(`Every client sets its awareness state (\`{user, cursor, t}\`) every ${o.intervalMs} ms for ${o.duration} s;`,
      `latency = receiver's clock at its awareness 'change' event minus the sender's \`t\`; the first ${o.warmup} s`,
      'are warm-up. CPU = utime+stime over the measured window of the server processes and of the database',
      '(every `postgres` process for the relay, `redis-server` for Hocuspocus x2), per 1,000 deliveries.',
      'p50/p99/CPU are medians over rounds, with the min–max over rounds beside them. Missing = expected',
      'deliveries (each state to every other client in its room) that never arrived, summed over rounds.', '')
    for (const workload of o.workloads) {
      const rows = report.summary.filter((s) => s.workload === workload.name)
      if (!rows.length) continue
      lines.push(`## ${workload.rooms} rooms x ${workload.clients} clients, a move every ${workload.intervalMs ?? o.intervalMs} ms`, '')
      lines.push('| side | p50 ms | p50 spread | p99 ms | p99 spread | deliveries/round | missing | CPU ms/1k (server+db) | CPU spread | server | database | bench client CPU, loop lag p99 | rounds |')
      lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
      for (const s of rows) {
        lines.push(`| ${s.side} | ${fmt(s.p50)} | ${fmtSpread(s.p50Spread)} | ${fmt(s.p99)} | ${fmtSpread(s.p99Spread)} | ${fmt(s.deliveries, 0)} | ${s.missing} of ${s.expected} | ${fmt(s.cpuPerK)} | ${fmtSpread(s.cpuPerKSpread)} | ${fmt(s.cpuServerPerK)} | ${fmt(s.cpuDbPerK)} | ${fmt(s.clientCpuPct, 0)}%, ${fmt(s.clientLoopDelayP99Ms)} ms | ${s.rounds}${s.failed ? ` (${s.failed} failed)` : ''} |`)
      }
      lines.push('')
    }
    lines.push('<details><summary>Every run</summary>', '')
    lines.push('| round | workload | side | p50 | p99 | max | deliveries | missing | CPU server ms | CPU db ms | CPU/1k | client CPU | client event-loop lag p99 ms | connect ms |')
    lines.push('|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const r of report.runs) {
      if (r.error) { lines.push(`| ${r.round} | ${r.workload} | ${r.side} | failed: ${r.error.split('\n')[0].replace(/\|/g, '/')} |||||||||||`); continue }
      lines.push(`| ${r.round} | ${r.workload} | ${r.side} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(r.max)} | ${r.deliveries} | ${r.missing} | ${r.cpuServerMs} | ${r.cpuDbMs} | ${fmt(r.cpuPerK)} | ${r.clientCpuPct}% | ${fmt(r.clientLoopDelayP99Ms)} | ${r.connectMs} |`)
    }
    lines.push('', '</details>', '')
  }
  if (report.memory.length) {
    lines.push(`## Memory per idle connection`, '')
    lines.push(`A fresh server; RSS (VmRSS) before and after ${o.memoryConnections} connections with the side's real client over ${o.memoryRooms} rooms (awareness set once, 3 s settled). The relay x2 figure is per instance, the same as x1.`, '')
    lines.push('| side | RSS before MB | RSS after MB | KB per connection |')
    lines.push('|---|---:|---:|---:|')
    for (const m of report.memory) {
      if (m.error) { lines.push(`| ${m.side} | failed: ${m.error.split('\n')[0].replace(/\|/g, '/')} | | |`); continue }
      lines.push(`| ${m.side} | ${fmt(m.rssBeforeKb / 1024)} | ${fmt(m.rssAfterKb / 1024)} | ${fmt(m.kbPerConnection)} |`)
    }
    lines.push('')
  }
  if (report.notes.length) lines.push('## Notes', '', ...report.notes.map((n) => `- ${n}`), '')
  return lines.join('\n')
}

// ---------------------------------------------------------------------------------------------
// Main

const preflight = () => {
  const needRelay = options.sides.some((s) => SIDES[s].kind === 'relay')
  if (needRelay) {
    if (!existsSync(options.relayBin)) throw new Error(`relay binary ${options.relayBin} not found: set RELAY_BIN or leave relay sides out with --sides`)
    try { psql('SELECT 1') } catch (error) { throw new Error(`PostgreSQL at DATABASE_URL is not reachable: ${error.stderr ?? error.message}`) }
  }
  if (options.latency && options.sides.some((s) => SIDES[s].store === 'Redis')) {
    try { redisCli('ping') } catch (error) { throw new Error(`Redis at REDIS_URL is not reachable: ${error.stderr ?? error.message}`) }
  }
}

const renderDocuments = (report) => {
  const o = report.options
  const lines = [`## Documents: cross-instance Y.Text edits (${o.docRooms} room(s), a writer on instance A and a reader on B each)`, '']
  lines.push(`Each writer appends \`[t]\` to one \`Y.Text\` every ${o.docIntervalMs} ms for ${o.duration} s (the first ${o.warmup} s warm-up);`,
    'latency = the reader\'s clock at its Y.Text observe event minus `t`. CPU = server processes + database',
    '(every `postgres` process for the relay, `redis-server` for Hocuspocus), per 1,000 edits delivered.',
    'The relay stores every edit before relaying it; Hocuspocus\'s Redis extension relays without storing',
    '(it would need its Database extension, with debounced writes, for persistence).',
    'Tables: the relay\'s two document tables per 1,000 edits before and after `synckit-relay compact`',
    '(the relays ran with --compact-after 0); bytes = update/snapshot bytes, relation = on disk incl. indexes.', '')
  lines.push('| side | p50 ms | p50 spread | p99 ms | p99 spread | missing | identical | CPU ms/1k (server+db) | server | database | rows/1k before | bytes/1k before | on disk/1k before | rows/1k after | bytes/1k after | compact ms | rounds |')
  lines.push('|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  for (const s of report.documentsSummary) {
    const t = s.tables
    lines.push(`| ${s.side} | ${fmt(s.p50)} | ${fmtSpread(s.p50Spread)} | ${fmt(s.p99)} | ${fmtSpread(s.p99Spread)} | ${s.missing} of ${s.sent} | ${s.identical ? 'yes' : 'NO'} | ${fmt(s.cpuPerK)} | ${fmt(s.cpuServerPerK)} | ${fmt(s.cpuDbPerK)} | ${t ? fmt(t.beforeRowsPerK) : '–'} | ${t ? fmt(t.beforeBytesPerK, 0) : '–'} | ${t ? fmt(t.beforeRelationBytesPerK, 0) : '–'} | ${t ? fmt(t.afterRowsPerK) : '–'} | ${t ? fmt(t.afterBytesPerK, 0) : '–'} | ${t ? fmt(t.compactMs, 0) : '–'} | ${s.rounds} |`)
  }
  const failed = report.documents.filter((r) => r.error)
  for (const r of failed) lines.push('', `- round ${r.round} ${r.side} failed: ${r.error.split('\n')[0]}`)
  lines.push('')
  return lines.join('\n')
}

const main = async () => {
  options = parseArgs(process.argv.slice(2))
  preflight()
  const report = {
    startedAt: new Date().toISOString(),
    loadStart: uptime(),
    machine: { cpus: availableParallelism(), node: process.version },
    options: { ...options, relayArgs: redactedRelayArgs() },
    versions: Object.fromEntries(['@hocuspocus/server', '@hocuspocus/provider', '@hocuspocus/extension-redis', 'y-websocket', 'y-websocket-server-ref', 'yjs', 'y-protocols', 'ws', 'lib0'].map((p) => [p, versionOf(p)])),
    relay: options.sides.some((s) => SIDES[s].kind === 'relay') ? { bin: options.relayBin, modified: statSync(options.relayBin).mtime.toISOString(), args: redactedRelayArgs(), auth: process.env.RELAY_TOKEN ? 'clients use RELAY_TOKEN' : relayAuthSecret() ? 'clients use signed tokens' : 'open (no tokens)' } : null,
    runs: [],
    summary: [],
    memory: [],
    documents: [],
    documentsSummary: [],
    notes: []
  }
  console.log(`load at start: ${report.loadStart}`)

  if (options.latency) {
    for (let r = 0; r < options.rounds; r++) {
      for (const workload of options.workloads) {
        const order = options.sides.map((_, i) => options.sides[(i + r) % options.sides.length])
        for (const side of order) {
          process.stdout.write(`round ${r + 1}/${options.rounds} ${workload.name} ${side} ... `)
          try {
            const result = await runLatency(side, workload, r)
            report.runs.push(result)
            console.log(`p50 ${fmt(result.p50)} ms, p99 ${fmt(result.p99)} ms, ${result.deliveries} deliveries, ${result.missing} missing, CPU ${fmt(result.cpuPerK)} ms/1k (server ${fmt(result.cpuServerPerK)}, db ${fmt(result.cpuDbPerK)}), client CPU ${result.clientCpuPct}%, server warnings ${result.serverWarnings}${result.firstServerWarning ? ` (first: ${result.firstServerWarning})` : ''}`)
          } catch (error) {
            console.log(`FAILED: ${error.message}`)
            report.runs.push({ side, workload: workload.name, round: r + 1, error: error.message })
          }
        }
      }
    }
    report.summary = summarize(report.runs)
    const ok = report.runs.filter((r) => !r.error)
    const busy = ok.filter((r) => r.clientCpuPct >= 80)
    if (ok.length) {
      report.notes.push(`All clients live in this one Node.js process; its CPU over the window was ${fmt(Math.min(...ok.map((r) => r.clientCpuPct)), 0)}–${fmt(Math.max(...ok.map((r) => r.clientCpuPct)), 0)}% of one core.` +
        (busy.length ? ` ${busy.length} run(s) had it at 80% or more: their latencies include client-side queueing.` : ''))
    }
    const failed = report.runs.length - ok.length
    if (failed) report.notes.push(`${failed} run(s) failed; see the per-run table and results.json.`)
  }

  const docSides = DOC_SIDES.filter((s) => options.sides.includes(s))
  if (options.documents && docSides.length) {
    for (let r = 0; r < options.rounds; r++) {
      const order = docSides.map((_, i) => docSides[(i + r) % docSides.length])
      for (const side of order) {
        process.stdout.write(`documents round ${r + 1}/${options.rounds} ${side} ... `)
        try {
          const result = await runDocuments(side, r)
          report.documents.push(result)
          console.log(`p50 ${fmt(result.p50)} ms, p99 ${fmt(result.p99)} ms, ${result.deliveries} of ${result.sent} edits, identical ${result.identical}, CPU ${fmt(result.cpuPerK)} ms/1k` +
            (result.tables ? `, rows/1k ${result.tables.before.rowsPerK} -> ${result.tables.after.rowsPerK}, bytes/1k ${result.tables.before.bytesPerK} -> ${result.tables.after.bytesPerK}` : ''))
        } catch (error) {
          console.log(`FAILED: ${error.message}`)
          report.documents.push({ side, round: r + 1, error: error.message })
        }
      }
    }
    report.documentsSummary = summarizeDocuments(report.documents)
  }

  if (options.memory) {
    for (const side of MEMORY_SIDES.filter((s) => options.sides.includes(s) || (s === 'relay1' && options.sides.includes('relay2')) || (s === 'hocuspocus1' && options.sides.includes('hocuspocus2')))) {
      process.stdout.write(`memory ${side} (${options.memoryConnections} connections) ... `)
      try {
        const result = await runMemory(side)
        report.memory.push(result)
        console.log(`${fmt(result.kbPerConnection)} KB per connection (RSS ${fmt(result.rssBeforeKb / 1024)} -> ${fmt(result.rssAfterKb / 1024)} MB)`)
      } catch (error) {
        console.log(`FAILED: ${error.message}`)
        report.memory.push({ side, error: error.message })
      }
    }
  }

  report.finishedAt = new Date().toISOString()
  report.loadEnd = uptime()
  console.log(`load at end: ${report.loadEnd}`)
  const markdown = renderMarkdown(report) + (report.documentsSummary.length || report.documents.length ? '\n' + renderDocuments(report) : '')
  mkdirSync(OUT_DIR, { recursive: true })
  writeFileSync(join(OUT_DIR, 'results.md'), markdown)
  writeFileSync(join(OUT_DIR, 'results.json'), JSON.stringify(report, null, 2) + '\n')
  console.log('\n' + markdown)
  console.log(`wrote ${join(OUT_DIR, 'results.md')} and results.json`)
  if (children.size) console.error(`${children.size} child process(es) still running: killing them`)
  killAll()
  const docsBroken = report.documents.some((r) => r.error || !r.identical || r.missing > 0)
  return report.runs.some((r) => r.error) || report.memory.some((m) => m.error) || docsBroken ? 2 : 0
}

main().then((code) => process.exit(code), (error) => {
  console.error(error.stack ?? error)
  emergencyCleanup()
  process.exit(1)
})
