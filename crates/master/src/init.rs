//! `weft master init`: the cluster CA, the master's certificate, the admin's
//! credentials and the store, in a data directory only root can read.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use weft_proto::credentials::ClientCredentials;
use weft_proto::tls::MASTER_SERVER_NAME;
use weft_taskbook::state_file;
use weft_taskbook::Error;

use crate::ca_rotation::CA_PREVIOUS_CERT_FILE;
use crate::core::pki::{ClusterCa, PkiError};
use crate::core::secret_box::{SecretBox, SecretBoxError};
use crate::store::{EtcdSettings, EtcdTlsFiles, SqliteStore, StoreError, StoreSettings};
use weft_proto::bootstrap_token::is_endpoint;

pub const SETTINGS_FILE: &str = "master.yaml";
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const MASTER_CERT_FILE: &str = "master.pem";
pub const MASTER_KEY_FILE: &str = "master.key";
pub const ADMIN_FILE: &str = "admin.yaml";
pub const STORE_FILE: &str = "store.db";
/// The key that seals Secret values in the store; never in the store itself.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";

/// What `master.yaml` holds; `weft master` reads it at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterSettings {
    pub cluster_name: String,
    pub master_name: String,
    /// `host:port` nodes and admins dial; tokens carry it.
    pub master_public_endpoint: String,
    /// The cluster network the mesh's addresses come from.
    #[serde(default = "default_vpn_cidr")]
    pub vpn_cidr: String,
    /// Directories from before the choice of store are sqlite's.
    #[serde(default)]
    pub store: StoreSettings,
}

fn default_vpn_cidr() -> String {
    weft_vpn::ip_pool::DEFAULT_VPN_CIDR.to_string()
}

pub struct InitOptions {
    pub data_dir: PathBuf,
    pub master_public_endpoint: String,
    pub cluster_name: String,
    pub master_name: String,
    pub vpn_cidr: String,
    /// `sqlite` or `etcd`, as `--store` takes them.
    pub store_backend: String,
    /// The etcd cluster's client URLs, for the `etcd` store.
    pub etcd_endpoints: Vec<String>,
    /// `--etcd-cacert`, `--etcd-cert` and `--etcd-key`: all three or none. With
    /// `another_master`, this master's own client certificate instead of that master's.
    pub etcd_cacert: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    /// `--etcd-insecure`: plain http to etcd, on the operator's word.
    pub etcd_insecure: bool,
    /// Where the admin's credentials are also written unless a file is there already
    /// (`~/.config/weft/config.yaml`); `None` skips it.
    pub user_config: Option<PathBuf>,
    /// Another master's data directory: this one joins its cluster (same CA, cluster key,
    /// network and etcd store) instead of making a new one.
    pub another_master: Option<PathBuf>,
}

/// What every master of one cluster shares.
struct ClusterBase {
    ca: ClusterCa,
    cluster_name: String,
    vpn_cidr: String,
    store: StoreSettings,
    /// The cluster key's bytes, when it comes from another master.
    cluster_key: Option<Vec<u8>>,
    /// The admin's credentials, when they come from another master.
    admin: Option<ClientCredentials>,
}

pub struct Initialized {
    pub admin_file: PathBuf,
    /// What the master was set up with, for the warnings of an insecure choice.
    pub store: StoreSettings,
    /// The user config, when it was written.
    pub user_config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} is already a master's data directory; use it with `weft master --data-dir {0}`, or remove it to start a new cluster")]
    AlreadyInitialized(String),
    #[error("invalid public endpoint `{0}`: expected HOST:PORT, e.g. 192.0.2.10:7443 or master.example.com:7443")]
    InvalidEndpoint(String),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error(transparent)]
    VpnCidr(#[from] weft_vpn::ip_pool::IpPoolError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    File(#[from] Error),
    #[error("the store could not be created: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    ClusterKey(#[from] SecretBoxError),
    #[error("{0}")]
    StoreChoice(String),
    #[error("{dir} cannot be joined: {reason}")]
    AnotherMaster { dir: String, reason: String },
}

