//! The one `weft` binary: parses the command line and calls into the crates.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use weft_cli::objects::ObjectOutput;
use weft_cli::output::Output as CliOutput;
use weft_cli::run::RemoteRun;
use weft_cli::CliError;
use weft_master::api::connection_limit::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS;
use weft_master::daemon::{MasterError, MasterOptions, MasterVpnOptions};
use weft_master::init::{InitOptions, Initialized};
use weft_master::store::etcd_settings::PLAIN_HTTP_WARNING;
use weft_minion::agent::{AgentOptions, FactsSource};
use weft_minion::executor::RunOptions;
use weft_minion::identity::MinionIdentity;
use weft_minion::join::{JoinOptions, JoinVpnOptions};
use weft_minion::local::{run_local, LocalRun};
use weft_minion::mesh::NodeMesh;
use weft_taskbook::duration::Duration;
use weft_taskbook::objects::JobRetention;
use weft_taskbook::report::{RunObserver, RunReport, Silent, TextPrinter};
use weft_taskbook::vars::parse_extra_vars;
use weft_taskbook::{Error, Vars};
use weft_vpn::device::{DEFAULT_INTERFACE, DEFAULT_LISTEN_PORT};
use weft_vpn::ip_pool::DEFAULT_VPN_CIDR;

/// Counts what each thread allocates, so that a rendering stops at its memory bound.
#[global_allocator]
static ALLOCATOR: weft_taskbook::render::CountingAllocator =
    weft_taskbook::render::CountingAllocator;

/// Exit statuses, as documented in `weft --help`.
const EXIT_INPUT_ERROR: u8 = 1;
const EXIT_TASK_FAILED: u8 = 2;

const DEFAULT_MASTER_DIR: &str = "/var/lib/weft/master";
const DEFAULT_MINION_DIR: &str = "/var/lib/weft/minion";

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Configuration management over its own WireGuard mesh",
    long_about = "weft runs TaskBooks (YAML steps of tasks) on this machine or, through a \
master, across a fleet.\n\nStart with a local run:\n  weft run taskbook site.yml --local --check --diff\n\n\
A cluster in four commands:\n  weft master init --public-endpoint 192.0.2.10:7443 && weft master &\n  \
TOKEN=$(weft token create --uses 10)\n  weft minion join --token $TOKEN && weft minion &     # on each node\n  \
weft run taskbook site.yml",
    after_help = "Exit status: 0 all ok, 1 usage or input error, 2 some task failed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run something now.
    #[command(subcommand)]
    Run(RunCommand),
    /// Show a node's facts (the ones tasks see as `facts.*`), or this machine's with --local.
    Facts(FactsArgs),
    /// Create a master (`init`), or run one.
    Master(MasterArgs),
    /// Join a cluster (`join`), or run this node's agent.
    Minion(MinionArgs),
    /// Bootstrap tokens for joining nodes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List the nodes: state, VPN IP, last seen, labels.
    Nodes(ListArgs),
    /// List the masters (several share an etcd store) and which one leads.
    Masters(ListArgs),
    /// Admins: create one (new credentials), revoke one, list them.
    #[command(
        subcommand,
        after_help = "Examples:\n  weft admin create alice -f alice.yaml\n  weft admin revoke alice\n  weft admin list"
    )]
    Admin(AdminCommand),
    /// One node: show or remove.
    #[command(subcommand)]
    Node(NodeCommand),
    /// List recent jobs, newest first.
    Jobs(JobsArgs),
    /// One job.
    #[command(subcommand)]
    Job(JobCommand),
    /// Cluster events (node joined or lost, job finished, beacon fired, git commit
    /// seen), oldest first; `--follow` waits for new ones.
    #[command(
        after_help = "Examples:\n  weft events --follow\n  weft events --type 'disk.*' --node web-1\n  weft events -n system --type job.finished -o json | jq .data.state"
    )]
    Events(EventsArgs),
    /// CronJobs: run one now (`weft get cronjobs` lists them with their last and next run).
    #[command(subcommand, name = "cronjob")]
    CronJob(CronJobCommand),
    /// Create or update cluster objects from YAML files (all of them or none).
    #[command(
        after_help = "Examples:\n  weft apply -f examples/fleet.yml\n  weft apply -f objects/ --dry-run\n  weft get variables app -n prod -o yaml | sed 's/3/4/' | weft apply -f -"
    )]
    Apply(ApplyArgs),
    /// List cluster objects of a kind, or show one.
    #[command(
        after_help = "Kinds: namespaces (ns), nodes, nodegroups (ng), configs, clustervariables (cv),\nclustervariablesbindings (cvb), variables (vars), secrets, taskbooks (tb),\ngitrepositories (repo), cronjobs (cj), beacons, triggers, events.\n\nExamples:\n  weft get nodegroups\n  weft get secrets -n prod -o wide\n  weft get taskbook web -n prod -o yaml"
    )]
    Get(GetArgs),
    /// One cluster object for people: identity, history, spec (and a NodeGroup's nodes).
    Describe(ObjectArgs),
    /// Delete a cluster object.
    Delete(ObjectArgs),
    /// GitRepositories: fetch one now.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// A node's cluster variables (Config, ClusterVariables, Variables, NodeGroups),
    /// resolved as a run in the namespace would see them, and where each came from.
    Vars(VarsArgs),
}

