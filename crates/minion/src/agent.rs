//! `weft minion`: keeps one session with the master, sends facts and heartbeats, and
//! runs the steps the master sends, one at a time, in the order they came.
//!
//! Work is never thrown away when the master goes: a step that is running finishes,
//! and its results are kept and sent again once a session is back (the master stores
//! each result once). Reconnects back off exponentially with full jitter, so a master
//! restart is not met by every node at the same instant.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use weft_modules::facts::{add_installed_package_count, gather_facts, same_facts};
use weft_modules::sync::SYNCED_VAR;
use weft_modules::{CustomModules, ModuleDirs};
use weft_proto::credentials::ClientCredentials;
use weft_proto::tls::mtls_endpoint;
use weft_proto::vpnapi::vpn_api_client::VpnApiClient;
use weft_proto::vpnapi::{
    master_message, node_message, BeaconEvent, Facts, Heartbeat, Hello, NodeMessage, RunStep,
    StepDone, TaskResult,
};
use weft_taskbook::bundle::Bundle;
use weft_taskbook::limits::{
    human_bytes, MAX_MESSAGE_BYTES, MAX_REGISTERED_BYTES, MAX_TASK_RESULT_BYTES,
};
use weft_taskbook::objects::BeaconAssignment;
use weft_taskbook::report::{unix_ms_now, TaskStatus};
use weft_taskbook::secrets::SecretMask;
use weft_taskbook::Vars;

use crate::beacons::BeaconRunner;
use crate::executor::{NodeExecutor, RunOptions};
use crate::identity::MinionIdentity;
use crate::mesh::{apply_update, keep_mesh, resync, NodeMesh};
use crate::MinionError;

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
const FACTS_INTERVAL: Duration = Duration::from_secs(60);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A renewal that failed is tried again after this, while the certificate still works.
const RENEWAL_RETRY: Duration = Duration::from_secs(15);
/// A session that lasted this long was a good one: the next reconnect starts fresh.
const SESSION_SETTLED: Duration = Duration::from_secs(30);
/// A step finished this long before its session ended is taken as received.
const DELIVERY_MARGIN: Duration = Duration::from_secs(5);
/// Steps whose reports are kept for sending again.
const KEPT_STEPS: usize = 64;
/// Beacon events kept while no master can be reached.
const KEPT_EVENTS: usize = 1000;

/// Where facts come from: gathered from this machine, or given (simulated swarms).
#[derive(Clone)]
pub enum FactsSource {
    Gather,
    Fixed(Value),
}

impl FactsSource {
    fn facts(&self) -> Value {
        match self {
            FactsSource::Gather => match gather_facts() {
                Ok(mut facts) => {
                    add_installed_package_count(&mut facts);
                    facts
                }
                Err(error) => {
                    tracing::warn!(%error, "facts could not be gathered");
                    json!({})
                }
            },
            FactsSource::Fixed(facts) => facts.clone(),
        }
    }
}

pub struct AgentOptions {
    pub identity: MinionIdentity,
    /// Where the identity is kept: a renewed certificate is written there.
    pub data_dir: PathBuf,
    /// Where step bundles are unpacked while they run.
    pub work_dir: PathBuf,
    pub facts: FactsSource,
    /// The node's interface, already up (see `mesh::NodeMesh::start`); `None` without the mesh.
    pub mesh: Option<Arc<NodeMesh>>,
    /// How long a peer may go without a handshake before the master is asked about it.
    pub peer_timeout: Duration,
}

/// One step's reports, kept until the master surely has them.
struct StepLog {
    job_id: String,
    step_index: u32,
    messages: Vec<NodeMessage>,
    /// When the step ended and on which session its end was sent.
    done_sent: Option<(u64, Instant)>,
}

/// The current session (if any) and the reports that may need sending again.
#[derive(Default)]
struct Outbox {
    session: Option<(u64, mpsc::UnboundedSender<NodeMessage>)>,
    steps: VecDeque<StepLog>,
    /// Beacon events made while no session was up, oldest first.
    events: VecDeque<NodeMessage>,
}

#[derive(Clone, Default)]
struct SharedOutbox(Arc<Mutex<Outbox>>);

