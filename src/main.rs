//! The one `weft` binary: parses the command line and calls into the crates.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use weft_cli::args::{
    AdminArgs, AdminCommand, Cli, Command, CronJobCommand, JobCommand, MasterArgs, MasterCommand,
    MasterInitArgs, MasterRotateCaArgs, MinionArgs, MinionCommand, MinionJoinArgs, MinionLeaveArgs,
    NodeCommand, RepoCommand, RunCommand, RunTaskbookArgs, TokenCommand, VpnMode,
};
use weft_cli::output::Output;
use weft_cli::run::RemoteRun;
use weft_cli::CliError;
use weft_master::daemon::{MasterError, MasterOptions, MasterVpnOptions};
use weft_master::init::{InitOptions, Initialized};
use weft_master::store::etcd_settings::PLAIN_HTTP_WARNING;
use weft_minion::agent::{AgentOptions, FactsSource};
use weft_minion::executor::RunOptions;
use weft_minion::identity::MinionIdentity;
use weft_minion::join::{JoinOptions, JoinVpnOptions};
use weft_minion::local::{run_local, LocalRun};
use weft_minion::mesh::NodeMesh;
use weft_taskbook::objects::JobRetention;
use weft_taskbook::report::{RunObserver, RunReport, Silent, TextPrinter};
use weft_taskbook::vars::parse_extra_vars;
use weft_taskbook::{Error, Vars};

/// Counts what each thread allocates, so that a rendering stops at its memory bound.
#[global_allocator]
static ALLOCATOR: weft_taskbook::render::CountingAllocator =
    weft_taskbook::render::CountingAllocator;

/// Exit statuses, as documented in `weft --help`.
const EXIT_INPUT_ERROR: u8 = 1;
const EXIT_TASK_FAILED: u8 = 2;

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
            weft_cli::token::list_tokens(&mut client, args.output).await
        }),
        Command::Token(TokenCommand::Delete(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::token::delete_token(&mut client, &args.id).await
        }),
        Command::Masters(args) => {
            let config = args.admin.config.clone();
            admin(&args.admin, |mut client| async move {
                let (_, credentials) = weft_cli::admin::read_credentials(config.as_deref())?;
                weft_cli::masters::list_masters(&mut client, &credentials, args.output).await
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
            weft_cli::admin::list_admins(&mut client, args.output).await
        }),
        Command::Nodes(args) => admin(&args.admin, |mut client| async move {
            weft_cli::nodes::list_nodes(&mut client, args.output).await
        }),
        Command::Node(NodeCommand::Show(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::nodes::show_node(&mut client, &args.name, args.output).await
        }),
        Command::Node(NodeCommand::Remove(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::nodes::remove_node(&mut client, &args.name).await
        }),
        Command::Jobs(args) => admin(&args.admin, |mut client| async move {
            weft_cli::jobs::list_jobs(&mut client, args.limit, args.output).await
        }),
        Command::Job(JobCommand::Show(args)) => admin(&args.admin, |mut client| async move {
            weft_cli::jobs::show_job(&mut client, &args.job_id, args.output).await
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
            weft_cli::events::list_events(&mut client, query, args.output).await
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
            let output = args.output;
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
        output: args.output,
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
