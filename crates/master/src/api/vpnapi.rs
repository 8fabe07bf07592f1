//! A node's session: work goes down, facts, heartbeats and results come up.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use weft_proto::mesh::PeerUpdate;
use weft_proto::vpnapi::vpn_api_server::VpnApi;
use weft_proto::vpnapi::{
    master_message, node_message, Beacons, CheckPeerRequest, CheckPeerResponse, GetPeersRequest,
    LeaveRequest, LeaveResponse, MasterMessage, NodeMessage, RenewCertificateRequest,
    RenewCertificateResponse, RunStep,
};
use weft_taskbook::limits::{human_bytes, MAX_REGISTERED_BYTES};
use weft_taskbook::report::unix_ms;
use weft_taskbook::report::TaskResult;
use weft_taskbook::Vars;

use super::MasterContext;
use crate::core::beacons::BeaconReport;
use crate::core::events::{types, NewEvent};
use crate::core::job::{LateOutcome, LateReport, StepAssignment};
use crate::core::mesh::{Departure, Mesh};
use crate::core::node_registry::FactsRecord;
use crate::core::sessions::{MessageBudget, SessionHandle, StepEvent, ToNode};
use crate::store::{Store, MAX_WRITE_BYTES};

/// A node sends a heartbeat every 10 seconds; three missed and the session is over.
const SILENCE_LIMIT: Duration = Duration::from_secs(30);
/// A task result as stored: one store write, with room for its key and the names the
/// master sets (node, step).
const STORED_RESULT_BYTES: usize = MAX_WRITE_BYTES - 16 * 1024;
/// Messages of every kind a session may send: a burst holds a reconnect's resending
/// (up to 64 steps' results and 1,000 kept beacon events).
const SESSION_MESSAGE_BURST: u32 = 20_000;
const SESSION_MESSAGES_PER_SECOND: u32 = 1_000;
/// Beacon events, each stored: a check reports only transitions, at most one a second.
const SESSION_EVENT_BURST: u32 = 2_000;
const SESSION_EVENTS_PER_SECOND: u32 = 20;

pub struct VpnApiService<S> {
    pub context: Arc<MasterContext<S>>,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<MasterMessage, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store + Clone> VpnApi for VpnApiService<S> {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let node = self.context.require_node(&request).await?;
        self.context.require_leader()?;
        let SessionHandle {
            session_id,
            to_node,
            closed,
        } = self.context.sessions.open(&node);
        // A removal the leader handled between the check above and the opening found
        // no session to end: the node's record is looked at again now that one is open.
        if let Err(refused) = self.context.require_node(&request).await {
            self.context
                .sessions
                .close(&node, session_id, "removed while connecting");
            return Err(refused);
        }
        let inbound = request.into_inner();
        let closed_for_pushes = closed.clone();
        tracing::info!(%node, "node connected");
        let context = self.context.clone();
        tokio::spawn(async move {
            context
                .emit(NewEvent::system(types::NODE_ONLINE, Map::new()).from_node(&node))
                .await;
            let reason = serve_session(&context, &node, session_id, closed, inbound).await;
            context.sessions.close(&node, session_id, &reason);
            tracing::info!(%node, %reason, "node disconnected");
            // A node that reconnected at once is not lost.
            if !context.sessions.is_online(&node) {
                let data = Map::from_iter([("reason".to_string(), reason.clone().into())]);
                context
                    .emit(NewEvent::system(types::NODE_LOST, data).from_node(&node))
                    .await;
            }
            if let Err(error) = context
                .nodes
                .set_last_seen(&node, unix_ms(SystemTime::now()))
                .await
            {
                tracing::warn!(%node, %error, "last-seen time not recorded");
            }
        });
        // Work goes straight from the session's queue to the wire; the stream ends when
        // the session does (the node then reconnects, or learns it was removed). No
        // buffer of encoded messages per node: with thousands of nodes that adds up.
        let work = UnboundedReceiverStream::new(to_node).map(|message| {
            let kind = match message {
                ToNode::RunStep(assignment) => master_message::Kind::RunStep(run_step(&assignment)),
                ToNode::Beacons(beacons_json) => master_message::Kind::Beacons(Beacons {
                    beacons_json: beacons_json.to_string(),
                }),
            };
            Ok(MasterMessage { kind: Some(kind) })
        });
        let outbound: SessionStream = match &self.context.mesh {
            Some(mesh) => {
                let mut ended = closed_for_pushes;
                let session_over = async move {
                    let _ = ended.wait_for(|closed| *closed).await;
                };
                let pushes =
                    futures_util::StreamExt::take_until(peer_pushes(mesh.clone()), session_over);
                Box::pin(work.merge(pushes))
            }
            None => Box::pin(work),
        };
        Ok(Response::new(outbound))
    }

