//! `weft master`: opens the store, marks jobs a previous run left unfinished, and serves
//! pubapi, vpnapi and adminapi on one TLS listener until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use weft_proto::adminapi::admin_api_server::AdminApiServer;
use weft_proto::credentials::cert_renewal_due;
use weft_proto::credentials::ClientCredentials;
use weft_proto::pubapi::pub_api_server::PubApiServer;
use weft_proto::tls::ServerTls;
use weft_proto::vpnapi::vpn_api_server::VpnApiServer;
use weft_taskbook::limits::MAX_MESSAGE_BYTES;
use weft_taskbook::objects::JobRetention;
use weft_taskbook::report::unix_ms_now;
use weft_taskbook::state_file;
use weft_taskbook::Error;
use weft_vpn::departed_peers::DepartedPeers;
use weft_vpn::device::{DeviceSettings, MeshDevice};
use weft_vpn::vpn_key::VpnKeyPair;

use crate::api::adminapi::AdminApiService;
use crate::api::connection_limit::limit_per_address;
use crate::api::pubapi::PubApiService;
use crate::api::vpnapi::VpnApiService;
use crate::api::webhook;
use crate::api::{admin_callers_only, MasterContext, PUBAPI_MAX_MESSAGE_BYTES};
use crate::ca_rotation::load_cluster_ca;
use crate::core::admin_registry::AdminRegistry;
use crate::core::beacons::{beacon_inputs_prefixes, BeaconPlanner};
use crate::core::cron_jobs::CronJobEngine;
use crate::core::events::{EventLog, DEFAULT_MAX_EVENTS};
use crate::core::git_poller::GitPoller;
use crate::core::job::JobStore;
use crate::core::join::Joiner;
use crate::core::leadership::{Leadership, MasterRecord, MasterRegistry};
use crate::core::mesh::{Mesh, NodeVpn};
use crate::core::node_registry::{removed_node, NodeRegistry};
use crate::core::objects::{ObjectRegistry, OBJECTS_PREFIX};
use crate::core::pki::{cert_terms, leaf_der_from_pem, peer_identity, ClusterCa, PeerIdentity};
use crate::core::run::{JobRunner, RunnerConfig};
use crate::core::secret_box::SecretBox;
use crate::core::sessions::NodeSessions;
use crate::core::token_registry::TokenRegistry;
use crate::core::triggers::{TriggerBook, TriggerEngine};
use crate::git_mirror::GitMirrorDir;
use crate::init::{
    endpoint_host, read_settings, write_master_cert, MasterSettings, ADMIN_FILE, CA_CERT_FILE,
    CLUSTER_KEY_FILE, MASTER_CERT_FILE, MASTER_KEY_FILE, STORE_FILE,
};
use crate::store::{AnyStore, Store};

const TOKEN_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const EVENT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// A master certificate renewal that failed is tried again after this.
const MASTER_RENEWAL_RETRY: Duration = Duration::from_secs(15);
/// How long a stopping master lets open requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub struct MasterOptions {
    pub data_dir: PathBuf,
    /// Default: every address, on the public endpoint's port.
    pub listen: Option<SocketAddr>,
    /// Connections one client address may hold open on the public listener.
    pub max_connections_per_address: u32,
    pub retention: JobRetention,
    /// `None`: no mesh (`--vpn off`); the vpnapi is served on the public endpoint.
    pub vpn: Option<MasterVpnOptions>,
}

/// The master's side of the mesh.
pub struct MasterVpnOptions {
    pub interface: String,
    pub listen_port: u16,
    /// The vpnapi's port on the master's VPN address.
    pub vpnapi_port: u16,
}

/// The folder of the GitRepository mirrors, in the data dir.
pub const REPOS_DIR: &str = "repos";

