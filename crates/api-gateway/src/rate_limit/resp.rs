//! A minimal Redis client: RESP2 over one plain TCP connection, enough for the shared
//! rate limiter's `SCRIPT LOAD` / `EVALSHA` (ADR 0014 says why this is not the `redis`
//! crate). `redis://[user:password@]host[:port][/db]` URLs; AUTH and SELECT on connect.
//! No TLS, cluster, pub/sub or pipelining. Replies are bounded in size and depth, so a
//! misbehaving server cannot make the gateway allocate without limit.

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The largest bulk string accepted in a reply.
const MAX_BULK: usize = 64 * 1024;
/// The most elements (and nesting levels) accepted in a reply.
const MAX_ELEMENTS: usize = 64;
const MAX_DEPTH: usize = 4;

/// Where and how to connect, from `PLANGREP_REDIS_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `host:port`.
    pub addr: String,
    username: Option<String>,
    password: Option<String>,
    database: Option<u32>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("addr", &self.addr)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// Parses a `redis://` URL; the error says what is wrong (for the setting's one line).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "redis" => {}
            "rediss" => return Err("TLS (rediss://) is not supported".to_owned()),
            other => return Err(format!("scheme {other:?} is not redis://")),
        }
        let host = url.host_str().ok_or("the URL has no host")?;
        let addr = format!("{host}:{}", url.port().unwrap_or(6379));
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| "the URL's userinfo is not valid UTF-8".to_owned())
        };
        let password = url.password().map(decode).transpose()?;
        let username = Some(url.username())
            .filter(|u| !u.is_empty())
            .map(decode)
            .transpose()?;
        let database = match url.path().trim_start_matches('/') {
            "" => None,
            db => Some(
                db.parse()
                    .map_err(|_| format!("database {db:?} is not a number"))?,
            ),
        };
        Ok(Self {
            addr,
            username,
            password,
            database,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("redis connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis protocol: {0}")]
    Protocol(String),
    /// An error reply (`-ERR …`, `-NOSCRIPT …`).
    #[error("redis error: {0}")]
    Server(String),
}

/// One connection.
pub struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    /// Connects, authenticates and selects the database of `target`.
    pub async fn open(target: &RedisTarget) -> Result<Self, RespError> {
        let stream = TcpStream::connect(&target.addr).await?;
        stream.set_nodelay(true)?;
        let mut connection = Self {
            stream: BufReader::new(stream),
        };
        match (&target.username, &target.password) {
            (Some(user), Some(password)) => {
                connection
                    .call(&[b"AUTH", user.as_bytes(), password.as_bytes()])
                    .await?;
            }
            (None, Some(password)) => {
                connection.call(&[b"AUTH", password.as_bytes()]).await?;
            }
            _ => {}
        }
        if let Some(database) = target.database {
            connection
                .call(&[b"SELECT", database.to_string().as_bytes()])
                .await?;
        }
        Ok(connection)
    }

    /// Sends one command and reads its reply; an error reply is `RespError::Server`.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RespError> {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg);
            frame.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&frame).await?;
        read_reply(&mut self.stream, 0).await
    }
}

type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, RespError>> + Send + 'a>>;

fn read_reply(stream: &mut BufReader<TcpStream>, depth: usize) -> ReplyFuture<'_> {
    Box::pin(async move {
        let line = read_line(stream).await?;
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Ok(Reply::Status(rest.to_owned())),
            "-" => Err(RespError::Server(rest.to_owned())),
            ":" => Ok(Reply::Integer(number(rest)?)),
            "$" => match number(rest)? {
                -1 => Ok(Reply::Bulk(None)),
                len if (0..=MAX_BULK as i64).contains(&len) => {
                    let mut data = vec![0; len as usize + 2];
                    stream.read_exact(&mut data).await?;
                    if !data.ends_with(b"\r\n") {
                        return Err(protocol("a bulk string without its CRLF"));
                    }
                    data.truncate(len as usize);
                    Ok(Reply::Bulk(Some(data)))
                }
                _ => Err(protocol("a bulk string too large")),
            },
            "*" => match number(rest)? {
                -1 => Ok(Reply::Array(None)),
                len if (0..=MAX_ELEMENTS as i64).contains(&len) && depth < MAX_DEPTH => {
                    let mut items = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        items.push(read_reply(stream, depth + 1).await?);
                    }
                    Ok(Reply::Array(Some(items)))
                }
                _ => Err(protocol("an array too large or too deep")),
            },
            _ => Err(protocol("an unknown reply type")),
        }
    })
}

/// One CRLF-terminated line, without the CRLF.
async fn read_line(stream: &mut BufReader<TcpStream>) -> Result<String, RespError> {
    let mut line = Vec::new();
    (&mut *stream)
        .take(MAX_BULK as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if line.is_empty() {
        return Err(RespError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(protocol("a line without CRLF"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| protocol("a line that is not UTF-8"))
}

fn number(text: &str) -> Result<i64, RespError> {
    text.parse().map_err(|_| protocol("a malformed number"))
}

fn protocol(what: &str) -> RespError {
    RespError::Protocol(format!("the server sent {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_credentials_and_database() {
        let plain = RedisTarget::parse("redis://127.0.0.1").unwrap();
        assert_eq!(plain.addr, "127.0.0.1:6379");
        assert_eq!(
            (plain.username, plain.password, plain.database),
            (None, None, None)
        );
        let full = RedisTarget::parse("redis://app:p%40ss@cache:6380/2").unwrap();
        assert_eq!(full.addr, "cache:6380");
        assert_eq!(full.username.as_deref(), Some("app"));
        assert_eq!(full.password.as_deref(), Some("p@ss"));
        assert_eq!(full.database, Some(2));
        let password_only = RedisTarget::parse("redis://:secret@cache").unwrap();
        assert_eq!(password_only.username, None);
        assert_eq!(password_only.password.as_deref(), Some("secret"));
        assert!(!format!("{full:?}").contains("p@ss"), "no secret in Debug");
        for bad in [
            "rediss://cache",
            "http://cache",
            "redis://cache/x",
            "cache:6379",
        ] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
