//! A TCP proxy on loopback that puts a bad network between rewindb and the
//! S3 server: connections cut midway, `503 SlowDown` answers, a link that
//! goes dead after so many bytes, or that hangs until the test lets it go.
//! It forwards bytes; it does not parse HTTP beyond a request's head.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
struct State {
    /// Of every four connections, one is answered 503 SlowDown and one is
    /// cut after 64 KiB to 1 MiB.
    flaky: AtomicBool,
    /// Dead link: connections are closed, new ones at once.
    down: AtomicBool,
    /// Forwarding waits while this is set.
    hold: AtomicBool,
    /// Client-to-server bytes after which the link goes down (0: never).
    down_after_up: AtomicU64,
    /// Server-to-client bytes after which the link goes down (0: never).
    down_after_down: AtomicU64,
    /// Client-to-server bytes after which forwarding holds (0: never).
    hold_after_up: AtomicU64,
    up: AtomicU64,
    down_bytes: AtomicU64,
    connections: AtomicU64,
    /// Faults injected: 503s sent and connections cut.
    faults: AtomicU64,
}

/// The proxy: listening on `port`, forwarding to `upstream`, until the test
/// process ends.
pub struct FaultProxy {
    pub port: u16,
    state: Arc<State>,
}

impl FaultProxy {
    pub fn new(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let s = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || connection(client, upstream, s));
            }
        });
        FaultProxy { port, state }
    }

    pub fn set_flaky(&self, on: bool) {
        self.state.flaky.store(on, Ordering::SeqCst);
    }

    pub fn set_down(&self, on: bool) {
        self.state.down.store(on, Ordering::SeqCst);
    }

    pub fn set_hold(&self, on: bool) {
        self.state.hold.store(on, Ordering::SeqCst);
    }

    /// The link dies once `bytes` more have gone from client to server.
    pub fn down_after_upload(&self, bytes: u64) {
        let at = self.state.up.load(Ordering::SeqCst) + bytes;
        self.state.down_after_up.store(at, Ordering::SeqCst);
    }

    /// The link dies once `bytes` more have come from the server.
    pub fn down_after_download(&self, bytes: u64) {
        let at = self.state.down_bytes.load(Ordering::SeqCst) + bytes;
        self.state.down_after_down.store(at, Ordering::SeqCst);
    }

    /// Forwarding stops (connections hang) once `bytes` more have gone to
    /// the server; [`set_hold(false)`](Self::set_hold) resumes it.
    pub fn hold_after_upload(&self, bytes: u64) {
        let at = self.state.up.load(Ordering::SeqCst) + bytes;
        self.state.hold_after_up.store(at, Ordering::SeqCst);
    }

    /// Whether forwarding is held now.
    pub fn holding(&self) -> bool {
        self.state.hold.load(Ordering::SeqCst)
    }

    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::SeqCst)
    }

    /// Bytes that came from the server so far.
    pub fn downloaded(&self) -> u64 {
        self.state.down_bytes.load(Ordering::SeqCst)
    }

    /// Faults injected so far.
    pub fn faults(&self) -> u64 {
        self.state.faults.load(Ordering::SeqCst)
    }
}

fn connection(client: TcpStream, upstream: u16, s: Arc<State>) {
    let n = s.connections.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return; // dropped: the client sees the connection closed
    }
    let flaky = s.flaky.load(Ordering::SeqCst);
    if flaky && n.is_multiple_of(4) {
        s.faults.fetch_add(1, Ordering::SeqCst);
        slow_down(client);
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return; // the server is gone: so is this connection
    };
    // One in four is cut after 64 KiB to 1 MiB, in either direction.
    let cut_at = match flaky && n % 4 == 1 {
        true => (64 << 10) + (n * 7919 % 16) * (60 << 10),
        false => u64::MAX,
    };
    let ends = [client.try_clone().unwrap(), server.try_clone().unwrap()];
    let moved = Arc::new(AtomicU64::new(0));
    let pumps = [
        (
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            true,
        ),
        (server, client, false),
    ]
    .map(|(from, to, up)| {
        let (moved, s) = (moved.clone(), s.clone());
        let ends = [ends[0].try_clone().unwrap(), ends[1].try_clone().unwrap()];
        std::thread::spawn(move || pump(from, to, up, &s, &moved, cut_at, &ends))
    });
    for p in pumps {
        let _ = p.join();
    }
}

/// Copies one direction until EOF, a fault, or the link going down.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    up: bool,
    s: &State,
    moved: &AtomicU64,
    cut_at: u64,
    ends: &[TcpStream; 2],
) {
    let cut = || {
        for e in ends {
            let _ = e.shutdown(Shutdown::Both);
        }
    };
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        while s.hold.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if s.down.load(Ordering::SeqCst) {
            return cut();
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return cut(),
        };
        let (count, down_at) = match up {
            true => (&s.up, &s.down_after_up),
            false => (&s.down_bytes, &s.down_after_down),
        };
        let total = count.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let limit = down_at.load(Ordering::SeqCst);
        if limit != 0 && total >= limit {
            down_at.store(0, Ordering::SeqCst);
            s.down.store(true, Ordering::SeqCst);
            return cut();
        }
        let hold_at = s.hold_after_up.load(Ordering::SeqCst);
        if up && hold_at != 0 && total >= hold_at {
            s.hold_after_up.store(0, Ordering::SeqCst);
            s.hold.store(true, Ordering::SeqCst);
            while s.hold.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if moved.fetch_add(n as u64, Ordering::SeqCst) + n as u64 >= cut_at {
            s.faults.fetch_add(1, Ordering::SeqCst);
            return cut();
        }
        if to.write_all(&buf[..n]).is_err() {
            return cut();
        }
    }
}

/// Reads one request (head and `Content-Length` body) and answers it as S3
/// does when it wants a client to back off.
fn slow_down(mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = got.len() - head_end;
    while have < body_len {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let _ = write!(
        client,
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.shutdown(Shutdown::Write);
}