/// The master's WireGuard key, beside its other keys.
pub const MASTER_VPN_KEY_FILE: &str = "vpn.key";

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Settings(#[from] Error),
    #[error("{path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("cannot listen on {address}: {error}")]
    Listen {
        address: SocketAddr,
        error: std::io::Error,
    },
    #[error("the store failed: {0}")]
    Store(String),
    #[error("the server failed: {0}")]
    Serve(String),
    #[error(transparent)]
    ClusterKey(#[from] crate::core::secret_box::SecretBoxError),
    #[error(transparent)]
    VpnKey(#[from] weft_vpn::vpn_key::VpnKeyError),
    #[error(transparent)]
    Mesh(#[from] crate::core::mesh::MeshError),
    #[error(transparent)]
    Device(#[from] weft_vpn::device::DeviceError),
    #[error("this cluster has other masters ({0}): several masters run with `--vpn off` for now, since the mesh has one master address")]
    SeveralMastersInTheMesh(String),
}

fn read_private(dir: &Path, file: &str) -> Result<String, MasterError> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|error| MasterError::Credentials {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// Serves until `shutdown` completes.
pub async fn run(
    options: MasterOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), MasterError> {
    let dir = &options.data_dir;
    let settings = read_settings(dir)?;
    let ca = load_cluster_ca(dir).map_err(|e| MasterError::Credentials {
        path: dir.join(CA_CERT_FILE).display().to_string(),
        reason: e.to_string(),
    })?;
    let ca_cert_pem = ca.trust_bundle_pem();
    let cluster_key_file = dir.join(CLUSTER_KEY_FILE);
    let secret_box = SecretBox::load(&cluster_key_file)?;
    let store = AnyStore::open(&settings.store, &dir.join(STORE_FILE))
        .await
        .map_err(|e| MasterError::Store(e.to_string()))?;
    // Before this master registers or serves anything: with another cluster's key it
    // would seal new Secrets that the cluster's other masters cannot open.
    secret_box.check_against(&store, &cluster_key_file).await?;

    let masters = MasterRegistry::new(store.clone());
    let mesh = match &options.vpn {
        Some(vpn) => {
            // The mesh gives its master the network's first address: a second master
            // would take the same one.
            let others: Vec<String> = masters
                .list()
                .await
                .map_err(|e| MasterError::Store(e.to_string()))?
                .into_iter()
                .map(|master| master.master_name)
                .filter(|name| *name != settings.master_name)
                .collect();
            if !others.is_empty() {
                return Err(MasterError::SeveralMastersInTheMesh(others.join(", ")));
            }
            Some(start_mesh(dir, &settings, vpn, store.clone()).await?)
        }
        None => None,
    };
    let master_vpnapi_endpoint = match (&mesh, &options.vpn) {
        (Some((mesh, _)), Some(vpn)) => {
            SocketAddr::new(mesh.master_vpn_ip().await.into(), vpn.vpnapi_port).to_string()
        }
        _ => settings.master_public_endpoint.clone(),
    };

    masters
        .register(&MasterRecord {
            master_name: settings.master_name.clone(),
            master_public_endpoint: settings.master_public_endpoint.clone(),
            master_vpnapi_endpoint: master_vpnapi_endpoint.clone(),
        })
        .await
        .map_err(|e| MasterError::Store(e.to_string()))?;
    let leadership = lead(&store, &settings.master_name).await?;

    let admins = AdminRegistry::new(store.clone());
    adopt_init_admin(dir, &admins).await?;
    admins
        .reload()
        .await
        .map_err(|e| MasterError::Store(e.to_string()))?;
    tokio::spawn(admins.clone().follow());

    let sessions = Arc::new(NodeSessions::default());
    let ca = Arc::new(ca);
    let objects = ObjectRegistry::new(store.clone(), secret_box);
    objects
        .ensure_builtin_namespaces()
        .await
        .map_err(|e| MasterError::Store(e.to_string()))?;
    let events = EventLog::new(store.clone());
    let runner = JobRunner::new(
        store.clone(),
        objects.clone(),
        sessions.clone(),
        events.clone(),
        RunnerConfig {
            scratch_dir: dir.join("scratch"),
            retention: options.retention,
        },
        Arc::new(GitMirrorDir::new(dir.join(REPOS_DIR))),
    );
    let context = Arc::new(MasterContext {
        ca: ca.clone(),
        master_public_endpoint: settings.master_public_endpoint.clone(),
        master_vpnapi_endpoint: master_vpnapi_endpoint.clone(),
        master_name: settings.master_name.clone(),
        leadership: leadership.clone(),
        masters,
        sessions,
        nodes: NodeRegistry::new(store.clone()),
        admins: admins.clone(),
        tokens: TokenRegistry::new(store.clone()),
        joiner: Joiner::new(
            ca,
            store.clone(),
            mesh.as_ref().map(|(mesh, _)| mesh.clone()),
        ),
        runner: runner.clone(),
        beacons: BeaconPlanner::new(objects.clone(), NodeRegistry::new(store.clone())),
        cron_jobs: Arc::new(CronJobEngine {
            store: store.clone(),
            objects: objects.clone(),
            runner: runner.clone(),
            events: events.clone(),
        }),
        objects,
        events,
        mesh: mesh.as_ref().map(|(mesh, _)| mesh.clone()),
        mesh_device: mesh.as_ref().map(|(_, device)| device.clone()),
    });
    tokio::spawn(sweep_tokens(TokenRegistry::new(store.clone())));
    {
        let (events, objects) = (context.events.clone(), context.objects.clone());
        leadership.spawn_while_leading("event sweep", move || {
            sweep_events(events.clone(), objects.clone())
        });
    }
    {
        let engine = context.cron_jobs.clone();
        leadership.spawn_while_leading("cron jobs", move || engine.clone().run());
    }
    {
        let context = context.clone();
        let store = store.clone();
        leadership.spawn_while_leading("triggers", move || {
            TriggerEngine {
                book: TriggerBook::new(store.clone(), context.objects.clone()),
                store: store.clone(),
                objects: context.objects.clone(),
                runner: context.runner.clone(),
                events: context.events.clone(),
            }
            .run()
        });
    }
    {
        let context = context.clone();
        leadership.spawn_while_leading("removed nodes' sessions", move || {
            end_sessions_of_removed_nodes(context.clone())
        });
    }
    {
        let context = context.clone();
        let store = store.clone();
        leadership.spawn_while_leading("beacon updates", move || {
            send_beacon_changes(context.clone(), store.clone())
        });
    }
    {
        let context = context.clone();
        let store = store.clone();
        leadership.spawn_while_leading("GitRepository poll", move || {
            GitPoller::new(
                store.clone(),
                context.objects.clone(),
                context.events.clone(),
                context.runner.clone(),
            )
            .run()
        });
    }
    tokio::spawn(hand_nodes_to_the_leader(
        leadership,
        context.sessions.clone(),
    ));

    let port = settings
        .master_public_endpoint
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(7443);
    let public_address = options
        .listen
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], port)));
    let tls = master_tls(dir, &settings, &context.ca, &ca_cert_pem)?;
    tokio::spawn(renew_master_cert(
        dir.clone(),
        settings.clone(),
        context.ca.clone(),
        tls.clone(),
    ));
    // Both listeners stop together.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let pubapi = PubApiServer::new(PubApiService {
        context: context.clone(),
    })
    .max_decoding_message_size(PUBAPI_MAX_MESSAGE_BYTES);
    let vpnapi = VpnApiServer::new(VpnApiService {
        context: context.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let hooks = webhook::router(context.clone());
    // Callers without an admin certificate are turned away before their message is
    // read, not after it has been buffered and decoded.
    let adminapi = InterceptedService::new(
        AdminApiServer::new(AdminApiService { context })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        admin_callers_only(admins),
    );
    let mut public_routes = Routes::new(pubapi).add_service(adminapi);
    // Inside the mesh the vpnapi has a listener of its own, on the master's VPN
    // address only; without the mesh it shares the public one.
    let mesh_listener = match &mesh {
        Some(_) => {
            let address: SocketAddr = master_vpnapi_endpoint.parse().expect("built above");
            let incoming = tls.accept(bind(address)?);
            let server = server().add_service(vpnapi);
            Some(server.serve_with_incoming_shutdown(incoming, stop_signal()))
        }
        None => {
            public_routes = public_routes.add_service(vpnapi);
            None
        }
    };
    // Webhook senders speak HTTP/1.1 as often as not: the TLS acceptor offers it
    // beside `h2`, and this server must then serve it.
    let public_listener = server()
        .accept_http1(true)
        .add_routes(Routes::from(public_routes.into_axum_router().merge(hooks)))
        .serve_with_incoming_shutdown(
            tls.accept(limit_per_address(
                bind(public_address)?,
                options.max_connections_per_address,
            )),
            stop_signal(),
        );
    tracing::info!(address = %public_address, vpnapi = %master_vpnapi_endpoint, cluster = %settings.cluster_name, endpoint = %settings.master_public_endpoint, "master listening");
    let serving = async move {
        match mesh_listener {
            Some(mesh_listener) => tokio::try_join!(public_listener, mesh_listener).map(|_| ()),
            None => public_listener.await,
        }
    };
    tokio::pin!(serving);
    tokio::select! {
        served = &mut serving => served.map_err(|e| MasterError::Serve(e.to_string()))?,
        () = shutdown => {
            let _ = stop.send(true);
            // Node sessions are endless streams, and a node whose interface vanished
            // never closes its connection: waiting for every one could take forever.
            if tokio::time::timeout(SHUTDOWN_GRACE, serving).await.is_err() {
                tracing::info!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period are closed");
            }
        }
    }
    // The interface goes with the process; say so before it does.
    drop(mesh);
    tracing::info!("master stopped");
    Ok(())
}

/// The admin `weft master init` wrote into the data directory is an admin like those
/// `weft admin create` makes: listed, so it can be revoked. Listed once, by whichever
/// master starts first; a revoked one stays revoked.
async fn adopt_init_admin<S: Store>(
    dir: &Path,
    admins: &AdminRegistry<S>,
) -> Result<(), MasterError> {
    let path = dir.join(ADMIN_FILE);
    if !path.exists() {
        return Ok(());
    }
    let unusable = |reason: String| MasterError::Credentials {
        path: path.display().to_string(),
        reason,
    };
    let credentials: ClientCredentials =
        state_file::read(&path).map_err(|e| unusable(e.to_string()))?;
    let cert_der = leaf_der_from_pem(&credentials.cert_pem).map_err(|e| unusable(e.to_string()))?;
    let PeerIdentity::Admin { name } =
        peer_identity(&cert_der).map_err(|e| unusable(e.to_string()))?
    else {
        return Err(unusable("expected an admin certificate".into()));
    };
    let terms = cert_terms(&cert_der).map_err(|e| unusable(e.to_string()))?;
    admins
        .adopt(&name, &terms, unix_ms_now())
        .await
        .map_err(|e| MasterError::Store(e.to_string()))
}

fn bind(address: SocketAddr) -> Result<TcpIncoming, MasterError> {
    Ok(TcpIncoming::bind(address)
        .map_err(|error| MasterError::Listen {
            address,
            error: std::io::Error::other(error.to_string()),
        })?
        .with_nodelay(Some(true)))
}

/// A server for connections [`ServerTls::accept`] has handshaken.
fn server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}

