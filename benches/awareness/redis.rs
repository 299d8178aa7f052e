//! The peer: what a Redis-backed awareness store does for one `set`, as one atomic Lua call
//! (clock check, state write, expiry index). A minimal RESP client over one TCP connection
//! per task keeps the client side as thin as possible, so the figure is Redis's own ceiling.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// KEYS[1]: the entry's hash; KEYS[2]: the expiry index (sorted set, score = last seen ms).
/// ARGV: clock, state ('' = leave), connection, timeout ms. Same rule as the contract: apply when
/// absent/expired, higher clock, or equal clock with a leave over a state.
pub const SET_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local clock = tonumber(ARGV[1])
local leave = ARGV[2] == ''
local cur = redis.call('HMGET', KEYS[1], 'clock', 'seen', 'state')
if cur[1] then
  local old = tonumber(cur[1])
  local live = tonumber(cur[2]) + tonumber(ARGV[4]) > now
  if live and not (clock > old or (clock == old and leave and cur[3] ~= '')) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'clock', ARGV[1], 'state', ARGV[2], 'conn', ARGV[3], 'seen', now)
redis.call('ZADD', KEYS[2], now, KEYS[1])
return 1
"#;

/// One connection speaking just enough RESP for EVALSHA and SCRIPT LOAD.
pub struct Redis {
    stream: BufReader<TcpStream>,
    buf: Vec<u8>,
    line: String,
}

impl Redis {
    pub async fn connect(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            buf: Vec::with_capacity(512),
            line: String::new(),
        })
    }

    /// Sends one command; returns an integer reply, or the bulk string's text as `Err` text
    /// for anything else (callers only use integer and bulk replies).
    pub async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        self.buf.clear();
        self.buf
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            self.buf
                .extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.buf.extend_from_slice(a);
            self.buf.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&self.buf).await?;
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let line = self.line.trim_end();
        let bad = |m: &str| std::io::Error::other(format!("redis: {m}"));
        match line.as_bytes().first() {
            Some(b':') => Ok(Reply::Int(line[1..].parse().map_err(|_| bad(line))?)),
            Some(b'+') => Ok(Reply::Text(line[1..].to_owned())),
            Some(b'$') => {
                let len: usize = line[1..].parse().map_err(|_| bad(line))?;
                let mut data = vec![0; len + 2];
                self.stream.read_exact(&mut data).await?;
                data.truncate(len);
                Ok(Reply::Text(String::from_utf8_lossy(&data).into_owned()))
            }
            _ => Err(bad(line)),
        }
    }
}

/// The replies this client understands.
#[derive(Debug)]
pub enum Reply {
    Int(i64),
    Text(String),
}
