//! `POST /hooks/git/<namespace>/<name>` on the public listener: a git host's push
//! webhook (GitHub, Gitea, Forgejo, GitLab with a signing proxy), signed with
//! `X-Hub-Signature-256: sha256=<hex>` under the repository's `webhook_secret`. A
//! verified call asks the leader to fetch now. Callers learn nothing of why a call was
//! refused beyond 401 or 404.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use super::MasterContext;
use crate::core::git_repositories::{RepoId, WebhookOutcome, MAX_WEBHOOK_BODY_BYTES};
use crate::store::Store;

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

pub fn router<S: Store + Clone>(context: Arc<MasterContext<S>>) -> Router {
    Router::new()
        .route("/hooks/git/{namespace}/{name}", post(git_push::<S>))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY_BYTES))
        .with_state(context)
}

async fn git_push<S: Store + Clone>(
    State(context): State<Arc<MasterContext<S>>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let repo = RepoId { namespace, name };
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    match context
        .runner
        .repos()
        .webhook(&repo, &body, signature)
        .await
    {
        Ok(WebhookOutcome::Accepted) => {
            tracing::info!(namespace = %repo.namespace, repo = %repo.name, bytes = body.len(), "verified GitRepository webhook: fetch asked for");
            StatusCode::ACCEPTED
        }
        Ok(WebhookOutcome::NotFound) => StatusCode::NOT_FOUND,
        Ok(WebhookOutcome::Unauthorized) => {
            tracing::warn!(namespace = %repo.namespace, repo = %repo.name, "GitRepository webhook refused: bad or missing signature");
            StatusCode::UNAUTHORIZED
        }
        Err(error) => {
            tracing::warn!(namespace = %repo.namespace, repo = %repo.name, %error, "GitRepository webhook failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}