impl SharedOutbox {
    fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, message: NodeMessage) {
        if let Some((_, session)) = &self.lock().session {
            let _ = session.send(message);
        }
    }

    /// Sends a beacon event now, or with the next session's hello.
    fn send_event(&self, event: BeaconEvent) {
        let message = NodeMessage {
            kind: Some(node_message::Kind::BeaconEvent(event)),
        };
        let mut outbox = self.lock();
        if let Some((_, session)) = &outbox.session {
            if session.send(message.clone()).is_ok() {
                return;
            }
        }
        if outbox.events.len() >= KEPT_EVENTS {
            outbox.events.pop_front();
            tracing::warn!(
                kept = KEPT_EVENTS,
                "beacon events pile up without a master: the oldest is dropped"
            );
        }
        outbox.events.push_back(message);
    }

    /// Sends a step's report and keeps it.
    fn report(&self, job_id: &str, step_index: u32, message: NodeMessage) {
        let mut outbox = self.lock();
        let done = matches!(message.kind, Some(node_message::Kind::StepDone(_)));
        let session = outbox.session.clone();
        if let Some((_, sender)) = &session {
            let _ = sender.send(message.clone());
        }
        let position = outbox
            .steps
            .iter()
            .position(|s| s.job_id == job_id && s.step_index == step_index);
        let log = match position {
            Some(position) => &mut outbox.steps[position],
            None => {
                outbox.steps.push_back(StepLog {
                    job_id: job_id.to_string(),
                    step_index,
                    messages: Vec::new(),
                    done_sent: None,
                });
                outbox.steps.back_mut().expect("just pushed")
            }
        };
        log.messages.push(message);
        if done {
            log.done_sent = session.map(|(id, _)| (id, Instant::now()));
        }
        while outbox.steps.len() > KEPT_STEPS {
            outbox.steps.pop_front();
        }
    }

    /// A new session: says hello, then sends again every report the master may lack.
    fn attach(&self, session_id: u64, sender: mpsc::UnboundedSender<NodeMessage>, facts: &Value) {
        let mut outbox = self.lock();
        let hello = NodeMessage {
            kind: Some(node_message::Kind::Hello(Hello {
                weft_version: env!("CARGO_PKG_VERSION").to_string(),
            })),
        };
        let _ = sender.send(hello);
        let _ = sender.send(facts_message(facts));
        for event in outbox.events.drain(..) {
            let _ = sender.send(event);
        }
        let now = Instant::now();
        for log in &mut outbox.steps {
            for message in &log.messages {
                let _ = sender.send(message.clone());
            }
            if log.done_sent.is_some() {
                log.done_sent = Some((session_id, now));
            }
        }
        outbox.session = Some((session_id, sender));
    }

    /// The session ended: steps whose end went out well before are taken as received.
    fn detach(&self, session_id: u64) {
        let mut outbox = self.lock();
        if outbox
            .session
            .as_ref()
            .is_some_and(|(id, _)| *id == session_id)
        {
            outbox.session = None;
        }
        let now = Instant::now();
        outbox.steps.retain(|log| match log.done_sent {
            Some((id, at)) => id != session_id || now.duration_since(at) < DELIVERY_MARGIN,
            None => true,
        });
    }

    /// While a session lasts, steps it delivered long enough ago are forgotten.
    fn prune(&self) {
        let mut outbox = self.lock();
        let Some(current) = outbox.session.as_ref().map(|(id, _)| *id) else {
            return;
        };
        let now = Instant::now();
        outbox.steps.retain(|log| {
            !matches!(log.done_sent, Some((id, at)) if id == current && now.duration_since(at) >= DELIVERY_MARGIN)
        });
    }
}

fn facts_message(facts: &Value) -> NodeMessage {
    NodeMessage {
        kind: Some(node_message::Kind::Facts(Facts {
            facts_json: facts.to_string(),
        })),
    }
}

