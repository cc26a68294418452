//! A TCP proxy in front of PostgreSQL, so a test can take the database away from the server without
//! touching the PostgreSQL server other tests share: [`TcpProxy::cut`] (every connection closed,
//! new ones refused, as during a restart) and [`TcpProxy::freeze`] (connections stay open but no
//! byte moves, as with a database that hangs).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

pub struct TcpProxy {
    pub address: SocketAddr,
    up: Arc<AtomicBool>,
    frozen: watch::Sender<bool>,
    connections: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards every connection to `target` until told otherwise.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let up = Arc::new(AtomicBool::new(true));
        let (frozen, thawed) = watch::channel(false);
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn({
            let (up, connections) = (up.clone(), connections.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client); // refused, as by a database that is not there
                        continue;
                    }
                    let thawed = thawed.clone();
                    connections.lock().await.spawn(async move {
                        let Ok(server) = TcpStream::connect(target).await else { return };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, thawed.clone()),
                            pump(server_read, client_write, thawed)
                        );
                    });
                }
            }
        });
        TcpProxy { address, up, frozen, connections, accept }
    }

    /// Cuts every connection and refuses new ones.
    pub async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.connections.lock().await.abort_all();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Holds every byte, in both directions, on every connection old and new, until [`TcpProxy::thaw`].
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

/// Copies `from` to `to`, holding what it read while frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if frozen.wait_for(|frozen| !*frozen).await.is_err() || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
