//! The admin CLI's calls; every one needs the admin certificate.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use weft_proto::adminapi::admin_api_server::AdminApi;
use weft_proto::adminapi::{
    run_event, AppliedObject, ApplyObjectsRequest, ApplyObjectsResponse, CreateTokenRequest,
    CreateTokenResponse, DeleteObjectRequest, DeleteObjectResponse, EventMessage,
    FetchRepositoryRequest, FetchRepositoryResponse, GetFactsRequest, GetFactsResponse,
    GetJobRequest, GetNodeRequest, GetObjectsRequest, GetObjectsResponse, Job, JobStarted,
    LabelNodeRequest, ListEventsRequest, ListJobsRequest, ListJobsResponse, ListMastersRequest,
    ListMastersResponse, ListNodesRequest, ListNodesResponse, MasterInfo, Node, NodeStepDone,
    RemoveNodeRequest, RemoveNodeResponse, ResolveVarsRequest, ResolveVarsResponse,
    RunCronJobRequest, RunCronJobResponse, RunEvent, RunTaskBookRequest, SetNodeVarsRequest,
    SetNodeVarsResponse, StepStarted, StoredObject,
};
use weft_proto::adminapi::{
    Admin, CreateAdminRequest, CreateAdminResponse, DeleteTokenRequest, DeleteTokenResponse,
    ListAdminsRequest, ListAdminsResponse, ListTokensRequest, ListTokensResponse,
    RenewAdminCertificateRequest, RenewAdminCertificateResponse, RevokeAdminRequest,
    RevokeAdminResponse, TokenInfo,
};
use weft_taskbook::bundle::Bundle;
use weft_taskbook::objects::{parse_objects, validate_labels, AnyObject, Kind, UnknownKind};
use weft_taskbook::selector::NodeSelector;
use weft_taskbook::taskbook::{is_identifier, TaskBookRef};
use weft_taskbook::Vars;

use weft_taskbook::report::unix_ms;

use super::MasterContext;
use crate::core::admin_registry::AdminRegistryError;
use crate::core::cron_jobs::CronJobError;
use crate::core::events::{EventFilter, EventRecord};
use crate::core::git_repositories::{GitError, RepoId};
use crate::core::job::{JobOrigin, JobRecord, JobStoreError};
use crate::core::mesh::Departure;
use crate::core::node_registry::NodeRecord;
use crate::core::objects::{
    namespace_for, ApplyAction, ObjectError, StoredObject as CoreStoredObject, DEFAULT_NAMESPACE,
};
use crate::core::pki::{CertTerms, PkiError};
use crate::core::run::{JobEvent, RunError, RunRequest, RunScope};
use crate::core::token::{TokenRecord, DEFAULT_TOKEN_TTL};
use crate::core::token_registry::TokenRegistryError;
use crate::store::Store;

const DEFAULT_JOBS_LISTED: usize = 50;

pub struct AdminApiService<S> {
    pub context: Arc<MasterContext<S>>,
}

type RunStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;
type EventStream = Pin<Box<dyn Stream<Item = Result<EventMessage, Status>> + Send>>;
/// `weft events` shows this many unless asked for another number.
const DEFAULT_EVENT_LIMIT: usize = 100;
/// And at most this many (the store keeps more).
const MAX_EVENT_LIMIT: usize = 10_000;

fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
}

fn run_status(error: RunError) -> Status {
    match error {
        RunError::Input(_) => Status::invalid_argument(error.to_string()),
        RunError::Objects(error) => object_status(*error),
        other => internal(other),
    }
}

fn object_status(error: ObjectError) -> Status {
    match error {
        ObjectError::Invalid(_) | ObjectError::Refused(_) => {
            Status::invalid_argument(error.to_string())
        }
        ObjectError::Stale { .. } => Status::aborted(error.to_string()),
        ObjectError::NotFound { .. } => Status::not_found(error.to_string()),
        other => internal(other),
    }
}

