// One Hocuspocus 4.x server process for the benchmark (started by ../bench.mjs).
// Env: PORT (0: any free port), NAME, and BENCH_REDIS_URL + BENCH_REDIS_PREFIX to scale out
// with @hocuspocus/extension-redis. Prints "... listening on 127.0.0.1:<port> (... pid <pid>)".
import { Server } from '@hocuspocus/server'
import { Redis } from '@hocuspocus/extension-redis'

const name = process.env.NAME || `hocuspocus-${process.pid}`
const extensions = []
if (process.env.BENCH_REDIS_URL) {
  const url = new URL(process.env.BENCH_REDIS_URL)
  const options = {}
  if (url.password) options.password = decodeURIComponent(url.password)
  if (url.username) options.username = decodeURIComponent(url.username)
  const db = Number(url.pathname.slice(1))
  if (db) options.db = db
  extensions.push(new Redis({
    host: url.hostname || '127.0.0.1',
    port: Number(url.port || 6379),
    options,
    identifier: name,
    prefix: process.env.BENCH_REDIS_PREFIX || 'hocuspocus'
  }))
}

const store = extensions.length ? 'redis' : 'memory'
const server = new Server({
  name,
  port: Number(process.env.PORT ?? 0),
  address: '127.0.0.1',
  quiet: true,
  stopOnSignals: false,
  extensions
})
await server.listen()
console.log(`hocuspocus ${name} listening on 127.0.0.1:${server.address.port} (${store}, pid ${process.pid})`)

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  setTimeout(() => process.exit(0), 5000).unref()
  try { await server.destroy() } catch (error) { console.error(error) }
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