/// Runs until `shutdown` completes. Only a bad identity is an error: a master that
/// cannot be reached is retried for as long as it takes.
pub async fn run_agent(
    options: AgentOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MinionError> {
    let mut identity = options.identity.clone();
    let mut endpoints = session_endpoints(&identity.credentials)?;
    std::fs::create_dir_all(&options.work_dir)
        .map_err(|e| MinionError::Io(format!("{}: {e}", options.work_dir.display())))?;

    let outbox = SharedOutbox::default();
    let facts = Arc::new(Mutex::new(options.facts.facts()));
    let (steps, step_queue) = mpsc::unbounded_channel();
    tokio::spawn(run_steps(
        step_queue,
        identity.node_name.clone(),
        options.work_dir.clone(),
        facts.clone(),
        outbox.clone(),
    ));
    tokio::spawn(keep_in_touch(
        options.facts.clone(),
        facts.clone(),
        outbox.clone(),
    ));
    let beacons = {
        let outbox = outbox.clone();
        Mutex::new(BeaconRunner::new(Arc::new(move |event| {
            outbox.send_event(event)
        })))
    };
    // The current session's connection, for the mesh's polls and questions.
    let (connection, connection_rx) = watch::channel(None);
    if let Some(mesh) = &options.mesh {
        tokio::spawn(keep_mesh(mesh.clone(), connection_rx, options.peer_timeout));
    }
    let mesh = options.mesh.as_ref();

    let sessions = async {
        let mut attempt: u32 = 0;
        let mut session_id = 0;
        let mut renewed = None;
        loop {
            let endpoint = &endpoints[attempt as usize % endpoints.len()];
            session_id += 1;
            let started = Instant::now();
            let link = SessionLink {
                session_id,
                facts: &facts,
                outbox: &outbox,
                steps: &steps,
                beacons: &beacons,
                mesh,
                connection: &connection,
                identity: &identity,
                data_dir: &options.data_dir,
                renewed: &mut renewed,
            };
            let ended = session(endpoint.clone(), link).await;
            connection.send_replace(None);
            outbox.detach(session_id);
            if let Some(identity_renewed) = renewed.take() {
                match session_endpoints(&identity_renewed.credentials) {
                    Ok(renewed_endpoints) => {
                        tracing::info!(node = %identity.node_name, "node certificate renewed; reconnecting with it");
                        identity = identity_renewed;
                        endpoints = renewed_endpoints;
                        continue;
                    }
                    Err(error) => tracing::error!(%error, "the renewed credentials are unusable"),
                }
            }
            if started.elapsed() >= SESSION_SETTLED {
                attempt = 0;
            }
            // The delay grows per round of masters, not per master: with several, a
            // dead leader and standbys that refuse must not push the new leader far off.
            let delay = backoff(attempt / endpoints.len() as u32);
            tracing::warn!(node = %identity.node_name, reason = %ended, retry_in_ms = delay.as_millis() as u64, "no session with the master");
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
        }
    };
    tokio::select! {
        _ = sessions => unreachable!("the session loop never ends"),
        _ = shutdown => Ok(()),
    }
}

/// Where sessions go, with the node's current certificate.
fn session_endpoints(
    credentials: &ClientCredentials,
) -> Result<Vec<tonic::transport::Endpoint>, MinionError> {
    let endpoints = credentials
        .master_endpoints
        .iter()
        .map(|endpoint| {
            mtls_endpoint(
                endpoint,
                &credentials.ca_cert_pem,
                &credentials.cert_pem,
                &credentials.key_pem,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(MinionError::NoMaster);
    }
    Ok(endpoints)
}

/// Exponential backoff with full jitter: a random delay up to the doubled cap.
fn backoff(attempt: u32) -> Duration {
    let cap = BACKOFF_FIRST
        .saturating_mul(1 << attempt.min(16))
        .min(BACKOFF_MAX);
    let millis = rand::rng().random_range(cap.as_millis() as u64 / 4..=cap.as_millis() as u64);
    Duration::from_millis(millis)
}

/// What a session reaches besides its connection.
struct SessionLink<'a> {
    session_id: u64,
    facts: &'a Mutex<Value>,
    outbox: &'a SharedOutbox,
    steps: &'a mpsc::UnboundedSender<RunStep>,
    beacons: &'a Mutex<BeaconRunner>,
    mesh: Option<&'a Arc<NodeMesh>>,
    connection: &'a watch::Sender<Option<Channel>>,
    identity: &'a MinionIdentity,
    data_dir: &'a Path,
    /// Set when the session ended to renew the node's certificate.
    renewed: &'a mut Option<MinionIdentity>,
}

/// One session, until it ends; returns why.
async fn session(endpoint: tonic::transport::Endpoint, link: SessionLink<'_>) -> String {
    let SessionLink {
        session_id,
        facts,
        outbox,
        steps,
        beacons,
        mesh,
        connection,
        identity,
        data_dir,
        renewed,
    } = link;
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(error) => return format!("cannot connect to {}: {error}", endpoint.uri()),
    };
    if let Some(mesh) = mesh {
        // Whatever changed while this node was away.
        tokio::spawn({
            let (mesh, channel) = (mesh.clone(), channel.clone());
            async move { resync(&mesh, &channel).await }
        });
    }
    connection.send_replace(Some(channel.clone()));
    let mut client = VpnApiClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (sender, receiver) = mpsc::unbounded_channel();
    let current_facts = facts.lock().unwrap_or_else(PoisonError::into_inner).clone();
    outbox.attach(session_id, sender, &current_facts);
    let mut inbound = match client.session(UnboundedReceiverStream::new(receiver)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return format!("the master refused the session: {}", status.message()),
    };
    tracing::info!(endpoint = %endpoint.uri(), "session with the master");
    let mut renewal_due = identity.renewal_due();
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            () = sleep_until_due(renewal_due) => {
                match identity.renew(&channel, data_dir).await {
                    Ok(identity_renewed) => {
                        *renewed = Some(identity_renewed);
                        return "the node's certificate was renewed".to_string();
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in_s = RENEWAL_RETRY.as_secs(), "the node's certificate could not be renewed");
                        renewal_due = Some(Instant::now() + RENEWAL_RETRY);
                        continue;
                    }
                }
            }
        };
        match message {
            Ok(Some(message)) => match message.kind {
                Some(master_message::Kind::RunStep(step)) => {
                    let _ = steps.send(step);
                }
                Some(master_message::Kind::Peers(update)) => {
                    if let Some(mesh) = mesh {
                        apply_update(mesh, update.into(), &channel).await;
                    }
                }
                Some(master_message::Kind::Beacons(set)) => {
                    match serde_json::from_str::<Vec<BeaconAssignment>>(&set.beacons_json) {
                        Ok(set) => beacons
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .apply(set),
                        Err(error) => {
                            return format!(
                                "the master sent beacons this node cannot read: {error}"
                            )
                        }
                    }
                }
                None => return "the master sent an empty message".to_string(),
            },
            Ok(None) => return "the master ended the session".to_string(),
            Err(status) => return format!("the session failed: {}", status.message()),
        }
    }
}