#[derive(Args)]
struct VarsArgs {
    node: String,
    /// The namespace whose Variables and bound ClusterVariables apply (default: `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct ApplyArgs {
    /// A YAML file of objects (documents separated by ---), a directory of them, or -
    /// for standard input. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR",
        required = true
    )]
    files: Vec<PathBuf>,
    /// Check everything on the master and say what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct GetArgs {
    /// The kind: `nodegroups`, `ng`, `NodeGroup`...
    kind: String,
    /// One object; without it, every object of the kind.
    name: Option<String>,
    /// The namespace (default: `default` for one object, every namespace for a list).
    #[arg(short, long)]
    namespace: Option<String>,
    #[arg(short, long, value_enum, default_value_t = GetOutput::Table)]
    output: GetOutput,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GetOutput {
    Table,
    Wide,
    Yaml,
    Json,
}

#[derive(Args)]
struct ObjectArgs {
    kind: String,
    name: String,
    /// The namespace of a namespaced object (default: `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum RunCommand {
    /// Run a TaskBook file on the cluster, or with --local on this machine.
    #[command(
        after_help = "Examples:\n  weft run taskbook taskbooks/motd.yml --check --diff\n  weft run taskbook site.yml --nodes web-1,role=db -e port=8080\n  weft run taskbook taskbooks/sshd-hardening.yml --local --check --diff\n  weft run taskbook site.yml -o json | jq '.recap'\n  weft run taskbook --repo infra taskbooks/site.yml -n prod"
    )]
    Taskbook(RunTaskbookArgs),
}

