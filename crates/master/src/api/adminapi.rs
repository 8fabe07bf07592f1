//! The admin CLI's calls; every one needs the admin certificate.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use weft_modules::bundle::Bundle;
use weft_proto::adminapi::admin_api_server::AdminApi;
use weft_proto::adminapi::{
    run_event, CreateTokenRequest, CreateTokenResponse, GetFactsRequest, GetFactsResponse,
    GetJobRequest, GetNodeRequest, Job, JobStarted, ListJobsRequest, ListJobsResponse,
    ListNodesRequest, ListNodesResponse, Node, NodeStepDone, RemoveNodeRequest, RemoveNodeResponse,
    RunEvent, RunTaskBookRequest, StepStarted,
};
use weft_taskbook::selector::NodeSelector;
use weft_taskbook::Vars;

use super::{unix_ms, MasterContext};
use crate::core::job::{JobRecord, JobStoreError};
use crate::core::job_runner::{JobEvent, RunError, RunRequest};
use crate::core::node_registry::NodeRecord;
use crate::core::token::DEFAULT_TOKEN_TTL;
use crate::core::token_registry::TokenRegistryError;
use crate::store::Store;

const DEFAULT_JOBS_LISTED: usize = 50;

pub struct AdminApiService<S> {
    pub context: Arc<MasterContext<S>>,
}

type RunStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;

fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
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
        let ttl = match request.ttl_seconds {
            0 => DEFAULT_TOKEN_TTL,
            seconds => Duration::from_secs(seconds),
        };
        let now = SystemTime::now();
        let token = self
            .context
            .tokens
            .create(
                &self.context.master_public_endpoint,
                self.context.ca.ca_cert_sha256(),
                ttl,
                request.uses.max(1),
                now,
            )
            .await
            .map_err(|error| match error {
                TokenRegistryError::Token(_) => Status::invalid_argument(error.to_string()),
                other => internal(other),
            })?;
        tracing::info!(token = %token.token_id(), uses = request.uses.max(1), ttl_s = ttl.as_secs(), "token created");
        Ok(Response::new(CreateTokenResponse {
            token: token.encode(),
            expires_unix_ms: unix_ms(now + ttl),
        }))
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
            .forget_node(&node_name, "removed by the admin")
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
        let request = request.into_inner();
        let extra_vars = request
            .extra_vars_json
            .iter()
            .map(|json| serde_json::from_str::<Vars>(json))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Status::invalid_argument(format!("extra variables must be JSON objects: {e}"))
            })?;
        let run = RunRequest {
            bundle: Bundle {
                taskbook_file: request.taskbook_file,
                files: request.files.into_iter().collect(),
            },
            check_mode: request.check_mode,
            diff: request.diff,
            tags: request.tags,
            skip_tags: request.skip_tags,
            extra_vars,
            nodes_override: (!request.nodes_selector.is_empty())
                .then(|| NodeSelector::parse_command_line(&request.nodes_selector)),
        };
        let events = self
            .context
            .runner
            .start(run)
            .await
            .map_err(|error| match error {
                RunError::Input(_) => Status::invalid_argument(error.to_string()),
                other => internal(other),
            })?;
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