/// A kind as the command line typed it, or a list of the kinds there are.
fn known_kind(typed: &str) -> Result<Kind, Status> {
    typed
        .parse()
        .map_err(|unknown: UnknownKind| Status::invalid_argument(unknown.to_string()))
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

impl<S: Store + Clone> AdminApiService<S> {
    fn node_message(
        &self,
        record: NodeRecord,
        handshake_ages: &std::collections::HashMap<String, u64>,
    ) -> Node {
        Node {
            last_handshake_age_seconds: record
                .node_vpn_pub_key
                .as_ref()
                .and_then(|key| handshake_ages.get(key).copied()),
            online: self.context.sessions.is_online(&record.node_name),
            node_name: record.node_name,
            labels: record.labels.into_iter().collect(),
            node_vpn_ip: record.node_vpn_ip.unwrap_or_default(),
            node_public_endpoint: record.node_public_endpoint.unwrap_or_default(),
            last_seen_unix_ms: record.last_seen_unix_ms,
            joined_unix_ms: record.joined_unix_ms,
            facts_json: String::new(),
            cert_not_after_unix_ms: record.node_cert_not_after_unix_ms,
        }
    }

    /// A node as `weft get nodes` shows it, in the shape of the other objects.
    fn node_object(&self, record: &NodeRecord) -> StoredObject {
        let object = serde_json::json!({
            "apiVersion": weft_taskbook::objects::API_VERSION,
            "kind": Kind::Node,
            "metadata": {"name": record.node_name, "labels": record.labels},
            "spec": {
                "vars": record.vars,
                "node_vpn_ip": record.node_vpn_ip,
                "node_public_endpoint": record.node_public_endpoint,
                "node_vpn_pub_key": record.node_vpn_pub_key,
            },
            "status": {
                "online": self.context.sessions.is_online(&record.node_name),
                "last_seen_unix_ms": record.last_seen_unix_ms,
            },
        });
        StoredObject {
            object_json: object.to_string(),
            created_unix_ms: record.joined_unix_ms,
            updated_unix_ms: record.last_seen_unix_ms,
        }
    }

    /// What the master knows of an object beyond its spec: a CronJob's runs, a
    /// GitRepository's last fetch.
    async fn object_status(&self, object: &CoreStoredObject) -> Result<Option<Value>, Status> {
        match object.object().map_err(internal)? {
            AnyObject::CronJob(cron_job) => {
                let namespace = object
                    .record
                    .namespace
                    .as_deref()
                    .unwrap_or(DEFAULT_NAMESPACE);
                let status = self
                    .context
                    .cron_jobs
                    .status_view(
                        namespace,
                        &cron_job.metadata.name,
                        &cron_job.spec,
                        object.record.created_unix_ms,
                    )
                    .await
                    .map_err(internal)?;
                Ok(Some(status))
            }
            AnyObject::GitRepository(_) => {
                let repo = RepoId {
                    namespace: object.record.namespace.clone().unwrap_or_default(),
                    name: object.record.name.clone(),
                };
                let status = self
                    .context
                    .runner
                    .repos()
                    .status(&repo)
                    .await
                    .map_err(internal)?;
                Ok(Some(serde_json::to_value(status).map_err(internal)?))
            }
            _ => Ok(None),
        }
    }

    async fn node_record(&self, node_name: &str) -> Result<NodeRecord, Status> {
        self.context
            .nodes
            .get(node_name)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!("no node `{node_name}`; `weft nodes` lists them"))
            })
    }
}

fn job_message(job: &JobRecord, job_json: String) -> Job {
    Job {
        job_id: job.job_id.clone(),
        taskbook: job.taskbook.clone(),
        state: job.state.as_str().to_string(),
        started_unix_ms: job.started_unix_ms,
        finished_unix_ms: job.finished_unix_ms.unwrap_or(0),
        job_json,
        node_count: job.node_count() as u32,
        origin: job
            .origin
            .as_ref()
            .map(JobOrigin::describe)
            .unwrap_or_default(),
        commits_json: serde_json::to_string(&job.commits).expect("plain data"),
    }
}

