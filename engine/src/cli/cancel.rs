//! `recman cancel ID`: cancels a job through the running server (the engine
//! must run to thaw what is frozen).

use std::process::ExitCode;

use anyhow::{bail, Context};
use recman_events::JobId;
use serde_json::json;

use crate::client::{ApiFailure, Client};
use crate::home::Home;
use crate::source::ServerArg;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Cancels through the running `recman up` or `recman engine --listen` (the engine must run\n\
to thaw what is frozen). Over RabbitMQ, a cancel can also be published on recman.requests\n\
(deploy/README.md).\n\
Before the freeze the job just ends; after it, the targets are thawed first.\n\n\
Exit codes: 0 cancel recorded (or already requested), 1 no such job or it already ended,\n\
2 could not run (no server)."
)]
pub struct Args {
    pub id: JobId,
    /// Why (recorded in the log).
    #[arg(long, default_value = "cancelled from the command line")]
    pub reason: String,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let Some(c) = Client::discover(g, a.server.server.as_deref()).await? else {
        bail!(
            "no running server for {}: cancelling needs the engine; start `recman up` (or `recman engine --listen ADDR`) or pass --server URL",
            g.data_dir.display()
        );
    };
    match c
        .post(&format!("/v1/jobs/{}/cancel", a.id), &json!({"reason": a.reason}))
        .await
    {
        Ok(v) => {
            let again = v["already_requested"].as_bool().unwrap_or(false);
            println!(
                "cancel of job {} {}; follow it with `recman job {}`",
                a.id,
                if again {
                    "was already requested"
                } else {
                    "recorded"
                },
                a.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f) if f.status.as_u16() == 404 || f.status.as_u16() == 409 => {
                eprintln!("{}", crate::render::escape(&f.message));
                Ok(ExitCode::from(1))
            }
            _ => Err(e).context("cancelling"),
        },
    }
}
