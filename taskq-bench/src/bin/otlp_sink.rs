//! taskq-otlp-sink: a stand-in for an OpenTelemetry collector on this machine, so that
//! `taskq-bench --otlp-endpoint` measures what exporting spans costs the process that exports
//! them, not what a collector does with them. It answers every OTLP/HTTP request with 200
//! (keep-alive, a thread per connection) and prints, every five seconds while requests come,
//! how many it took and their bytes.
//!
//! `cargo run --release -p taskq-bench --bin taskq-otlp-sink -- 127.0.0.1:4318`

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4318".to_owned());
    let listener = TcpListener::bind(&listen)?;
    eprintln!("taskq-otlp-sink: listening on {}", listener.local_addr()?);
    std::thread::spawn(report_totals);
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = answer(stream);
        });
    }
    Ok(())
}

/// Answers each request on one connection with 200 until the client closes it.
fn answer(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(length as u64, Ordering::Relaxed);
        reader.get_mut().write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )?;
    }
}

/// Prints the totals every five seconds while they change.
fn report_totals() {
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let requests = REQUESTS.load(Ordering::Relaxed);
        if requests != last {
            last = requests;
            eprintln!(
                "taskq-otlp-sink: {requests} requests, {} bytes",
                BYTES.load(Ordering::Relaxed)
            );
        }
    }
}
