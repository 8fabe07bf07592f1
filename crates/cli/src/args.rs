//! The `weft` command line as clap reads it: every subcommand, its arguments, their
//! defaults and their help. The binary's `main` dispatches on these; the commands
//! themselves live in the modules beside this one and in the daemons' crates.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use weft_master::api::connection_limit::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS;
use weft_taskbook::duration::Duration;
use weft_taskbook::objects::Kind;
use weft_vpn::device::{DEFAULT_INTERFACE, DEFAULT_LISTEN_PORT};
use weft_vpn::ip_pool::DEFAULT_VPN_CIDR;

use crate::objects::ObjectOutput;
use crate::output::Output;

pub const DEFAULT_MASTER_DIR: &str = "/var/lib/weft/master";
pub const DEFAULT_MINION_DIR: &str = "/var/lib/weft/minion";

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        after_help = get_help()
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
pub struct VarsArgs {
    pub node: String,
    /// The namespace whose Variables and bound ClusterVariables apply (default: `default`).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct ApplyArgs {
    /// A YAML file of objects (documents separated by ---), a directory of them, or -
    /// for standard input. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR",
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// Check everything on the master and say what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct GetArgs {
    /// The kind: `nodegroups`, `ng`, `NodeGroup`...
    pub kind: String,
    /// One object; without it, every object of the kind.
    pub name: Option<String>,
    /// The namespace (default: `default` for one object, every namespace for a list).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(short, long, value_enum, default_value_t = ObjectOutput::Table)]
    pub output: ObjectOutput,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct ObjectArgs {
    pub kind: String,
    pub name: String,
    /// The namespace of a namespaced object (default: `default`).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Subcommand)]
pub enum RunCommand {
    /// Run a TaskBook file on the cluster, or with --local on this machine.
    #[command(
        after_help = "Examples:\n  weft run taskbook taskbooks/motd.yml --check --diff\n  weft run taskbook site.yml --nodes web-1,role=db -e port=8080\n  weft run taskbook taskbooks/sshd-hardening.yml --local --check --diff\n  weft run taskbook site.yml -o json | jq '.recap'\n  weft run taskbook --repo infra taskbooks/site.yml -n prod"
    )]
    Taskbook(RunTaskbookArgs),
}

