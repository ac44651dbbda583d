//! The small part of HTTP/1.1 the plugin protocol uses: requests with a Content-Length
//! body, keep-alive, `Expect: 100-continue`, and strict limits on what a client may send.

use std::io::{self, BufRead, Read, Write};

/// Request line and headers together.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;
/// Plugin requests are a name, an ID and a few options: a megabyte is generous.
pub const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub content_length: usize,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// A request the server refuses, answered with `status` and then the connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into() }
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection between requests.
    Closed,
    Io(io::Error),
    Refused(Refusal),
}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> Self {
        ReadError::Io(err)
    }
}

/// Reads a request line and headers.
pub fn read_head(reader: &mut impl BufRead) -> Result<Head, ReadError> {
    let mut budget = MAX_HEAD_BYTES;
    let mut line = Vec::new();
    let mut head = parse_request_line(&read_request_line(reader, &mut line, &mut budget)?)?;
    read_headers(reader, &mut line, &mut budget, &mut head)?;
    if head.content_length > MAX_BODY_BYTES {
        return Err(refuse(413, format!("body of {} bytes is over the limit of {MAX_BODY_BYTES}", head.content_length)));
    }
    Ok(head)
}

fn refuse(status: u16, message: impl Into<String>) -> ReadError {
    ReadError::Refused(Refusal::new(status, message))
}

/// The request line; clients may send empty lines before it (RFC 9112 section 2.2).
fn read_request_line(reader: &mut impl BufRead, line: &mut Vec<u8>, budget: &mut usize) -> Result<String, ReadError> {
    loop {
        match read_line(reader, line, budget)? {
            None => return Err(ReadError::Closed),
            Some(text) if text.is_empty() => continue,
            Some(text) => return Ok(text),
        }
    }
}

/// `METHOD /path?query HTTP/1.x`: the head of a request with no headers read yet.
fn parse_request_line(request_line: &str) -> Result<Head, ReadError> {
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(refuse(400, format!("malformed request line {request_line:?}")));
    };
    let http_1_0 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(refuse(505, format!("unsupported protocol {version:?}"))),
    };
    if !target.starts_with('/') {
        return Err(refuse(400, format!("malformed request target {target:?}")));
    }
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(Head { method: method.to_string(), path, content_length: 0, keep_alive: !http_1_0, expect_continue: false })
}

/// Reads the header fields up to the empty line, applying those the server honours to `head`.
fn read_headers(reader: &mut impl BufRead, line: &mut Vec<u8>, budget: &mut usize, head: &mut Head) -> Result<(), ReadError> {
    let mut content_length: Option<usize> = None;
    let mut headers = 0;
    loop {
        let Some(text) = read_line(reader, line, budget)? else {
            return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
        };
        if text.is_empty() {
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(refuse(431, format!("more than {MAX_HEADERS} header fields")));
        }
        let Some((name, value)) = text.split_once(':') else {
            return Err(refuse(400, format!("malformed header line {text:?}")));
        };
        apply_header(head, &mut content_length, name, value.trim())?;
    }
    head.content_length = content_length.unwrap_or(0);
    Ok(())
}

/// Applies one header field to `head`; `content_length` is the one seen before, if any,
/// since conflicting Content-Length headers are refused.
fn apply_header(head: &mut Head, content_length: &mut Option<usize>, name: &str, value: &str) -> Result<(), ReadError> {
    match name.to_ascii_lowercase().as_str() {
        "content-length" => {
            let length = value.parse::<usize>().map_err(|_| refuse(400, format!("invalid Content-Length {value:?}")))?;
            if content_length.is_some_and(|earlier| earlier != length) {
                return Err(refuse(400, "conflicting Content-Length headers"));
            }
            *content_length = Some(length);
        }
        "transfer-encoding" => {
            return Err(refuse(501, format!("Transfer-Encoding {value:?} is not supported; send a Content-Length")));
        }
        "connection" => {
            for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                match token.as_str() {
                    "close" => head.keep_alive = false,
                    "keep-alive" => head.keep_alive = true,
                    _ => {}
                }
            }
        }
        "expect" => head.expect_continue = value.eq_ignore_ascii_case("100-continue"),
        _ => {}
    }
    Ok(())
}

