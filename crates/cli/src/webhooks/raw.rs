//! The saved-request format of `webhooks verify` (and of `webhooks listen --save-dir`):
//! a raw HTTP/1.1 request as it arrived on the wire.
//!
//! ```text
//! POST /hooks HTTP/1.1            <- request line (optional)
//! webhook-id: evt_…               <- headers, `name: value`, any case
//! webhook-timestamp: 1764489600
//! webhook-signature: v1,…
//! content-length: 1234
//!                                 <- one empty line (CRLF or LF)
//! {"type":"job.status_changed",…} <- the body, byte for byte
//! ```
//!
//! When a `content-length` header is present the body is exactly that many bytes (an
//! editor's trailing newline does not break the signature); otherwise it is everything
//! after the empty line.

/// A parsed saved request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    /// `(lowercase name, value)` pairs, in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl RawRequest {
    /// Parses `bytes`; `Err` says what is wrong with them.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let (head, rest) = split_head(bytes).ok_or("no empty line between headers and body")?;
        let head = std::str::from_utf8(head).map_err(|_| "the headers are not UTF-8")?;
        let mut headers = Vec::new();
        for (index, line) in head.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            match line.split_once(':') {
                // The request line (`POST /path HTTP/1.1`) has no `:` before its first space.
                Some((name, value)) if !name.contains(' ') => {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
                _ if index == 0 => {}
                _ => return Err(format!("not a header line: {line:?}")),
            }
        }
        let length = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse::<usize>().ok());
        let body = match length {
            Some(length) if length <= rest.len() => rest[..length].to_vec(),
            _ => rest.to_vec(),
        };
        Ok(Self { headers, body })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    }

    /// The saved form: request line, headers, empty line, body.
    pub fn render(request_line: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
        let mut out = format!("{request_line}\r\n").into_bytes();
        for (name, value) in headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }
}

/// Splits at the first empty line (`\r\n\r\n` or `\n\n`).
fn split_head(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = find(bytes, b"\r\n\r\n").map(|at| (at, 4));
    let lf = find(bytes, b"\n\n").map(|at| (at, 2));
    let (at, len) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&bytes[..at], &bytes[at + len..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_request_parses_back() {
        let headers = vec![
            ("webhook-id".to_owned(), "evt_1".to_owned()),
            ("content-length".to_owned(), "2".to_owned()),
        ];
        let saved = RawRequest::render("POST /hooks HTTP/1.1", &headers, b"{}");
        let parsed = RawRequest::parse(&saved).unwrap();
        assert_eq!(parsed.headers, headers);
        assert_eq!(parsed.body, b"{}");
        assert_eq!(parsed.header("Webhook-ID").as_deref(), Some("evt_1"));
    }

    #[test]
    fn lf_only_files_and_trailing_newlines_are_accepted() {
        let saved = b"Webhook-Id: evt_1\ncontent-length: 2\n\n{}\n";
        let parsed = RawRequest::parse(saved).unwrap();
        assert_eq!(parsed.body, b"{}");
        let without_length = RawRequest::parse(b"webhook-id: x\n\nabc").unwrap();
        assert_eq!(without_length.body, b"abc");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(RawRequest::parse(b"no blank line").is_err());
        assert!(RawRequest::parse(b"POST / HTTP/1.1\nnot a header\n\n{}").is_err());
    }
}
