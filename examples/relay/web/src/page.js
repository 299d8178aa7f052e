// The relay's page: every visitor gets a name and a colour, and sees everyone in the room with
// their live pointer over a shared board and the instance each is connected to. Built with the
// real `yjs` and `y-websocket` (bundled by esbuild; nothing is fetched at run time).
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const names = ['Ada', 'Alan', 'Barbara', 'Claude', 'Edsger', 'Frances', 'Grace', 'Ken', 'Leslie', 'Margaret', 'Niklaus', 'Radia']
const colors = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#008080', '#9a6324', '#800000']
const pick = (list) => list[Math.floor(Math.random() * list.length)]

const room = decodeURIComponent(location.pathname.replace(/^\/+/, '')) || 'lobby'
const params = new URLSearchParams(location.search)
const user = { name: params.get('name') || `${pick(names)} ${Math.floor(Math.random() * 90 + 10)}`, color: params.get('color') || pick(colors) }

const health = await fetch('/healthz').then((r) => r.json()).catch(() => ({ instance: '?' }))
const doc = new Y.Doc()
const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
// Under signed tokens (SYNCKIT_RELAY_AUTH_SECRET), open the page as /<room>?token=…
const token = params.get('token')
const provider = new WebsocketProvider(`${scheme}://${location.host}`, room, doc, { disableBc: true, params: token ? { token } : {} })
const awareness = provider.awareness
awareness.setLocalState({ user, instance: health.instance, pointer: null })

const $ = (id) => document.getElementById(id)
$('room').textContent = room
$('me').textContent = user.name
$('me').style.color = user.color
$('instance').textContent = health.instance
provider.on('status', ({ status }) => { $('status').textContent = status })

const board = $('board')
board.addEventListener('pointermove', (event) => {
  const rect = board.getBoundingClientRect()
  awareness.setLocalStateField('pointer', {
    x: Math.round(((event.clientX - rect.left) / rect.width) * 1000) / 1000,
    y: Math.round(((event.clientY - rect.top) / rect.height) * 1000) / 1000
  })
})
board.addEventListener('pointerleave', () => awareness.setLocalStateField('pointer', null))

const text = (s) => String(s ?? '').slice(0, 64)
const render = () => {
  const people = [...awareness.getStates().entries()]
    .filter(([, state]) => state && state.user)
    .sort(([a], [b]) => a - b)
  $('count').textContent = people.length
  $('people').replaceChildren(...people.map(([id, state]) => {
    const li = document.createElement('li')
    li.dataset.client = id
    li.dataset.name = text(state.user.name)
    li.dataset.instance = text(state.instance)
    if (state.pointer) { li.dataset.x = state.pointer.x; li.dataset.y = state.pointer.y }
    li.style.setProperty('--c', text(state.user.color))
    if (id === doc.clientID) li.className = 'me'
    const dot = document.createElement('b')
    const pos = state.pointer ? ` at (${state.pointer.x.toFixed(2)}, ${state.pointer.y.toFixed(2)})` : ''
    li.append(dot, `${text(state.user.name)} on ${text(state.instance)}${pos}${id === doc.clientID ? ' (you)' : ''}`)
    return li
  }))
  board.replaceChildren(...people.filter(([, s]) => s.pointer).map(([id, state]) => {
    const el = document.createElement('div')
    el.className = 'pointer'
    el.dataset.client = id
    el.style.setProperty('--c', text(state.user.color))
    el.style.left = `${state.pointer.x * 100}%`
    el.style.top = `${state.pointer.y * 100}%`
    const label = document.createElement('span')
    label.textContent = `${text(state.user.name)} · ${text(state.instance)}`
    el.append(label)
    return el
  }))
}
awareness.on('change', render)
render()

// The other rooms and how many are in each, on every instance (GET /rooms), every 2 s.
const showRooms = async () => {
  const query = token ? `?token=${encodeURIComponent(token)}` : ''
  const answer = await fetch(`/rooms${query}`).then((r) => (r.ok ? r.json() : null)).catch(() => null)
  if (!answer) return
  const others = answer.rooms.filter((r) => r.document_id !== room)
  $('rooms').replaceChildren(...others.map((r) => {
    const li = document.createElement('li')
    li.dataset.room = text(r.document_id)
    li.dataset.count = r.participants
    const link = document.createElement('a')
    link.href = `/${encodeURIComponent(r.document_id)}${location.search}`
    link.textContent = text(r.document_id)
    li.append(link, ` (${r.participants})`)
    return li
  }))
  $('rooms-none').hidden = others.length > 0
}
showRooms()
setInterval(showRooms, 2000)

// For the end-to-end test (and the curious, in the console).
window.relayPage = { doc, provider, awareness, user, instance: health.instance }
