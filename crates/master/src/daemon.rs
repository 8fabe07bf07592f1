//! `weft master`: opens the store, marks jobs a previous run left unfinished, and serves
//! pubapi, vpnapi and adminapi on one TLS listener until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use weft_proto::adminapi::admin_api_server::AdminApiServer;
use weft_proto::pubapi::pub_api_server::PubApiServer;
use weft_proto::tls::server_tls_config;
use weft_proto::vpnapi::vpn_api_server::VpnApiServer;
use weft_taskbook::objects::JobRetention;
use weft_taskbook::report::unix_ms_now;
use weft_taskbook::Error;

use crate::api::adminapi::AdminApiService;
use crate::api::pubapi::PubApiService;
use crate::api::vpnapi::VpnApiService;
use crate::api::{
    MasterContext, ADMINAPI_MAX_MESSAGE_BYTES, PUBAPI_MAX_MESSAGE_BYTES, VPNAPI_MAX_MESSAGE_BYTES,
};
use crate::core::job::JobStore;
use crate::core::job_runner::{JobRunner, RunnerConfig};
use crate::core::join::Joiner;
use crate::core::node_registry::NodeRegistry;
use crate::core::pki::ClusterCa;
use crate::core::sessions::NodeSessions;
use crate::core::token_registry::TokenRegistry;
use crate::init::{
    read_settings, CA_CERT_FILE, CA_KEY_FILE, MASTER_CERT_FILE, MASTER_KEY_FILE, STORE_FILE,
};
use crate::store::{SqliteStore, Store};

const TOKEN_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub struct MasterOptions {
    pub data_dir: PathBuf,
    /// Default: every address, on the public endpoint's port.
    pub listen: Option<SocketAddr>,
    pub retention: JobRetention,
}

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
    let ca_cert_pem = read_private(dir, CA_CERT_FILE)?;
    let ca = ClusterCa::from_pem(&ca_cert_pem, &read_private(dir, CA_KEY_FILE)?).map_err(|e| {
        MasterError::Credentials {
            path: dir.join(CA_CERT_FILE).display().to_string(),
            reason: e.to_string(),
        }
    })?;
    let store =
        SqliteStore::open(&dir.join(STORE_FILE)).map_err(|e| MasterError::Store(e.to_string()))?;

    let interrupted = JobStore::new(store.clone())
        .interrupt_unfinished(unix_ms_now())
        .await
        .map_err(|e| MasterError::Store(e.to_string()))?;
    for job in &interrupted {
        tracing::warn!(%job, "a job the master was running when it stopped is marked interrupted");
    }

    let sessions = Arc::new(NodeSessions::default());
    let ca = Arc::new(ca);
    let runner = JobRunner::new(
        store.clone(),
        sessions.clone(),
        RunnerConfig {
            scratch_dir: dir.join("scratch"),
            retention: options.retention,
        },
    );
    let context = Arc::new(MasterContext {
        ca: ca.clone(),
        master_public_endpoint: settings.master_public_endpoint.clone(),
        master_vpnapi_endpoints: vec![settings.master_public_endpoint.clone()],
        sessions,
        nodes: NodeRegistry::new(store.clone()),
        tokens: TokenRegistry::new(store.clone()),
        joiner: Joiner::new(ca, store.clone()),
        runner,
    });
    tokio::spawn(sweep_tokens(TokenRegistry::new(store.clone())));

    let port = settings
        .master_public_endpoint
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(7443);
    let address = options
        .listen
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], port)));
    let incoming = TcpIncoming::bind(address)
        .map_err(|error| MasterError::Listen {
            address,
            error: std::io::Error::other(error.to_string()),
        })?
        .with_nodelay(Some(true));
    let tls = server_tls_config(
        &read_private(dir, MASTER_CERT_FILE)?,
        &read_private(dir, MASTER_KEY_FILE)?,
        &ca_cert_pem,
    );
    tracing::info!(%address, cluster = %settings.cluster_name, endpoint = %settings.master_public_endpoint, "master listening");
    Server::builder()
        .tls_config(tls)
        .map_err(|e| MasterError::Serve(e.to_string()))?
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(
            PubApiServer::new(PubApiService {
                context: context.clone(),
            })
            .max_decoding_message_size(PUBAPI_MAX_MESSAGE_BYTES),
        )
        .add_service(
            VpnApiServer::new(VpnApiService {
                context: context.clone(),
            })
            .max_decoding_message_size(VPNAPI_MAX_MESSAGE_BYTES),
        )
        .add_service(
            AdminApiServer::new(AdminApiService { context })
                .max_decoding_message_size(ADMINAPI_MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| MasterError::Serve(e.to_string()))?;
    tracing::info!("master stopped");
    Ok(())
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
