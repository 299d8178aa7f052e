// Tokens as an identity provider issues them, minted with jose (a JWT library no one here
// wrote): HS256 with a shared secret, and RS256 / ES256 / EdDSA with keys published in a JWKS
// served over HTTP on loopback, where keys can be added during a test (rotation).
import { createServer } from 'node:http'
import { once } from 'node:events'
import { SignJWT, UnsecuredJWT, generateKeyPair, exportJWK } from 'jose'

export const ISSUER = 'https://idp.synckit.test/'
export const AUDIENCE = 'synckit-relay'

const now = () => Math.floor(Date.now() / 1000)

/**
 * A signed token for `principal`. `claims` go into the payload (`rooms` defaults to every room
 * read-write; `rooms: null` leaves the claim out); `iss` and `aud` default to the test issuer's.
 */
const sign = (key, header, principal, claims = {}, { ttl = 3600 } = {}) => {
  const { rooms = { '*': 'write' }, ...rest } = claims
  const payload = { iss: ISSUER, aud: AUDIENCE, ...rest }
  if (rooms !== null) payload.rooms = rooms
  for (const [name, value] of Object.entries(payload)) if (value === undefined) delete payload[name]
  return new SignJWT(payload)
    .setProtectedHeader(header)
    .setSubject(principal)
    .setIssuedAt(now())
    .setExpirationTime(now() + ttl)
    .sign(key)
}

/** HS256 tokens with a shared secret (a login service, Supabase Auth). */
export const hs256 = (secret) => (principal, claims, options) =>
  sign(new TextEncoder().encode(secret), { alg: 'HS256', typ: 'JWT' }, principal, claims, options)

/** `alg: none`: what RFC 8725 says never to accept. */
export const unsigned = (principal) =>
  new UnsecuredJWT({ rooms: { '*': 'write' }, iss: ISSUER, aud: AUDIENCE }).setSubject(principal).setExpirationTime(now() + 3600).encode()

/** A token whose payload was changed after signing (another principal, same signature). */
export const tampered = (token, principal) => {
  const [header, payload, signature] = token.split('.')
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString())
  claims.sub = principal
  return [header, Buffer.from(JSON.stringify(claims)).toString('base64url'), signature].join('.')
}

/** A local identity provider: a JWKS at `url`, keys added (published) during a test. */
export const identityProvider = async () => {
  const keys = new Map()
  let fetches = 0
  const server = createServer((req, res) => {
    if (req.url !== '/.well-known/jwks.json') { res.writeHead(404); res.end(); return }
    fetches++
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ keys: [...keys.values()].filter((k) => k.published).map((k) => k.jwk) }))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const idp = {
    url: `http://127.0.0.1:${server.address().port}/.well-known/jwks.json`,
    get fetches () { return fetches },
    /** A new key pair; published in the JWKS unless `published: false` (an attacker's key). */
    async addKey (kid, alg, { published = true } = {}) {
      const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true })
      const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }
      keys.set(kid, { kid, alg, privateKey, publicKey, jwk, published })
      return keys.get(kid)
    },
    /** A token signed with key `kid` (its own algorithm unless `alg` says otherwise). */
    sign (kid, principal, claims, { ttl, headerKid = kid } = {}) {
      const key = keys.get(kid)
      return sign(key.privateKey, { alg: key.alg, kid: headerKid, typ: 'JWT' }, principal, claims, { ttl })
    },
    key: (kid) => keys.get(kid),
    close: () => new Promise((resolve) => server.close(resolve))
  }
  return idp
}