/// The master's TLS from its files. A pair that does not load (a renewal cut short
/// between its two writes, a file lost) is replaced first: the master holds the CA.
fn master_tls(
    dir: &Path,
    settings: &MasterSettings,
    ca: &ClusterCa,
    ca_cert_pem: &str,
) -> Result<ServerTls, MasterError> {
    let loaded = match (
        read_private(dir, MASTER_CERT_FILE),
        read_private(dir, MASTER_KEY_FILE),
    ) {
        (Ok(chain_pem), Ok(key_pem)) => {
            // After a CA rotation is finished, a certificate of the dropped CA.
            let issued_here = leaf_der_from_pem(&chain_pem)
                .is_ok_and(|leaf_der| ca.master_issuer().has_issued(&leaf_der));
            if issued_here {
                ServerTls::new(&chain_pem, &key_pem, ca_cert_pem).map_err(|e| e.to_string())
            } else {
                Err("it was not issued by the CA that issues masters' certificates".into())
            }
        }
        (Err(error), _) | (_, Err(error)) => Err(error.to_string()),
    };
    let unusable = |reason: String| MasterError::Credentials {
        path: dir.join(MASTER_CERT_FILE).display().to_string(),
        reason,
    };
    match loaded {
        Ok(tls) => Ok(tls),
        Err(reason) => {
            tracing::warn!(%reason, "the master's certificate does not load; issuing a new one");
            let written = write_master_cert(
                dir,
                ca,
                &settings.master_name,
                &settings.master_public_endpoint,
                SystemTime::now(),
            )
            .map_err(|e| unusable(e.to_string()))?;
            ServerTls::new(&written.chain_pem, &written.key_pem, ca_cert_pem)
                .map_err(|e| unusable(e.to_string()))
        }
    }
}

