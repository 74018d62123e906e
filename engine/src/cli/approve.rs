//! `recman approve JOB`: a second admin approves an in-place restore or a
//! prune that waits for four-eyes approval (`require_approval`), through the running
//! server (the approver is the API user of the token).

use std::process::ExitCode;

use anyhow::{bail, Context};
use recman_events::JobId;
use serde_json::json;

use crate::client::{ApiFailure, Client};
use crate::home::Home;
use crate::source::ServerArg;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
A target with `require_approval = true` takes an in-place restore, and loses restore points to an
operator's prune, only once an admin other than the one who asked approves it (four-eyes).
`recman restore ... --in-place --yes` and `recman prune TARGET` print the job;
another admin approves it here, through the running `recman up` or `recman engine --listen`, with
their own token (--api-token-file FILE, or RECMAN_TOKEN): the approver is that API user, recorded as the `by`
of the `approved` event beside the requester's. The restore then starts once the target is idle;
a prune asks for its deletes at once (the target's retention rules as they stand then).

Refused: by the requester (self_approval), by a viewer or an operator, by an admin whose `targets`
exclude the target, after the request expired (approval_expired: ask again).

Exit codes: 0 approved (or already approved by you), 1 refused or no such job, 2 could not run.")]
pub struct Args {
    /// The restore or prune job awaiting approval (`recman jobs --state awaiting_approval`).
    pub id: JobId,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let Some(c) = Client::discover(g, a.server.server.as_deref()).await? else {
        bail!(
            "no running server for {}: an approval needs the engine and an admin's token; start `recman up` (or \
             `recman engine --listen ADDR`) or pass --server URL",
            g.data_dir.display()
        );
    };
    match c
        .post(&format!("/v1/recoveries/{}/approve", a.id), &json!({}))
        .await
    {
        Ok(v) => {
            let by = v["approved_by"].as_str().unwrap_or("?");
            let again = v["already_approved"].as_bool().unwrap_or(false);
            println!(
                "job {} {} by {}; it starts once its target is idle: follow it with `recman job {}`",
                a.id,
                if again { "was already approved" } else { "approved" },
                crate::render::escape(by),
                a.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f) if matches!(f.status.as_u16(), 403 | 404 | 409) => {
                eprintln!(
                    "approval refused ({}): {}",
                    f.code,
                    crate::render::escape(&f.message)
                );
                Ok(ExitCode::from(1))
            }
            _ => Err(e).context("approving"),
        },
    }
}
