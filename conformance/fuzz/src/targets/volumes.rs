//! The volume plugin endpoint's input: HTTP requests as a client writes them (in pieces,
//! pipelined, oversized), their JSON bodies, and each driver's `-o key=value` options.

use crate::engine::Target;
use berth_volumes::driver::DriverConfig;
use berth_volumes::plugin::{api, http};
use berth_volumes::spec::{parse_option, MountId, OptionMap, VolumeName};
use std::io::{self, BufReader, Read};

/// A client that sends its request in pieces of sizes taken from the input itself, with an
/// interrupted read now and then, as a slow or bursty client does.
struct Trickle<'a> {
    data: &'a [u8],
    at: usize,
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.step += 1;
        if self.step.is_multiple_of(7) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let piece = 1 + (self.step * 31 + self.data.len()) % 97;
        let n = piece.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn run_http(input: &[u8]) -> bool {
    let mut reader = BufReader::with_capacity(64, Trickle { data: input, at: 0, step: 0 });
    let mut served = false;
    // Keep-alive: requests one after the other on the same connection, as the server reads them.
    for _ in 0..64 {
        let head = match http::read_head(&mut reader) {
            Ok(head) => head,
            Err(http::ReadError::Refused(refusal)) => {
                assert!((400..600).contains(&refusal.status), "a refusal is a 4xx or 5xx: {refusal:?}");
                return served;
            }
            Err(_) => return served,
        };
        assert!(head.content_length <= http::MAX_BODY_BYTES, "read_head lets no oversized body through");
        let Ok(body) = http::read_body(&mut reader, head.content_length) else { return served };
        let _ = api::decode(&head.path, &body);
        served = true;
        if !head.keep_alive {
            break;
        }
    }
    served
}

fn http_seeds() -> Vec<Vec<u8>> {
    let request = |path: &str, body: &str, extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let mut pipelined = request("/VolumeDriver.Mount", r#"{"Name":"data","ID":"0123456789abcdef"}"#, "");
    pipelined.extend(request("/VolumeDriver.Unmount", r#"{"Name":"data","ID":"0123456789abcdef"}"#, "Connection: close\r\n"));
    vec![
        request("/Plugin.Activate", "", ""),
        request("/VolumeDriver.Create", r#"{"Name":"data","Opts":{"type":"loop","size":"64M"}}"#, "Expect: 100-continue\r\n"),
        request("/VolumeDriver.Get", r#"{"Name":"data"}"#, "Connection: keep-alive\r\n"),
        request("/VolumeDriver.Remove", r#"{"Name":"data"}"#, ""),
        b"GET /VolumeDriver.List?x=1 HTTP/1.0\r\n\r\n".to_vec(),
        pipelined,
    ]
}

fn run_api(input: &[u8]) -> bool {
    let (path, body) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (String::from_utf8_lossy(&input[..at]).into_owned(), &input[at + 1..]),
        None => ("/VolumeDriver.Create".to_string(), input),
    };
    api::decode(&path, body).is_ok()
}

fn api_seeds() -> Vec<Vec<u8>> {
    [
        ("/VolumeDriver.Create", r#"{"Name":"data","Opts":{"type":"thin","size":"1G","fs":"xfs","pool":"p1"}}"#),
        ("/VolumeDriver.Create", r#"{"Name":"web-1","Opts":{"type":"bind","source":"/srv/web","ro":"true"}}"#),
        ("/VolumeDriver.Create", r#"{"Name":"q","Opts":{"type":"xfsquota","base":"/srv/q","size":"10M","inodes":"1000"}}"#),
        ("/VolumeDriver.Create", r#"{"Name":"n","Opts":null}"#),
        ("/VolumeDriver.Mount", r#"{"Name":"data","ID":"0123456789abcdef0123456789abcdef"}"#),
        ("/VolumeDriver.Path", r#"{"Name":"data"}"#),
    ]
    .iter()
    .map(|(path, body)| format!("{path}\n{body}").into_bytes())
    .collect()
}

/// `NAME\nDRIVER\nkey=value\n...`: a volume, the driver named on the command line (empty:
/// none, `type=` decides) and its options.
fn run_options(input: &[u8]) -> bool {
    let text = String::from_utf8_lossy(input);
    let mut lines = text.split('\n');
    let name = lines.next().unwrap_or_default();
    let driver = lines.next().filter(|d| !d.is_empty());
    let options: OptionMap = lines.map(parse_option).collect();
    let _ = MountId::parse(name);
    let Ok(volume) = VolumeName::parse(name) else { return false };
    let Ok(config) = DriverConfig::from_options(&volume, driver, &options) else { return false };
    // What volume.json records reads back as the same request.
    let recorded = serde_json::to_vec(&config).expect("a driver configuration serializes");
    let read: DriverConfig = serde_json::from_slice(&recorded).expect("a recorded configuration reads back");
    assert!(read.same_request(&config), "volume.json keeps the request: {}", String::from_utf8_lossy(&recorded));
    true
}

fn options_seeds() -> Vec<Vec<u8>> {
    [
        "data\n\ntype=loop\nsize=64M\nusrquota\ngrpquota=",
        "data\nthin\nsize=1G\nfs=ext4\npool=p1\nloopdatasize=2G\nloopmetadatasize=64M\nbasesize=10G",
        "snap\nthin\nfrom=data",
        "q\n\ntype=xfsquota\nbase=/srv/q\nsize=10M\ninodes=100",
        "b\nbind\nsource=/srv/b\nro=true",
        "n\nnamed",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub fn targets() -> Vec<Target> {
    const HTTP_TOKENS: &[&[u8]] = &[
        b"\r\n",
        b"\r\n\r\n",
        b"Content-Length: ",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"Expect: 100-continue\r\n",
        b"HTTP/1.1",
        b"HTTP/2",
        b"POST ",
        b"/VolumeDriver.Create",
        b"1048577",
        b"\xff",
    ];
    const OPTION_TOKENS: &[&[u8]] =
        &[b"\ntype=", b"\nsize=", b"=", b"\n", b"0", b"1E", b"k", b"M", b"G", b"T", b"P", b"E", b"iB", b"18446744073709551615"];
    vec![
        Target { name: "volume_http", seeds: http_seeds, dictionary: HTTP_TOKENS, run: run_http },
        Target {
            name: "volume_api",
            seeds: api_seeds,
            dictionary: &[b"\"Name\":", b"\"Opts\":", b"\"ID\":", b"null"],
            run: run_api,
        },
        Target { name: "volume_options", seeds: options_seeds, dictionary: OPTION_TOKENS, run: run_options },
    ]
}
