//! `weft token create`.

use std::time::Duration;

use weft_proto::adminapi::CreateTokenRequest;

use crate::admin::AdminClient;
use crate::output::timestamp;
use crate::CliError;

/// Prints the token alone on stdout, so `$(weft token create)` works; the rest to stderr.
pub async fn create_token(
    client: &mut AdminClient,
    ttl: Option<Duration>,
    uses: u32,
) -> Result<(), CliError> {
    let response = client
        .create_token(CreateTokenRequest {
            // 0: the cluster's default.
            ttl_seconds: ttl.map_or(0, |ttl| ttl.as_secs()),
            uses,
        })
        .await?
        .into_inner();
    println!("{}", response.token);
    eprintln!(
        "token valid until {} for {uses} join{}: weft minion join --token TOKEN",
        timestamp(response.expires_unix_ms),
        if uses == 1 { "" } else { "s" }
    );
    Ok(())
}