async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// Heartbeats, and facts again whenever they change.
async fn keep_in_touch(source: FactsSource, facts: Arc<Mutex<Value>>, outbox: SharedOutbox) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut facts_refresh = tokio::time::interval(FACTS_INTERVAL);
    facts_refresh.tick().await;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                outbox.prune();
                outbox.send(NodeMessage { kind: Some(node_message::Kind::Heartbeat(Heartbeat { unix_ms: unix_ms_now() })) });
            }
            _ = facts_refresh.tick() => {
                let source = source.clone();
                let Ok(fresh) = tokio::task::spawn_blocking(move || source.facts()).await else { continue };
                let changed = {
                    let mut current = facts.lock().unwrap_or_else(PoisonError::into_inner);
                    let changed = !same_facts(&current, &fresh);
                    *current = fresh.clone();
                    changed
                };
                if changed {
                    outbox.send(facts_message(&fresh));
                }
            }
        }
    }
}

/// Steps run one after another, off the async workers.
async fn run_steps(
    mut queue: mpsc::UnboundedReceiver<RunStep>,
    node_name: String,
    work_dir: PathBuf,
    facts: Arc<Mutex<Value>>,
    outbox: SharedOutbox,
) {
    while let Some(step) = queue.recv().await {
        let node_name = node_name.clone();
        let work_dir = work_dir.clone();
        let facts = facts.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let outbox = outbox.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let (job_id, step_index) = (step.job_id.clone(), step.step_index);
            run_step(step, &node_name, &work_dir, facts, &mut |message| {
                outbox.report(&job_id, step_index, message)
            });
        })
        .await;
        if let Err(error) = ran {
            tracing::error!(%error, "a step's worker failed");
        }
    }
}