#[derive(Args)]
struct RunTaskbookArgs {
    /// The TaskBook file (YAML), the name of a TaskBook stored in the cluster with
    /// `weft apply`, or with --repo a path in that GitRepository. What travels with a
    /// file: the TaskBook, its includes, the files its tasks name by a fixed relative
    /// `src`, and the templates/ and files/ folders beside them; nothing else of its
    /// folder. At most 8 MiB in 1,000 files: a bigger run is refused before it is sent.
    file: PathBuf,
    /// The namespace of a stored TaskBook or of the --repo GitRepository (default: `default`).
    #[arg(short, long, conflicts_with = "local")]
    namespace: Option<String>,
    /// Read FILE from this GitRepository's last fetched commit (`weft get gitrepositories`).
    #[arg(long, value_name = "REPO", conflicts_with = "local")]
    repo: Option<String>,
    /// Run on this machine, with no master (like `ansible-playbook -c local`).
    #[arg(long)]
    local: bool,
    /// Run on these nodes instead of each step's own: names and k=v labels, comma-separated.
    #[arg(long, value_name = "SEL", conflicts_with = "local")]
    nodes: Option<String>,
    /// Report what would change without changing anything.
    #[arg(long)]
    check: bool,
    /// Show the changes made (or that would be made) to files as unified diffs.
    #[arg(long)]
    diff: bool,
    /// Extra variables: KEY=VALUE (typed as YAML), a YAML/JSON mapping, or @FILE. Repeatable;
    /// these override every variable but registered results.
    #[arg(short = 'e', long = "extra-vars", value_name = "VARS")]
    extra_vars: Vec<String>,
    /// Run only tasks with one of these tags (comma-separated); `always` tasks still run.
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Skip tasks with any of these tags (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip_tags: Vec<String>,
    /// Output: live text lines, or one JSON document (schema weft.run/v1) at the end.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    admin: AdminArgs,
}

/// Where the admin's credentials are.
#[derive(Args)]
struct AdminArgs {
    /// Admin credentials (default: $WEFT_CONFIG, then ~/.config/weft/config.yaml).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct FactsArgs {
    /// The node (as `weft nodes` lists it).
    #[arg(required_unless_present = "local")]
    node: Option<String>,
    /// Gather this machine's facts instead, with no master.
    #[arg(long, conflicts_with = "node")]
    local: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct MasterArgs {
    #[command(subcommand)]
    init: Option<MasterCommand>,
    /// The master's data directory, made by `weft master init`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MASTER_DIR)]
    data_dir: PathBuf,
    /// Listen here instead of every address on the public endpoint's port.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Job history kept: at most this many finished jobs...
    #[arg(long, default_value_t = 1000)]
    keep_jobs: u32,
    /// ...and none older than this.
    #[arg(long, default_value = "30d", value_parser = Duration::parse)]
    keep_jobs_for: Duration,
    /// Write logs to daily files here (the last 7 kept) instead of stderr.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// The WireGuard mesh: `on` puts the vpnapi on the master's VPN address only;
    /// `off` serves it on the public endpoint (hosts without /dev/net/tun).
    #[arg(long, value_enum, default_value_t = VpnMode::On)]
    vpn: VpnMode,
    /// The master's WireGuard interface (names are global to the host: keep them unique).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_INTERFACE)]
    vpn_interface: String,
    /// The UDP port of the master's WireGuard interface.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_LISTEN_PORT)]
    vpn_listen_port: u16,
    /// The vpnapi's TCP port on the master's VPN address.
    #[arg(long, value_name = "PORT", default_value_t = 7444)]
    vpnapi_port: u16,
    /// Connections one client address may hold open on the public endpoint; more are
    /// closed at once. Raise it when many nodes reach a `--vpn off` master through one
    /// NAT address.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_address: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VpnMode {
    On,
    Off,
}

#[derive(Subcommand)]
enum MasterCommand {
    /// Create the cluster: CA, master certificate, admin credentials, store.
    Init(Box<MasterInitArgs>),
    /// Replace the cluster CA, with an overlap: run it on the master's host (the master
    /// running or not), then restart the master; once nodes and admins have renewed,
    /// run it with `--finish` and restart again.
    RotateCa(MasterRotateCaArgs),
}

#[derive(Args)]
struct MasterRotateCaArgs {
    /// The master's data directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MASTER_DIR)]
    data_dir: PathBuf,
    /// End the rotation: drop the previous CA, whose certificates are refused from the
    /// master's next start.
    #[arg(long)]
    finish: bool,
}

#[derive(Args)]
struct MasterInitArgs {
    /// The master's data directory (made private to root).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MASTER_DIR)]
    data_dir: PathBuf,
    /// HOST:PORT where nodes and admins reach this master; tokens carry it.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7443")]
    public_endpoint: String,
    /// The cluster's name, in its CA certificate.
    #[arg(long, default_value = "weft")]
    cluster_name: String,
    /// This master's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// The cluster network the mesh's addresses come from; the master takes the first.
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_VPN_CIDR)]
    vpn_cidr: String,
    /// Where the master keeps its state: a file in the data directory, or an etcd
    /// cluster several masters can share.
    #[arg(long, value_parser = ["sqlite", "etcd"], default_value = "sqlite")]
    store: String,
    /// The etcd cluster's client URLs, comma-separated (with --store etcd):
    /// https://HOST:PORT, or http://HOST:PORT with --etcd-insecure.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// The CA certificate that signed etcd's server certificates (as etcdctl --cacert).
    #[arg(long, value_name = "FILE", requires_all = ["etcd_cert", "etcd_key"])]
    etcd_cacert: Option<PathBuf>,
    /// This master's client certificate for etcd, signed by etcd's --trusted-ca-file.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_cacert", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// The client certificate's private key.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_cacert", "etcd_cert"])]
    etcd_key: Option<PathBuf>,
    /// Speak plain http to etcd, without TLS or client certificates: anyone who reaches
    /// etcd can then run code as root on every node. Only on a network nobody else
    /// reaches; every master start warns.
    #[arg(long, conflicts_with_all = ["etcd_cacert", "etcd_cert", "etcd_key"])]
    etcd_insecure: bool,
    /// Add this master to the cluster of the master whose data directory this is (a
    /// copy of it, on another host): same CA, cluster key, network and etcd store; one
    /// master leads, the others take over when it goes. With --etcd-cacert, --etcd-cert
    /// and --etcd-key, this master uses its own client certificate for etcd.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["store", "etcd_endpoints", "etcd_insecure", "vpn_cidr", "cluster_name"])]
    another_master: Option<PathBuf>,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct MinionArgs {
    #[command(subcommand)]
    join: Option<MinionCommand>,
    /// The node's data directory, where `weft minion join` keeps its identity.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MINION_DIR)]
    data_dir: PathBuf,
    /// Write logs to daily files here (the last 7 kept) instead of stderr.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// How long a peer may go without a WireGuard handshake before the master is asked
    /// whether it is still a member (it is removed only if the master says no).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = Duration::parse)]
    peer_timeout: Duration,
}

#[derive(Subcommand)]
enum MinionCommand {
    /// Join a cluster with a token from `weft token create`, then exit; `weft minion` runs the node.
    Join(MinionJoinArgs),
    /// Leave the cluster: the master drops this node's peer everywhere, frees its
    /// address and revokes its certificate; this node forgets its identity.
    Leave(MinionLeaveArgs),
}

#[derive(Args)]
struct MinionLeaveArgs {
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MINION_DIR)]
    data_dir: PathBuf,
}

