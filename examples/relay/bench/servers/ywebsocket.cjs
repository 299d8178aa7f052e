// y-websocket 1.5.4's own server (bin/utils.js setupWSConnection), in memory, on ws 8, for the
// benchmark (started by ../bench.mjs). Env: PORT (0: any free port), NAME.
// Prints "... listening on 127.0.0.1:<port> (... pid <pid>)".
const http = require('node:http')
const { WebSocketServer } = require('ws')
const { setupWSConnection } = require('y-websocket-server-ref/bin/utils')

const name = process.env.NAME || `ywebsocket-${process.pid}`
const server = http.createServer((request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/plain' })
  response.end('okay')
})
const wss = new WebSocketServer({ noServer: true })
wss.on('connection', setupWSConnection)
server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request))
})
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`y-websocket-server ${name} listening on 127.0.0.1:${server.address().port} (memory, pid ${process.pid})`)
})

const stop = () => {
  setTimeout(() => process.exit(0), 3000).unref()
  for (const ws of wss.clients) ws.terminate()
  server.close(() => process.exit(0))
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