/// Reads one line (without its CRLF or LF), charging it to `budget`; `None` at a clean EOF.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, budget: &mut usize) -> Result<Option<String>, ReadError> {
    line.clear();
    // One byte over the budget tells "too long" apart from "exactly at the limit".
    let read = reader.by_ref().take(*budget as u64 + 1).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(None);
    }
    if read > *budget {
        return Err(refuse(431, format!("request head over {MAX_HEAD_BYTES} bytes")));
    }
    *budget -= read;
    if line.last() != Some(&b'\n') {
        return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(std::mem::take(line)).map(Some).map_err(|_| refuse(400, "request head is not UTF-8"))
}

pub fn read_body(reader: &mut impl Read, length: usize) -> io::Result<Vec<u8>> {
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

pub fn write_continue(writer: &mut impl Write) -> io::Result<()> {
    writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    writer.flush()
}

/// Writes a whole response in one go (one syscall for small replies).
pub fn write_response(writer: &mut impl Write, status: u16, content_type: &str, body: &[u8], keep_alive: bool) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    )
    .into_bytes();
    response.extend_from_slice(body);
    writer.write_all(&response)?;
    writer.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Head, ReadError> {
        read_head(&mut raw.as_bytes())
    }

    fn refused(raw: &str) -> u16 {
        match head(raw) {
            Err(ReadError::Refused(refusal)) => refusal.status,
            other => panic!("{raw:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn parses_a_plugin_request() {
        let parsed = head(
            "POST /VolumeDriver.Mount HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n",
        )
        .unwrap();
        assert_eq!(parsed.method, "POST");
        assert_eq!(parsed.path, "/VolumeDriver.Mount");
        assert_eq!(parsed.content_length, 27);
        assert!(parsed.keep_alive);
        assert!(!parsed.expect_continue);
    }

    #[test]
    fn honours_connection_and_expect() {
        let parsed = head("POST /x?y=1 HTTP/1.1\nConnection: close\nExpect: 100-continue\n\n").unwrap();
        assert_eq!(parsed.path, "/x");
        assert!(!parsed.keep_alive);
        assert!(parsed.expect_continue);
        assert!(!head("POST / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(head("POST / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().keep_alive);
    }

    #[test]
    fn refuses_malformed_or_oversized_requests() {
        assert_eq!(refused("GARBAGE\r\n\r\n"), 400);
        assert_eq!(refused("POST /x HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(refused("POST x HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused("POST /x HTTP/1.1\r\nno colon here\r\n\r\n"), 400);
        assert_eq!(refused("POST /x HTTP/1.1\r\nContent-Length: -4\r\n\r\n"), 400);
        assert_eq!(refused("POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), 400);
        assert_eq!(refused("POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"), 413);
        assert_eq!(refused("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 501);
        let long = format!("POST /x HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(refused(&long), 431);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(refused(&format!("POST /x HTTP/1.1\r\n{many}\r\n")), 431);
        let not_utf8 = read_head(&mut &b"POST /\xff HTTP/1.1\r\n\r\n"[..]);
        assert!(matches!(not_utf8, Err(ReadError::Refused(Refusal { status: 400, .. }))));
    }

    #[test]
    fn tells_a_closed_connection_from_a_cut_request() {
        assert!(matches!(head(""), Err(ReadError::Closed)));
        assert!(matches!(head("POST /x HTTP/1.1\r\nHost: a"), Err(ReadError::Io(_))));
    }

    #[test]
    fn writes_a_complete_response() {
        let mut out = Vec::new();
        write_response(&mut out, 500, "application/json", b"{\"Err\":\"x\"}", false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(text.contains("Content-Length: 11\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"Err\":\"x\"}"));
    }
}