#[derive(Args)]
struct MinionJoinArgs {
    /// The token `weft token create` printed.
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    token: String,
    /// This node's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Labels, k=v comma-separated: `--labels role=web,zone=a`.
    #[arg(long, value_delimiter = ',', value_parser = parse_label)]
    labels: Vec<(String, String)>,
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MINION_DIR)]
    data_dir: PathBuf,
    /// HOST:PORT where peers reach this node's WireGuard (default: the address the
    /// master sees, with keepalives in case it is behind NAT).
    #[arg(long, value_name = "HOST:PORT")]
    public_endpoint: Option<String>,
    /// Join the WireGuard mesh (`off`: the node talks to the master over its public endpoint).
    #[arg(long, value_enum, default_value_t = VpnMode::On)]
    vpn: VpnMode,
    /// The node's WireGuard interface (names are global to the host: keep them unique).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_INTERFACE)]
    vpn_interface: String,
    /// The UDP port of the node's WireGuard interface.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_LISTEN_PORT)]
    vpn_listen_port: u16,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new token (alone on stdout) for `weft minion join --token`.
    Create(TokenCreateArgs),
    /// The tokens the cluster holds (never their secrets).
    List(ListArgs),
    /// Delete a token: no node joins with it any more.
    Delete(TokenDeleteArgs),
}