/// The shared part of a cluster, read from one of its masters' directories. Only a
/// cluster on etcd can have a second master: sqlite lives in one master's directory.
fn base_from_master(dir: &Path) -> Result<ClusterBase, InitError> {
    let refuse = |reason: String| InitError::AnotherMaster {
        dir: dir.display().to_string(),
        reason,
    };
    let settings = read_settings(dir).map_err(|e| refuse(e.to_string()))?;
    if settings.store == StoreSettings::Sqlite {
        return Err(refuse(
            "its master keeps the cluster in sqlite, which only that master can serve; several masters share an etcd store (`weft master init --store etcd`)".into(),
        ));
    }
    let read = |file: &str| fs::read(dir.join(file)).map_err(|e| refuse(format!("{file}: {e}")));
    let text =
        |file: &str| String::from_utf8(read(file)?).map_err(|e| refuse(format!("{file}: {e}")));
    if dir.join(CA_PREVIOUS_CERT_FILE).exists() {
        return Err(refuse(
            "its CA is being rotated; add the master after `weft master rotate-ca --finish`".into(),
        ));
    }
    let ca = ClusterCa::from_pem(&text(CA_CERT_FILE)?, &text(CA_KEY_FILE)?)?;
    let admin: ClientCredentials =
        state_file::read(&dir.join(ADMIN_FILE)).map_err(|e| refuse(e.to_string()))?;
    Ok(ClusterBase {
        ca,
        cluster_name: settings.cluster_name,
        vpn_cidr: settings.vpn_cidr,
        store: settings.store,
        cluster_key: Some(read(CLUSTER_KEY_FILE)?),
        admin: Some(admin),
    })
}

pub async fn init(options: &InitOptions) -> Result<Initialized, InitError> {
    let dir = &options.data_dir;
    if dir.join(SETTINGS_FILE).exists() {
        return Err(InitError::AlreadyInitialized(dir.display().to_string()));
    }
    if !is_endpoint(&options.master_public_endpoint) {
        return Err(InitError::InvalidEndpoint(
            options.master_public_endpoint.clone(),
        ));
    }
    let now = SystemTime::now();
    let etcd_tls = etcd_tls_files(options)?;
    let mut base = match &options.another_master {
        Some(other) => base_from_master(other)?,
        None => ClusterBase {
            ca: ClusterCa::generate(&options.cluster_name, now)?,
            cluster_name: options.cluster_name.clone(),
            vpn_cidr: weft_vpn::ip_pool::IpPool::new(&options.vpn_cidr)?
                .cidr()
                .to_string(),
            store: store_settings(options, etcd_tls.clone())?,
            cluster_key: None,
            admin: None,
        },
    };
    if let StoreSettings::Etcd(etcd) = &mut base.store {
        if etcd_tls.is_some() {
            etcd.etcd_tls = etcd_tls;
        }
        // Another master's files must be on this host too, at the same paths.
        etcd.tls_options().map_err(InitError::StoreChoice)?;
    }
    let ca = base.ca;
    let store = base.store;
    let dir_error = |error| InitError::Io {
        path: dir.display().to_string(),
        error,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(dir_error)?;
    // The mode above applies only to a directory made here, not to one made beforehand.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(dir_error)?;

    state_file::write_private_bytes(&dir.join(CA_CERT_FILE), ca.cert_pem().as_bytes())?;
    state_file::write_private_bytes(&dir.join(CA_KEY_FILE), ca.key_pem().as_bytes())?;
    write_master_cert(
        dir,
        &ca,
        &options.master_name,
        &options.master_public_endpoint,
        now,
    )?;
    let cluster_key_file = dir.join(CLUSTER_KEY_FILE);
    let secret_box = match &base.cluster_key {
        Some(key) => {
            state_file::write_private_bytes(&cluster_key_file, key)?;
            SecretBox::load(&cluster_key_file)?
        }
        None => SecretBox::create(&cluster_key_file)?,
    };
    // etcd is not asked anything yet: it may come up after the master's directory, and
    // `weft master` says at start what is wrong with it, and writes the key's check value
    // there on the cluster's first start.
    if store == StoreSettings::Sqlite {
        let sqlite = SqliteStore::open(&dir.join(STORE_FILE))?;
        secret_box.check_against(&sqlite, &cluster_key_file).await?;
    }

    // This master first; the others after, for commands to fail over to.
    let admin = match base.admin {
        Some(mut admin) => {
            admin
                .master_endpoints
                .retain(|endpoint| *endpoint != options.master_public_endpoint);
            admin
                .master_endpoints
                .insert(0, options.master_public_endpoint.clone());
            admin
        }
        None => {
            let admin_cert = ca.issue_admin_cert("admin", now)?;
            ClientCredentials {
                master_endpoints: vec![options.master_public_endpoint.clone()],
                ca_cert_pem: ca.cert_pem().to_string(),
                cert_pem: admin_cert.cert_pem,
                key_pem: admin_cert.key_pem,
            }
        }
    };
    let admin_file = dir.join(ADMIN_FILE);
    state_file::write_private(&admin_file, &admin)?;
    let user_config = match &options.user_config {
        Some(path) if !path.exists() => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|error| InitError::Io {
                    path: parent.display().to_string(),
                    error,
                })?;
            }
            state_file::write_private(path, &admin)?;
            Some(path.clone())
        }
        _ => None,
    };
    // Last: a directory with settings is a finished one.
    let settings = MasterSettings {
        cluster_name: base.cluster_name,
        master_name: options.master_name.clone(),
        master_public_endpoint: options.master_public_endpoint.clone(),
        vpn_cidr: base.vpn_cidr,
        store,
    };
    state_file::write_private(&dir.join(SETTINGS_FILE), &settings)?;
    Ok(Initialized {
        admin_file,
        store: settings.store,
        user_config,
    })
}