/// Each master renews its own certificate at two thirds of its life, from the CA key it
/// holds: new connections get the new one at once, open ones keep theirs.
async fn renew_master_cert(
    dir: PathBuf,
    settings: MasterSettings,
    ca: Arc<ClusterCa>,
    tls: ServerTls,
) {
    loop {
        let due = read_private(&dir, MASTER_CERT_FILE)
            .map_err(|e| e.to_string())
            .and_then(|chain_pem| cert_renewal_due(&chain_pem).map_err(|e| e.to_string()));
        let wait = match due {
            Ok(due) => due.duration_since(SystemTime::now()).unwrap_or_default(),
            Err(error) => {
                tracing::warn!(%error, "the master's certificate is unreadable; renewing it now");
                Duration::ZERO
            }
        };
        tokio::time::sleep(wait).await;
        let renewed = write_master_cert(
            &dir,
            &ca,
            &settings.master_name,
            &settings.master_public_endpoint,
            SystemTime::now(),
        )
        .map_err(|e| e.to_string())
        .and_then(|written| {
            tls.replace_cert(&written.chain_pem, &written.key_pem)
                .map(|()| written.not_after_unix_ms)
                .map_err(|e| e.to_string())
        });
        match renewed {
            Ok(not_after_unix_ms) => {
                tracing::info!(not_after_unix_ms, "master certificate renewed")
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_s = MASTER_RENEWAL_RETRY.as_secs(), "the master's certificate could not be renewed");
                tokio::time::sleep(MASTER_RENEWAL_RETRY).await;
            }
        }
    }
}

