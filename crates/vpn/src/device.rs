//! The node's WireGuard interface: kernel WireGuard when the module exists, else a
//! boringtun device inside this process (TUN + UAPI socket), both configured through
//! wireguard-control; the address, MTU and link state through netlink.
//!
//! boringtun's traps shape this file:
//! changing an existing peer hangs it, so a changed peer is removed in one request
//! and added in a second; its handshake "times" are ages; UAPI sockets share one
//! directory across namespaces, so interface names must be unique on the host.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use boringtun::device::{DeviceConfig, DeviceHandle};
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use wireguard_control::{
    AllowedIp, Backend, Device, DeviceUpdate, InterfaceName, Key, PeerConfig, PeerConfigBuilder,
};

use crate::peer_registry::Peer;

/// WireGuard's own overhead on a 1500-byte link (wireguard-go and wg-quick use it too);
/// at 1500 the outer UDP packets would fragment.
pub const MESH_MTU: u32 = 1420;
pub const DEFAULT_INTERFACE: &str = "weft0";
pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// Keepalive for peers behind NAT: short enough for common NAT mapping timeouts.
pub const NAT_KEEPALIVE_SECONDS: u16 = 25;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("invalid interface name `{0}`: at most 15 bytes, not only digits (--vpn-interface)")]
    InvalidName(String),
    #[error(
        "cannot create the WireGuard interface `{name}`: {source}; weft needs root (or \
         CAP_NET_ADMIN) and /dev/net/tun, or run without the mesh (--vpn off)"
    )]
    Create { name: String, source: io::Error },
    #[error("cannot configure the WireGuard interface `{name}`: {source}")]
    Configure { name: String, source: io::Error },
    #[error("invalid WireGuard key for peer `{node}`: {key}")]
    InvalidPeerKey { node: String, key: String },
}

/// What the node's interface is set up with.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub interface: String,
    pub private_key_base64: String,
    pub listen_port: u16,
    pub node_vpn_ip: Ipv4Addr,
    pub vpn_prefix_len: u8,
}

/// What the device says about one peer now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub node_vpn_pub_key: String,
    /// `None`: no handshake yet.
    pub last_handshake_age: Option<Duration>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The interface; it lives as long as this value (a boringtun device stops with it).
pub struct MeshDevice {
    name: InterfaceName,
    backend: Backend,
    embedded: Option<EmbeddedDevice>,
}

