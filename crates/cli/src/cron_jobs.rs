//! `weft cronjob run NAME`: a CronJob's TaskBook now, as `kubectl create job --from=cronjob/NAME`.

use weft_proto::adminapi::RunCronJobRequest;

use crate::admin::AdminClient;
use crate::CliError;

pub async fn run_cron_job(
    client: &mut AdminClient,
    name: &str,
    namespace: Option<&str>,
) -> Result<(), CliError> {
    let response = client
        .run_cron_job(RunCronJobRequest {
            name: name.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
        })
        .await?
        .into_inner();
    // The id alone on stdout, for scripts; `weft job show ID` follows it.
    println!("{}", response.job_id);
    eprintln!(
        "started; `weft job show {}` shows how it goes",
        response.job_id
    );
    Ok(())
}
