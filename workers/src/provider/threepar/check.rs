//! The `3par` provider's preflight (`recman check`): a login with the
//! configured user and password file, the base volume (or every member of
//! the volume set) exists and is a base volume, and the CPG its virtual
//! copies go to (`snapCPG`) has room below its growth limit. Reads only
//! (`GET`), then logs out.

use recman_config::{ThreeParConfig, ThreeParObject};
use reqwest::Method;
use serde_json::Value;

use super::client::ArrayClient;
use crate::check::Finding;

const S: &str = "3par";
/// Below this much room left in the snapshot CPG the check fails.
pub const MIN_CPG_FREE_MIB: i64 = 1024;

/// Every finding for a `3par` target.
pub async fn run(cfg: &ThreeParConfig) -> Vec<Finding> {
    let client = ArrayClient::new(cfg.array.clone());
    let array = cfg.array.name.as_str();
    let mut out = Vec::new();
    let volumes = match &cfg.object {
        ThreeParObject::Volume(v) => vec![v.clone()],
        ThreeParObject::VolumeSet(set) => {
            match client.call(Method::GET, &format!("volumesets/{set}"), None).await {
                Ok(b) => {
                    let m: Vec<String> = b
                        .get("setmembers")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                        .unwrap_or_default();
                    if m.is_empty() {
                        out.push(Finding::fail(
                            S,
                            format!("array {array}: volume set {set} has no members"),
                        ));
                    } else {
                        out.push(Finding::ok(
                            S,
                            format!("array {array}: logged in; volume set {set}: {}", m.join(", ")),
                        ));
                    }
                    m
                }
                Err(e) => {
                    out.push(Finding::fail(
                        S,
                        e.to_step(array, &format!("reading volume set {set}")).message,
                    ));
                    client.logout_all().await;
                    return out;
                }
            }
        }
    };
    let mut cpgs: Vec<String> = Vec::new();
    for vol in &volumes {
        match client.call(Method::GET, &format!("volumes/{vol}"), None).await {
            Ok(v) => {
                let copy_type = v.get("copyType").and_then(Value::as_i64);
                if copy_type != Some(1) {
                    out.push(Finding::fail(
                        S,
                        format!("array {array}: {vol} is not a base volume (copyType {copy_type:?})"),
                    ));
                    continue;
                }
                match v.get("snapCPG").and_then(Value::as_str) {
                    Some(c) => {
                        out.push(Finding::ok(
                            S,
                            format!("array {array}: base volume {vol}, copies go to CPG {c}"),
                        ));
                        if !cpgs.iter().any(|x| x == c) {
                            cpgs.push(c.to_string());
                        }
                    }
                    None => out.push(Finding::fail(
                        S,
                        format!(
                            "array {array}: base volume {vol} has no snapCPG: it cannot have virtual copies"
                        ),
                    )),
                }
            }
            Err(e) => {
                out.push(Finding::fail(
                    S,
                    e.to_step(array, &format!("reading volume {vol}")).message,
                ));
                if !e.retryable() && e.status() != Some(404) {
                    break; // a login or TLS failure: every other call fails the same way
                }
            }
        }
    }
    for c in &cpgs {
        out.push(cpg_room(&client, array, c).await);
    }
    client.logout_all().await;
    out
}

/// The snapshot space left in CPG `name`: its growth limit minus what its
/// snapshot data uses (no limit: the array's free space bounds it).
async fn cpg_room(client: &ArrayClient, array: &str, name: &str) -> Finding {
    let c = match client.call(Method::GET, &format!("cpgs/{name}"), None).await {
        Ok(c) => c,
        Err(e) => return Finding::fail(S, e.to_step(array, &format!("reading CPG {name}")).message),
    };
    let mib = |a: &str, b: &str| c.get(a).and_then(|x| x.get(b)).and_then(Value::as_i64);
    let used = mib("SDUsage", "usedMiB").unwrap_or(0);
    match mib("SDGrowth", "limitMiB").filter(|l| *l > 0) {
        None => Finding::ok(
            S,
            format!("array {array}: CPG {name}: {used} MiB of snapshot data, no growth limit"),
        ),
        Some(limit) => {
            let left = limit - used;
            let msg = format!(
                "array {array}: CPG {name}: {used} of {limit} MiB snapshot space used, {left} MiB left"
            );
            if left < MIN_CPG_FREE_MIB {
                Finding::fail(
                    S,
                    format!(
                        "{msg} (needs at least {MIN_CPG_FREE_MIB} MiB: raise the limit or free snapshots)"
                    ),
                )
            } else if mib("SDGrowth", "warningMiB").is_some_and(|w| w > 0 && used >= w) {
                Finding::warn(S, format!("{msg}, past its warning level"))
            } else {
                Finding::ok(S, msg)
            }
        }
    }
}
