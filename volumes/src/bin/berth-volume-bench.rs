//! Throughput and latency of the volume plugin endpoint with concurrent clients:
//! 1. create + mount + unmount + remove cycles of named volumes;
//! 2. Get and List with many volumes present.
//!
//! Runs its own server on a socket in a temp dir (state under the same dir, removed at the
//! end); every client keeps one keep-alive connection, like a runtime's HTTP client.
//! `cargo run --release -p berth-volumes --bin berth-volume-bench -- --help`

use berth_volumes::driver::{DriverConfig, NamedDriver};
use berth_volumes::plugin::{RequestLog, Server, ServerOptions};
use berth_volumes::spec::VolumeName;
use berth_volumes::VolumeStore;
use clap::Parser;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Benchmark of berth's Docker volume plugin endpoint")]
struct Options {
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Create+mount+unmount+remove cycles per client (workload 1).
    #[arg(long, default_value_t = 200)]
    cycles: usize,
    /// Volumes present during workload 2.
    #[arg(long, default_value_t = 1000)]
    volumes: usize,
    /// Get requests per client (workload 2).
    #[arg(long, default_value_t = 2000)]
    gets: usize,
    /// List requests per client (workload 2).
    #[arg(long, default_value_t = 50)]
    lists: usize,
    /// Where the temp dir goes (its file system's fsync speed matters).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
}