    async fn get_peers(
        &self,
        request: Request<GetPeersRequest>,
    ) -> Result<Response<PeerUpdate>, Status> {
        self.context.require_node(&request).await?;
        let mesh = self.mesh()?;
        let since = request.into_inner().since_version;
        Ok(Response::new(mesh.changes_since(since).await.into()))
    }

    async fn check_peer(
        &self,
        request: Request<CheckPeerRequest>,
    ) -> Result<Response<CheckPeerResponse>, Status> {
        let asking = self.context.require_node(&request).await?;
        let mesh = self.mesh()?;
        let node_name = request.into_inner().node_name;
        let member = mesh.is_member(&node_name).await;
        tracing::info!(%asking, peer = %node_name, member, "a node asked whether a silent peer is still a member");
        Ok(Response::new(CheckPeerResponse { member }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        let node = self.context.require_node(&request).await?;
        self.context.forget_node(&node, Departure::Left).await?;
        Ok(Response::new(LeaveResponse {}))
    }

    async fn renew_certificate(
        &self,
        request: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateResponse>, Status> {
        let cert_pem = self
            .context
            .renew_node_cert(&request, &request.get_ref().csr_der)
            .await?;
        Ok(Response::new(RenewCertificateResponse {
            cert_pem,
            ca_cert_pem: self.context.ca.trust_bundle_pem(),
        }))
    }
}

impl<S: Store + Clone> VpnApiService<S> {
    fn mesh(&self) -> Result<&Arc<Mesh<S>>, Status> {
        self.context.mesh.as_ref().ok_or_else(|| {
            Status::failed_precondition("this master runs without the mesh (--vpn off)")
        })
    }
}

/// Each new mesh version, as the changes since what this session sent last. A node
/// that finds an update not starting at its own version asks with `GetPeers`.
fn peer_pushes<S: Store>(
    mesh: Arc<Mesh<S>>,
) -> impl Stream<Item = Result<MasterMessage, Status>> + Send {
    let changes = mesh.changes();
    let sent = *changes.borrow();
    futures_util::stream::unfold(
        (mesh, changes, sent),
        |(mesh, mut changes, sent)| async move {
            changes.changed().await.ok()?;
            let update = mesh.changes_since(sent).await;
            let version = update.version;
            let message = MasterMessage {
                kind: Some(master_message::Kind::Peers(update.into())),
            };
            Some((Ok(message), (mesh, changes, version)))
        },
    )
}

/// Serves the node's session until it ends; returns why.
async fn serve_session<S: Store + Clone>(
    context: &MasterContext<S>,
    node: &str,
    session_id: u64,
    closed: watch::Receiver<bool>,
    inbound: Streaming<NodeMessage>,
) -> String {
    let mut late_refusals = 0;
    let reason = read_messages(
        context,
        node,
        session_id,
        closed,
        inbound,
        &mut late_refusals,
    )
    .await;
    if late_refusals > 1 {
        tracing::warn!(%node, late_refusals, "late reports were refused in this session");
    }
    reason
}

/// Handles the node's messages in order, within the session's budgets, until the
/// session ends; returns why.
async fn read_messages<S: Store + Clone>(
    context: &MasterContext<S>,
    node: &str,
    session_id: u64,
    mut closed: watch::Receiver<bool>,
    mut inbound: Streaming<NodeMessage>,
    late_refusals: &mut u64,
) -> String {
    let mut budgets = SessionBudgets {
        messages: MessageBudget::new(
            SESSION_MESSAGE_BURST,
            SESSION_MESSAGES_PER_SECOND,
            Instant::now(),
        ),
        events: MessageBudget::new(
            SESSION_EVENT_BURST,
            SESSION_EVENTS_PER_SECOND,
            Instant::now(),
        ),
    };
    loop {
        tokio::select! {
            message = tokio::time::timeout(SILENCE_LIMIT, inbound.message()) => {
                let message = match message {
                    Err(_) => return format!("no word from the node for {}s", SILENCE_LIMIT.as_secs()),
                    Ok(Err(status)) => return format!("the connection failed: {}", status.message()),
                    Ok(Ok(None)) => return "the node closed its session".to_string(),
                    Ok(Ok(Some(message))) => message,
                };
                if let Err(reason) = budgets.spend(&message) {
                    tracing::warn!(%node, %reason, "a node's session is over its message budget");
                    return reason;
                }
                if let Err(reason) = handle_message(context, node, session_id, message, late_refusals).await {
                    return reason;
                }
            }
            _ = closed.changed() => return "the master ended the session".to_string(),
        }
    }
}

/// A session's message budgets: every message, and beacon events on their own.
struct SessionBudgets {
    messages: MessageBudget,
    events: MessageBudget,
}

impl SessionBudgets {
    /// `Err` says why the session ends.
    fn spend(&mut self, message: &NodeMessage) -> Result<(), String> {
        let now = Instant::now();
        if !self.messages.take(now) {
            return Err(format!(
                "the node sent messages faster than a session allows ({}); the session is closed",
                self.messages.describe()
            ));
        }
        if matches!(message.kind, Some(node_message::Kind::BeaconEvent(_)))
            && !self.events.take(now)
        {
            return Err(format!(
                "the node sent beacon events faster than a session allows ({}); the session is closed",
                self.events.describe()
            ));
        }
        Ok(())
    }
}

/// `Err` is a protocol violation that ends the session. `late_refusals` counts the
/// session's refused late reports.
async fn handle_message<S: Store + Clone>(
    context: &MasterContext<S>,
    node: &str,
    session_id: u64,
    message: NodeMessage,
    late_refusals: &mut u64,
) -> Result<(), String> {
    let Some(kind) = message.kind else {
        return Err("an empty message".to_string());
    };
    let now_ms = unix_ms(SystemTime::now());
    match kind {
        node_message::Kind::Hello(hello) => {
            tracing::debug!(%node, version = %hello.weft_version, "hello");
        }
        node_message::Kind::Heartbeat(_) => {}
        node_message::Kind::Facts(facts) => {
            let facts = serde_json::from_str(&facts.facts_json)
                .map_err(|e| format!("facts are not JSON: {e}"))?;
            let record = FactsRecord {
                facts,
                updated_unix_ms: now_ms,
            };
            if let Err(error) = context.nodes.set_facts(node, &record).await {
                tracing::warn!(%node, %error, "facts not stored");
            }
            // Facts come first in every session, and Beacons may select by them.
            context.send_beacons(node).await;
        }
        node_message::Kind::BeaconEvent(report) => {
            let data: Map<String, Value> = serde_json::from_str(&report.data_json)
                .map_err(|e| format!("a beacon's data is not a JSON object: {e}"))?;
            let report = BeaconReport {
                namespace: report.namespace,
                beacon: report.beacon,
                fired: report.fired,
                data,
            };
            match context.beacons.event_for(node, report).await {
                Ok(event) => context.emit(event).await,
                Err(error) => tracing::warn!(%node, %error, "beacon report refused"),
            }
        }
        node_message::Kind::TaskResult(report) => {
            let mut result: TaskResult = serde_json::from_str(&report.result_json)
                .map_err(|e| format!("a task result is not weft.run/v1 JSON: {e}"))?;
            if report.result_json.len() > STORED_RESULT_BYTES {
                // Cut as a node cuts its own, saying so, rather than fail to store it.
                result = serde_json::from_str(&result.into_bounded_json(STORED_RESULT_BYTES))
                    .map_err(|e| format!("a task result could not be cut to size: {e}"))?;
            }
            let event = StepEvent::Result {
                sequence: report.sequence,
                result: Box::new(result),
            };
            deliver(
                context,
                node,
                session_id,
                &report.job_id,
                report.step_index,
                event,
                now_ms,
                late_refusals,
            )
            .await;
        }
        node_message::Kind::StepDone(done) => {
            // A minion fails a step that registered more, so this is no minion's doing.
            if done.registered_json.len() > MAX_REGISTERED_BYTES {
                return Err(format!(
                    "the node handed on {} of registered results, more than the {} a step may",
                    human_bytes(done.registered_json.len()),
                    human_bytes(MAX_REGISTERED_BYTES)
                ));
            }
            let registered: Vars = if done.registered_json.is_empty() {
                Vars::new()
            } else {
                serde_json::from_str(&done.registered_json)
                    .map_err(|e| format!("registered results are not a JSON object: {e}"))?
            };
            let event = StepEvent::Done {
                failed: done.failed,
                registered,
            };
            deliver(
                context,
                node,
                session_id,
                &done.job_id,
                done.step_index,
                event,
                now_ms,
                late_refusals,
            )
            .await;
        }
    }
    Ok(())
}

/// Hands the report to the job waiting for it, or keeps it as late. Only the first
/// refused late report of a session is a warning: a node cannot flood the log.
#[allow(clippy::too_many_arguments)]
async fn deliver<S: Store + Clone>(
    context: &MasterContext<S>,
    node: &str,
    session_id: u64,
    job_id: &str,
    step_index: u32,
    event: StepEvent,
    now_ms: u64,
    late_refusals: &mut u64,
) {
    let Some(unwaited) = context
        .sessions
        .deliver(node, session_id, job_id, step_index, event)
    else {
        return;
    };
    let late = match unwaited {
        StepEvent::Result {
            sequence,
            mut result,
        } => {
            result.node = node.to_string();
            LateReport::Result { sequence, result }
        }
        StepEvent::Done { failed, .. } => LateReport::Done { failed },
        StepEvent::Lost(_) => return,
    };
    match context
        .runner
        .record_late(job_id, node, step_index, late, now_ms)
        .await
    {
        Ok(LateOutcome::Stored) => {
            tracing::info!(%node, job = %job_id, step = step_index + 1, "a late report was stored")
        }
        Ok(LateOutcome::AlreadyStored) => {}
        Ok(LateOutcome::Refused(refused)) => {
            *late_refusals += 1;
            if *late_refusals == 1 {
                tracing::warn!(%node, job = %job_id, step = step_index + 1, %refused, "a late report was refused (the session's next ones are counted when it ends)")
            } else {
                tracing::debug!(%node, job = %job_id, step = step_index + 1, %refused, "a late report was refused")
            }
        }
        Err(error) => {
            tracing::warn!(%node, job = %job_id, %error, "a late report was not stored")
        }
    }
}

fn run_step(assignment: &StepAssignment) -> RunStep {
    RunStep {
        job_id: assignment.job_id.clone(),
        step_index: assignment.step_index,
        taskbook_file: assignment.bundle.taskbook_file.clone(),
        files: assignment
            .bundle
            .files
            .iter()
            .map(|(path, content)| (path.clone(), content.clone()))
            .collect(),
        cluster_vars_json: to_json(&*assignment.cluster_vars),
        secrets_json: match &*assignment.secrets {
            serde_json::Value::Object(secrets) if !secrets.is_empty() => {
                to_json(&*assignment.secrets)
            }
            _ => String::new(),
        },
        check_mode: assignment.check_mode,
        diff: assignment.diff,
        tags: assignment.tags.to_vec(),
        skip_tags: assignment.skip_tags.to_vec(),
        extra_vars_json: assignment.extra_vars.iter().map(to_json).collect(),
        context_json: to_json(&assignment.context),
        registered_json: to_json(&assignment.registered),
        run_once_node: assignment.run_once_node.clone().unwrap_or_default(),
    }
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("JSON values always serialize")
}