/// A new certificate and key for this master, written to its directory (at init, and
/// when it renews): the chain (leaf, then CA) as `master.pem` and the key as
/// `master.key`. Returns both as written.
pub fn write_master_cert(
    dir: &Path,
    ca: &ClusterCa,
    master_name: &str,
    master_public_endpoint: &str,
    now: SystemTime,
) -> Result<MasterCertFiles, InitError> {
    let host = endpoint_host(master_public_endpoint);
    let issuer = ca.master_issuer();
    let master_cert =
        issuer.issue_master_cert(master_name, &[MASTER_SERVER_NAME.to_string(), host], now)?;
    // The chain, so a node that knows only the CA's hash finds the CA in the handshake.
    let chain_pem = format!("{}{}", master_cert.cert_pem, issuer.cert_pem());
    // A master stopped between the two writes finds a key that does not match its
    // certificate, and issues itself a new pair at its next start.
    state_file::write_private_bytes(&dir.join(MASTER_KEY_FILE), master_cert.key_pem.as_bytes())?;
    state_file::write_private_bytes(&dir.join(MASTER_CERT_FILE), chain_pem.as_bytes())?;
    Ok(MasterCertFiles {
        chain_pem,
        key_pem: master_cert.key_pem,
        not_after_unix_ms: master_cert.not_after_unix_ms,
    })
}

pub struct MasterCertFiles {
    pub chain_pem: String,
    pub key_pem: String,
    pub not_after_unix_ms: u64,
}

/// `--store`, `--etcd-endpoints` and `--etcd-insecure` as settings, refused before
/// anything is written; the endpoints and files are checked by the caller.
fn store_settings(
    options: &InitOptions,
    etcd_tls: Option<EtcdTlsFiles>,
) -> Result<StoreSettings, InitError> {
    let refuse = |message: &str| Err(InitError::StoreChoice(message.to_owned()));
    let etcd_flags =
        !options.etcd_endpoints.is_empty() || etcd_tls.is_some() || options.etcd_insecure;
    match options.store_backend.as_str() {
        "sqlite" if !etcd_flags => Ok(StoreSettings::Sqlite),
        "sqlite" => refuse(
            "--etcd-endpoints, --etcd-cacert, --etcd-cert, --etcd-key and --etcd-insecure are \
             for --store etcd; the sqlite store lives in the data directory",
        ),
        "etcd" if options.etcd_endpoints.is_empty() => refuse(
            "--store etcd needs --etcd-endpoints: the etcd cluster's client URLs, \
             comma-separated, e.g. https://10.0.0.5:2379,https://10.0.0.6:2379",
        ),
        "etcd" => Ok(StoreSettings::Etcd(EtcdSettings {
            etcd_endpoints: options.etcd_endpoints.clone(),
            etcd_tls,
            etcd_insecure: options.etcd_insecure,
        })),
        other => Err(InitError::StoreChoice(format!(
            "unknown store `{other}`: expected sqlite or etcd"
        ))),
    }
}