/// The bench's directory, removed on exit.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(socket: &Path) -> std::io::Result<Client> {
        let stream = UnixStream::connect(socket)?;
        Ok(Client { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Sends one request and returns its status and body; the bench stops on any I/O error.
    fn post(&mut self, path: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let request = format!("POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        self.writer.write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }

    /// A request that must succeed, timed.
    fn timed(&mut self, path: &str, body: &str, samples: &mut Samples) -> Result<(), String> {
        let started = Instant::now();
        let (status, reply) = self.post(path, body).map_err(|err| format!("{path}: {err}"))?;
        samples.record(path, started.elapsed());
        if status != 200 {
            return Err(format!("{path} {body} -> {status} {}", String::from_utf8_lossy(&reply)));
        }
        Ok(())
    }
}

/// Latencies by endpoint.
#[derive(Default)]
struct Samples(BTreeMap<String, Vec<Duration>>);

impl Samples {
    fn record(&mut self, path: &str, latency: Duration) {
        let key = path.trim_start_matches("/VolumeDriver.");
        self.0.entry(key.to_string()).or_default().push(latency);
    }

    fn merge(&mut self, other: Samples) {
        for (key, mut latencies) in other.0 {
            self.0.entry(key).or_default().append(&mut latencies);
        }
    }

    fn count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    fn print(&mut self, elapsed: Duration) {
        println!(
            "  {:<10} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "request", "count", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let mut all = Vec::new();
        for (key, latencies) in self.0.iter_mut() {
            print_row(key, latencies, elapsed);
            all.extend_from_slice(latencies);
        }
        if self.0.len() > 1 {
            print_row("all", &mut all, elapsed);
        }
    }
}

fn print_row(label: &str, latencies: &mut [Duration], elapsed: Duration) {
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1e3
    };
    println!(
        "  {label:<10} {:>8} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
    );
}

/// Runs `work` on `clients` threads at once and gathers their samples.
fn concurrently(
    socket: &Path,
    clients: usize,
    work: impl Fn(usize, &mut Client, &mut Samples) -> Result<(), String> + Sync,
) -> Result<(Samples, Duration), String> {
    let started = Instant::now();
    let results: Vec<Result<Samples, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|n| {
                let work = &work;
                scope.spawn(move || {
                    let mut client = Client::connect(socket).map_err(|err| format!("connect: {err}"))?;
                    let mut samples = Samples::default();
                    work(n, &mut client, &mut samples)?;
                    Ok(samples)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("client thread panicked".into()))).collect()
    });
    let elapsed = started.elapsed();
    let mut merged = Samples::default();
    for result in results {
        merged.merge(result?);
    }
    Ok((merged, elapsed))
}

fn main() {
    let options = Options::parse();
    if let Err(err) = run(&options) {
        eprintln!("berth-volume-bench: {err}");
        std::process::exit(1);
    }
}

fn run(options: &Options) -> Result<(), String> {
    let work = WorkDir(options.work_dir.join(format!("berth-volume-bench-{}", std::process::id())));
    let state = work.0.join("state");
    let socket = work.0.join("plugin.sock");
    let store = VolumeStore::open(&state).map_err(|err| err.to_string())?;
    let mut server_options = ServerOptions::new(&socket);
    server_options.request_log = RequestLog::Off;
    server_options.max_connections = options.clients + 16;
    let server = Server::bind(store, server_options).map_err(|err| err.to_string())?;
    let stop = server.stop_handle();
    let server_thread = std::thread::spawn(move || server.run());

    println!("berth volume plugin endpoint; state on {}; {} clients", work.0.display(), options.clients);
    create_mount_unmount_remove(options, &socket)?;
    get_and_list(options, &socket, &state)?;

    stop.stop();
    server_thread.join().map_err(|_| "server thread panicked".to_string())?;
    Ok(())
}

/// Workload 1: whole lifetimes of named volumes, every client on volumes of its own.
fn create_mount_unmount_remove(options: &Options, socket: &Path) -> Result<(), String> {
    println!("workload 1: create + mount + unmount + remove of named volumes, {} cycles per client", options.cycles);
    let (mut samples, elapsed) = concurrently(socket, options.clients, |n, client, samples| {
        for cycle in 0..options.cycles {
            let name = format!("cycle-{n}-{cycle}");
            let id = format!("ctr-{n}-{cycle}");
            client.timed("/VolumeDriver.Create", &format!(r#"{{"Name":"{name}","Opts":{{"type":"named"}}}}"#), samples)?;
            client.timed("/VolumeDriver.Mount", &format!(r#"{{"Name":"{name}","ID":"{id}"}}"#), samples)?;
            client.timed("/VolumeDriver.Unmount", &format!(r#"{{"Name":"{name}","ID":"{id}"}}"#), samples)?;
            client.timed("/VolumeDriver.Remove", &format!(r#"{{"Name":"{name}"}}"#), samples)?;
        }
        Ok(())
    })?;
    let requests = samples.count();
    println!(
        "  {requests} requests in {:.2} s: {:.0} requests/s, {:.0} cycles/s",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        (requests / 4) as f64 / elapsed.as_secs_f64()
    );
    samples.print(elapsed);
    Ok(())
}

/// Workload 2: Get, then List, with many volumes present (made directly in the store).
fn get_and_list(options: &Options, socket: &Path, state: &Path) -> Result<(), String> {
    let store = VolumeStore::open(state).map_err(|err| err.to_string())?;
    for n in 0..options.volumes {
        let name = VolumeName::parse(&format!("vol-{n:05}")).map_err(|err| err.to_string())?;
        store.create(&name, DriverConfig::Named(NamedDriver {})).map_err(|err| err.to_string())?;
    }
    println!("workload 2: Get then List with {} volumes present", options.volumes);
    let (mut gets, elapsed) = concurrently(socket, options.clients, |n, client, samples| {
        // A xorshift sequence per client spreads Gets over all volumes without a rand crate.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (n as u64 + 1);
        for _ in 0..options.gets {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let volume = seed % options.volumes.max(1) as u64;
            client.timed("/VolumeDriver.Get", &format!(r#"{{"Name":"vol-{volume:05}"}}"#), samples)?;
        }
        Ok(())
    })?;
    gets.print(elapsed);
    let (mut lists, elapsed) = concurrently(socket, options.clients, |_, client, samples| {
        for _ in 0..options.lists {
            client.timed("/VolumeDriver.List", "", samples)?;
        }
        Ok(())
    })?;
    lists.print(elapsed);
    Ok(())
}
