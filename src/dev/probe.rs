//! A minimal blocking HTTP(S) probe for readiness checks (no client library
//! needed; HTTPS through rustls directly).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// True when `GET http://addr{path}` answers 200.
pub fn http_ok(addr: &str, path: &str) -> bool {
    http_status(addr, path) == Some(200)
}

pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    get_status(&mut s, addr, path)
}

/// Sends `GET path` on `s` and reads the status code of the answer.
fn get_status(s: &mut (impl Read + Write), addr: &str, path: &str) -> Option<u16> {
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The status of `GET {url}{path}` for an `http://` or `https://` base URL;
/// HTTPS trusts what `tls` trusts.
pub fn url_status(
    url: &str,
    path: &str,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> Option<u16> {
    if let Some(addr) = url.strip_prefix("http://") {
        return http_status(addr, path);
    }
    let addr = url.strip_prefix("https://")?;
    let (host, _) = addr.rsplit_once(':')?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
    let conn = rustls::ClientConnection::new(tls?.clone(), name).ok()?;
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let s = TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    get_status(&mut rustls::StreamOwned::new(conn, s), addr, path)
}
