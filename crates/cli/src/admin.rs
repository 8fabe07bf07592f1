//! Where the admin's credentials are (`--config`, then `$WEFT_CONFIG`, then
//! `~/.config/weft/config.yaml`) and a connection to the adminapi with them; the
//! credentials renew themselves on the way (see [`renew_if_due`]). Also `weft admin
//! create|revoke|list`, for several admins.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::json;

use tonic::transport::Channel;
use weft_proto::adminapi::admin_api_client::AdminApiClient;
use weft_proto::adminapi::{
    CreateAdminRequest, ListAdminsRequest, ListMastersRequest, ListMastersResponse,
    RenewAdminCertificateRequest, RevokeAdminRequest,
};
use weft_proto::credentials::{ClientCredentials, RenewalKey};
use weft_proto::tls::mtls_endpoint;
use weft_taskbook::limits::MAX_MESSAGE_BYTES;
use weft_taskbook::state_file;

use crate::output::{print_json, table, timestamp, Output};
use crate::CliError;

pub type AdminClient = AdminApiClient<Channel>;

/// `~/.config/weft/config.yaml`, where `weft master init` also writes the credentials.
pub fn user_config_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".config/weft/config.yaml"))
}

fn config_path(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("WEFT_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    user_config_path().ok_or_else(|| {
        CliError::NoCredentials(
            "no admin credentials: pass --config FILE or set WEFT_CONFIG".into(),
        )
    })
}

/// How long the CLI waits for one master before it tries the next: an admin waiting
/// on a dead master's timeout while others are up is an admin locked out.
const MASTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the cluster's leading master: the first master reachable says who
/// leads, and work with nodes (runs) only the leader takes. Where the leader cannot be
/// reached, the first master's connection serves (reads and applies work on any). On
/// the way the credentials renew themselves and learn the cluster's masters.
pub async fn connect(explicit_config: Option<&Path>) -> Result<AdminClient, CliError> {
    let (path, credentials) = read_credentials(explicit_config)?;
    let mut client = connect_first_answering(&path, &credentials).await?;
    renew_if_due(&path, &credentials, &mut client).await;
    let Ok(masters) = client.list_masters(ListMastersRequest {}).await else {
        return Ok(client);
    };
    let masters = masters.into_inner();
    learn_masters(&path, &masters);
    if masters.leader_name.is_empty() || masters.leader_name == masters.answered_by {
        return Ok(client);
    }
    let leader = masters
        .masters
        .iter()
        .find(|master| master.master_name == masters.leader_name);
    if let Some(leader) = leader {
        if let Ok(channel) = connect_master(&leader.master_public_endpoint, &credentials).await {
            return Ok(admin_client(channel));
        }
    }
    Ok(client)
}

/// A connection to one master with these credentials, given up after
/// [`MASTER_CONNECT_TIMEOUT`].
pub async fn connect_master(
    endpoint: &str,
    credentials: &ClientCredentials,
) -> Result<Channel, String> {
    mtls_endpoint(
        endpoint,
        &credentials.ca_cert_pem,
        &credentials.cert_pem,
        &credentials.key_pem,
    )
    .map_err(|error| error.to_string())?
    .connect_timeout(MASTER_CONNECT_TIMEOUT)
    .connect()
    .await
    .map_err(|error| match std::error::Error::source(&error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    })
}

/// The masters' endpoints as the credentials should list them: the leader's first (the
/// next command tries it first), then the others as the cluster lists them.
fn master_endpoints(masters: &ListMastersResponse) -> Vec<String> {
    let (leaders, others): (Vec<_>, Vec<_>) = masters
        .masters
        .iter()
        .partition(|master| master.master_name == masters.leader_name);
    leaders
        .into_iter()
        .chain(others)
        .map(|master| master.master_public_endpoint.clone())
        .filter(|endpoint| !endpoint.is_empty())
        .collect()
}

/// Records the cluster's masters in the credentials file when they changed, so that a
/// file written on the first master learns those added later and forgets removed ones.
/// The file is read again (a renewal may have just rewritten it) and replaced whole; a
/// failure only warns and leaves the file as it was.
fn learn_masters(path: &Path, masters: &ListMastersResponse) {
    let endpoints = master_endpoints(masters);
    if endpoints.is_empty() {
        return;
    }
    let learned = state_file::read::<ClientCredentials>(path)
        .map_err(CliError::from)
        .and_then(|mut credentials| {
            if credentials.master_endpoints == endpoints {
                return Ok(());
            }
            credentials.master_endpoints = endpoints;
            rewrite_credentials(path, &credentials)
        });
    if let Err(error) = learned {
        eprintln!(
            "warning: the cluster's masters could not be recorded in {}: {error}",
            path.display()
        );
    }
}

/// Replaces the credentials file whole (a crash leaves the old one or the new one),
/// keeping the mode its owner gave it.
fn rewrite_credentials(path: &Path, credentials: &ClientCredentials) -> Result<(), CliError> {
    let io_error = |error: std::io::Error| CliError::Input(format!("{}: {error}", path.display()));
    let mode = std::fs::metadata(path)
        .map_err(io_error)?
        .permissions()
        .mode()
        & 0o7777;
    state_file::write_private(path, credentials)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_error)?;
    Ok(())
}