#[derive(Args)]
pub struct RunTaskbookArgs {
    /// The TaskBook file (YAML), the name of a TaskBook stored in the cluster with
    /// `weft apply`, or with --repo a path in that GitRepository. What travels with a
    /// file: the TaskBook, its includes, the files its tasks name by a fixed relative
    /// `src`, and the templates/ and files/ folders beside them; nothing else of its
    /// folder. At most 8 MiB in 1,000 files: a bigger run is refused before it is sent.
    pub file: PathBuf,
    /// The namespace of a stored TaskBook or of the --repo GitRepository (default: `default`).
    #[arg(short, long, conflicts_with = "local")]
    pub namespace: Option<String>,
    /// Read FILE from this GitRepository's last fetched commit (`weft get gitrepositories`).
    #[arg(long, value_name = "REPO", conflicts_with = "local")]
    pub repo: Option<String>,
    /// Run on this machine, with no master (like `ansible-playbook -c local`).
    #[arg(long)]
    pub local: bool,
    /// Run on these nodes instead of each step's own: names and k=v labels, comma-separated.
    #[arg(long, value_name = "SEL", conflicts_with = "local")]
    pub nodes: Option<String>,
    /// Report what would change without changing anything.
    #[arg(long)]
    pub check: bool,
    /// Show the changes made (or that would be made) to files as unified diffs.
    #[arg(long)]
    pub diff: bool,
    /// Extra variables: KEY=VALUE (typed as YAML), a YAML/JSON mapping, or @FILE. Repeatable;
    /// these override every variable but registered results.
    #[arg(short = 'e', long = "extra-vars", value_name = "VARS")]
    pub extra_vars: Vec<String>,
    /// Run only tasks with one of these tags (comma-separated); `always` tasks still run.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Skip tasks with any of these tags (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// Output: live text lines, or one JSON document (schema weft.run/v1) at the end.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Where the admin's credentials are.
#[derive(Args)]
pub struct AdminArgs {
    /// Admin credentials (default: $WEFT_CONFIG, then ~/.config/weft/config.yaml).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Args)]
pub struct FactsArgs {
    /// The node (as `weft nodes` lists it).
    #[arg(required_unless_present = "local")]
    pub node: Option<String>,
    /// Gather this machine's facts instead, with no master.
    #[arg(long, conflicts_with = "node")]
    pub local: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MasterArgs {
    #[command(subcommand)]
    pub init: Option<MasterCommand>,
    /// The master's data directory, made by `weft master init`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MASTER_DIR)]
    pub data_dir: PathBuf,
    /// Listen here instead of every address on the public endpoint's port.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Job history kept: at most this many finished jobs...
    #[arg(long, default_value_t = 1000)]
    pub keep_jobs: u32,
    /// ...and none older than this.
    #[arg(long, default_value = "30d", value_parser = Duration::parse)]
    pub keep_jobs_for: Duration,
    /// Write logs to daily files here (the last 7 kept) instead of stderr.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// The WireGuard mesh: `on` puts the vpnapi on the master's VPN address only;
    /// `off` serves it on the public endpoint (hosts without /dev/net/tun).
    #[arg(long, value_enum, default_value_t = VpnMode::On)]
    pub vpn: VpnMode,
    /// The master's WireGuard interface (names are global to the host: keep them unique).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_INTERFACE)]
    pub vpn_interface: String,
    /// The UDP port of the master's WireGuard interface.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_LISTEN_PORT)]
    pub vpn_listen_port: u16,
    /// The vpnapi's TCP port on the master's VPN address.
    #[arg(long, value_name = "PORT", default_value_t = 7444)]
    pub vpnapi_port: u16,
    /// Connections one client address may hold open on the public endpoint; more are
    /// closed at once. Raise it when many nodes reach a `--vpn off` master through one
    /// NAT address.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_address: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VpnMode {
    On,
    Off,
}

#[derive(Subcommand)]
pub enum MasterCommand {
    /// Create the cluster: CA, master certificate, admin credentials, store.
    Init(Box<MasterInitArgs>),
    /// Replace the cluster CA, with an overlap: run it on the master's host (the master
    /// running or not), then restart the master; once nodes and admins have renewed,
    /// run it with `--finish` and restart again.
    RotateCa(MasterRotateCaArgs),
}

#[derive(Args)]
pub struct MasterRotateCaArgs {
    /// The master's data directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MASTER_DIR)]
    pub data_dir: PathBuf,
    /// End the rotation: drop the previous CA, whose certificates are refused from the
    /// master's next start.
    #[arg(long)]
    pub finish: bool,
}

#[derive(Args)]
pub struct MasterInitArgs {
    /// The master's data directory (made private to root).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MASTER_DIR)]
    pub data_dir: PathBuf,
    /// HOST:PORT where nodes and admins reach this master; tokens carry it.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7443")]
    pub public_endpoint: String,
    /// The cluster's name, in its CA certificate.
    #[arg(long, default_value = "weft")]
    pub cluster_name: String,
    /// This master's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// The cluster network the mesh's addresses come from; the master takes the first.
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_VPN_CIDR)]
    pub vpn_cidr: String,
    /// Where the master keeps its state: a file in the data directory, or an etcd
    /// cluster several masters can share.
    #[arg(long, value_parser = ["sqlite", "etcd"], default_value = "sqlite")]
    pub store: String,
    /// The etcd cluster's client URLs, comma-separated (with --store etcd):
    /// https://HOST:PORT, or http://HOST:PORT with --etcd-insecure.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The CA certificate that signed etcd's server certificates (as etcdctl --cacert).
    #[arg(long, value_name = "FILE", requires_all = ["etcd_cert", "etcd_key"])]
    pub etcd_cacert: Option<PathBuf>,
    /// This master's client certificate for etcd, signed by etcd's --trusted-ca-file.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_cacert", "etcd_key"])]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's private key.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_cacert", "etcd_cert"])]
    pub etcd_key: Option<PathBuf>,
    /// Speak plain http to etcd, without TLS or client certificates: anyone who reaches
    /// etcd can then run code as root on every node. Only on a network nobody else
    /// reaches; every master start warns.
    #[arg(long, conflicts_with_all = ["etcd_cacert", "etcd_cert", "etcd_key"])]
    pub etcd_insecure: bool,
    /// Add this master to the cluster of the master whose data directory this is (a
    /// copy of it, on another host): same CA, cluster key, network and etcd store; one
    /// master leads, the others take over when it goes. With --etcd-cacert, --etcd-cert
    /// and --etcd-key, this master uses its own client certificate for etcd.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["store", "etcd_endpoints", "etcd_insecure", "vpn_cidr", "cluster_name"])]
    pub another_master: Option<PathBuf>,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MinionArgs {
    #[command(subcommand)]
    pub join: Option<MinionCommand>,
    /// The node's data directory, where `weft minion join` keeps its identity.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MINION_DIR)]
    pub data_dir: PathBuf,
    /// Write logs to daily files here (the last 7 kept) instead of stderr.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// How long a peer may go without a WireGuard handshake before the master is asked
    /// whether it is still a member (it is removed only if the master says no).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = Duration::parse)]
    pub peer_timeout: Duration,
}

#[derive(Subcommand)]
pub enum MinionCommand {
    /// Join a cluster with a token from `weft token create`, then exit; `weft minion` runs the node.
    Join(MinionJoinArgs),
    /// Leave the cluster: the master drops this node's peer everywhere, frees its
    /// address and revokes its certificate; this node forgets its identity.
    Leave(MinionLeaveArgs),
}

#[derive(Args)]
pub struct MinionLeaveArgs {
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MINION_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Args)]
pub struct MinionJoinArgs {
    /// The token `weft token create` printed.
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: String,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Labels, k=v comma-separated: `--labels role=web,zone=a`.
    #[arg(long, value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MINION_DIR)]
    pub data_dir: PathBuf,
    /// HOST:PORT where peers reach this node's WireGuard (default: the address the
    /// master sees, with keepalives in case it is behind NAT).
    #[arg(long, value_name = "HOST:PORT")]
    pub public_endpoint: Option<String>,
    /// Join the WireGuard mesh (`off`: the node talks to the master over its public endpoint).
    #[arg(long, value_enum, default_value_t = VpnMode::On)]
    pub vpn: VpnMode,
    /// The node's WireGuard interface (names are global to the host: keep them unique).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_INTERFACE)]
    pub vpn_interface: String,
    /// The UDP port of the node's WireGuard interface.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_LISTEN_PORT)]
    pub vpn_listen_port: u16,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Print a new token (alone on stdout) for `weft minion join --token`.
    Create(TokenCreateArgs),
    /// The tokens the cluster holds (never their secrets).
    List(ListArgs),
    /// Delete a token: no node joins with it any more.
    Delete(TokenDeleteArgs),
}

#[derive(Args)]
pub struct TokenDeleteArgs {
    /// The token's id, as `weft token list` shows it.
    pub id: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct TokenCreateArgs {
    /// How long the token is good for (1m to 7d; default: the Config's `token_ttl`,
    /// else 10m).
    #[arg(long, value_parser = Duration::parse)]
    pub ttl: Option<Duration>,
    /// How many nodes may join with it (1 to 1000).
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// The node this token's join replaces (its certificate and session end); the
    /// token then joins under that name only, once. Without it, a join never takes a
    /// name that exists.
    #[arg(long, value_name = "NAME")]
    pub replace: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// A new admin: its credentials file is written to --file, or printed.
    Create(AdminCreateArgs),
    /// Every certificate of the admin is refused from now on, by every master.
    Revoke(AdminNameArgs),
    /// The admins, revoked ones too, and when their certificates expire.
    List(ListArgs),
}

#[derive(Args)]
pub struct AdminCreateArgs {
    pub name: String,
    /// Where to write the new admin's credentials (not over an existing file).
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct AdminNameArgs {
    pub name: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Subcommand)]
pub enum NodeCommand {
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
pub struct NodeVarsArgs {
    pub name: String,
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    pub vars: Vec<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct NodeLabelArgs {
    pub name: String,
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct NodeArgs {
    pub name: String,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct JobsArgs {
    /// How many to list.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Subcommand)]
pub enum CronJobCommand {
    /// Start the CronJob's TaskBook now, whatever its schedule and concurrency policy;
    /// prints the job id.
    Run(CronJobArgs),
}

#[derive(Args)]
pub struct CronJobArgs {
    pub name: String,
    /// The CronJob's namespace (default: `default`).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct EventsArgs {
    /// Keep printing events as they are stored, until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Only this type; a trailing `*` matches a prefix (`disk.*`).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Only events from this node.
    #[arg(long = "node", value_name = "NODE")]
    pub node_name: Option<String>,
    /// Only this namespace (`system` holds the cluster's own events).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// How many of the newest to show first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// `json`: one event per line.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Ask the master to fetch a GitRepository now rather than at its next interval.
    Fetch(RepoFetchArgs),
}

#[derive(Args)]
pub struct RepoFetchArgs {
    /// The GitRepository's name.
    pub name: String,
    /// Its namespace (default: `default`).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// A job's steps, each node's state in each, and its recap.
    Show(JobShowArgs),
}

#[derive(Args)]
pub struct JobShowArgs {
    pub job_id: String,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `weft get --help`'s list of kinds, from the one list of them.
fn get_help() -> String {
    let kinds: Vec<String> = Kind::ALL
        .iter()
        .map(|kind| match kind.short_names().first() {
            Some(short) => format!("{kind} ({short})"),
            None => kind.to_string(),
        })
        .collect();
    let mut text = String::from("Kinds (in any case, singular or plural):");
    let mut line_length = text.len();
    for (index, kind) in kinds.iter().enumerate() {
        let separator = if index + 1 == kinds.len() { "." } else { "," };
        if line_length + 1 + kind.len() + 1 > 80 {
            text.push('\n');
            line_length = 0;
        } else {
            text.push(' ');
            line_length += 1;
        }
        text.push_str(kind);
        text.push_str(separator);
        line_length += kind.len() + 1;
    }
    text + "\n\nExamples:\n  weft get nodegroups\n  weft get secrets -n prod -o wide\n  weft get taskbook web -n prod -o yaml"
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("`{text}` is not a label: expected KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap checks at parse time only the path taken; this walks every subcommand's
    /// definition (conflicts, requirements, defaults that parse).
    #[test]
    fn every_subcommand_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_output_flags_read_what_the_commands_print() {
        let cli = Cli::try_parse_from(["weft", "get", "ng", "-o", "wide"]).unwrap();
        let Command::Get(get) = cli.command else {
            panic!("`weft get` parses as Get")
        };
        assert_eq!(get.output, ObjectOutput::Wide);
        let cli = Cli::try_parse_from(["weft", "nodes", "-o", "json"]).unwrap();
        let Command::Nodes(nodes) = cli.command else {
            panic!("`weft nodes` parses as Nodes")
        };
        assert_eq!(nodes.output, Output::Json);
    }
}