/// Runs one step and reports every result, then the step's end.
fn run_step(
    step: RunStep,
    node_name: &str,
    work_dir: &std::path::Path,
    facts: Value,
    emit: &mut dyn FnMut(NodeMessage),
) {
    let (job_id, step_index) = (step.job_id.clone(), step.step_index);
    let mut sequence = 0;
    let mut emit_result = |result: weft_taskbook::report::TaskResult,
                           emit: &mut dyn FnMut(NodeMessage)| {
        emit(NodeMessage {
            kind: Some(node_message::Kind::TaskResult(TaskResult {
                job_id: job_id.clone(),
                step_index,
                sequence,
                result_json: result.into_bounded_json(MAX_TASK_RESULT_BYTES),
            })),
        });
        sequence += 1;
    };
    let outcome = execute(&step, node_name, work_dir, facts, &mut |result| {
        emit_result(result, emit)
    });
    let step_failure = |error: String| weft_taskbook::report::TaskResult {
        node: node_name.to_string(),
        step: format!("step {}", step_index + 1),
        task: String::new(),
        module: String::new(),
        location: step.taskbook_file.clone(),
        handler: false,
        status: TaskStatus::Failed,
        msg: Some(error),
        diff: None,
        items: Vec::new(),
        output: Value::Null,
        attempts: 0,
        started_unix_ms: unix_ms_now(),
        duration_ms: 0.0,
    };
    let (mut failed, registered) = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            emit_result(step_failure(error), emit);
            (true, Vars::new())
        }
    };
    let mut registered_json = Value::Object(registered).to_string();
    // The step's end carries them in one message, beside little else.
    if registered_json.len() > MAX_REGISTERED_BYTES {
        let error = format!(
            "this step's registered results weigh {}, more than the {} a step may hand on; later steps and other nodes cannot read them (register less, or only what later tasks need)",
            human_bytes(registered_json.len()),
            human_bytes(MAX_REGISTERED_BYTES)
        );
        emit_result(step_failure(error), emit);
        failed = true;
        registered_json = "{}".to_string();
    }
    emit(NodeMessage {
        kind: Some(node_message::Kind::StepDone(StepDone {
            job_id,
            step_index,
            failed,
            registered_json,
        })),
    });
}