/// The master's key, its place in the stored mesh, and its own interface, which then
/// follows every change of the peers.
async fn start_mesh<S: Store>(
    dir: &Path,
    settings: &MasterSettings,
    vpn: &MasterVpnOptions,
    store: S,
) -> Result<(Arc<Mesh<S>>, Arc<MeshDevice>), MasterError> {
    let key = VpnKeyPair::load_or_create(&dir.join(MASTER_VPN_KEY_FILE))?;
    let endpoint_port = format!(
        "{}:{}",
        endpoint_host(&settings.master_public_endpoint),
        vpn.listen_port
    );
    let master = NodeVpn {
        node_vpn_pub_key: key.public_key_base64.clone(),
        node_public_endpoint: endpoint_port,
        persistent_keepalive: 0,
    };
    let mesh = Mesh::open(store, &settings.vpn_cidr, master, &settings.master_name).await?;
    let cidr: ipnet::Ipv4Net = settings.vpn_cidr.parse().expect("checked by Mesh::open");
    let device_settings = DeviceSettings {
        interface: vpn.interface.clone(),
        private_key_base64: key.private_key_base64,
        listen_port: vpn.listen_port,
        node_vpn_ip: mesh.master_vpn_ip().await,
        vpn_prefix_len: cidr.prefix_len(),
    };
    let device = Arc::new(
        tokio::task::spawn_blocking(move || MeshDevice::open(&device_settings))
            .await
            .map_err(|e| MasterError::Serve(e.to_string()))??,
    );
    tokio::spawn(follow_peers(mesh.clone(), device.clone()));
    Ok((mesh, device))
}

/// Keeps the master's interface equal to the registry (every peer but itself), a node
/// that left kept for a moment (see `weft_vpn::departed_peers`).
async fn follow_peers<S: Store>(mesh: Arc<Mesh<S>>, device: Arc<MeshDevice>) {
    let mut changes = mesh.changes();
    let mut departed = DepartedPeers::default();
    loop {
        let version = *changes.borrow_and_update();
        let registry: Vec<_> = mesh
            .peers()
            .await
            .into_iter()
            .filter(|peer| peer.node_name != mesh.master_name())
            .collect();
        let (peers, next_check) =
            departed.interface_peers(registry, mesh.take_left(), Instant::now());
        let device = device.clone();
        let applied = tokio::task::spawn_blocking(move || {
            device.apply_peers(&peers, weft_vpn::device::NAT_KEEPALIVE_SECONDS)
        })
        .await;
        match applied {
            Ok(Ok(changed)) => {
                tracing::debug!(version, ?changed, "master interface follows the mesh")
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "the master's interface could not follow the mesh")
            }
            Err(error) => tracing::warn!(%error, "the master's interface update stopped"),
        }
        let grace_over = async {
            match next_check {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = grace_over => {}
        }
    }
}

/// Leadership: a master alone on its store leads at once; on etcd the masters elect
/// one. Either way a master marks the jobs its predecessor left running as interrupted
/// before it takes any work, so no job is both run and interrupted.
async fn lead(store: &AnyStore, master_name: &str) -> Result<Leadership, MasterError> {
    match store {
        AnyStore::Sqlite(_) => {
            take_over(store.clone()).await?;
            Ok(Leadership::solo(master_name).0)
        }
        AnyStore::Etcd(etcd) => {
            let (leadership, state) = Leadership::elected();
            let store = store.clone();
            tokio::spawn(
                etcd.clone()
                    .campaign(master_name.to_string(), state, move || {
                        let store = store.clone();
                        async move { take_over(store).await.map_err(|e| e.to_string()) }
                    }),
            );
            Ok(leadership)
        }
    }
}