fn token_info(record: TokenRecord) -> TokenInfo {
    TokenInfo {
        token_id: record.token_id,
        created_unix_ms: record.created_at.saturating_mul(1000),
        expires_unix_ms: record.expires_at.saturating_mul(1000),
        uses_left: record.uses_left,
        replace_node_name: record.replace_node_name.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl<S: Store + Clone> AdminApi for AdminApiService<S> {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let request = request.into_inner();
        let token_replaces = request.replace_node_name.clone();
        let ttl = match request.ttl_seconds {
            0 => self
                .context
                .objects
                .token_ttl()
                .await
                .map_err(object_status)?
                .unwrap_or(DEFAULT_TOKEN_TTL),
            seconds => Duration::from_secs(seconds),
        };
        let now = SystemTime::now();
        let token = self
            .context
            .tokens
            .create(
                &self.context.master_public_endpoint,
                self.context.ca.master_issuer().ca_cert_sha256(),
                ttl,
                request.uses.max(1),
                (!request.replace_node_name.is_empty()).then_some(request.replace_node_name),
                now,
            )
            .await
            .map_err(|error| match error {
                TokenRegistryError::Token(_) => Status::invalid_argument(error.to_string()),
                other => internal(other),
            })?;
        tracing::info!(token = %token.token_id(), uses = request.uses.max(1), ttl_s = ttl.as_secs(), replace = ?token_replaces, "token created");
        Ok(Response::new(CreateTokenResponse {
            token: token.encode(),
            expires_unix_ms: unix_ms(now + ttl),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let tokens = self.context.tokens.list().await.map_err(internal)?;
        Ok(Response::new(ListTokensResponse {
            tokens: tokens.into_iter().map(token_info).collect(),
        }))
    }

    async fn delete_token(
        &self,
        request: Request<DeleteTokenRequest>,
    ) -> Result<Response<DeleteTokenResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let token_id = request.into_inner().token_id;
        if !self
            .context
            .tokens
            .delete(&token_id)
            .await
            .map_err(internal)?
        {
            return Err(Status::not_found(format!(
                "no token `{}`; see `weft token list`",
                token_id.escape_debug()
            )));
        }
        tracing::info!(token = %token_id, "token deleted");
        Ok(Response::new(DeleteTokenResponse {}))
    }

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let selector = request.into_inner().selector;
        let handshake_ages = self.context.handshake_ages().await;
        let nodes = self
            .context
            .nodes
            .list()
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|record| {
                selector
                    .iter()
                    .all(|(k, v)| record.labels.get(k) == Some(v))
            })
            .map(|record| self.node_message(record, &handshake_ages))
            .collect();
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn get_node(&self, request: Request<GetNodeRequest>) -> Result<Response<Node>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let node_name = request.into_inner().node_name;
        let record = self.node_record(&node_name).await?;
        let facts = self
            .context
            .nodes
            .facts(&node_name)
            .await
            .map_err(internal)?;
        let mut node = self.node_message(record, &self.context.handshake_ages().await);
        node.facts_json = facts.map(|f| f.facts.to_string()).unwrap_or_default();
        Ok(Response::new(node))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let node_name = request.into_inner().node_name;
        if !self
            .context
            .forget_node(&node_name, Departure::Removed)
            .await?
        {
            return Err(Status::not_found(format!(
                "no node `{node_name}`; `weft nodes` lists them"
            )));
        }
        Ok(Response::new(RemoveNodeResponse {}))
    }

    async fn get_facts(
        &self,
        request: Request<GetFactsRequest>,
    ) -> Result<Response<GetFactsResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let node_name = request.into_inner().node_name;
        self.node_record(&node_name).await?;
        let facts = self
            .context
            .nodes
            .facts(&node_name)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "node `{node_name}` has not sent facts yet; it does when it connects"
                ))
            })?;
        Ok(Response::new(GetFactsResponse {
            facts_json: facts.facts.to_string(),
            updated_unix_ms: facts.updated_unix_ms,
        }))
    }

    type RunTaskBookStream = RunStream;

    async fn run_task_book(
        &self,
        request: Request<RunTaskBookRequest>,
    ) -> Result<Response<RunStream>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        self.context.require_leader()?;
        let request = request.into_inner();
        let extra_vars = request
            .extra_vars_json
            .iter()
            .map(|json| serde_json::from_str::<Vars>(json))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Status::invalid_argument(format!("extra variables must be JSON objects: {e}"))
            })?;
        // A stored TaskBook, or one from a repository, reads its own namespace's
        // variables and secrets.
        let named = match (
            non_empty(&request.stored_taskbook),
            non_empty(&request.repo),
        ) {
            (Some(name), _) => Some(TaskBookRef {
                name: Some(name.to_string()),
                ..TaskBookRef::default()
            }),
            (None, Some(repo)) => Some(TaskBookRef {
                repo: Some(repo.to_string()),
                path: Some(request.repo_path.clone()),
                ..TaskBookRef::default()
            }),
            (None, None) => None,
        };
        let (bundle, commits, scope) = match named {
            Some(taskbook) => {
                let namespace = namespace_for(
                    Kind::TaskBook,
                    non_empty(&request.stored_taskbook_namespace),
                )
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
                let (bundle, commits) = self
                    .context
                    .runner
                    .bundle_for(&taskbook, &namespace)
                    .await
                    .map_err(run_status)?;
                (bundle, commits, RunScope::Namespace(Some(namespace)))
            }
            None => (
                Bundle {
                    taskbook_file: request.taskbook_file,
                    files: request.files.into_iter().collect(),
                },
                Default::default(),
                RunScope::Namespace(None),
            ),
        };
        let run = RunRequest {
            bundle,
            commits,
            check_mode: request.check_mode,
            diff: request.diff,
            tags: request.tags,
            skip_tags: request.skip_tags,
            extra_vars,
            nodes_override: (!request.nodes_selector.is_empty())
                .then(|| NodeSelector::parse_command_line(&request.nodes_selector)),
            scope,
            ..RunRequest::default()
        };
        let events = self.context.runner.start(run).await.map_err(run_status)?;
        let stream = UnboundedReceiverStream::new(events).map(|event| Ok(run_event(event)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let limit = match request.into_inner().limit {
            0 => DEFAULT_JOBS_LISTED,
            limit => limit as usize,
        };
        let jobs = self
            .context
            .runner
            .jobs()
            .list(limit)
            .await
            .map_err(internal)?;
        Ok(Response::new(ListJobsResponse {
            jobs: jobs
                .iter()
                .map(|job| job_message(job, String::new()))
                .collect(),
        }))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let job_id = request.into_inner().job_id;
        let detail =
            self.context
                .runner
                .jobs()
                .detail(&job_id)
                .await
                .map_err(|error| match error {
                    JobStoreError::NotFound(_) => Status::not_found(error.to_string()),
                    other => internal(other),
                })?;
        let job_json = serde_json::to_string(&detail).map_err(internal)?;
        Ok(Response::new(job_message(&detail.job, job_json)))
    }
    async fn label_node(
        &self,
        request: Request<LabelNodeRequest>,
    ) -> Result<Response<Node>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let request = request.into_inner();
        let mut record = self.node_record(&request.node_name).await?;
        for key in &request.remove {
            record.labels.remove(key);
        }
        record.labels.extend(request.set);
        validate_labels(&record.labels).map_err(Status::invalid_argument)?;
        self.context.nodes.put(&record).await.map_err(internal)?;
        tracing::info!(node = %record.node_name, labels = ?record.labels, "node labels changed");
        // Beacons select by labels.
        self.context.send_beacons(&record.node_name).await;
        let handshake_ages = self.context.handshake_ages().await;
        Ok(Response::new(self.node_message(record, &handshake_ages)))
    }

    async fn set_node_vars(
        &self,
        request: Request<SetNodeVarsRequest>,
    ) -> Result<Response<SetNodeVarsResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let request = request.into_inner();
        let set: Vars = match request.set_json.as_str() {
            "" => Vars::new(),
            json => serde_json::from_str(json).map_err(|e| {
                Status::invalid_argument(format!("node variables must be a JSON object: {e}"))
            })?,
        };
        if let Some(bad) = set.keys().find(|name| !is_identifier(name)) {
            return Err(Status::invalid_argument(format!(
                "`{bad}` is not a variable name: use letters, digits and `_`, not starting with a digit"
            )));
        }
        let mut record = self.node_record(&request.node_name).await?;
        for name in &request.remove {
            record.vars.remove(name);
        }
        record.vars.extend(set);
        self.context.nodes.put(&record).await.map_err(internal)?;
        tracing::info!(node = %record.node_name, vars = ?record.vars.keys().collect::<Vec<_>>(), "node variables changed");
        Ok(Response::new(SetNodeVarsResponse {
            vars_json: serde_json::Value::Object(record.vars).to_string(),
        }))
    }

    async fn apply_objects(
        &self,
        request: Request<ApplyObjectsRequest>,
    ) -> Result<Response<ApplyObjectsResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let request = request.into_inner();
        let mut objects = Vec::new();
        for file in &request.files {
            let parsed = parse_objects(&file.content, std::path::Path::new(&file.path))
                .map_err(|error| Status::invalid_argument(error.to_string()))?;
            objects.extend(parsed);
        }
        let applied = self
            .context
            .objects
            .apply(objects, request.dry_run)
            .await
            .map_err(object_status)?;
        for object in applied
            .iter()
            .filter(|a| !request.dry_run && a.action != ApplyAction::Unchanged)
        {
            tracing::info!(kind = %object.kind, namespace = object.namespace.as_deref().unwrap_or(""), name = %object.name, action = object.action.as_str(), generation = object.generation, "object applied");
        }
        Ok(Response::new(ApplyObjectsResponse {
            objects: applied
                .into_iter()
                .map(|applied| AppliedObject {
                    kind: applied.kind.to_string(),
                    namespace: applied.namespace.unwrap_or_default(),
                    name: applied.name,
                    action: applied.action.as_str().to_string(),
                    generation: applied.generation,
                    resource_version: applied.resource_version.to_string(),
                })
                .collect(),
        }))
    }

    async fn get_objects(
        &self,
        request: Request<GetObjectsRequest>,
    ) -> Result<Response<GetObjectsResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let request = request.into_inner();
        let kind = known_kind(&request.kind)?;
        let namespace = non_empty(&request.namespace);
        let name = non_empty(&request.name);
        let objects = if kind == Kind::Node {
            let records = match name {
                Some(name) => vec![self.node_record(name).await?],
                None => self.context.nodes.list().await.map_err(internal)?,
            };
            records
                .iter()
                .map(|record| self.node_object(record))
                .collect()
        } else {
            let stored = match name {
                Some(name) => {
                    let found = self
                        .context
                        .objects
                        .get(kind, namespace, name)
                        .await
                        .map_err(object_status)?;
                    vec![found.ok_or_else(|| {
                        object_status(ObjectError::NotFound {
                            kind,
                            namespace: namespace_for(kind, namespace),
                            name: name.into(),
                        })
                    })?]
                }
                None => self
                    .context
                    .objects
                    .list(kind, namespace)
                    .await
                    .map_err(object_status)?,
            };
            let mut objects = Vec::with_capacity(stored.len());
            for object in &stored {
                let mut json = object.to_json().map_err(internal)?;
                if let Some(status) = self.object_status(object).await? {
                    json["status"] = status;
                }
                objects.push(StoredObject {
                    object_json: json.to_string(),
                    created_unix_ms: object.record.created_unix_ms,
                    updated_unix_ms: object.record.updated_unix_ms,
                });
            }
            objects
        };
        Ok(Response::new(GetObjectsResponse {
            kind: kind.to_string(),
            objects,
        }))
    }

    async fn resolve_vars(
        &self,
        request: Request<ResolveVarsRequest>,
    ) -> Result<Response<ResolveVarsResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        // Computed variables run commands on nodes.
        self.context.require_leader()?;
        let request = request.into_inner();
        let namespace = non_empty(&request.namespace).unwrap_or(DEFAULT_NAMESPACE);
        let resolved = self
            .context
            .runner
            .node_vars(namespace, &request.node_name)
            .await
            .map_err(run_status)?;
        let resolved_json = serde_json::json!({
            "node": request.node_name,
            "namespace": namespace,
            "vars": resolved.vars,
            "origins": resolved.origins,
        });
        Ok(Response::new(ResolveVarsResponse {
            resolved_json: resolved_json.to_string(),
        }))
    }

    async fn run_cron_job(
        &self,
        request: Request<RunCronJobRequest>,
    ) -> Result<Response<RunCronJobResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        self.context.require_leader()?;
        let request = request.into_inner();
        let namespace = non_empty(&request.namespace).unwrap_or(DEFAULT_NAMESPACE);
        let job_id = self
            .context
            .cron_jobs
            .run_now(namespace, &request.name)
            .await
            .map_err(|error| match error {
                CronJobError::NotFound(_) => Status::not_found(format!(
                    "{error}; `weft get cronjobs -n {namespace}` lists them"
                )),
                CronJobError::Run(_) => Status::invalid_argument(error.to_string()),
                other => internal(other),
            })?;
        Ok(Response::new(RunCronJobResponse { job_id }))
    }

    type ListEventsStream = EventStream;

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let request = request.into_inner();
        let filter = EventFilter {
            event_type: non_empty(&request.event_type).map(str::to_string),
            source_node: non_empty(&request.node_name).map(str::to_string),
            namespace: non_empty(&request.namespace).map(str::to_string),
        };
        let limit = match request.limit as usize {
            0 => DEFAULT_EVENT_LIMIT,
            n => n.min(MAX_EVENT_LIMIT),
        };
        let events = &self.context.events;
        let (listed, revision) = events.list(&filter, limit).await.map_err(internal)?;
        let message = |event: EventRecord| EventMessage {
            event_json: serde_json::to_string(&event).expect("events are plain data"),
        };
        let listed = futures_util::stream::iter(listed.into_iter().map(move |e| Ok(message(e))));
        if !request.follow {
            return Ok(Response::new(Box::pin(listed)));
        }
        let live = events
            .follow(filter, revision)
            .await
            .map_err(internal)?
            .map(move |event| event.map(message).map_err(internal));
        Ok(Response::new(Box::pin(listed.chain(live))))
    }

    async fn list_masters(
        &self,
        request: Request<ListMastersRequest>,
    ) -> Result<Response<ListMastersResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let masters = self.context.masters.list().await.map_err(internal)?;
        Ok(Response::new(ListMastersResponse {
            masters: masters
                .into_iter()
                .map(|master| MasterInfo {
                    master_name: master.master_name,
                    master_public_endpoint: master.master_public_endpoint,
                    master_vpnapi_endpoint: master.master_vpnapi_endpoint,
                })
                .collect(),
            leader_name: self.context.leadership.state().leader.unwrap_or_default(),
            answered_by: self.context.master_name.clone(),
        }))
    }

    async fn fetch_repository(
        &self,
        request: Request<FetchRepositoryRequest>,
    ) -> Result<Response<FetchRepositoryResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let request = request.into_inner();
        let repo = RepoId {
            namespace: non_empty(&request.namespace)
                .unwrap_or(DEFAULT_NAMESPACE)
                .to_string(),
            name: request.name,
        };
        self.context
            .runner
            .repos()
            .request_fetch(&repo)
            .await
            .map_err(|error| match error {
                GitError::NotFound { .. } => Status::not_found(error.to_string()),
                other => internal(other),
            })?;
        tracing::info!(namespace = %repo.namespace, repo = %repo.name, "GitRepository fetch asked for");
        Ok(Response::new(FetchRepositoryResponse {}))
    }

    async fn delete_object(
        &self,
        request: Request<DeleteObjectRequest>,
    ) -> Result<Response<DeleteObjectResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let request = request.into_inner();
        let kind = known_kind(&request.kind)?;
        if kind == Kind::Node {
            return Err(Status::invalid_argument(
                "nodes leave with `weft node remove NODE` (it also revokes the certificate)",
            ));
        }
        let namespace = non_empty(&request.namespace);
        if !self
            .context
            .objects
            .delete(kind, namespace, &request.name)
            .await
            .map_err(object_status)?
        {
            return Err(object_status(ObjectError::NotFound {
                kind,
                namespace: namespace_for(kind, namespace),
                name: request.name,
            }));
        }
        tracing::info!(%kind, namespace = namespace.unwrap_or(""), name = %request.name, "object deleted");
        Ok(Response::new(DeleteObjectResponse {}))
    }

    async fn create_admin(
        &self,
        request: Request<CreateAdminRequest>,
    ) -> Result<Response<CreateAdminResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let admin_name = request.into_inner().admin_name;
        let now = SystemTime::now();
        let issued =
            self.context
                .ca
                .issue_admin_cert(&admin_name, now)
                .map_err(|error| match error {
                    PkiError::InvalidName { .. } => Status::invalid_argument(error.to_string()),
                    other => internal(other),
                })?;
        let terms = CertTerms {
            serial: issued.serial.clone(),
            not_after_unix_ms: issued.not_after_unix_ms,
        };
        self.context
            .admins
            .create(&admin_name, &terms, unix_ms(now))
            .await
            .map_err(admin_status)?;
        tracing::info!(admin = %admin_name, serial = %issued.serial, "admin created");
        Ok(Response::new(CreateAdminResponse {
            ca_cert_pem: self.context.ca.trust_bundle_pem(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }))
    }

    async fn revoke_admin(
        &self,
        request: Request<RevokeAdminRequest>,
    ) -> Result<Response<RevokeAdminResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let admin_name = request.into_inner().admin_name;
        let revoked = self
            .context
            .admins
            .revoke(&admin_name, unix_ms(SystemTime::now()))
            .await
            .map_err(admin_status)?;
        if revoked {
            tracing::info!(admin = %admin_name, "admin revoked; its certificates are refused from now on");
        }
        Ok(Response::new(RevokeAdminResponse { revoked }))
    }

    async fn list_admins(
        &self,
        request: Request<ListAdminsRequest>,
    ) -> Result<Response<ListAdminsResponse>, Status> {
        MasterContext::<S>::require_admin(&request)?;
        let admins = self
            .context
            .admins
            .list()
            .await
            .map_err(admin_status)?
            .into_iter()
            .map(|record| Admin {
                cert_not_after_unix_ms: record.not_after_unix_ms().unwrap_or_default(),
                admin_name: record.admin_name,
                created_unix_ms: record.created_unix_ms,
                revoked_unix_ms: record.revoked_unix_ms,
            })
            .collect();
        Ok(Response::new(ListAdminsResponse { admins }))
    }

    async fn renew_admin_certificate(
        &self,
        request: Request<RenewAdminCertificateRequest>,
    ) -> Result<Response<RenewAdminCertificateResponse>, Status> {
        let cert_pem = self
            .context
            .renew_admin_cert(&request, &request.get_ref().csr_der)
            .await?;
        Ok(Response::new(RenewAdminCertificateResponse {
            cert_pem,
            ca_cert_pem: self.context.ca.trust_bundle_pem(),
        }))
    }
}