/// `Err` is a step that could not start (a bundle or variables this node cannot read).
fn execute(
    step: &RunStep,
    node_name: &str,
    work_dir: &std::path::Path,
    facts: Value,
    emit: &mut dyn FnMut(weft_taskbook::report::TaskResult),
) -> Result<(bool, Vars), String> {
    let dir = tempfile::tempdir_in(work_dir)
        .map_err(|e| format!("cannot unpack the step in {}: {e}", work_dir.display()))?;
    let bundle = Bundle {
        taskbook_file: step.taskbook_file.clone(),
        files: step.files.clone().into_iter().collect(),
    };
    // Custom modules are taken to be on the nodes even here: a node lacking one then
    // fails that task, not the whole step.
    let taskbook = bundle
        .load_taskbook(dir.path(), &CustomModules::OnNodes)
        .map_err(|e| e.to_string())?;
    let index = step.step_index as usize;
    if index >= taskbook.steps.len() {
        return Err(format!("the TaskBook has no step {}", index + 1));
    }
    let parse = |what: &str, json: &str| -> Result<Value, String> {
        if json.is_empty() {
            return Ok(Value::Object(Vars::new()));
        }
        serde_json::from_str(json)
            .map_err(|e| format!("the master sent {what} that are not JSON: {e}"))
    };
    let as_vars = |value: Value| match value {
        Value::Object(vars) => vars,
        _ => Vars::new(),
    };
    let context = parse("the context", &step.context_json)?;
    let registered = as_vars(parse("registered results", &step.registered_json)?);
    let cluster_vars = as_vars(parse("cluster variables", &step.cluster_vars_json)?);
    // Kept in memory for this step only, and masked in everything the node sends back.
    let secrets = parse("secrets", &step.secrets_json)?;
    let secret_mask = SecretMask::new(&secrets);
    let extra_vars = step
        .extra_vars_json
        .iter()
        .map(|json| parse("extra variables", json).map(as_vars))
        .collect::<Result<Vec<_>, _>>()?;

    let mut base = tera::Context::new();
    base.insert("facts", &facts);
    base.insert(
        "node",
        &context
            .get("node")
            .cloned()
            .unwrap_or_else(|| json!({"name": node_name})),
    );
    base.insert(
        "nodes",
        &context.get("nodes").cloned().unwrap_or_else(|| json!({})),
    );
    base.insert("secrets", &secrets);
    if let Some(synced) = context.get(SYNCED_VAR) {
        base.insert(SYNCED_VAR, synced);
    }
    let mut executor =
        NodeExecutor::new(node_name, base, ModuleDirs::from_env()).with_registered(registered);
    let options = RunOptions {
        check_mode: step.check_mode,
        diff: step.diff,
        tags: step.tags.clone(),
        skip_tags: step.skip_tags.clone(),
        run_once_node: (!step.run_once_node.is_empty()).then(|| step.run_once_node.clone()),
    };
    // Results name files as the bundle does, not by where this node unpacked it.
    let unpacked = format!("{}/", dir.path().display());
    executor
        .run_taskbook_step(
            &taskbook,
            index,
            &cluster_vars,
            &extra_vars,
            &options,
            &mut |mut result| {
                result.location = result.location.replace(&unpacked, "");
                result.msg = result.msg.map(|msg| msg.replace(&unpacked, ""));
                emit(secret_mask.mask_result(result));
            },
        )
        .map_err(|e| secret_mask.mask_text(&e.to_string().replace(&unpacked, "")))?;
    let mut registered = executor.registered().clone();
    registered
        .values_mut()
        .for_each(|value| secret_mask.mask_value(value));
    Ok((executor.failed, registered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_is_jittered() {
        let delays: Vec<Duration> = (0..200).map(|_| backoff(20)).collect();
        assert!(delays
            .iter()
            .all(|d| *d <= BACKOFF_MAX && *d >= BACKOFF_MAX / 4));
        assert!(delays.iter().any(|d| *d != delays[0]), "no jitter");
        assert!(backoff(0) <= BACKOFF_FIRST);
    }

    fn result_message(sequence: u32) -> NodeMessage {
        NodeMessage {
            kind: Some(node_message::Kind::TaskResult(TaskResult {
                job_id: "j".into(),
                step_index: 0,
                sequence,
                result_json: "{}".into(),
            })),
        }
    }

    #[test]
    fn reports_made_while_disconnected_are_sent_after_hello() {
        let outbox = SharedOutbox::default();
        outbox.report("j", 0, result_message(0));
        outbox.report("j", 0, result_message(1));
        let (sender, mut receiver) = mpsc::unbounded_channel();
        outbox.attach(1, sender, &json!({}));
        let kinds: Vec<_> = std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|m| match m.kind {
                Some(node_message::Kind::Hello(_)) => "hello".to_string(),
                Some(node_message::Kind::Facts(_)) => "facts".to_string(),
                Some(node_message::Kind::TaskResult(r)) => format!("result {}", r.sequence),
                _ => "other".to_string(),
            })
            .collect();
        assert_eq!(kinds, ["hello", "facts", "result 0", "result 1"]);
    }

    #[test]
    fn a_step_whose_end_was_just_sent_is_sent_again_after_a_drop() {
        let outbox = SharedOutbox::default();
        let (sender, _receiver) = mpsc::unbounded_channel();
        outbox.attach(1, sender, &json!({}));
        let done = NodeMessage {
            kind: Some(node_message::Kind::StepDone(StepDone::default())),
        };
        outbox.report("j", 0, done);
        outbox.detach(1);
        // The end went out a moment before the drop: the master may not have it.
        assert_eq!(outbox.lock().steps.len(), 1);
    }
}