impl MeshDevice {
    /// Creates the interface (or takes over the one this node left behind), sets its
    /// key, port, address, MTU, and brings it up. No peers yet.
    pub fn open(settings: &DeviceSettings) -> Result<MeshDevice, DeviceError> {
        let name: InterfaceName = settings
            .interface
            .parse()
            .map_err(|_| DeviceError::InvalidName(settings.interface.clone()))?;
        if settings.interface.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DeviceError::InvalidName(settings.interface.clone()));
        }
        let key =
            Key::from_base64(&settings.private_key_base64).map_err(|_| DeviceError::Configure {
                name: settings.interface.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "bad private key"),
            })?;
        let configure = |backend| {
            DeviceUpdate::new()
                .set_private_key(key.clone())
                .set_listen_port(settings.listen_port)
                .replace_peers()
                .apply(&name, backend)
        };
        // The kernel backend creates the link itself and says Unsupported without the module.
        let (backend, embedded) = match configure(Backend::Kernel) {
            Ok(()) => (Backend::Kernel, None),
            Err(error) if is_missing_kernel_module(&error) => {
                let embedded = EmbeddedDevice::start(&settings.interface).map_err(|source| {
                    DeviceError::Create {
                        name: settings.interface.clone(),
                        source,
                    }
                })?;
                configure(Backend::Userspace).map_err(|source| DeviceError::Configure {
                    name: settings.interface.clone(),
                    source,
                })?;
                (Backend::Userspace, Some(embedded))
            }
            Err(source) => {
                return Err(DeviceError::Create {
                    name: settings.interface.clone(),
                    source,
                })
            }
        };
        let device = MeshDevice {
            name,
            backend,
            embedded,
        };
        device
            .set_up_link(settings.node_vpn_ip, settings.vpn_prefix_len)
            .map_err(|source| DeviceError::Configure {
                name: settings.interface.clone(),
                source,
            })?;
        tracing::info!(
            interface = %settings.interface,
            backend = if device.embedded.is_some() { "boringtun (embedded)" } else { "kernel" },
            address = %settings.node_vpn_ip,
            port = settings.listen_port,
            "WireGuard interface up"
        );
        Ok(device)
    }

    pub fn interface(&self) -> String {
        self.name.as_str_lossy().into_owned()
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    fn set_up_link(&self, address: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let index = interface_index(&self.name)?;
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix_len;
        message.header.index = index;
        message
            .attributes
            .push(AddressAttribute::Local(IpAddr::V4(address)));
        message
            .attributes
            .push(AddressAttribute::Address(IpAddr::V4(address)));
        // REPLACE: a restart over an interface the kernel kept is not an error.
        netlink_request::netlink_request_rtnl(
            RouteNetlinkMessage::NewAddress(message),
            Some(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE),
        )?;
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        link.attributes.push(LinkAttribute::Mtu(MESH_MTU));
        netlink_request::netlink_request_rtnl(
            RouteNetlinkMessage::SetLink(link),
            Some(NLM_F_REQUEST | NLM_F_ACK),
        )?;
        Ok(())
    }

    /// Makes the device's peers exactly `peers` (this node itself excluded by the
    /// caller). Returns how many peers were added, changed and removed.
    pub fn apply_peers(
        &self,
        peers: &[Peer],
        own_keepalive: u16,
    ) -> Result<PeerChanges, DeviceError> {
        let mut wanted: BTreeMap<String, PeerConfigBuilder> = BTreeMap::new();
        for peer in peers {
            wanted.insert(
                peer.node_vpn_pub_key.clone(),
                peer_config(peer, own_keepalive)?,
            );
        }
        let present = self.present_peers()?;
        let mut changes = PeerChanges::default();
        let mut removals = DeviceUpdate::new();
        let mut additions = DeviceUpdate::new();
        for info in &present {
            let key = info.config.public_key.to_base64();
            match wanted.remove(&key) {
                None => {
                    removals = removals.remove_peer_by_key(&info.config.public_key);
                    changes.removed += 1;
                }
                Some(builder) if !same_config(info, &builder) => {
                    removals = removals.remove_peer_by_key(&info.config.public_key);
                    additions = additions.add_peer(builder);
                    changes.changed += 1;
                }
                Some(_) => {}
            }
        }
        for builder in wanted.into_values() {
            additions = additions.add_peer(builder);
            changes.added += 1;
        }
        // Two requests: boringtun cannot modify a peer, nor remove and add it in one.
        if changes.removed + changes.changed > 0 {
            self.apply(removals)?;
        }
        if changes.added + changes.changed > 0 {
            self.apply(additions)?;
        }
        Ok(changes)
    }

    pub fn peer_statuses(&self) -> Result<Vec<PeerStatus>, DeviceError> {
        Ok(self
            .present_peers()?
            .into_iter()
            .map(|peer| PeerStatus {
                node_vpn_pub_key: peer.config.public_key.to_base64(),
                last_handshake_age: peer.last_handshake_age,
                rx_bytes: peer.rx_bytes,
                tx_bytes: peer.tx_bytes,
            })
            .collect())
    }

    fn present_peers(&self) -> Result<Vec<PresentPeer>, DeviceError> {
        let read = if self.embedded.is_some() {
            uapi_get(&self.interface())
        } else {
            let now = SystemTime::now();
            Device::get(&self.name, self.backend).map(|device| {
                device
                    .peers
                    .into_iter()
                    .map(|info| PresentPeer {
                        last_handshake_age: info
                            .stats
                            .last_handshake_time
                            .map(|time| now.duration_since(time).unwrap_or_default()),
                        rx_bytes: info.stats.rx_bytes,
                        tx_bytes: info.stats.tx_bytes,
                        config: info.config,
                    })
                    .collect()
            })
        };
        read.map_err(|source| DeviceError::Configure {
            name: self.interface(),
            source,
        })
    }

    fn apply(&self, update: DeviceUpdate) -> Result<(), DeviceError> {
        update
            .apply(&self.name, self.backend)
            .map_err(|source| DeviceError::Configure {
                name: self.interface(),
                source,
            })
    }

    /// Removes the interface now (a kernel link outlives the process otherwise).
    pub fn delete(self) -> Result<(), DeviceError> {
        if self.embedded.is_some() {
            return Ok(()); // dropping the embedded device removes it
        }
        let name = self.interface();
        Device::get(&self.name, self.backend)
            .and_then(Device::delete)
            .map_err(|source| DeviceError::Configure { name, source })
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
}

fn peer_config(peer: &Peer, own_keepalive: u16) -> Result<PeerConfigBuilder, DeviceError> {
    let key =
        Key::from_base64(&peer.node_vpn_pub_key).map_err(|_| DeviceError::InvalidPeerKey {
            node: peer.node_name.clone(),
            key: peer.node_vpn_pub_key.clone(),
        })?;
    let address: Ipv4Addr = peer
        .node_vpn_ip
        .parse()
        .map_err(|_| DeviceError::InvalidPeerKey {
            node: peer.node_name.clone(),
            key: format!("address `{}`", peer.node_vpn_ip),
        })?;
    let mut builder = PeerConfigBuilder::new(&key).add_allowed_ip(IpAddr::V4(address), 32);
    if let Ok(endpoint) = peer.node_public_endpoint.parse::<SocketAddr>() {
        builder = builder.set_endpoint(endpoint);
    }
    let keepalive = peer.persistent_keepalive.max(own_keepalive);
    if keepalive > 0 {
        builder = builder.set_persistent_keepalive_interval(keepalive);
    }
    Ok(builder)
}

fn same_config(present: &PresentPeer, wanted: &PeerConfigBuilder) -> bool {
    let wanted = wanted.clone().into_peer_config();
    let present = &present.config;
    // An endpoint unknown to the registry is learnt from traffic: not a change.
    let endpoint_same = wanted.endpoint.is_none() || wanted.endpoint == present.endpoint;
    let keepalive = |value: Option<u16>| value.filter(|seconds| *seconds > 0);
    endpoint_same
        && keepalive(wanted.persistent_keepalive_interval)
            == keepalive(present.persistent_keepalive_interval)
        && wanted.allowed_ips == present.allowed_ips
}

fn is_missing_kernel_module(error: &io::Error) -> bool {
    // EOPNOTSUPP from netlink: "Unknown device type"; EPERM/EACCES go to the caller.
    error.kind() == io::ErrorKind::Unsupported || error.raw_os_error() == Some(libc::EOPNOTSUPP)
}

fn interface_index(name: &InterfaceName) -> io::Result<u32> {
    // SAFETY: `as_ptr` is a NUL-terminated name of at most IFNAMSIZ bytes.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// A peer as the device has it now.
struct PresentPeer {
    config: PeerConfig,
    last_handshake_age: Option<Duration>,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// Reads an embedded device's peers straight from its UAPI socket: wireguard-control
/// prints boringtun's extra `own_public_key` line to stdout on every read, and takes
/// its handshake ages for times.
fn uapi_get(interface: &str) -> io::Result<Vec<PresentPeer>> {
    let path = format!("{UAPI_SOCKET_DIR}/{interface}.sock");
    let mut socket = UnixStream::connect(&path)?;
    socket.set_read_timeout(Some(UAPI_TIMEOUT))?;
    socket.set_write_timeout(Some(UAPI_TIMEOUT))?;
    socket.write_all(b"get=1\n\n")?;
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut peers: Vec<PresentPeer> = Vec::new();
    for line in io::BufReader::new(socket).lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(invalid(format!("unexpected UAPI line `{line}`")));
        };
        if key == "errno" {
            if value != "0" {
                return Err(invalid(format!("UAPI get failed: errno={value}")));
            }
            break;
        }
        if key == "public_key" {
            let public_key =
                Key::from_hex(value).map_err(|_| invalid(format!("bad peer key `{value}`")))?;
            peers.push(PresentPeer {
                config: PeerConfigBuilder::new(&public_key).into_peer_config(),
                last_handshake_age: None,
                rx_bytes: 0,
                tx_bytes: 0,
            });
            continue;
        }
        let Some(peer) = peers.last_mut() else {
            continue; // interface lines: private key, port, own_public_key
        };
        let number = || value.parse::<u64>().unwrap_or(0);
        match key {
            "endpoint" => peer.config.endpoint = value.parse().ok(),
            "persistent_keepalive_interval" => {
                peer.config.persistent_keepalive_interval = Some(number() as u16)
            }
            "allowed_ip" => {
                if let Ok(allowed) = value.parse::<AllowedIp>() {
                    peer.config.allowed_ips.push(allowed)
                }
            }
            // boringtun writes the age (not a time), and only after a handshake.
            "last_handshake_time_sec" => {
                peer.last_handshake_age = Some(Duration::from_secs(number()))
            }
            "rx_bytes" => peer.rx_bytes = number(),
            "tx_bytes" => peer.tx_bytes = number(),
            _ => {}
        }
    }
    Ok(peers)
}

const UAPI_SOCKET_DIR: &str = "/var/run/wireguard";
/// A hung device must not hang the node's loop.
const UAPI_TIMEOUT: Duration = Duration::from_secs(5);

/// A boringtun device on its own thread: `DeviceHandle::new` blocks SIGINT and SIGTERM
/// on the calling thread (and the workers it starts) to read them itself; on a thread
/// of its own, the process's signal handling stays with the rest of the program.
struct EmbeddedDevice {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedDevice {
    fn start(name: &str) -> io::Result<EmbeddedDevice> {
        let (started_tx, started_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("wg-{name}"))
            .spawn(move || {
                let config = DeviceConfig {
                    // One thread measured fastest on two cores (notes: 0.81-0.96 vs
                    // 0.38-0.65 Gbit/s with four).
                    n_threads: 1,
                    ..DeviceConfig::default()
                };
                let mut handle = match DeviceHandle::new(&name, config) {
                    Ok(handle) => handle,
                    Err(error) => {
                        let _ = started_tx.send(Err(io::Error::other(format!("{error:?}"))));
                        return;
                    }
                };
                if let Err(error) = disarm_signal_fds() {
                    let _ = started_tx.send(Err(error));
                    return;
                }
                let _ = started_tx.send(Ok(()));
                let _ = stop_rx.recv();
                handle.clean();
                drop(handle);
            })?;
        started_rx
            .recv()
            .map_err(|_| io::Error::other("the WireGuard device thread ended"))??;
        Ok(EmbeddedDevice {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// boringtun stops its device on SIGINT and SIGTERM, read through signalfds. A signal
/// sent to the process sits in its shared queue until a thread takes it, and a
/// signalfd can take it first: then the program never hears of the signal and keeps
/// running without its interface. The program handles its own signals, so each
/// signalfd (only boringtun makes them here) is swapped for a descriptor that is
/// never ready; closing the old file also drops it from boringtun's epoll set.
fn disarm_signal_fds() -> io::Result<()> {
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let is_signal_fd = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:[signalfd]");
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        if !is_signal_fd {
            continue;
        }
        // SAFETY: plain descriptor calls; `fd` stays open (now an idle eventfd) for
        // boringtun, which closes it when the device goes.
        unsafe {
            let inert = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            if inert < 0 {
                return Err(io::Error::last_os_error());
            }
            let swapped = libc::dup3(inert, fd, libc::O_CLOEXEC);
            libc::close(inert);
            if swapped < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

impl Drop for EmbeddedDevice {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps wireguard-control from starting `wireguard-go` by itself when the device's
/// socket is missing or stale (it would silently create a second device). Call it
/// first thing in `main`, before any thread exists.
pub fn forbid_userspace_helper() {
    std::env::set_var("WG_USERSPACE_IMPLEMENTATION", "/bin/false");
}
