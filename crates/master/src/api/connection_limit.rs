//! Bounds the connections one client address holds open on the public listener. The
//! public listener answers anyone (Join is unauthenticated), and each connection costs
//! the master a task, TLS state and HTTP/2 buffers: without a bound one host could
//! open connections until the master runs out of memory or file descriptors and no
//! node or admin gets in.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The default for `weft master --max-connections-per-address`: room for an admin's
/// calls, a few joins and (with `--vpn off`, where node sessions share this listener)
/// the nodes of a site behind one NAT address.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: u32 = 256;

#[derive(Default)]
struct OpenConnections {
    per_address: HashMap<IpAddr, usize>,
    /// Addresses refused since they were last under the bound: each is logged once per
    /// episode, so a flood of connections is not also a flood of log lines.
    refusing: HashSet<IpAddr>,
}

/// Accepted connections past `max` from one address are closed at once, before TLS.
pub fn limit_per_address<S>(
    incoming: S,
    max: u32,
) -> impl Stream<Item = io::Result<CountedStream>> + Send + 'static
where
    S: Stream<Item = io::Result<TcpStream>> + Send + 'static,
{
    let open = Arc::new(Mutex::new(OpenConnections::default()));
    incoming.filter_map(move |accepted| {
        let admitted = accepted.map(|stream| admit(&open, stream, max)).transpose();
        std::future::ready(admitted)
    })
}

fn admit(open: &Arc<Mutex<OpenConnections>>, stream: TcpStream, max: u32) -> Option<CountedStream> {
    // Without a peer address the connection is already gone.
    let address = stream.peer_addr().ok()?.ip();
    let mut connections = open.lock().expect("no panics under this lock");
    let count = connections.per_address.entry(address).or_insert(0);
    if *count >= max as usize {
        if connections.refusing.insert(address) {
            tracing::warn!(%address, max, "too many connections from one address; further ones are closed until some end (weft master --max-connections-per-address)");
        }
        return None;
    }
    *count += 1;
    Some(CountedStream {
        stream,
        address,
        open: open.clone(),
    })
}

/// An accepted connection that gives its place back when it closes.
pub struct CountedStream {
    stream: TcpStream,
    address: IpAddr,
    open: Arc<Mutex<OpenConnections>>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        let mut connections = self.open.lock().expect("no panics under this lock");
        if let Some(count) = connections.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                connections.per_address.remove(&self.address);
            }
        }
        connections.refusing.remove(&self.address);
    }
}

impl Connected for CountedStream {
    type ConnectInfo = TcpConnectInfo;

    /// The TCP stream's own, so that the peer address and certificates reach requests
    /// exactly as without the bound.
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Connections past the bound are closed while the first ones stay open, and a
    /// place freed by a closed connection is taken by the next.
    #[tokio::test]
    async fn connections_past_the_bound_are_closed_until_one_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let (admitted_tx, mut admitted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut streams = Box::pin(limit_per_address(incoming, 2));
            while let Some(stream) = streams.next().await {
                let _ = admitted_tx.send(stream.unwrap());
            }
        });
        let _first = TcpStream::connect(address).await.unwrap();
        let held_first = admitted.recv().await.unwrap();
        let _second = TcpStream::connect(address).await.unwrap();
        let _held_second = admitted.recv().await.unwrap();

        let mut third = TcpStream::connect(address).await.unwrap();
        let mut byte = [0u8; 1];
        let closed = third.read(&mut byte).await;
        assert!(
            matches!(closed, Ok(0)) || closed.is_err(),
            "the third connection is closed by the listener: {closed:?}"
        );
        assert!(admitted.try_recv().is_err(), "the third was not admitted");

        drop(held_first);
        let fourth = TcpStream::connect(address).await.unwrap();
        let held_fourth = admitted.recv().await.unwrap();
        assert_eq!(
            held_fourth.stream.peer_addr().unwrap(),
            fourth.local_addr().unwrap(),
            "the fourth connection takes the place the first gave back"
        );
    }
}