#[derive(Args)]
struct TokenDeleteArgs {
    /// The token's id, as `weft token list` shows it.
    id: String,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct TokenCreateArgs {
    /// How long the token is good for (1m to 7d; default: the Config's `token_ttl`,
    /// else 10m).
    #[arg(long, value_parser = Duration::parse)]
    ttl: Option<Duration>,
    /// How many nodes may join with it (1 to 1000).
    #[arg(long, default_value_t = 1)]
    uses: u32,
    /// The node this token's join replaces (its certificate and session end); the
    /// token then joins under that name only, once. Without it, a join never takes a
    /// name that exists.
    #[arg(long, value_name = "NAME")]
    replace: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct ListArgs {
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// A new admin: its credentials file is written to --file, or printed.
    Create(AdminCreateArgs),
    /// Every certificate of the admin is refused from now on, by every master.
    Revoke(AdminNameArgs),
    /// The admins, revoked ones too, and when their certificates expire.
    List(ListArgs),
}

#[derive(Args)]
struct AdminCreateArgs {
    name: String,
    /// Where to write the new admin's credentials (not over an existing file).
    #[arg(short, long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct AdminNameArgs {
    name: String,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// A node's state, labels and main facts.
    Show(NodeArgs),
    /// Remove a node: its certificate is refused from then on.
    Remove(NodeArgs),
    /// Set labels (key=value) and remove them (key-).
    #[command(after_help = "Example:\n  weft node label web-1 role=web zone=b tier-")]
    Label(NodeLabelArgs),
    /// Set the node's own variables (key=value, typed as YAML) and remove them (key-):
    /// the highest cluster level, above its NodeGroups'.
    #[command(after_help = "Example:\n  weft node vars web-1 workers=8 region=eu old_flag-")]
    Vars(NodeVarsArgs),
}

#[derive(Args)]
struct NodeVarsArgs {
    name: String,
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    vars: Vec<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct NodeLabelArgs {
    name: String,
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    labels: Vec<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct NodeArgs {
    name: String,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct JobsArgs {
    /// How many to list.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum CronJobCommand {
    /// Start the CronJob's TaskBook now, whatever its schedule and concurrency policy;
    /// prints the job id.
    Run(CronJobArgs),
}

#[derive(Args)]
struct CronJobArgs {
    name: String,
    /// The CronJob's namespace (default: `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct EventsArgs {
    /// Keep printing events as they are stored, until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// Only this type; a trailing `*` matches a prefix (`disk.*`).
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Only events from this node.
    #[arg(long = "node", value_name = "NODE")]
    node_name: Option<String>,
    /// Only this namespace (`system` holds the cluster's own events).
    #[arg(short, long)]
    namespace: Option<String>,
    /// How many of the newest to show first.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// `json`: one event per line.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Ask the master to fetch a GitRepository now rather than at its next interval.
    Fetch(RepoFetchArgs),
}

#[derive(Args)]
struct RepoFetchArgs {
    /// The GitRepository's name.
    name: String,
    /// Its namespace (default: `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum JobCommand {
    /// A job's steps, each node's state in each, and its recap.
    Show(JobShowArgs),
}

#[derive(Args)]
struct JobShowArgs {
    job_id: String,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

impl From<Output> for CliOutput {
    fn from(output: Output) -> Self {
        match output {
            Output::Text => CliOutput::Text,
            Output::Json => CliOutput::Json,
        }
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("`{text}` is not a label: expected KEY=VALUE"))
}

fn main() -> ExitCode {
    // Before any thread exists: the environment is read by wireguard-control.
    weft_vpn::device::forbid_userspace_helper();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(RunCommand::Taskbook(args)) if args.local => run_taskbook_locally(args),
        Command::Run(RunCommand::Taskbook(args)) => run_taskbook_on_cluster(args),
        Command::Facts(args) if args.local => show_local_facts(),
        Command::Facts(args) => admin(&args.admin, |mut client| async move {
            weft_cli::nodes::show_facts(&mut client, args.node.as_deref().unwrap_or_default()).await
        }),
        Command::Master(MasterArgs {
            init: Some(MasterCommand::Init(args)),
            ..
        }) => master_init(*args),
        Command::Master(MasterArgs {
            init: Some(MasterCommand::RotateCa(args)),
            ..
        }) => master_rotate_ca(args),
        Command::Master(args) => run_master(args),
        Command::Minion(MinionArgs {
            join: Some(MinionCommand::Join(args)),
            ..
        }) => minion_join(args),
        Command::Minion(MinionArgs {
            join: Some(MinionCommand::Leave(args)),
            ..
        }) => minion_leave(args),
        Command::Minion(args) => run_minion(args),
        Command::Token(TokenCommand::Create(args)) => admin(&args.admin, |mut client| async move {
            let ttl = args.ttl.map(|ttl| ttl.0);
            weft_cli::token::create_token(&mut client, ttl, args.uses, args.replace).await
        }),
        Command::Token(TokenCommand::List(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::token::list_tokens(&mut client, args.output.into()).await
        }),
        Command::Token(TokenCommand::Delete(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::token::delete_token(&mut client, &args.id).await
        }),
        Command::Masters(args) => {
            let config = args.admin.config.clone();
            admin(&args.admin, |mut client| async move {
                let (_, credentials) = weft_cli::admin::read_credentials(config.as_deref())?;
                weft_cli::masters::list_masters(&mut client, &credentials, args.output.into()).await
            })
        }
        Command::Admin(AdminCommand::Create(args)) => {
            let config = args.admin.config.clone();
            admin(&args.admin, |mut client| async move {
                weft_cli::admin::create_admin(
                    &mut client,
                    config.as_deref(),
                    &args.name,
                    args.file.as_deref(),
                )
                .await
            })
        }
        Command::Admin(AdminCommand::Revoke(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::admin::revoke_admin(&mut client, &args.name).await
        }),
        Command::Admin(AdminCommand::List(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::admin::list_admins(&mut client, args.output.into()).await
        }),
        Command::Nodes(args) => admin(&args.admin, |mut client| async move {
            weft_cli::nodes::list_nodes(&mut client, args.output.into()).await
        }),
        Command::Node(NodeCommand::Show(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::nodes::show_node(&mut client, &args.name, args.output.into()).await
        }),
        Command::Node(NodeCommand::Remove(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::nodes::remove_node(&mut client, &args.name).await
        }),
        Command::Jobs(args) => admin(&args.admin, |mut client| async move {
            weft_cli::jobs::list_jobs(&mut client, args.limit, args.output.into()).await
        }),
        Command::Job(JobCommand::Show(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::jobs::show_job(&mut client, &args.job_id, args.output.into()).await
        }),
        Command::CronJob(CronJobCommand::Run(args)) => {
            admin(&args.admin, |mut client| async move {
                weft_cli::cron_jobs::run_cron_job(
                    &mut client,
                    &args.name,
                    args.namespace.as_deref(),
                )
                .await
            })
        }
        Command::Repo(RepoCommand::Fetch(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::objects::fetch_repository(&mut client, &args.name, args.namespace.as_deref())
                .await
        }),
        Command::Events(args) => admin(&args.admin, |mut client| async move {
            let query = weft_cli::events::EventQuery {
                event_type: args.event_type,
                node_name: args.node_name,
                namespace: args.namespace,
                limit: args.limit,
                follow: args.follow,
            };
            weft_cli::events::list_events(&mut client, query, args.output.into()).await
        }),
        Command::Node(NodeCommand::Vars(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::objects::set_node_vars(&mut client, &args.name, &args.vars).await
        }),
        Command::Node(NodeCommand::Label(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::objects::label_node(&mut client, &args.name, &args.labels).await
        }),
        Command::Apply(args) => admin(&args.admin, |mut client| async move {
            let files = weft_cli::objects::read_sources(&args.files)?;
            let json = args.output == Output::Json;
            weft_cli::objects::apply(&mut client, files, args.dry_run, json).await
        }),
        Command::Get(args) => admin(&args.admin, |mut client| async move {
            let output = match args.output {
                GetOutput::Table => ObjectOutput::Table,
                GetOutput::Wide => ObjectOutput::Wide,
                GetOutput::Yaml => ObjectOutput::Yaml,
                GetOutput::Json => ObjectOutput::Json,
            };
            let (kind, name, namespace) =
                (&args.kind, args.name.as_deref(), args.namespace.as_deref());
            weft_cli::objects::get(&mut client, kind, name, namespace, output).await
        }),
        Command::Describe(args) => admin(&args.admin, |mut client| async move {
            weft_cli::objects::describe(
                &mut client,
                &args.kind,
                &args.name,
                args.namespace.as_deref(),
            )
            .await
        }),
        Command::Vars(args) => admin(&args.admin, |mut client| async move {
            let json = args.output == Output::Json;
            weft_cli::objects::show_vars(&mut client, &args.node, args.namespace.as_deref(), json)
                .await
        }),
        Command::Delete(args) => admin(&args.admin, |mut client| async move {
            weft_cli::objects::delete(
                &mut client,
                &args.kind,
                &args.name,
                args.namespace.as_deref(),
            )
            .await
        }),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts")
}

/// Connects with the admin's credentials and runs one adminapi command.
fn admin<F, Fut>(args: &AdminArgs, command: F) -> ExitCode
where
    F: FnOnce(weft_cli::admin::AdminClient) -> Fut,
    Fut: Future<Output = Result<(), CliError>>,
{
    let done = runtime().block_on(async {
        let client = weft_cli::admin::connect(args.config.as_deref()).await?;
        command(client).await
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => usage_error(&error.to_string()),
    }
}

fn extra_vars(arguments: &[String]) -> Result<Vec<Vars>, Error> {
    arguments.iter().map(|e| parse_extra_vars(e)).collect()
}

fn run_taskbook_locally(args: RunTaskbookArgs) -> ExitCode {
    let extra_vars = match extra_vars(&args.extra_vars) {
        Ok(vars) => vars,
        Err(error) => return input_error(&error),
    };
    let run = LocalRun {
        file: args.file,
        options: RunOptions {
            check_mode: args.check,
            diff: args.diff,
            tags: args.tags,
            skip_tags: args.skip_tags,
            run_once_node: None,
        },
        extra_vars,
    };
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut printer = TextPrinter::new(std::io::stdout().lock(), args.diff, color);
    let observer: &mut dyn RunObserver = match args.output {
        Output::Text => &mut printer,
        Output::Json => &mut Silent,
    };
    let report = match run_local(&run, observer) {
        Ok(report) => report,
        Err(error) => return input_error(&error),
    };
    if args.output == Output::Text {
        let _ = printer.write_recap(&report);
    }
    report_exit(&report, args.output)
}

fn run_taskbook_on_cluster(args: RunTaskbookArgs) -> ExitCode {
    let extra_vars = match extra_vars(&args.extra_vars) {
        Ok(vars) => vars,
        Err(error) => return input_error(&error),
    };
    let run = RemoteRun {
        file: args.file,
        check_mode: args.check,
        diff: args.diff,
        extra_vars,
        tags: args.tags,
        skip_tags: args.skip_tags,
        nodes: args.nodes,
        output: args.output.into(),
        namespace: args.namespace,
        repo: args.repo,
    };
    let output = args.output;
    let report = runtime().block_on(async {
        let mut client = weft_cli::admin::connect(args.admin.config.as_deref()).await?;
        weft_cli::run::run_taskbook(&mut client, run).await
    });
    match report {
        Ok(report) => report_exit(&report, output),
        Err(error @ CliError::NoCredentials(_)) => usage_error(&format!(
            "{error}\n  hint: to run on this machine without a master, pass --local"
        )),
        Err(error) => usage_error(&error.to_string()),
    }
}

fn report_exit(report: &RunReport, output: Output) -> ExitCode {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("a report always serializes")
        );
    }
    if report.failed {
        ExitCode::from(EXIT_TASK_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn show_local_facts() -> ExitCode {
    match weft_modules::facts::gather_facts() {
        Ok(mut facts) => {
            weft_modules::facts::add_installed_package_count(&mut facts);
            println!(
                "{}",
                serde_json::to_string_pretty(&facts).expect("facts always serialize")
            );
            ExitCode::SUCCESS
        }
        Err(error) => usage_error(&format!("gathering facts: {error}")),
    }
}

/// Node and master names default to the host name, as a valid name.
fn host_name() -> String {
    weft_modules::facts::host_name().to_ascii_lowercase()
}

fn master_rotate_ca(args: MasterRotateCaArgs) -> ExitCode {
    use weft_master::ca_rotation::{finish_ca_rotation, rotate_ca};
    let (done, next) = if args.finish {
        (
            finish_ca_rotation(&args.data_dir),
            "the previous CA is dropped: restart the master; its certificates (nodes and \
             admins that did not renew) are refused from then on",
        )
    } else {
        (
            rotate_ca(&args.data_dir, std::time::SystemTime::now()),
            "a new CA is made and the previous one kept beside it: restart the master, \
             let nodes and admins renew (each admin file renews at its next use once due), \
             make bootstrap tokens again after `--finish`, then run \
             `weft master rotate-ca --finish`",
        )
    };
    match done {
        Ok(()) => {
            println!("{next}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn master_init(args: MasterInitArgs) -> ExitCode {
    let options = InitOptions {
        data_dir: args.data_dir,
        master_public_endpoint: args.public_endpoint,
        cluster_name: args.cluster_name,
        vpn_cidr: args.vpn_cidr,
        store_backend: args.store,
        etcd_endpoints: args.etcd_endpoints,
        etcd_cacert: args.etcd_cacert,
        etcd_cert: args.etcd_cert,
        etcd_key: args.etcd_key,
        etcd_insecure: args.etcd_insecure,
        master_name: args.name.unwrap_or_else(host_name),
        user_config: weft_cli::admin::user_config_path(),
        another_master: args.another_master,
    };
    match runtime().block_on(weft_master::init::init(&options)) {
        Ok(Initialized {
            admin_file,
            store,
            user_config,
        }) => {
            if store.is_plain_http() {
                eprintln!("warning: {PLAIN_HTTP_WARNING}");
            }
            eprintln!("cluster created in {}", options.data_dir.display());
            eprintln!("admin credentials: {}", admin_file.display());
            if let Some(path) = user_config {
                eprintln!("                   {} (used by default)", path.display());
            }
            eprintln!(
                "next: weft master --data-dir {}   then: weft token create",
                options.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => usage_error(&error.to_string()),
    }
}

/// Until SIGINT or SIGTERM.
async fn termination() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be caught");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn start_logging(daemon: &str, log_dir: Option<&Path>) -> Result<Option<impl Drop>, ExitCode> {
    weft_cli::logging::init(daemon, log_dir).map_err(|error| usage_error(&error.to_string()))
}

fn run_master(args: MasterArgs) -> ExitCode {
    let _log = match start_logging("weft-master", args.log_dir.as_deref()) {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let options = MasterOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        max_connections_per_address: args.max_connections_per_address,
        retention: JobRetention {
            max_jobs: args.keep_jobs,
            max_age: args.keep_jobs_for,
        },
        vpn: (args.vpn == VpnMode::On).then_some(MasterVpnOptions {
            interface: args.vpn_interface,
            listen_port: args.vpn_listen_port,
            vpnapi_port: args.vpnapi_port,
        }),
    };
    match runtime().block_on(weft_master::daemon::run(options, termination())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ MasterError::Settings(_)) => usage_error(&error.to_string()),
        Err(error) => {
            tracing::error!(%error, "the master stopped");
            usage_error(&error.to_string())
        }
    }
}

fn minion_join(args: MinionJoinArgs) -> ExitCode {
    let options = JoinOptions {
        token: args.token,
        node_name: args.name.unwrap_or_else(host_name),
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        data_dir: args.data_dir,
        node_public_endpoint: args.public_endpoint,
        vpn: (args.vpn == VpnMode::On).then_some(JoinVpnOptions {
            interface: args.vpn_interface,
            listen_port: args.vpn_listen_port,
        }),
    };
    match runtime().block_on(weft_minion::join::join(&options)) {
        Ok(identity) => {
            eprintln!(
                "joined as {}; identity in {}. Run the node with: weft minion --data-dir {}",
                identity.node_name,
                options.data_dir.display(),
                options.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => usage_error(&error.to_string()),
    }
}

fn minion_leave(args: MinionLeaveArgs) -> ExitCode {
    match runtime().block_on(weft_minion::leave::leave(&args.data_dir)) {
        Ok(identity) => {
            eprintln!(
                "{} left the cluster: its peer is gone from every node and its address is free; stop `weft minion` now",
                identity.node_name
            );
            ExitCode::SUCCESS
        }
        Err(error) => usage_error(&error.to_string()),
    }
}

fn run_minion(args: MinionArgs) -> ExitCode {
    let _log = match start_logging("weft-minion", args.log_dir.as_deref()) {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let identity = match MinionIdentity::load(&args.data_dir) {
        Ok(identity) => identity,
        Err(error) => return input_error(&error),
    };
    let runtime = runtime();
    let mesh = match &identity.mesh {
        // Up before the first session: the master is reached through it.
        Some(mesh_identity) => {
            match NodeMesh::start(&args.data_dir, &identity.node_name, mesh_identity) {
                Ok(mesh) => Some(Arc::new(mesh)),
                Err(error) => return usage_error(&error.to_string()),
            }
        }
        None => None,
    };
    let options = AgentOptions {
        identity,
        data_dir: args.data_dir.clone(),
        work_dir: args.data_dir.join("work"),
        facts: FactsSource::Gather,
        mesh,
        peer_timeout: args.peer_timeout.0,
    };
    match runtime.block_on(weft_minion::agent::run_agent(options, termination())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => usage_error(&error.to_string()),
    }
}

fn input_error(error: &Error) -> ExitCode {
    eprintln!("error: {}", error.render_for_terminal());
    ExitCode::from(EXIT_INPUT_ERROR)
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_INPUT_ERROR)
}
