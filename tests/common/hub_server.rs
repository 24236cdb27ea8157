//! A test HTTP server on 127.0.0.1 that serves a model folder in the Hugging Face Hub's
//! URL layout (`/{owner}/{name}/resolve/{revision}/{file}`) with the headers hf-hub reads:
//! ETag, X-Repo-Commit, Content-Length, and 206 answers with Content-Range to range
//! requests. It counts the body bytes it sends and can misbehave on purpose.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Default)]
pub struct Behaviour {
    /// Files answered with 404 although they exist.
    pub missing: Vec<String>,
    /// Files whose body is sent 10 bytes short (a damaged transfer).
    pub short: Vec<String>,
    /// Delay per 64 KB chunk, to let a test cancel in the middle.
    pub slow: bool,
}

pub struct HubServer {
    pub endpoint: String,
    pub bytes_sent: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    stop: Arc<AtomicBool>,
}

impl HubServer {
    /// Serves the files of `dir` as the model `id` at revision "main".
    pub fn start(dir: &Path, id: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let files: HashMap<String, PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        let prefix = format!("/{id}/resolve/main/");
        let bytes_sent = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, reqs, beh, st) = (
            bytes_sent.clone(),
            requests.clone(),
            behaviour.clone(),
            stop.clone(),
        );
        listener.set_nonblocking(false).unwrap();
        std::thread::Builder::new()
            .name("test-hub-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (files, prefix, sent, reqs, beh) = (
                        files.clone(),
                        prefix.clone(),
                        sent.clone(),
                        reqs.clone(),
                        beh.clone(),
                    );
                    std::thread::spawn(move || {
                        let _ = serve(stream, &files, &prefix, &sent, &reqs, &beh);
                    });
                }
            })
            .unwrap();
        HubServer {
            endpoint,
            bytes_sent,
            requests,
            behaviour,
            stop,
        }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

fn serve(
    mut stream: TcpStream,
    files: &HashMap<String, PathBuf>,
    prefix: &str,
    sent: &AtomicU64,
    reqs: &AtomicU64,
    behaviour: &Mutex<Behaviour>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            let v = v.trim();
            let (a, b) = v.split_once('-').unwrap_or((v, ""));
            range = Some((a.parse::<u64>().unwrap_or(0), b.parse::<u64>().ok()));
        }
    }
    reqs.fetch_add(1, Ordering::SeqCst);
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let name = path.strip_prefix(prefix).unwrap_or("");
    let (missing, short, slow) = {
        let b = behaviour.lock().unwrap();
        (
            b.missing.iter().any(|m| m == name),
            b.short.iter().any(|m| m == name),
            b.slow,
        )
    };
    let Some(file) = files.get(name).filter(|_| !missing) else {
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Error-Code: EntryNotFound\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let data = std::fs::read(file)?;
    let total = data.len() as u64;
    let etag = format!("{:x}", md5ish(&data));
    let (start, end) = match range {
        Some((a, b)) => (a.min(total), b.map(|b| (b + 1).min(total)).unwrap_or(total)),
        None => (0, total),
    };
    let mut body = &data[start as usize..end as usize];
    if short && body.len() > 10 && end - start > 1 {
        body = &body[..body.len() - 10];
    }
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nETag: \"{etag}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n",
        body.len()
    )?;
    if range.is_some() {
        write!(
            stream,
            "Content-Range: bytes {start}-{}/{total}\r\n",
            end.saturating_sub(1)
        )?;
    }
    write!(stream, "Connection: close\r\n\r\n")?;
    for chunk in body.chunks(64 << 10) {
        stream.write_all(chunk)?;
        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        if slow {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    stream.flush()
}

/// A content hash for the ETag (any stable hash will do for the test).
fn md5ish(data: &[u8]) -> u128 {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for chunk in data.chunks(16) {
        let mut v = [0u8; 16];
        v[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u128::from_le_bytes(v)).wrapping_mul(0x0000000001000000000000000000013B);
    }
    h
}