/// What a new leader does first.
async fn take_over<S: Store + Clone>(store: S) -> Result<(), MasterError> {
    let interrupted = JobStore::new(store)
        .interrupt_unfinished(unix_ms_now())
        .await
        .map_err(|e| MasterError::Store(e.to_string()))?;
    for job in &interrupted {
        tracing::warn!(%job, "a job the last leader was running when it stopped is marked interrupted");
    }
    Ok(())
}

/// A master that stops leading ends its nodes' sessions, so they go to the leader.
async fn hand_nodes_to_the_leader(leadership: Leadership, sessions: Arc<NodeSessions>) {
    let mut changes = leadership.changes();
    let mut leading = changes.borrow_and_update().leading;
    while changes.changed().await.is_ok() {
        let state = changes.borrow_and_update().clone();
        if leading && !state.leading {
            tracing::warn!(leader = ?state.leader, "this master no longer leads; its nodes go to the leader");
            sessions.kick_all("this master no longer leads the cluster");
        }
        if state.leading && !leading {
            tracing::info!("this master leads the cluster now");
        }
        leading = state.leading;
    }
}

/// A node removed through any master loses its session here, on the leader, at once: a
/// standby that serves `weft node remove` deletes the record but holds no sessions.
async fn end_sessions_of_removed_nodes(context: Arc<MasterContext<AnyStore>>) {
    const REASON: &str = "the node was removed (its record is gone)";
    loop {
        let online = context.sessions.online_nodes();
        let (mut changes, gone) = match context.nodes.watch_removals(online).await {
            Ok(watching) => watching,
            Err(error) => {
                tracing::warn!(%error, "cannot follow node removals; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for node_name in gone {
            tracing::info!(node = %node_name, "the node's record is gone: its session ends");
            context.sessions.kick(&node_name, REASON);
        }
        while let Some(change) = changes.next().await {
            match change {
                Ok(change) => {
                    if let Some(node_name) = removed_node(&change) {
                        if context.sessions.is_online(node_name) {
                            tracing::info!(node = %node_name, "the node was removed: its session ends");
                        }
                        context.sessions.kick(node_name, REASON);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "following node removals stopped; starting again");
                    break;
                }
            }
        }
    }
}

/// A Beacon or NodeGroup changed: every connected node gets its Beacons again (a
/// node keeps running those that did not change).
async fn send_beacon_changes(context: Arc<MasterContext<AnyStore>>, store: AnyStore) {
    let prefixes = beacon_inputs_prefixes();
    loop {
        let changes = match store.current_revision().await {
            Ok(revision) => store.watch(OBJECTS_PREFIX, revision).await,
            Err(error) => Err(error),
        };
        let mut changes = match changes {
            Ok(changes) => changes,
            Err(error) => {
                tracing::warn!(%error, "cannot follow Beacon changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(change) = changes.next().await {
            match change {
                Ok(change) if prefixes.iter().any(|p| change.key.starts_with(p)) => {
                    for node in context.sessions.online_nodes() {
                        context.send_beacons(&node).await;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "following Beacon changes stopped; starting again");
                    break;
                }
            }
        }
    }
}

/// Keeps the event history bounded (Config `max_events`).
async fn sweep_events<S: Store + Clone>(events: EventLog<S>, objects: ObjectRegistry<S>) {
    let mut interval = tokio::time::interval(EVENT_SWEEP_INTERVAL);
    loop {
        interval.tick().await;
        let max_events = match objects.max_events().await {
            Ok(max) => max.unwrap_or(DEFAULT_MAX_EVENTS),
            Err(error) => {
                tracing::warn!(%error, "the Config could not be read; events are swept to the default bound");
                DEFAULT_MAX_EVENTS
            }
        };
        match events.sweep(max_events).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, max_events, "oldest events swept"),
            Err(error) => tracing::warn!(%error, "event sweep failed"),
        }
    }
}

async fn sweep_tokens<S: Store>(tokens: TokenRegistry<S>) {
    let mut interval = tokio::time::interval(TOKEN_SWEEP_INTERVAL);
    loop {
        interval.tick().await;
        match tokens.sweep(SystemTime::now()).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "expired and used-up tokens swept"),
            Err(error) => tracing::warn!(%error, "token sweep failed"),
        }
    }
}
