//! The `healthcheck` subcommand: a minimal HTTP/1.1 GET of `/healthz` on the local
//! service, for container HEALTHCHECKs where no curl is installed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Succeeds when `GET http://addr/healthz` answers 200 within two seconds.
pub async fn probe(addr: SocketAddr) -> Result<(), String> {
    let addr = loopback_for(addr);
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = vec![0u8; 64];
        let read = stream.read(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..read]).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(2), exchange).await {
        Ok(Ok(head)) if head.starts_with("HTTP/1.1 200") => Ok(()),
        Ok(Ok(head)) => Err(format!(
            "unhealthy: {}",
            head.lines().next().unwrap_or_default()
        )),
        Ok(Err(error)) => Err(format!("cannot reach {addr}: {error}")),
        Err(_) => Err(format!("{addr} did not answer within 2s")),
    }
}

/// A wildcard listen address is probed on loopback.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}