/// `--etcd-cacert`, `--etcd-cert` and `--etcd-key` as absolute paths, so a master started
/// from any directory finds them.
fn etcd_tls_files(options: &InitOptions) -> Result<Option<EtcdTlsFiles>, InitError> {
    let absolute = |path: &PathBuf| {
        std::path::absolute(path).map_err(|error| InitError::Io {
            path: path.display().to_string(),
            error,
        })
    };
    match (&options.etcd_cacert, &options.etcd_cert, &options.etcd_key) {
        (None, None, None) => Ok(None),
        (Some(cacert), Some(cert), Some(key)) => Ok(Some(EtcdTlsFiles {
            cacert: absolute(cacert)?,
            cert: absolute(cert)?,
            key: absolute(key)?,
        })),
        _ => Err(InitError::StoreChoice(
            "--etcd-cacert, --etcd-cert and --etcd-key go together: the CA of etcd's server \
             certificate, and the master's client certificate and key"
                .to_owned(),
        )),
    }
}

pub fn endpoint_host(endpoint: &str) -> String {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Reads what `init` wrote.
pub fn read_settings(dir: &Path) -> Result<MasterSettings, Error> {
    let path = dir.join(SETTINGS_FILE);
    if !path.exists() {
        return Err(Error::new(format!(
            "{} is not a master's data directory",
            dir.display()
        ))
        .with_hint(
            "create one with `weft master init --data-dir DIR --public-endpoint HOST:PORT`",
        ));
    }
    state_file::read(&path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::secret_box::CLUSTER_KEY_CHECK_KEY;
    use crate::store::Store;

    #[tokio::test]
    async fn init_writes_private_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let options = InitOptions {
            user_config: Some(dir.path().join("home/config.yaml")),
            ..sqlite_options(dir.path())
        };
        let initialized = init(&options).await.unwrap();
        assert_eq!(initialized.user_config, options.user_config);
        for file in [CA_KEY_FILE, MASTER_KEY_FILE, ADMIN_FILE, SETTINGS_FILE] {
            let mode = fs::metadata(options.data_dir.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let settings = read_settings(&options.data_dir).unwrap();
        assert_eq!(settings.master_public_endpoint, "127.0.0.1:7443");
        let admin: ClientCredentials = state_file::read(&initialized.admin_file).unwrap();
        assert_eq!(admin.master_endpoints, ["127.0.0.1:7443"]);

        assert!(matches!(
            init(&options).await,
            Err(InitError::AlreadyInitialized(_))
        ));
    }

    #[tokio::test]
    async fn a_directory_made_beforehand_becomes_private_with_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("master");
        fs::create_dir(&data_dir).unwrap();
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let options = sqlite_options(dir.path());
        init(&options).await.unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data_dir), 0o700);
        for file in [STORE_FILE, CLUSTER_KEY_FILE, CA_CERT_FILE] {
            assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
        }
    }

    #[tokio::test]
    async fn the_sqlite_store_holds_the_cluster_keys_check_value() {
        let dir = tempfile::tempdir().unwrap();
        let options = sqlite_options(dir.path());
        init(&options).await.unwrap();
        let store = SqliteStore::open(&options.data_dir.join(STORE_FILE)).unwrap();
        assert!(store.get(CLUSTER_KEY_CHECK_KEY).await.unwrap().is_some());
        let key_file = options.data_dir.join(CLUSTER_KEY_FILE);
        let own = SecretBox::load(&key_file).unwrap();
        own.check_against(&store, &key_file).await.unwrap();
        let stranger = SecretBox::from_key(&[3; 32]);
        assert!(stranger.check_against(&store, &key_file).await.is_err());
    }

    #[tokio::test]
    async fn another_master_shares_the_cluster_and_only_on_etcd() {
        let dir = tempfile::tempdir().unwrap();
        let first = insecure_etcd_options(dir.path(), &["http://127.0.0.1:2379"]);
        init(&first).await.unwrap();
        let second = InitOptions {
            data_dir: dir.path().join("m2"),
            master_public_endpoint: "127.0.0.2:7443".into(),
            master_name: "m2".into(),
            another_master: Some(first.data_dir.clone()),
            ..etcd_options(dir.path(), &[])
        };
        init(&second).await.unwrap();
        for file in [CA_CERT_FILE, CA_KEY_FILE, CLUSTER_KEY_FILE] {
            assert_eq!(
                fs::read(first.data_dir.join(file)).unwrap(),
                fs::read(second.data_dir.join(file)).unwrap(),
                "{file}"
            );
        }
        assert_ne!(
            fs::read(first.data_dir.join(MASTER_KEY_FILE)).unwrap(),
            fs::read(second.data_dir.join(MASTER_KEY_FILE)).unwrap()
        );
        let settings = read_settings(&second.data_dir).unwrap();
        assert_eq!(
            settings.store,
            read_settings(&first.data_dir).unwrap().store
        );
        assert_eq!(settings.master_name, "m2");
        let admin: ClientCredentials = state_file::read(&second.data_dir.join(ADMIN_FILE)).unwrap();
        assert_eq!(admin.master_endpoints, ["127.0.0.2:7443", "127.0.0.1:7443"]);

        let sqlite = InitOptions {
            data_dir: dir.path().join("solo"),
            store_backend: "sqlite".into(),
            ..etcd_options(dir.path(), &[])
        };
        init(&sqlite).await.unwrap();
        let refused = InitOptions {
            data_dir: dir.path().join("m3"),
            another_master: Some(sqlite.data_dir.clone()),
            ..etcd_options(dir.path(), &[])
        };
        let Err(error) = init(&refused).await else {
            panic!("a master of a sqlite cluster was made");
        };
        let error = error.to_string();
        assert!(error.contains("sqlite"), "{error}");
        assert!(!refused.data_dir.exists());
    }

    fn sqlite_options(dir: &Path) -> InitOptions {
        InitOptions {
            store_backend: "sqlite".into(),
            ..etcd_options(dir, &[])
        }
    }

    fn etcd_options(dir: &Path, etcd_endpoints: &[&str]) -> InitOptions {
        InitOptions {
            data_dir: dir.join("master"),
            master_public_endpoint: "127.0.0.1:7443".into(),
            cluster_name: "test".into(),
            master_name: "m1".into(),
            vpn_cidr: "10.77.0.0/16".into(),
            store_backend: "etcd".into(),
            etcd_endpoints: etcd_endpoints.iter().map(|url| url.to_string()).collect(),
            etcd_cacert: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_insecure: false,
            user_config: None,
            another_master: None,
        }
    }

    fn insecure_etcd_options(dir: &Path, etcd_endpoints: &[&str]) -> InitOptions {
        InitOptions {
            etcd_insecure: true,
            ..etcd_options(dir, etcd_endpoints)
        }
    }

    /// A CA as etcd's `--trusted-ca-file` and a client certificate it signed, in `dir`.
    fn etcd_tls_options(dir: &Path, etcd_endpoints: &[&str]) -> InitOptions {
        let now = SystemTime::now();
        let ca = ClusterCa::generate("etcd", now).unwrap();
        let client = ca.issue_admin_cert("m1", now).unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            fs::write(&path, pem).unwrap();
            Some(path)
        };
        InitOptions {
            etcd_cacert: write("etcd-ca.pem", ca.cert_pem()),
            etcd_cert: write("etcd-client.pem", &client.cert_pem),
            etcd_key: write("etcd-client.key", &client.key_pem),
            ..etcd_options(dir, etcd_endpoints)
        }
    }

    #[tokio::test]
    async fn the_etcd_store_is_recorded_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let options = etcd_tls_options(
            dir.path(),
            &["https://10.0.0.5:2379", "https://10.0.0.6:2379"],
        );
        let initialized = init(&options).await.unwrap();
        let expected = StoreSettings::Etcd(EtcdSettings {
            etcd_endpoints: options.etcd_endpoints.clone(),
            etcd_tls: Some(EtcdTlsFiles {
                cacert: options.etcd_cacert.clone().unwrap(),
                cert: options.etcd_cert.clone().unwrap(),
                key: options.etcd_key.clone().unwrap(),
            }),
            etcd_insecure: false,
        });
        assert_eq!(read_settings(&options.data_dir).unwrap().store, expected);
        assert!(!initialized.store.is_plain_http());
        assert!(!options.data_dir.join(STORE_FILE).exists());
    }

    #[tokio::test]
    async fn plain_http_to_etcd_only_on_the_operators_word() {
        let dir = tempfile::tempdir().unwrap();
        let options = insecure_etcd_options(dir.path(), &["http://10.0.0.5:2379"]);
        let initialized = init(&options).await.unwrap();
        assert!(initialized.store.is_plain_http());
        assert!(read_settings(&options.data_dir)
            .unwrap()
            .store
            .is_plain_http());
    }

    #[tokio::test]
    async fn another_master_may_bring_its_own_etcd_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = etcd_tls_options(dir.path(), &["https://127.0.0.1:2379"]);
        init(&first).await.unwrap();
        let own_files = tempfile::tempdir().unwrap();
        let second = InitOptions {
            data_dir: dir.path().join("m2"),
            another_master: Some(first.data_dir.clone()),
            ..etcd_tls_options(own_files.path(), &[])
        };
        init(&second).await.unwrap();
        let StoreSettings::Etcd(etcd) = read_settings(&second.data_dir).unwrap().store else {
            panic!("the second master is not on etcd");
        };
        assert_eq!(etcd.etcd_endpoints, first.etcd_endpoints);
        assert_eq!(etcd.etcd_tls.unwrap().cert, second.etcd_cert.unwrap());
    }

    #[tokio::test]
    async fn wrong_etcd_tls_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = || etcd_tls_options(dir.path(), &["https://10.0.0.5:2379"]);
        let other_files = tempfile::tempdir().unwrap();
        let stranger = etcd_tls_options(other_files.path(), &[]);
        let garbage = dir.path().join("garbage.pem");
        fs::write(&garbage, "not a certificate").unwrap();
        let refused = [
            (
                InitOptions {
                    etcd_cacert: Some(dir.path().join("missing.pem")),
                    ..good()
                },
                "--etcd-cacert",
                "missing.pem",
            ),
            (
                InitOptions {
                    etcd_cert: Some(garbage.clone()),
                    ..good()
                },
                "--etcd-cert",
                "garbage.pem",
            ),
            (
                InitOptions {
                    etcd_key: Some(garbage.clone()),
                    ..good()
                },
                "--etcd-key",
                "garbage.pem",
            ),
            (
                InitOptions {
                    etcd_key: stranger.etcd_key.clone(),
                    ..good()
                },
                "does not fit",
                "etcd-client.pem",
            ),
            (
                InitOptions {
                    etcd_key: None,
                    ..good()
                },
                "go together",
                "--etcd-key",
            ),
        ];
        for (options, expected, file) in refused {
            let error = init(&options).await.err().expect("refused").to_string();
            assert!(error.contains(expected), "{error}");
            assert!(error.contains(file), "{error}");
            assert!(!options.data_dir.exists());
        }
    }

    #[tokio::test]
    async fn settings_from_before_the_store_choice_are_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(SETTINGS_FILE),
            "cluster_name: test\nmaster_name: m1\nmaster_public_endpoint: 127.0.0.1:7443\n",
        )
        .unwrap();
        assert_eq!(
            read_settings(dir.path()).unwrap().store,
            StoreSettings::Sqlite
        );
    }

    #[tokio::test]
    async fn a_bad_store_choice_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut sqlite_with_endpoints = etcd_options(dir.path(), &["http://10.0.0.5:2379"]);
        sqlite_with_endpoints.store_backend = "sqlite".into();
        let refused = [
            (etcd_options(dir.path(), &[]), "needs --etcd-endpoints"),
            (
                insecure_etcd_options(dir.path(), &["10.0.0.5"]),
                "HOST:PORT",
            ),
            (
                etcd_options(dir.path(), &["https://10.0.0.5:2379"]),
                "needs a client certificate",
            ),
            (
                etcd_options(dir.path(), &["http://10.0.0.5:2379"]),
                "--etcd-insecure",
            ),
            (
                insecure_etcd_options(dir.path(), &["https://10.0.0.5:2379"]),
                "is for http://",
            ),
            (
                InitOptions {
                    etcd_insecure: true,
                    ..etcd_tls_options(dir.path(), &["http://10.0.0.5:2379"])
                },
                "one or the other",
            ),
            (sqlite_with_endpoints, "for --store etcd"),
        ];
        for (options, expected) in refused {
            let error = init(&options).await.err().expect("refused").to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!options.data_dir.exists());
        }
    }

    #[tokio::test]
    async fn a_bad_endpoint_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let options = InitOptions {
            master_public_endpoint: "no port".into(),
            ..sqlite_options(dir.path())
        };
        assert!(matches!(
            init(&options).await,
            Err(InitError::InvalidEndpoint(_))
        ));
        assert!(!options.data_dir.exists());
    }
}