fn admin_client(channel: Channel) -> AdminClient {
    AdminApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The admin's credentials file and what it holds.
pub fn read_credentials(
    explicit_config: Option<&Path>,
) -> Result<(PathBuf, ClientCredentials), CliError> {
    let path = config_path(explicit_config)?;
    if !path.exists() {
        return Err(CliError::NoCredentials(format!(
            "no admin credentials at {}: `weft master init` writes them to DATA_DIR/admin.yaml; pass that with --config or WEFT_CONFIG",
            path.display()
        )));
    }
    let credentials: ClientCredentials = state_file::read(&path)?;
    Ok((path, credentials))
}

/// A certificate two thirds through its life is renewed before the command runs, with
/// a new key, and the file rewritten whole (keeping its mode). The command itself goes
/// on with the current certificate, which stays good until it expires; a renewal that
/// fails only warns, since the next command tries again.
async fn renew_if_due(path: &Path, credentials: &ClientCredentials, client: &mut AdminClient) {
    let due = match credentials.renewal_due() {
        Ok(due) => due,
        Err(error) => {
            eprintln!("warning: {}: {error}", path.display());
            return;
        }
    };
    if SystemTime::now() < due {
        return;
    }
    if let Err(error) = renew(path, credentials, client).await {
        eprintln!(
            "warning: the admin certificate in {} is due for renewal, which failed: {error}",
            path.display()
        );
    }
}

async fn renew(
    path: &Path,
    credentials: &ClientCredentials,
    client: &mut AdminClient,
) -> Result<(), CliError> {
    let key = RenewalKey::generate().map_err(|error| CliError::Input(error.to_string()))?;
    let request = RenewAdminCertificateRequest {
        csr_der: key.csr_der.clone().into(),
    };
    let renewed = client.renew_admin_certificate(request).await?.into_inner();
    rewrite_credentials(
        path,
        &credentials.renewed(key, renewed.cert_pem, renewed.ca_cert_pem),
    )
}

/// `weft admin create NAME`: the new admin's credentials, written to `file` (never over
/// an existing one) or printed.
pub async fn create_admin(
    client: &mut AdminClient,
    explicit_config: Option<&Path>,
    admin_name: &str,
    file: Option<&Path>,
) -> Result<(), CliError> {
    let (_, own) = read_credentials(explicit_config)?;
    if let Some(file) = file.filter(|file| file.exists()) {
        return Err(CliError::Input(format!(
            "{} exists; choose a new file for the credentials of `{admin_name}`",
            file.display()
        )));
    }
    let created = client
        .create_admin(CreateAdminRequest {
            admin_name: admin_name.to_string(),
        })
        .await?
        .into_inner();
    let credentials = ClientCredentials {
        master_endpoints: own.master_endpoints,
        ca_cert_pem: created.ca_cert_pem,
        cert_pem: created.cert_pem,
        key_pem: created.key_pem,
    };
    match file {
        Some(file) => {
            state_file::write_private(file, &credentials)?;
            eprintln!(
                "admin {admin_name} created; its credentials are in {} (use them with --config or WEFT_CONFIG)",
                file.display()
            );
        }
        None => {
            let value = serde_json::to_value(&credentials).expect("credentials are plain data");
            print!("{}", state_file::to_yaml(&value));
        }
    }
    Ok(())
}

pub async fn revoke_admin(client: &mut AdminClient, admin_name: &str) -> Result<(), CliError> {
    let revoked = client
        .revoke_admin(RevokeAdminRequest {
            admin_name: admin_name.to_string(),
        })
        .await?
        .into_inner()
        .revoked;
    if !revoked {
        return Err(CliError::Input(format!(
            "no admin `{admin_name}` to revoke (or it was revoked already); `weft admin list` shows them"
        )));
    }
    eprintln!("admin {admin_name} revoked: every master refuses its certificates from now on");
    Ok(())
}

pub async fn list_admins(client: &mut AdminClient, output: Output) -> Result<(), CliError> {
    let admins = client
        .list_admins(ListAdminsRequest {})
        .await?
        .into_inner()
        .admins;
    match output {
        Output::Json => print_json(
            &admins
                .iter()
                .map(|admin| {
                    json!({
                        "name": admin.admin_name,
                        "created_unix_ms": admin.created_unix_ms,
                        "cert_not_after_unix_ms": (admin.cert_not_after_unix_ms != 0).then_some(admin.cert_not_after_unix_ms),
                        "revoked_unix_ms": admin.revoked_unix_ms,
                    })
                })
                .collect::<Vec<_>>(),
        ),
        Output::Text => {
            let rows: Vec<Vec<String>> = admins
                .iter()
                .map(|admin| {
                    vec![
                        admin.admin_name.clone(),
                        match admin.revoked_unix_ms {
                            Some(at) => format!("revoked {}", timestamp(at)),
                            None => "active".to_string(),
                        },
                        timestamp(admin.created_unix_ms),
                        timestamp(admin.cert_not_after_unix_ms),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["NAME", "STATE", "CREATED", "CERT EXPIRES"], &rows)
            );
        }
    }
    Ok(())
}

/// The first master in the credentials' list that answers; when none does, the error
/// names each one tried and why it failed.
async fn connect_first_answering(
    path: &Path,
    credentials: &ClientCredentials,
) -> Result<AdminClient, CliError> {
    let mut tried = Vec::new();
    for endpoint in &credentials.master_endpoints {
        match connect_master(endpoint, credentials).await {
            Ok(channel) => return Ok(admin_client(channel)),
            Err(error) => tried.push(format!("{endpoint} ({error})")),
        }
    }
    Err(CliError::Master(if tried.is_empty() {
        format!("{} lists no master endpoint", path.display())
    } else {
        format!(
            "no master answered; tried {} (the masters listed in {})",
            tried.join(", "),
            path.display()
        )
    }))
}