fn admin_status(error: AdminRegistryError) -> Status {
    match error {
        AdminRegistryError::Exists(_) => Status::already_exists(error.to_string()),
        AdminRegistryError::TooMany => Status::resource_exhausted(error.to_string()),
        AdminRegistryError::Conflict(_) => Status::aborted(error.to_string()),
        AdminRegistryError::Unknown(_) => Status::not_found(error.to_string()),
        AdminRegistryError::Revoked(_) => Status::permission_denied(error.to_string()),
        AdminRegistryError::Store(_) | AdminRegistryError::Corrupt(_) => internal(error),
    }
}

fn run_event(event: JobEvent) -> RunEvent {
    let kind = match event {
        JobEvent::Started { job_id, step_count } => run_event::Kind::Started(JobStarted {
            job_id,
            step_count: step_count as u32,
        }),
        JobEvent::StepStarted {
            step_index,
            step_count,
            step_name,
            nodes,
        } => run_event::Kind::StepStarted(StepStarted {
            step_index: step_index as u32,
            step_count: step_count as u32,
            step_name,
            node_names: nodes,
        }),
        JobEvent::Result(result) => run_event::Kind::TaskResultJson(
            serde_json::to_string(&result).expect("results serialize"),
        ),
        JobEvent::NodeStepDone {
            step_index,
            node,
            state,
        } => run_event::Kind::NodeStepDone(NodeStepDone {
            step_index: step_index as u32,
            node_name: node,
            state: state.as_str().to_string(),
        }),
        JobEvent::Finished(report) => {
            run_event::Kind::ReportJson(serde_json::to_string(&report).expect("reports serialize"))
        }
    };
    RunEvent { kind: Some(kind) }
}
