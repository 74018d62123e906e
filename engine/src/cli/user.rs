//! `recman user add NAME --role R --token-file F`: a new API user's token,
//! printed once; its SHA-256 written to F (mode 0600) for `[[api.user]]`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use recman_config::Role;

use crate::api::auth::{new_token, token_hash_hex};
use crate::home::Home;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Make a token for a new API user: print it once, write its hash.
    #[command(
        after_help = "The token is printed once on stdout: give it to the user (the CLI reads it\n\
from a file named by `--api-token-file FILE` or from RECMAN_TOKEN; a client sends\n\
`Authorization: Bearer <token>`). The file written holds only its SHA-256 (mode 0600);\n\
name it in the server's config with the printed [[api.user]] block and restart the\n\
server. A new token for an existing user (--force): SIGHUP makes the server read the\n\
token files again, and the old token stops working. An existing file is not overwritten\n\
without --force."
    )]
    Add(AddArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The user's name, recorded as `by` in the events the user causes.
    pub name: String,
    /// viewer (read), operator (snapshot, cancel, verify, mount, reconcile)
    /// or admin (also restore, clone, prune, schedules).
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// Where to write the token's SHA-256 (the user's `token_file`).
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// Target patterns the user may act on (`pg-*`), repeatable; default every target.
    #[arg(long = "target", value_name = "PATTERN")]
    pub targets: Vec<String>,
    /// Replace an existing token file (the old token stops working when the
    /// server reads the token files again: SIGHUP, or its next start).
    #[arg(long)]
    pub force: bool,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role \"{s}\" (one of viewer, operator, admin)"))
}

pub async fn run(_g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let UserCommand::Add(a) = a.command;
    recman_events::wire::check_id("name", &a.name).map_err(|e| anyhow::anyhow!("bad user name: {e}"))?;
    let token = new_token()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if a.force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let path = &a.token_file;
    let mut f = opts.open(path).with_context(|| {
        format!(
            "writing {} (it exists? pass --force to replace the user's token)",
            path.display()
        )
    })?;
    f.write_all(format!("{}\n", token_hash_hex(&token)).as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file replaced with --force keeps its mode: make it 0600.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
    println!("{token}");
    eprintln!(
        "the token above is shown once; {} holds its SHA-256. Add to the server's config:\n\n\
         [[api.user]]\nname = \"{}\"\ntoken_file = \"{}\"\nrole = \"{}\"{}\n",
        abs.display(),
        a.name,
        abs.display(),
        a.role,
        if a.targets.is_empty() {
            String::new()
        } else {
            format!(
                "\ntargets = [{}]",
                a.targets
                    .iter()
                    .map(|t| format!("\"{t}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    Ok(ExitCode::SUCCESS)
}
