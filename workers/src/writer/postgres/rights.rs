//! The least privileges the `postgres` writer needs, the GRANT statements
//! that give them (the README prints the same list), and the query that
//! finds the missing ones on a live session.

use tokio_postgres::Client;

/// One function the writer calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Right {
    /// The signature `has_function_privilege` and `GRANT` take.
    pub function: &'static str,
    /// What the writer does with it.
    pub why: &'static str,
    /// Needed only with `wait_for_archive = true`.
    pub only_with_wait: bool,
}

/// Every function the writer calls that is not granted to PUBLIC.
pub const RIGHTS: &[Right] = &[
    Right {
        function: "pg_backup_start(text, boolean)",
        why: "freeze: start the backup",
        only_with_wait: false,
    },
    Right {
        function: "pg_backup_stop(boolean)",
        why: "thaw: stop the backup, get its backup_label",
        only_with_wait: false,
    },
    Right {
        function: "pg_switch_wal()",
        why: "flush-logs: close the WAL segment the backup ends in",
        only_with_wait: false,
    },
    Right {
        function: "pg_ls_archive_statusdir()",
        why: "flush-logs: see when that segment is archived",
        only_with_wait: true,
    },
];

/// The rights a writer with `wait_for_archive` needs.
pub fn needed(wait_for_archive: bool) -> impl Iterator<Item = &'static Right> {
    RIGHTS
        .iter()
        .filter(move |r| wait_for_archive || !r.only_with_wait)
}

/// `GRANT EXECUTE ON FUNCTION … TO "role";` for each of `rights`.
pub fn grants<'a>(role: &str, rights: impl IntoIterator<Item = &'a Right>) -> String {
    let role = format!("\"{}\"", role.replace('"', "\"\""));
    rights
        .into_iter()
        .map(|r| format!("GRANT EXECUTE ON FUNCTION {} TO {role};", r.function))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The rights of `needed(wait_for_archive)` the session's role lacks.
pub async fn missing(
    client: &Client,
    wait_for_archive: bool,
) -> Result<Vec<&'static Right>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for r in needed(wait_for_archive) {
        let has: bool = client
            .query_one(
                "SELECT has_function_privilege($1::text, 'EXECUTE')",
                &[&r.function],
            )
            .await?
            .get(0);
        if !has {
            out.push(r);
        }
    }
    Ok(out)
}

/// The message for a role that lacks `missing`: what to run, as a superuser.
pub fn refusal(role: &str, missing: &[&Right]) -> String {
    let names: Vec<String> = missing
        .iter()
        .map(|r| format!("{} ({})", r.function, r.why))
        .collect();
    format!(
        "role \"{role}\" may not execute {}; as a superuser run: {}",
        names.join(", "),
        grants(role, missing.iter().copied())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_quote_the_role_and_name_each_function() {
        let g = grants("backup \"x\"", needed(false));
        assert_eq!(
            g,
            "GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO \"backup \"\"x\"\"\"; \
GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO \"backup \"\"x\"\"\"; \
GRANT EXECUTE ON FUNCTION pg_switch_wal() TO \"backup \"\"x\"\"\";"
        );
        assert_eq!(needed(true).count(), 4);
        let r = refusal("b", &[&RIGHTS[2]]);
        assert!(
            r.contains("pg_switch_wal() (flush-logs")
                && r.contains("GRANT EXECUTE ON FUNCTION pg_switch_wal() TO \"b\";"),
            "{r}"
        );
    }
}
